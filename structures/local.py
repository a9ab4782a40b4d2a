"""MinAtar's 3x3 receptive fields over all channels, without weight sharing."""
import torch

from minisparse.masks import top_k_per_row
from minisparse.structure import LayerSpec, Structure, register

GRID, SIZE = 8, 10  # the 8 x 8 positions of a 3x3 valid convolution over 10 x 10


@register("local")
class Local(Structure):
    """Each unit reads the inputs nearest its grid position: exactly the 3x3 window at the conv's
    budget (9*C), the nearest `fan_in` inputs (ties broken at random) at any other budget."""

    image_only = True

    def initial_mask(self, spec: LayerSpec, generator: torch.Generator) -> torch.Tensor:
        if spec.out_features % (GRID * GRID):
            raise ValueError(f"needs hidden units in multiples of {GRID * GRID}, got {spec.out_features}")
        centre = torch.arange(GRID, dtype=torch.float) + 1.0  # a window's centre pixel
        pixel = torch.arange(SIZE, dtype=torch.float)
        dy = (centre[:, None, None, None] - pixel[None, None, :, None]) ** 2
        dx = (centre[None, :, None, None] - pixel[None, None, None, :]) ** 2
        distance = (dy + dx).sqrt().reshape(GRID * GRID, 1, SIZE * SIZE)
        distance = distance.expand(-1, spec.channels, -1).reshape(GRID * GRID, spec.in_features)
        filters = spec.out_features // (GRID * GRID)
        tiebreak = torch.rand(spec.out_features, spec.in_features, generator=generator) * 1e-3
        return top_k_per_row(-(distance.repeat(filters, 1) + tiebreak), spec.fan_in)
