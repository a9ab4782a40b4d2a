"""Pictures of the structured layer's connectivity over the 10x10 MinAtar input.

A mask has one row per hidden unit and C*100 columns (input index c*100 + y*10 + x); the
1024 hidden units sit on the 16 x 8 x 8 grid of MinAtar's convolution (unit f*64 + y*8 + x).
Each picture shows, one row per input channel, the receptive fields of a few units and how
many units read each input pixel, so locality, coverage and holes are visible at a glance.
"""
from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure, SubFigure
from matplotlib.patches import Rectangle

from .load import Run, load_mask, mask_snapshots

GRID = (16, 8, 8)  # filters, rows, columns of the hidden units (MinAtar's 3x3 valid conv)
GRID_UNITS = 16 * 8 * 8
# Units drawn by default: spread over filters and over the grid (corner, centre, edges).
DEFAULT_GRID_UNITS = ((0, 0, 0), (5, 3, 4), (10, 7, 2), (15, 4, 7))


def draw_mask(mask: np.ndarray, channels: int, title: str, out_path: str | os.PathLike[str],
              units: Sequence[int] | None = None, channel_names: Sequence[str] | None = None) -> Path:
    """Draw one connectivity mask to out_path (format from its suffix: .png, .pdf, .svg).

    `units` picks the hidden units whose receptive fields are drawn (default: four spread
    over the 16x8x8 grid); `channel_names` label the rows (default: channel 0, 1, ...).
    """
    mask = _checked(mask, channels)
    units = default_units(mask.shape[0]) if units is None else list(units)
    fig = Figure(figsize=_size(channels, len(units)), layout="constrained")
    fig.suptitle(title)
    _draw(fig, mask, channels, units, caption=None, names=channel_names)
    return _save(fig, [Path(out_path)])[0]


def draw_run_masks(run_dir: str | os.PathLike[str] | zipfile.Path, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw a run's start and end masks side by side, as <run>-masks.png and .pdf in out_dir.

    `run_dir` is a run's folder, or one inside an export (analysis.load.find_runs). For an
    unfinished run the latest masks/frame_<N>.npz stands in for the end mask.
    """
    run_dir = run_dir if isinstance(run_dir, zipfile.Path) else Path(run_dir)
    out_dir = Path(out_dir)
    start = load_mask(run_dir / "masks" / "start.npz")
    channels = start.shape[-1] // 100
    start = _checked(start, channels)
    end_file, end_name = _end_file(run_dir)
    units = default_units(start.shape[0])
    panels = [(start, f"start: {start.sum():,} connections")]
    if end_file is not None:
        end = _checked(load_mask(end_file), channels)
        added, removed = int((end & ~start).sum()), int((start & ~end).sum())
        panels.append((end, f"{end_name}: {end.sum():,} connections\n"
                            f"(net change from start: {added:,} added, {removed:,} removed)"))
    width, height = _size(channels, len(units))
    fig = Figure(figsize=(width * len(panels), height + 0.4), layout="constrained")
    fig.suptitle(f"Structured-layer connectivity of {run_dir.name}")
    names = _run_channel_names(run_dir)
    most = max(1, *(int(readers_per_pixel(mask, channels).max()) for mask, _ in panels))
    for subfig, (mask, caption) in zip(np.atleast_1d(fig.subfigures(1, len(panels))), panels):
        _draw(subfig, mask, channels, units, caption, names, most)
    return _save(fig, [out_dir / f"{run_dir.name}-masks.{suffix}" for suffix in ("png", "pdf")])


def _run_channel_names(run_dir: Run) -> list[str] | None:
    """The channel names of the run's game (from its config.json), None where that cannot be read."""
    from minisparse.env import channel_names

    try:
        return channel_names(json.loads((run_dir / "config.json").read_text())["config"]["game"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def receptive_field(mask: np.ndarray, unit: int, channels: int) -> np.ndarray:
    """The (channels, 10, 10) inputs that one hidden unit reads."""
    return _checked(mask, channels)[unit].reshape(channels, 10, 10)


def readers_per_pixel(mask: np.ndarray, channels: int) -> np.ndarray:
    """How many hidden units read each input pixel, shape (channels, 10, 10): coverage and holes."""
    mask = _checked(mask, channels)
    return mask.reshape(mask.shape[0], channels, 10, 10).sum(axis=0)


def default_units(count: int) -> list[int]:
    """Units spread over the 16x8x8 grid, or evenly over the units for another layer size."""
    if count == GRID_UNITS:
        return [int(np.ravel_multi_index(unit, GRID)) for unit in DEFAULT_GRID_UNITS]
    return sorted({int(u) for u in np.linspace(0, count - 1, 4)})


def _draw(fig: Figure | SubFigure, mask: np.ndarray, channels: int, units: list[int],
          caption: str | None, names: Sequence[str] | None = None, most_readers: int | None = None) -> None:
    """One mask's panels; `most_readers` tops the colour scale (shared by a run's start and end)."""
    if caption:
        fig.suptitle(caption, fontsize="medium")
    axes = fig.subplots(channels, len(units) + 1, squeeze=False)
    on_grid = mask.shape[0] == GRID_UNITS  # units have positions only on the conv's grid
    readers = readers_per_pixel(mask, channels)
    fields = {unit: receptive_field(mask, unit, channels) for unit in units}
    for c in range(channels):
        for column, unit in enumerate(units):
            ax = axes[c, column]
            ax.imshow(fields[unit][c], cmap="Greys", vmin=0, vmax=1)
            if on_grid:
                _, y, x = np.unravel_index(unit, GRID)
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), 3, 3, fill=False, edgecolor="tab:red"))
            if c == 0:
                ax.set_title(_unit_name(unit, mask.shape[0]), fontsize="small")
        image = axes[c, -1].imshow(readers[c], cmap="viridis", vmin=0, vmax=most_readers or max(1, readers.max()))
        axes[c, 0].set_ylabel(names[c] if names else f"channel {c}", fontsize="small")
    axes[0, -1].set_title("units reading\neach pixel", fontsize="small")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[:, -1], shrink=0.6, label="hidden units")
    fig.supxlabel("black: inputs the unit reads (10x10 pixels per channel)"
                  + ("; red: the 3x3 window a conv unit there reads" if on_grid else ""), fontsize="x-small")


def _unit_name(unit: int, count: int) -> str:
    if count == GRID_UNITS:
        f, y, x = np.unravel_index(unit, GRID)
        return f"unit {unit}\nfilter {f}, y{y} x{x}"
    return f"unit {unit}"


def _end_file(run_dir: Run) -> tuple[Run | None, str]:
    end = run_dir / "masks" / "end.npz"
    if end.is_file():
        return end, "end"
    snapshots = mask_snapshots(run_dir)
    if snapshots:
        frame = snapshots[-1].name.removeprefix("frame_").removesuffix(".npz")
        return snapshots[-1], f"frame {frame} (run unfinished)"
    return None, ""


def _checked(mask: np.ndarray, channels: int) -> np.ndarray:
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2 or mask.shape[1] != channels * 100:
        raise ValueError(f"mask has shape {mask.shape}; expected (units, {channels * 100}) "
                         f"for {channels} channels of 10x10 inputs")
    return mask


def _size(channels: int, units: int) -> tuple[float, float]:
    return 1.2 * units + 2.2, 1.1 * channels + 1.3


def _save(fig: Figure, paths: list[Path]) -> list[Path]:
    """Figures built without pyplot need no backend and no closing (notebooks keep theirs)."""
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_figure(fig, path, dpi=120)
    return paths


def write_figure(fig: Figure, path: Path, **options: object) -> None:
    """savefig without the PDF's creation date: a report drawn again from the same runs is the same
    files, so a shipped report changes in git only where its content does."""
    fig.savefig(path, metadata={"CreationDate": None} if path.suffix == ".pdf" else None, **options)
