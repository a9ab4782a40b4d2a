"""Every unit reads every input: the unmatched reference."""
from minisparse.structure import Structure, register


@register("dense")
class Dense(Structure):
    """All inputs; ignores the budget."""

    uses_budget = False
