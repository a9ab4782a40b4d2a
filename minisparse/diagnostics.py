"""What the sparse-training literature reads its results through, per sparse layer, on a fixed probe batch.

- dormant: the share of tau-dormant units (Sokar et al. 2023) among the units that still have a
  live input connection: a unit is dormant when its mean |activation| over the probe batch is at most
  tau (0.025) times the layer's mean. Under leaky_relu the negative side always passes slope*z, so a
  unit is scored on its positive part, max(z, 0): dormant means it never leaves the leaky regime.
- unwired: units with no live input connection at all (a pruned or rewired layer can empty a unit;
  such a unit is constant, and is counted here rather than as dormant).
- srank: the effective rank of the layer's features on the probe batch (Kumar et al. 2021): the
  fewest singular values that hold 1 - delta (delta 0.01) of their sum.
- weight: the mean |weight| of the present connections (a conv's shared kernel counts once).
- survival: of the connections grown at the previous topology update, the share still present
  after the latest one (rewiring structures; empty until two updates happened).

The probe batch is drawn once, when learning starts, from the replay (the random-policy frames)
with a generator of its own, and travels in checkpoints: every row of a run, and the same row of
a resumed run, is measured on the same states. Nothing here touches training's random streams.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minisparse.layers import MaskedLinear, SharedConv
from minisparse.network import QNetwork

PROBE_SIZE = 256
PROBE_SEED_OFFSET = 7_919  # the probe's generator: seed + this, apart from every training stream
DORMANT_TAU = 0.025
SRANK_DELTA = 0.01
COLUMNS = ("dormant", "unwired", "srank", "weight", "survival")


def probe_batch(observations: np.ndarray, seed: int) -> torch.Tensor:
    """PROBE_SIZE observations (or all, if fewer) drawn without replacement, as a bool tensor."""
    rng = np.random.default_rng(seed + PROBE_SEED_OFFSET)
    chosen = rng.choice(len(observations), size=min(PROBE_SIZE, len(observations)), replace=False)
    return torch.from_numpy(np.ascontiguousarray(observations[np.sort(chosen)])).bool()


@torch.no_grad()
def layer_diagnostics(network: QNetwork, probe: torch.Tensor, names: list[str],
                      survival: dict[str, float]) -> dict[str, dict[str, float]]:
    """COLUMNS for each of `names` (structured, hidden): measured on `probe` through `network`."""
    device = next(network.parameters()).device
    x = probe.to(device).flatten(1).float()
    measured = {}
    for name in ("structured", "hidden"):
        layer = getattr(network, name)
        pre = layer(x)
        x = network.activate(pre)
        if name in names:
            live = _live_units(layer).to(device)
            measured[name] = {"dormant": dormant_share(pre, live, network.activation),
                              "unwired": float((~live).sum()), "srank": effective_rank(x),
                              "weight": mean_present_weight(layer), "survival": survival.get(name, float("nan"))}
    return measured


def dormant_share(pre: torch.Tensor, live: torch.Tensor, activation: str) -> float:
    """Share of the live units that are tau-dormant, from pre-activations (samples x units).
    Both activations are scored on max(z, 0) (for relu that is the activation itself)."""
    if not live.any():
        return float("nan")
    scores = F.relu(pre).abs().mean(0)[live]
    mean = scores.mean()
    if mean == 0:
        return 1.0
    return float((scores / mean <= DORMANT_TAU).float().mean())


def effective_rank(features: torch.Tensor, delta: float = SRANK_DELTA) -> float:
    """srank: the fewest singular values of `features` (samples x units) holding 1 - delta of their sum."""
    values = torch.linalg.svdvals(features.double().cpu())
    total = values.sum()
    if total == 0:
        return 0.0
    return float(int(torch.searchsorted(values.cumsum(0) / total, torch.tensor(1 - delta, dtype=torch.float64))) + 1)


def mean_present_weight(layer: nn.Module) -> float:
    if isinstance(layer, SharedConv):
        return float(layer.conv.weight.abs().mean())
    if isinstance(layer, MaskedLinear):
        weight = layer.effective_weight().detach()
        return float(weight.abs()[layer.mask].mean()) if layer.mask.any() else float("nan")
    return float(layer.weight.abs().mean())


def _live_units(layer: nn.Module) -> torch.Tensor:
    """Units with at least one present input connection."""
    if isinstance(layer, MaskedLinear):
        return layer.mask.any(1).cpu()
    return torch.ones(layer.out_features, dtype=torch.bool)
