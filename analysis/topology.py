"""What structures that learn or pick their connections ended up with, read from the end masks.

- channel share: each input channel's share of the final connections, beside 1/C, the share a
  structure blind to channels gives it (every channel has 100 of the C*100 inputs). MinAtar's
  channels are object types (paddle, ball, trail, brick, ...), so this says which objects the
  layer chose to read.
- spatial overlap: for each unit, the share of its connections inside the best-placed 3x3 window
  (over all channels: a conv unit's receptive field); the mean over units says how "spatial" the
  structure became (conv and local: 1; random at the default budget: about 0.2).
- mask agreement: the Jaccard similarity of the final masks of every two seeds of one cell (same
  game, structure and weight mode): whether seeds converge on one structure.

Every run with an end mask is measured, static structures included: they are the references.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from minisparse.env import channel_names

from .load import Run, load_mask, run_path

SIZE, WINDOW = 10, 3


def topology_tables(runs: list[Run], scores: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """channel_share, spatial_overlap and mask_agreement for the runs in `scores` (run_scores rows:
    game, weights, structure label, seed, path) that have masks/end.npz."""
    by_path = {run_path(run): run for run in runs}
    ends = {}
    for row in scores.itertuples():
        end = by_path[row.path] / "masks" / "end.npz"
        if end.is_file():
            ends[row.path] = load_mask(end)
    measured = scores[scores["path"].isin(ends)]
    keys = ["game", "weights", "structure"]
    names_of = {game: channel_names(game) for game in measured["game"].unique()}
    shares, overlaps = [], []
    for row in measured.itertuples():
        mask = ends[row.path]
        channels = mask.shape[1] // (SIZE * SIZE)
        names = names_of[row.game]
        for channel, share in enumerate(channel_share(mask)):
            shares.append({"game": row.game, "weights": row.weights, "structure": row.structure, "seed": row.seed,
                           "channel": names[channel], "share": share, "uniform": 1 / channels})
        overlaps.append({"game": row.game, "weights": row.weights, "structure": row.structure, "seed": row.seed,
                         "overlap": float(spatial_overlap(mask).mean())})
    agreement = []
    for (game, weights, structure), cell in measured.groupby(keys):
        pairs = [jaccard(ends[a], ends[b]) for a, b in itertools.combinations(cell["path"], 2)]
        if pairs:
            agreement.append({"game": game, "weights": weights, "structure": structure, "seeds": len(cell),
                              "jaccard": float(np.mean(pairs)), "jaccard_min": float(np.min(pairs)),
                              "jaccard_max": float(np.max(pairs))})
    share = pd.DataFrame(shares)
    if not share.empty:
        share = share.groupby([*keys, "channel", "uniform"], as_index=False, sort=False).agg(
            share=("share", "mean"), runs=("seed", "size"))
    overlap = pd.DataFrame(overlaps)
    if not overlap.empty:
        overlap = overlap.groupby(keys, as_index=False).agg(overlap=("overlap", "mean"), runs=("seed", "size"),
                                                            overlap_min=("overlap", "min"), overlap_max=("overlap", "max"))
    return {"channel_share": share, "spatial_overlap": overlap, "mask_agreement": pd.DataFrame(agreement)}


def channel_share(mask: np.ndarray) -> np.ndarray:
    """Each channel's share of the connections of a (units, C*100) mask."""
    per_channel = mask.reshape(mask.shape[0], -1, SIZE * SIZE).sum(axis=(0, 2)).astype(float)
    return per_channel / max(per_channel.sum(), 1)


def spatial_overlap(mask: np.ndarray) -> np.ndarray:
    """Per unit with connections: the share of them inside its best 3x3 window (all channels)."""
    units = mask.shape[0]
    pixels = mask.reshape(units, -1, SIZE, SIZE).sum(axis=1).astype(float)  # connections per pixel
    padded = np.pad(pixels.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    windows = (padded[:, WINDOW:, WINDOW:] - padded[:, :-WINDOW, WINDOW:]
               - padded[:, WINDOW:, :-WINDOW] + padded[:, :-WINDOW, :-WINDOW])  # (units, 8, 8) sums
    total = pixels.sum(axis=(1, 2))
    wired = total > 0
    return windows.reshape(units, -1).max(1)[wired] / total[wired]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
