"""Figures of a comparison. Each function takes a prepared frame and returns a Figure.

Every figure carries its own explanation: a title that says what is plotted and how many
seeds, labelled axes with units, a legend, and the capacity warning when there is one.
"""
from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.ticker import EngFormatter

from minisparse.config import WEIGHT_MODES

from .capacity import is_reference
from .stats import ALL_GAMES, bootstrap_ci

RETURN = "return per episode"
_COLUMNS = 3  # panels per row


def structure_order(names: Iterable[str]) -> list[str]:
    """Dense (the unmatched reference) first, then alphabetical: the same order everywhere."""
    return sorted(set(names), key=lambda name: (not is_reference(name), name))


def structure_palette(names: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per structure, shared by every figure of a comparison."""
    order = structure_order(names)
    colours = sns.color_palette("tab10" if len(order) <= 10 else "tab20", len(order))
    return dict(zip(order, colours))


def seeds_note(counts: Iterable[int]) -> str:
    """'n=5 seeds', or 'n=3-5 seeds' when structures have different numbers of seeds."""
    counts = list(counts)
    low, high = min(counts), max(counts)
    return f"n={low} seed{'s' * (high > 1)}" if low == high else f"n={low}-{high} seeds"


def learning_curves(binned: pd.DataFrame, palette: dict, warning: str | None,
                    reps: int = 1000, seed: int = 0) -> Figure:
    """Return against frames: mean over seeds of each run's binned return, 95% bootstrap band."""
    seeds = binned.groupby(["game", "weights", "structure"])["path"].nunique()
    wrapped = {name: _wrap(name) for name in palette}  # legend labels, wrapped before the legend is laid out
    binned = binned.assign(structure=binned["structure"].map(wrapped))
    palette = {wrapped[name]: colour for name, colour in palette.items()}
    grid = sns.relplot(data=binned, x="frame", y="return", hue="structure", palette=palette,
                       hue_order=[s for s in palette if s in set(binned["structure"])],
                       row="game", col="weights", col_order=_modes(binned), kind="line",
                       errorbar=_mean_ci(reps, seed), height=3, aspect=1.5,
                       facet_kws={"sharey": "row", "sharex": True})
    grid.set_titles("{row_name}, {col_name} weights")
    grid.set_axis_labels("frames", RETURN)
    _frames_axis(grid.axes.flat)
    grid.legend.set_title("structure")
    _title(grid.figure, "Learning curves: mean return across seeds, band = 95% bootstrap CI "
                        f"({seeds_note(seeds)} per structure)", warning)
    return grid.figure


def final_performance(table: pd.DataFrame, last_fraction: float, warning: str | None) -> Figure:
    """IQM and 95% CI per structure, one panel per game, weight modes side by side."""
    games = list(dict.fromkeys(table["game"]))
    order = structure_order(table["structure"])
    lines = max(_wrap(name).count("\n") + 1 for name in order)  # the tallest label sets the row height
    fig, axes = _panels(len(games), 4.2, max(0.45, 0.17 * lines) * len(order) + 1.6, sharey=True)
    modes = _modes(table)
    for ax, game in zip(axes, games):
        panel = table[table["game"] == game]
        for offset, mode, colour in zip(np.linspace(-0.15, 0.15, len(modes)), modes, sns.color_palette("colorblind")):
            rows = panel[panel["weights"] == mode].set_index("structure").reindex(order)
            y = np.arange(len(order)) + offset
            errors = np.nan_to_num([rows["iqm"] - rows["ci_low"], rows["ci_high"] - rows["iqm"]])
            ax.errorbar(rows["iqm"], y, xerr=errors, fmt="o", color=colour, capsize=3,
                        label=f"{mode} weights")
        ax.set_title(game if game != ALL_GAMES else textwrap.fill(f"{game}: {_aggregated(panel)}", 40),
                     fontsize="medium")
        ax.set_xlabel(("IQM of return / published DQN return" if game == ALL_GAMES else f"IQM of {RETURN}")
                      + f"\n(last {last_fraction:.0%} of frames)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(order)), [_wrap(name) for name in order])
    axes[0].invert_yaxis()
    for ax in axes[::_COLUMNS]:
        ax.set_ylabel("structure")
    fig.legend(*axes[0].get_legend_handles_labels(), title="weight mode", loc="outside right center")
    _title(fig, "Final performance: interquartile mean over runs, 95% stratified bootstrap CI "
                f"({seeds_note(table.loc[table['game'] != ALL_GAMES, 'runs'])} per structure)", warning)
    return fig


def _aggregated(panel: pd.DataFrame) -> str:
    """Which games an `all games` panel aggregates (per weight mode where the modes differ)."""
    per_mode = panel.groupby("weights")["games"].first()
    if per_mode.nunique() == 1:
        return per_mode.iloc[0]
    return "; ".join(f"{mode}: {games}" for mode, games in per_mode.items())


def improvement(table: pd.DataFrame, seeds: str, warning: str | None) -> Figure:
    """Heatmap of P(row structure > column structure), one panel per weight mode."""
    modes = _modes(table)
    size = table["x"].nunique()
    fig, axes = plt.subplots(1, len(modes), figsize=(0.8 * size * len(modes) + 4, 0.6 * size + 2.8),
                             squeeze=False, layout="constrained")
    for ax, mode in zip(axes[0], modes):
        rows = table[table["weights"] == mode]
        order = structure_order(pd.concat([rows["x"], rows["y"]]))
        matrix = rows.pivot(index="x", columns="y", values="probability").reindex(index=order, columns=order)
        matrix.index, matrix.columns = [_wrap(n) for n in order], [_wrap(n) for n in order]
        sns.heatmap(matrix, ax=ax, vmin=0, vmax=1, center=0.5, cmap="vlag", annot=True, fmt=".2f",
                    square=True, cbar=ax is axes[0, -1], cbar_kws={"label": "P(row > column)"})
        ax.tick_params(axis="y", labelrotation=0)
        ax.tick_params(axis="x", labelrotation=45)
        ax.set_title(f"{mode} weights")
        ax.set_xlabel("structure Y (column)")
        ax.set_ylabel("structure X (row)")
    _title(fig, "Probability of improvement P(X > Y): chance that a run of X ends with a higher "
                f"score than a run of Y\n(ties count half; {seeds}; "
                "95% CIs in probability_of_improvement.csv)", warning)
    return fig


def interaction(ranks: pd.DataFrame, palette: dict, warning: str | None) -> Figure:
    """Slope plot of each structure's IQM under fixed and learned weights, per game.

    Crossing lines are where the ranking of structures changes between weight modes.
    """
    games = list(dict.fromkeys(ranks["game"]))
    fig, axes = _panels(len(games), 4.5, 4.8)
    for ax, game in zip(axes, games):
        panel = ranks[ranks["game"] == game]
        changed = int((panel["rank_change"] != 0).sum())
        bases = panel["structure"].str.split(" (", regex=False).str[0]
        short = {name: base if (bases == base).sum() == 1 else name  # a variant's settings only where needed
                 for name, base in zip(panel["structure"], bases)}
        for row in sorted(panel.itertuples(), key=lambda r: list(palette).index(r.structure)):
            moved = row.rank_change != 0
            ax.plot([0, 1], [row.iqm_fixed, row.iqm_learned], marker="o", color=palette[row.structure],
                    lw=2.5 if moved else 1.2, ls="-" if moved else "--", label=row.structure)
        for x, mode, side in ((0, "fixed", "right"), (1, "learned", "left")):
            # Tied structures share one label rather than printing over each other.
            for (rank, value), tied in panel.groupby([f"rank_{mode}", f"iqm_{mode}"]):
                names = ", ".join(short[name] for name in tied["structure"])
                ax.annotate(f"{rank}. {names}", (x, value),
                            xytext=(-6 if side == "right" else 6, 0), textcoords="offset points",
                            ha=side, va="center", fontsize="x-small", in_layout=False)
        ax.set_xlim(-0.8, 1.8)
        ax.set_xticks([0, 1], ["fixed weights", "learned weights"])
        ax.set_ylabel("IQM of return / published DQN return" if game == ALL_GAMES else f"IQM of {RETURN}")
        ax.set_title(f"{game}: ranking changes for {changed} of {len(panel)} structures", fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, [_wrap(label) for label in labels], title="structure\n(solid: rank changed)",
               loc="outside right center")
    _title(fig, "Fixed vs learned weights: each structure's final IQM and rank", warning)
    return fig


def connectivity(train: pd.DataFrame, palette: dict) -> Figure:
    """Density and connections changed per log interval over training, per layer and game.

    `train` holds train.csv columns per run and frame bin (stats.binned).
    """
    columns = [c for c in train.columns if c.startswith(("density_", "changed_"))]
    long = train.melt(id_vars=["game", "weights", "structure", "path", "frame"], value_vars=columns,
                      var_name="quantity", value_name="value").dropna(subset=["value"])
    long["quantity"] = long["quantity"].map(_quantity_label)
    seeds = train.groupby(["game", "weights", "structure"])["path"].nunique()
    grid = sns.relplot(data=long, x="frame", y="value", hue="structure", style="weights",
                       palette={k: v for k, v in palette.items() if k in set(long["structure"])},
                       row="quantity", col="game", kind="line", errorbar=_mean_ci(200, 0),
                       height=2.8, aspect=1.6, facet_kws={"sharey": "row"})
    grid.set_titles("{col_name}")
    grid.set_axis_labels("frames", "")
    _frames_axis(grid.axes.flat)
    for ax, quantity in zip(grid.axes[:, 0], grid.row_names):
        ax.set_ylabel(quantity)
    _title(grid.figure, f"Connectivity over training: mean across seeds ({seeds_note(seeds)})", None)
    return grid.figure


def _panels(count: int, width: float, height: float, sharey: bool = False) -> tuple[Figure, list[plt.Axes]]:
    """Panels in rows of at most three, so five games plus the aggregate stay readable."""
    rows, columns = -(-count // _COLUMNS), min(count, _COLUMNS)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns + 1.8, height * rows + 0.8),
                             sharey=sharey, squeeze=False, layout="constrained")
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write name.png and name.pdf, then free the figure."""
    paths = [out_dir / f"{name}.{suffix}" for suffix in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return paths


def _frames_axis(axes: Iterable[plt.Axes]) -> None:
    """Frames as 500k, 5M rather than a 1e6 offset."""
    for ax in axes:
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))


def _mean_ci(reps: int, seed: int) -> Callable[[pd.Series], tuple[float, float]]:
    """95% bootstrap CI of a mean, for seaborn's `errorbar`.

    seaborn's own ("ci", 95) resamples in a Python loop, one draw at a time: a minute for a
    full study's curves; scipy's vectorized bootstrap gives the same interval in seconds.
    """
    return lambda values: bootstrap_ci([values.to_numpy(float)], _mean, reps, 0.95, seed)


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return values.mean(axis=axis)


def _quantity_label(column: str) -> str:
    kind, layer = column.split("_", 1)
    return (f"density of the {layer} layer" if kind == "density"
            else f"connections changed\nin the {layer} layer\n(per log interval)")


def _modes(frame: pd.DataFrame) -> Sequence[str]:
    """Weight modes in the config's order, so panels line up across figures."""
    present = set(frame["weights"])
    return [m for m in WEIGHT_MODES if m in present] + sorted(present - set(WEIGHT_MODES))


def _title(fig: Figure, title: str, warning: str | None) -> None:
    """Suptitle, red with a second line when capacity is not matched.

    Seaborn's grids use tight_layout, which ignores suptitles: there the title goes above the
    axes and bbox_inches="tight" keeps it in the file.
    """
    if warning:
        title += f"\nWARNING: {warning}"
    colour = "firebrick" if warning else "black"
    if isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
        fig.suptitle(title, color=colour)
    else:
        fig.suptitle(title, color=colour, y=1.0, va="bottom")


def _wrap(label: str, width: int = 40) -> str:
    """Break long variant names (`random (sparsity=0.95, lr=0.001)`) after the structure name and
    between settings, so that no line is much wider than `width` characters."""
    if len(label) <= 18 or " (" not in label:
        return label
    name, settings = label.split(" (", 1)
    return name + "\n" + textwrap.fill("(" + settings, width, break_long_words=False)
