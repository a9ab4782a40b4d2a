"""Tests of the mask pictures: what they count, and that each drawing is written."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from minisparse.analysis import draw_mask, draw_run_masks
from minisparse.analysis.pictures import default_units, readers_per_pixel, receptive_field

CHANNELS = 4


def conv_mask(channels: int = CHANNELS) -> np.ndarray:
    """MinAtar's 3x3 valid convolution as a mask: unit (f, y, x) reads rows y..y+2, columns x..x+2."""
    mask = np.zeros((1024, channels * 100), bool)
    for f in range(16):
        for y in range(8):
            for x in range(8):
                for c in range(channels):
                    for dy in range(3):
                        for dx in range(3):
                            mask[f * 64 + y * 8 + x, c * 100 + (y + dy) * 10 + (x + dx)] = True
    return mask


def test_receptive_field_follows_the_input_and_unit_indexing() -> None:
    field = receptive_field(conv_mask(), unit=5 * 64 + 3 * 8 + 4, channels=CHANNELS)
    expected = np.zeros((CHANNELS, 10, 10), bool)
    expected[:, 3:6, 4:7] = True
    assert np.array_equal(field, expected)


def test_readers_per_pixel_counts_units_by_brute_force() -> None:
    mask = conv_mask()
    counts = readers_per_pixel(mask, CHANNELS)
    for c, y, x in [(0, 0, 0), (1, 5, 5), (3, 9, 4), (2, 1, 8)]:
        assert counts[c, y, x] == sum(mask[u, c * 100 + y * 10 + x] for u in range(1024))
    assert counts[0, 0, 0] == 16 and counts[2, 5, 5] == 16 * 9  # corner: one window; interior: nine


def test_draw_mask_writes_the_picture_and_rejects_a_wrong_shape(tmp_path: Path) -> None:
    png = draw_mask(conv_mask(), CHANNELS, "conv on breakout", tmp_path / "conv.png")
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 400 and image[..., :3].std() > 0.1
    assert draw_mask(conv_mask(), CHANNELS, "conv", tmp_path / "conv.pdf").read_bytes()[:5] == b"%PDF-"
    with pytest.raises(ValueError, match=r"expected \(units, 700\)"):
        draw_mask(conv_mask(), 7, "wrong channels", tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_default_units_spread_over_the_grid() -> None:
    units = default_units(1024)
    assert len(units) == 4 and len(set(u // 64 for u in units)) == 4  # four different filters
    assert default_units(128) == [0, 42, 84, 127]


def _run(tmp_path: Path, end: bool, snapshot: bool) -> Path:
    run = tmp_path / "breakout-set-learned-s0-abc"
    (run / "masks").mkdir(parents=True)
    start = conv_mask()
    np.savez_compressed(run / "masks" / "start.npz", structured=start)
    if snapshot:
        np.savez_compressed(run / "masks" / "frame_2000.npz", structured=np.roll(start, 1, axis=1))
    if end:
        np.savez_compressed(run / "masks" / "end.npz", structured=np.roll(start, 2, axis=1))
    return run


@pytest.mark.parametrize("end, snapshot, panels", [(True, False, 2), (False, True, 2), (False, False, 1)])
def test_draw_run_masks_puts_start_and_end_side_by_side(tmp_path: Path, end: bool, snapshot: bool,
                                                        panels: int) -> None:
    single = matplotlib.image.imread(draw_mask(conv_mask(), CHANNELS, "one", tmp_path / "one.png"))
    files = draw_run_masks(_run(tmp_path, end, snapshot), tmp_path / "out")
    assert [f.name for f in files] == ["breakout-set-learned-s0-abc-masks.png", "breakout-set-learned-s0-abc-masks.pdf"]
    width = matplotlib.image.imread(files[0]).shape[1]
    assert width == pytest.approx(panels * single.shape[1], rel=0.1)


def test_draw_run_masks_needs_a_start_mask(tmp_path: Path) -> None:
    (tmp_path / "run" / "masks").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="start.npz"):
        draw_run_masks(tmp_path / "run", tmp_path / "out")


def test_run_pictures_name_the_games_channels_and_share_one_colour_scale(tmp_path: Path, monkeypatch) -> None:
    from minisparse.analysis import pictures

    run = _run(tmp_path, end=False, snapshot=False)
    (run / "config.json").write_text(json.dumps({"config": {"game": "breakout"}}))
    thinned = conv_mask()
    thinned[::2] = False  # half the units gone: the end reads each pixel half as often
    np.savez_compressed(run / "masks" / "end.npz", structured=thinned)
    drawn = []
    monkeypatch.setattr(pictures, "_save", lambda fig, paths: drawn.append(fig) or paths)
    draw_run_masks(run, tmp_path / "out")
    axes = [ax for panel in drawn[0].subfigs for ax in panel.axes]
    assert [ax.get_ylabel() for ax in axes if ax.get_ylabel() and ax.get_ylabel() != "hidden units"] == \
        ["paddle", "ball", "trail", "brick"] * 2
    scales = {image.get_clim() for ax in axes for image in ax.images if image.get_cmap().name == "viridis"}
    assert scales == {(0, readers_per_pixel(conv_mask(), CHANNELS).max())}
    assert "net change from start: 0 added, 18,432 removed" in drawn[0].subfigs[1]._suptitle.get_text()
