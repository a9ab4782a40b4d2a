"""Mask arithmetic shared by structures: choosing, dropping and growing connections."""
from __future__ import annotations

import math

import torch


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest scores over the whole tensor."""
    flat = torch.zeros(scores.numel(), dtype=torch.bool)
    flat[scores.flatten().topk(k).indices] = True
    return flat.view(scores.shape)


def top_k_ties_at_random(scores: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """`top_k`, choosing at random among equal scores. torch's topk chooses among them by position, so
    when many scores tie (an L1 penalty leaves most of them exactly zero) it keeps whole blocks of
    units fully connected and leaves the others with no input at all."""
    order = torch.randperm(scores.numel(), generator=generator)
    flat = torch.zeros(scores.numel(), dtype=torch.bool)
    flat[order[scores.flatten()[order].topk(k).indices]] = True
    return flat.view(scores.shape)


def top_k_per_row(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest scores in every row: an exact per-unit fan-in."""
    return torch.zeros(scores.shape, dtype=torch.bool).scatter_(1, scores.topk(k, dim=1).indices, True)


def random_mask(shape: tuple[int, int], k: int, generator: torch.Generator, per_row: bool) -> torch.Tensor:
    """k random inputs per unit (per_row) or k random connections in the whole layer."""
    keys = torch.rand(shape, generator=generator)
    return top_k_per_row(keys, k) if per_row else top_k(keys, k * shape[0])


def drop_and_grow(mask: torch.Tensor, importance: torch.Tensor, growth: torch.Tensor, n: int) -> torch.Tensor:
    """Drop the n least important present connections, then grow the n absent ones with most growth.

    Just-dropped connections may be grown again, as in RigL. The number of connections is unchanged.
    """
    if n == 0:
        return mask
    flat = mask.flatten().clone()
    weakest = importance.flatten().masked_fill(~flat, math.inf).topk(n, largest=False).indices
    flat[weakest] = False
    strongest = growth.flatten().masked_fill(flat, -math.inf).topk(n).indices
    flat[strongest] = True
    return flat.view(mask.shape)


def cosine_decay(initial: float, step: int, end_step: int) -> float:
    """initial at step 0, falling to 0 at end_step along half a cosine (RigL's drop-fraction schedule)."""
    return initial * 0.5 * (1 + math.cos(math.pi * min(step, end_step) / max(end_step, 1)))


def cubic_schedule(dense: int, final: int, progress: float) -> int:
    """Connections kept under gradual magnitude pruning (Zhu & Gupta 2017) at progress in [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    return round(final + (dense - final) * (1.0 - progress) ** 3)
