"""Connections at random positions, at the budget."""
import torch

from minisparse.structure import LayerSpec, Structure, register


@register("random")
class Random(Structure):
    """per_unit: every unit reads exactly `fan_in` inputs; otherwise one global budget."""

    per_unit: bool = True

    def initial_mask(self, spec: LayerSpec, generator: torch.Generator) -> torch.Tensor:
        shape = (spec.out_features, spec.in_features)
        if self.per_unit:
            keys = torch.rand(shape, generator=generator)
            chosen = keys.topk(spec.fan_in, dim=1).indices
            return torch.zeros(shape, dtype=torch.bool).scatter_(1, chosen, True)
        chosen = torch.randperm(shape[0] * shape[1], generator=generator)[:spec.connections]
        return torch.zeros(shape[0] * shape[1], dtype=torch.bool).index_fill_(0, chosen, True).view(shape)
