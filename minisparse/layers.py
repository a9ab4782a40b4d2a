"""Layers whose connectivity is explicit: every layer can say which inputs each unit reads.

Masks are buffers, so state_dict, checkpoints, deep copies and target-network syncs carry
them with no extra code. Only the sparsity engine changes a mask or the weights it hides.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MaskedLinear(nn.Module):
    """A linear layer that keeps only the connections in `mask` (out x in, bool).

    Without scores the weight itself is zero off the mask, so the forward pass is a plain
    matrix product and `weight.grad` is the dense gradient (what RigL grows by).
    With scores (connectivity learned through gates) the effective weight is
    weight * mask, and the straight-through term hands the gate gradient to the scores.
    """

    def __init__(self, mask: torch.Tensor, scored: bool = False):
        super().__init__()
        out_features, in_features = mask.shape
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.register_buffer("mask", mask.clone().bool())
        self.score = nn.Parameter(torch.empty(out_features, in_features)) if scored else None

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Uniform(+-1/sqrt(k)) per unit, k its real fan-in (PyTorch's default for dense k)."""
        fan_in = self.mask.sum(1, keepdim=True).clamp(min=1).float()
        bound = 1.0 / fan_in.sqrt()
        with torch.no_grad():
            self.weight.copy_((torch.rand(self.weight.shape, generator=generator) * 2 - 1) * bound)
            self.bias.copy_((torch.rand(self.bias.shape, generator=generator) * 2 - 1) * bound.squeeze(1))
            if self.score is None:
                self.weight.mul_(self.mask)
            else:
                self.score.copy_(self.weight.abs())

    def effective_weight(self) -> torch.Tensor:
        if self.score is None:
            return self.weight
        gate = self.mask.to(self.score.dtype)
        return self.weight * (gate + (self.score - self.score.detach()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def connectivity(self) -> torch.Tensor:
        return self.mask

    def unique_weights(self) -> int:
        return int(self.mask.sum())

    def extra_repr(self) -> str:
        density = self.mask.float().mean().item()
        return f"in={self.in_features}, out={self.out_features}, density={density:.4f}, scored={self.score is not None}"


class SharedConv(nn.Module):
    """A 3x3 valid convolution over (C, 10, 10) that reads and writes flat vectors.

    Units are ordered filter-major on the output grid (f*64 + y*8 + x for 16 x 8 x 8),
    the order every other structure's hidden units follow.
    """

    def __init__(self, channels: int, filters: int = 16, kernel: int = 3, size: int = 10):
        super().__init__()
        self.channels, self.size, self.kernel = channels, size, kernel
        self.conv = nn.Conv2d(channels, filters, kernel)
        self.in_features = channels * size * size
        self.out_features = filters * (size - kernel + 1) ** 2

    def reset_parameters(self, generator: torch.Generator) -> None:
        fan_in = self.channels * self.kernel ** 2
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            for p in (self.conv.weight, self.conv.bias):
                p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.view(-1, self.channels, self.size, self.size)).flatten(1)

    def connectivity(self) -> torch.Tensor:
        return receptive_field_mask(self.channels, self.conv.out_channels, self.kernel, self.size)

    def unique_weights(self) -> int:
        return self.conv.weight.numel()


def receptive_field_mask(channels: int, filters: int, kernel: int = 3, size: int = 10) -> torch.Tensor:
    """(filters * out^2, channels * size^2) bool: unit (f, y, x) reads the kernel window at (y, x)."""
    out = size - kernel + 1
    mask = torch.zeros(filters, out, out, channels, size, size, dtype=torch.bool)
    for y in range(out):
        for x in range(out):
            mask[:, y, x, :, y:y + kernel, x:x + kernel] = True
    return mask.reshape(filters * out * out, channels * size * size)


def layer_capacity(layer: nn.Module) -> dict[str, float]:
    """Units, inputs, connections, unique trainable parameters, density and forward FLOPs per sample."""
    if isinstance(layer, nn.Linear):
        connections = unique = layer.weight.numel()
        units, inputs = layer.out_features, layer.in_features
    else:
        connections = int(layer.connectivity().sum())
        unique = layer.unique_weights()
        units, inputs = layer.out_features, layer.in_features
    return {"units": units, "inputs": inputs, "connections": connections,
            "parameters": unique + units, "density": connections / (units * inputs),
            "flops": 2 * connections}
