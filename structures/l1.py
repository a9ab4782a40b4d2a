"""L1-induced sparsity: an L1 penalty shrinks the layer while it is pruned to the budget."""
from minisparse.structure import LayerSpec, register
from minisparse.structures.prune import Prune


@register("l1")
class L1(Prune):
    """Gradual magnitude pruning's schedule plus an L1 penalty of `strength` on the present
    connections (the scores in fixed mode) until the schedule ends; after that the mask is kept.
    The engine applies the penalty as a proximal step, so weights reach exactly zero."""

    strength: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if self.strength < 0:
            raise ValueError(f"strength must be >= 0, got {self.strength}")

    def l1_strength(self, step: int, spec: LayerSpec) -> float:
        return self.strength if step <= self._steps(spec)[1] else 0.0
