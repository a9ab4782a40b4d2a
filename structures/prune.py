"""Gradual magnitude pruning (Zhu & Gupta 2017): from dense to the budget on a cubic schedule."""
import torch

from minisparse.masks import cubic_schedule, top_k_ties_at_random
from minisparse.structure import LayerSpec, Signals, Structure, register


@register("prune")
class Prune(Structure):
    """Starts dense; every `period` updates between `start` and `end` (fractions of training)
    keeps the largest-magnitude connections (scores in fixed mode; equal ones at random), reaching the
    budget at `end`."""

    learns_connectivity = True
    regrows = False  # update_mask keeps the largest among the present connections
    start: float = 0.2
    end: float = 0.8
    period: int = 1000

    def __post_init__(self):
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ValueError(f"need 0 <= start < end <= 1, got start={self.start}, end={self.end}")
        if self.period < 1:
            raise ValueError(f"period must be >= 1, got {self.period}")

    def _steps(self, spec: LayerSpec) -> tuple[int, int]:
        return round(self.start * spec.total_updates), round(self.end * spec.total_updates)

    def is_update_step(self, step: int, spec: LayerSpec) -> bool:
        first, last = self._steps(spec)
        return first <= step <= last and ((step - first) % self.period == 0 or step == last)

    def last_update(self, spec: LayerSpec) -> int:
        return self._steps(spec)[1]

    def update_mask(self, mask: torch.Tensor, signals: Signals, step: int, spec: LayerSpec,
                    generator: torch.Generator) -> torch.Tensor:
        first, last = self._steps(spec)
        keep = cubic_schedule(mask.numel(), spec.connections, (step - first) / max(last - first, 1))
        return top_k_ties_at_random(signals.importance.masked_fill(~mask, -float("inf")), min(keep, int(mask.sum())),
                                    generator)
