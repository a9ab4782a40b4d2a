"""Supermasks by edge-popup (Ramanujan et al. 2020): learned scores choose the connections."""
import torch
from torch import nn

from minisparse.layers import MaskedLinear
from minisparse.masks import random_mask, top_k
from minisparse.structure import LayerSpec, Signals, Structure, register


@register("supermask")
class Supermask(Structure):
    """Every connection has a score trained through a straight-through gate; every `period` updates
    the `budget` highest scores are kept (edge-popup, with signed scores that start at |weight|: the
    gradient reaches the score itself, so higher is always better). In fixed mode this is edge-popup
    on frozen random weights; in learned mode the kept weights train too, and one that leaves keeps
    its weight, hidden by the gate, so its score still learns and it returns with it."""

    learns_connectivity = True
    period: int = 1

    def __post_init__(self):
        if self.period < 1:
            raise ValueError(f"period must be >= 1, got {self.period}")

    def build(self, spec: LayerSpec, generator: torch.Generator) -> nn.Module:
        return MaskedLinear(self.initial_mask(spec, generator), scored=True)

    def initial_mask(self, spec: LayerSpec, generator: torch.Generator) -> torch.Tensor:
        return random_mask((spec.out_features, spec.in_features), spec.fan_in, generator, per_row=False)

    def is_update_step(self, step: int, spec: LayerSpec) -> bool:
        return step % self.period == 0

    def update_mask(self, mask: torch.Tensor, signals: Signals, step: int, spec: LayerSpec,
                    generator: torch.Generator) -> torch.Tensor:
        return top_k(signals.importance, spec.connections)
