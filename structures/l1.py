"""L1-induced sparsity: an L1 penalty shrinks the layer while it is pruned to the budget."""
import torch

from minisparse.layers import MaskedLinear
from minisparse.structure import LayerSpec, register
from minisparse.structures.prune import Prune


@register("l1")
class L1(Prune):
    """Gradual magnitude pruning's schedule plus `strength` * sum|w| over present connections
    (the scores in fixed mode) until the schedule ends; after that the mask is kept."""

    strength: float = 1e-5

    def penalty(self, layer: MaskedLinear, spec: LayerSpec, step: int) -> torch.Tensor | None:
        if step > self._steps(spec)[1]:
            return None
        values = layer.weight if layer.score is None else layer.score
        return self.strength * (values * layer.mask).abs().sum()
