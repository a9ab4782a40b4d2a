"""RigL (Evci et al. 2020): SET's schedule, but grow where the dense gradient is largest."""
import torch

from minisparse.structure import Signals, register
from minisparse.structures.set import SET


@register("rigl")
class RigL(SET):
    """Grows the absent connections with the largest |gradient| (of the scores in fixed mode)."""

    def growth(self, signals: Signals, generator: torch.Generator) -> torch.Tensor:
        return signals.growth
