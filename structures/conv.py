"""MinAtar's reference layer: 16 shared 3x3 filters over all channels."""
import torch
from torch import nn

from minisparse.layers import SharedConv
from minisparse.structure import LayerSpec, Structure, register


@register("conv")
class Conv(Structure):
    """3x3 receptive fields, weights shared across positions; defines the matched budget."""

    image_only = True
    uses_budget = False

    def build(self, spec: LayerSpec, generator: torch.Generator) -> nn.Module:
        return SharedConv(spec.channels)
