"""Sparse Evolutionary Training (Mocanu et al. 2018): drop the weakest connections, regrow at random."""
import math

import torch

from minisparse.masks import cosine_decay, drop_and_grow, random_mask
from minisparse.structure import LayerSpec, Signals, Structure, register

ANNEALING = ("cosine", "constant")


@register("set")
class SET(Structure):
    """Random connections at the budget; every `period` updates until `end` (fraction of training),
    a `drop_fraction` of them (annealed) with the smallest magnitude (score in fixed mode) is moved."""

    learns_connectivity = True
    period: int = 100
    drop_fraction: float = 0.3
    anneal: str = "cosine"
    end: float = 0.75

    def __post_init__(self):
        if self.anneal not in ANNEALING:
            raise ValueError(f"unknown anneal {self.anneal!r}; valid choices: {', '.join(ANNEALING)}")
        if not 0.0 <= self.drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction {self.drop_fraction} is outside [0, 1]")
        if not 0.0 < self.end <= 1.0:
            raise ValueError(f"end {self.end} is outside (0, 1] (a fraction of training)")
        if self.period < 1:
            raise ValueError(f"period must be >= 1, got {self.period}")

    def initial_mask(self, spec: LayerSpec, generator: torch.Generator) -> torch.Tensor:
        return random_mask((spec.out_features, spec.in_features), spec.fan_in, generator, per_row=False)

    def is_update_step(self, step: int, spec: LayerSpec) -> bool:
        return 0 < step <= self.end * spec.total_updates and step % self.period == 0

    def last_update(self, spec: LayerSpec) -> int:
        return math.floor(self.end * spec.total_updates)

    def update_mask(self, mask: torch.Tensor, signals: Signals, step: int, spec: LayerSpec,
                    generator: torch.Generator) -> torch.Tensor:
        fraction = self.drop_fraction
        if self.anneal == "cosine":
            fraction = cosine_decay(fraction, step, round(self.end * spec.total_updates))
        moved = round(fraction * int(mask.sum()))
        return drop_and_grow(mask, signals.importance, self.growth(signals, generator), moved)

    def growth(self, signals: Signals, generator: torch.Generator) -> torch.Tensor:
        """Where to grow: at random."""
        return torch.rand(signals.growth.shape, generator=generator)
