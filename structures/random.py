"""Connections at random positions, at the budget."""
import torch

from minisparse.masks import random_mask
from minisparse.structure import LayerSpec, Structure, register


@register("random")
class Random(Structure):
    """per_unit: every unit reads exactly `fan_in` inputs; otherwise one global budget for the layer."""

    per_unit: bool = True

    def initial_mask(self, spec: LayerSpec, generator: torch.Generator) -> torch.Tensor:
        return random_mask((spec.out_features, spec.in_features), spec.fan_in, generator, self.per_unit)
