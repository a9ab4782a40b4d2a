"""Topology analytics of end masks, on masks with known answers and through compare."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from minisparse.analysis import compare
from minisparse.analysis.topology import channel_share, jaccard, spatial_overlap
from minisparse.layers import receptive_field_mask
from test_analysis import write_run


def test_channel_share_counts_each_channels_connections() -> None:
    mask = np.zeros((2, 400), bool)
    mask[0, 0:30] = True        # channel 0: 30
    mask[1, 100:110] = True     # channel 1: 10
    mask[1, 350:410 - 10] = True  # channel 3: 50
    assert channel_share(mask).tolist() == pytest.approx([30 / 90, 10 / 90, 0, 50 / 90])


def test_spatial_overlap_is_one_for_the_conv_and_the_best_window_share_otherwise() -> None:
    conv = receptive_field_mask(channels=4, filters=16).numpy()
    assert spatial_overlap(conv) == pytest.approx(np.ones(1024))
    mask = np.zeros((3, 400), bool)
    mask[0, [0, 1, 11, 99]] = True          # three in one 3x3 corner window, one far away
    mask[1, [0, 100 + 22, 200 + 11]] = True  # channels differ, pixels (0,0), (2,2), (1,1): one window
    mask[2, [0, 9, 90, 99]] = True           # the four corners: one per window at best
    assert spatial_overlap(mask).tolist() == pytest.approx([3 / 4, 1.0, 1 / 4])
    assert len(spatial_overlap(np.zeros((5, 400), bool))) == 0  # units without connections are left out


def test_jaccard_of_known_masks() -> None:
    a, b = np.zeros(10, bool), np.zeros(10, bool)
    a[:4], b[2:6] = True, True
    assert jaccard(a, b) == pytest.approx(2 / 6) and jaccard(a, a) == 1.0


def test_compare_reports_channel_share_spatial_overlap_and_seed_agreement(tmp_path: Path) -> None:
    conv = receptive_field_mask(channels=4, filters=16).numpy()
    for seed in (0, 1):
        for structure in ("conv", "set"):
            run = write_run(tmp_path / "runs", structure=structure, seed=seed, final=1.0 + seed)
            end = conv.copy()
            if structure == "set":
                end &= np.arange(400) < 300  # set never reads channel 3 (brick) ...
                end[::2] &= seed == 0  # ... and seed 1 emptied every other unit: the seeds disagree
            np.savez_compressed(run / "masks" / "end.npz", structured=end)
    result = compare(tmp_path / "runs", tmp_path / "out", reps=100)
    share = result.tables["channel_share"].set_index(["structure", "channel"])["share"]
    assert share[("conv", "brick")] == pytest.approx(0.25)
    assert share[("set", "brick")] == pytest.approx(0.0) and share[("set", "paddle")] == pytest.approx(1 / 3)
    overlap = result.tables["spatial_overlap"].set_index("structure")["overlap"]
    assert overlap["conv"] == pytest.approx(1.0) and overlap["set"] == pytest.approx(1.0)
    agreement = result.tables["mask_agreement"].set_index("structure")["jaccard"]
    assert agreement["conv"] == 1.0 and agreement["set"] < 1.0
    for name in ("channel_share", "spatial_overlap", "mask_agreement"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 10_000
        assert len(pd.read_csv(tmp_path / "out" / f"{name}.csv")) == len(result.tables[name])


def test_dots_of_a_mean_that_rounds_below_its_equal_values_are_drawn() -> None:
    """Three seeds with the same overlap 0.7: their mean, 0.6999999999999998, is below their min."""
    from minisparse.analysis import figures
    seeds = np.array([0.7, 0.7, 0.7])
    assert seeds.mean() < seeds.min()
    table = pd.DataFrame({"game": ["breakout"], "weights": ["learned"], "structure": ["predictive"],
                          "overlap": [seeds.mean()], "overlap_min": [seeds.min()], "overlap_max": [seeds.max()]})
    scores = pd.DataFrame({"structure": ["predictive"], "complete": [True], "run": ["r"]})
    fig = figures.topology_dots(table, "overlap", "overlap_min", "overlap_max", "share", "title",
                                figures.Style.of(scores))
    assert fig.axes[0].collections  # the dot and its (zero-width) interval
