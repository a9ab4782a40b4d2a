"""Figures of a comparison. Each function takes a prepared frame and returns a Figure.

Every figure carries its own explanation: a title that says what is plotted and how many
seeds, labelled axes with units, a legend, and the capacity warning when there is one.
"""
from __future__ import annotations

import string
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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
from .pictures import write_figure
from .stats import ALL_GAMES, bootstrap_ci

RETURN = "return per episode"
_COLUMNS = 3  # panels per row
_TITLE_CHARS_PER_INCH = 11  # a suptitle's characters per inch, measured at matplotlib's default size


def structure_order(names: Iterable[str]) -> list[str]:
    """Dense (the unmatched reference) first, then alphabetical: the same order everywhere."""
    return sorted(set(names), key=lambda name: (not is_reference(name), name))


def structure_palette(names: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per structure, shared by every figure of a comparison."""
    order = structure_order(names)
    colours = sns.color_palette("tab10" if len(order) <= 10 else "tab20", len(order))
    return dict(zip(order, colours))


def mode_colours() -> dict[str, tuple[float, float, float]]:
    """One colour per weight mode, the same in every figure."""
    return dict(zip(WEIGHT_MODES, sns.color_palette("colorblind", len(WEIGHT_MODES))))


def short_labels(names: Iterable[str]) -> dict[str, str]:
    """Figure labels: a structure's name, or for the variants of one (`random (activation=leaky_relu,
    lr=0.001)`) its name and a letter (`random a`), spelled out in the figure's key."""
    order = structure_order(names)
    bases = [_base(name) for name in order]
    labels = {}
    for name, base in zip(order, bases):
        variants = [other for other, b in zip(order, bases) if b == base]
        labels[name] = name if len(variants) == 1 and name == base else f"{base} {_letter(variants.index(name))}"
    return labels


@dataclass(frozen=True)
class Style:
    """What the figures of one comparison share: each structure's colour and label, and which runs
    are unfinished (drawn hollow or dashed, and named)."""

    colours: dict[str, tuple[float, float, float]]
    labels: dict[str, str]
    unfinished: tuple[str, ...] = ()

    @classmethod
    def of(cls, scores: pd.DataFrame) -> "Style":
        """From run_scores: structures (variants included) and the runs' completion."""
        names = scores["structure"]
        return cls(structure_palette(names), short_labels(names),
                   tuple(sorted(scores.loc[~scores["complete"].astype(bool), "run"])))

    def key(self, names: Iterable[str]) -> str:
        """What the short labels among `names` stand for, one per line ('' when none is short)."""
        return "\n".join(f"{self.labels[name]} = {name}" for name in structure_order(names)
                          if self.labels[name] != name)

    def unfinished_note(self, what: str) -> str:
        """A caption line naming the unfinished runs and how `what` shows them ('' when all are complete)."""
        if not self.unfinished:
            return ""
        names = ", ".join(self.unfinished[:4]) + (f" and {len(self.unfinished) - 4} more" if len(self.unfinished) > 4 else "")
        return f"{what}: {len(self.unfinished)} unfinished run{'s' * (len(self.unfinished) > 1)} ({names})"


def seeds_note(counts: Iterable[int]) -> str:
    """'n=5 seeds', or 'n=3-5 seeds' when structures have different numbers of seeds."""
    counts = list(counts)
    low, high = min(counts), max(counts)
    return f"n={low} seed{'s' * (high > 1)}" if low == high else f"n={low}-{high} seeds"


def learning_curves(binned: pd.DataFrame, style: Style, warning: str | None,
                    reps: int = 1000, seed: int = 0, greedy: bool = False) -> Figure:
    """Return against frames: mean over seeds of each run's binned training return (or, `greedy`, of
    its greedy evaluations: stats.eval_curves), 95% bootstrap band.

    One panel per game and weight mode that has runs, and per structure too when its runs come in variants
    (a study's [vary] axes), so that a panel holds the variants of one structure; each curve stops where
    its runs' data stops (stats.binned), and unfinished runs get their own dashed curve.
    """
    seeds = binned.groupby(["game", "weights", "structure"])["path"].nunique()
    base = binned["structure"].str.split(" (", n=1, regex=False).str[0]
    panel = binned["game"] + ", " + binned["weights"] + " weights"
    if (base != binned["structure"]).any():
        panel = panel + ", " + base
    names = sorted(set(panel))
    panels = [name for game, mode in _game_modes(binned) for name in names
              if name == f"{game}, {mode} weights" or name.startswith(f"{game}, {mode} weights, ")]
    runs = binned["path"].str.rstrip("/").str.rsplit("/", n=1).str[-1]
    binned = binned.assign(structure=binned["structure"].map(style.labels), panel=panel,
                           runs=np.where(runs.isin(style.unfinished), "unfinished", "complete"))
    palette = {style.labels[name]: colour for name, colour in style.colours.items()}
    dashed = bool(style.unfinished)
    grid = sns.relplot(data=binned, x="frame", y="return", hue="structure", palette=palette,
                       hue_order=[s for s in palette if s in set(binned["structure"])],
                       style="runs" if dashed else None, style_order=["complete", "unfinished"] if dashed else None,
                       dashes={"complete": "", "unfinished": (4, 2)} if dashed else True,
                       col="panel", col_order=panels, col_wrap=min(len(panels), max(2, len(_modes(binned)))),
                       kind="line", errorbar=_mean_ci(reps, seed), height=3, aspect=1.5,
                       facet_kws={"sharey": False, "sharex": True})
    grid.set_titles("{col_name}")
    grid.set_axis_labels("frames", RETURN)
    _frames_axis(grid.axes.flat)
    grid.legend.set_title("")
    what = "greedy evaluation return (mean of each evaluation's episodes)" if greedy else "training return"
    _title(grid.figure, f"Learning curves: {what}, mean across seeds, band = 95% bootstrap CI "
                        f"({seeds_note(seeds)} per structure)", warning)
    _caption(grid.figure, style.key(seeds.index.get_level_values("structure")),
             style.unfinished_note("dashed"))
    return grid.figure


def final_performance(table: pd.DataFrame, last_fraction: float, warning: str | None, style: Style,
                      greedy: bool = False) -> Figure:
    """IQM and 95% CI per structure, one panel per game, weight modes side by side in their colours:
    of training returns in the last `last_fraction` of frames, or (`greedy`) of final evaluations.

    A hollow marker is a cell with unfinished runs, whose scores use the frames reached so far.
    """
    scored = "final greedy evaluation" if greedy else f"last {last_fraction:.0%} of frames"
    fig, axes, games = _dot_panels(table, "iqm", "ci_low", "ci_high", style)
    for ax, game in zip(axes, games):
        panel = table[table["game"] == game]
        ax.set_title(game if game != ALL_GAMES else textwrap.fill(f"{game}: {_aggregated(panel)}", 40),
                     fontsize="medium")
        ax.set_xlabel(("IQM of return / published DQN return" if game == ALL_GAMES else f"IQM of {RETURN}")
                      + f"\n({scored})")
    for ax in axes[::_COLUMNS]:
        ax.set_ylabel("structure")
    _title(fig, f"Final performance ({scored}): interquartile mean over runs, 95% stratified bootstrap CI "
                f"({seeds_note(table.loc[table['game'] != ALL_GAMES, 'runs'])} per structure)", warning)
    _caption(fig, style.key(table["structure"]), style.unfinished_note("hollow markers"))
    return fig


def _aggregated(panel: pd.DataFrame) -> str:
    """Which games an `all games` panel aggregates (per weight mode where the modes differ)."""
    per_mode = panel.groupby("weights")["games"].first()
    if per_mode.nunique() == 1:
        return per_mode.iloc[0]
    return "; ".join(f"{mode}: {games}" for mode, games in per_mode.items())


def improvement(table: pd.DataFrame, seeds: str, warning: str | None, style: Style) -> Figure:
    """Heatmap of P(row structure > column structure), one panel per weight mode."""
    modes = _modes(table)
    size = table["x"].nunique()
    fig, axes = plt.subplots(1, len(modes), figsize=(0.7 * size * len(modes) + 4, 0.55 * size + 2.8),
                             squeeze=False, layout="constrained")
    for ax, mode in zip(axes[0], modes):
        rows = table[table["weights"] == mode]
        order = structure_order(pd.concat([rows["x"], rows["y"]]))
        matrix = rows.pivot(index="x", columns="y", values="probability").reindex(index=order, columns=order)
        significant = rows.pivot(index="x", columns="y", values="p_value").reindex(index=order, columns=order) <= 0.05
        annotations = matrix.map("{:.2f}".format) + significant.map({True: "*", False: ""}.get)
        matrix.index = matrix.columns = [style.labels[n] for n in order]
        sns.heatmap(matrix, ax=ax, vmin=0, vmax=1, center=0.5, cmap="vlag",
                    annot=annotations.to_numpy() if size <= 12 else False, fmt="",
                    square=True, cbar=ax is axes[0, -1], cbar_kws={"label": "P(row > column)"})
        ax.tick_params(axis="y", labelrotation=0)
        ax.tick_params(axis="x", labelrotation=90)
        ax.set_title(f"{mode} weights")
        ax.set_xlabel("structure Y (column)")
        ax.set_ylabel("structure X (row)")
    _title(fig, "Probability of improvement P(X > Y): chance that a run of X ends with a higher "
                f"score than a run of Y\n(ties count half; * one-sided permutation p <= 0.05; {seeds}; "
                "95% CIs in probability_of_improvement.csv)", warning)
    _caption(fig, style.key(table["x"]))
    return fig


def interaction(ranks: pd.DataFrame, style: Style, warning: str | None) -> Figure:
    """Slope plot of each structure's IQM under fixed and learned weights, per game.

    Crossing lines are where the ranking of structures changes between weight modes.
    """
    games = list(dict.fromkeys(ranks["game"]))
    fig, axes = _panels(len(games), 4.5, max(4.8, 0.22 * ranks.groupby("game").size().max() + 2))
    order = list(style.colours)
    for ax, game in zip(axes, games):
        panel = ranks[ranks["game"] == game]
        changed = int((panel["rank_change"] != 0).sum())
        for row in sorted(panel.itertuples(), key=lambda r: order.index(r.structure)):
            moved = row.rank_change != 0
            ax.plot([0, 1], [row.iqm_fixed, row.iqm_learned], marker="o", color=style.colours[row.structure],
                    lw=2.5 if moved else 1.2, ls="-" if moved else "--", label=style.labels[row.structure])
        low, high = panel[["iqm_fixed", "iqm_learned"]].stack().agg(["min", "max"])
        gap = max(high - low, 1e-9) / 30  # a label's height at the panel's size
        placed = [low, high]
        for x, mode, side in ((0, "fixed", "right"), (1, "learned", "left")):
            # Tied structures share one label; close ones are spread apart, a thin line to their point.
            groups = list(panel.groupby([f"rank_{mode}", f"iqm_{mode}"]))
            spread = _spread([value for (_, value), _ in groups], gap)
            placed += spread
            for ((rank, value), tied), y in zip(groups, spread):
                names = ", ".join(style.labels[name] for name in tied["structure"])
                ax.annotate(f"{rank}. {names}", (x, value), xytext=(x - 0.08 if side == "right" else x + 0.08, y),
                            textcoords="data", ha=side, va="center", fontsize="x-small",
                            arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "grey"} if abs(y - value) > gap / 4 else None)
        ax.set_xlim(-0.8, 1.8)
        ax.set_ylim(min(placed) - 2 * gap, max(placed) + 2 * gap)  # every label inside the panel
        ax.set_xticks([0, 1], ["fixed weights", "learned weights"])
        ax.set_ylabel("IQM of return / published DQN return" if game == ALL_GAMES else f"IQM of {RETURN}")
        ax.set_title(f"{game}: ranking changes for {changed} of {len(panel)} structures", fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    _legend(fig, axes, "structure\n(solid: rank changed)")
    _title(fig, "Fixed vs learned weights: each structure's final IQM and rank", warning)
    _caption(fig, style.key(ranks["structure"]))
    return fig


def sensitivity(table: pd.DataFrame, setting: str, last_fraction: float, warning: str | None) -> Figure:
    """Final performance against a varied setting, one panel per game: a line per structure (colour)
    and weight mode (solid learned, dashed fixed), 95% bootstrap CIs; as MinAtar's sensitivity plots."""
    games = list(dict.fromkeys(table["game"]))
    fig, axes = _panels(len(games), 4.5, 3.6)
    lines = Style(structure_palette(table["structure"]), short_labels(table["structure"]))
    for ax, game in zip(axes, games):
        for (structure, weights), line in table[table["game"] == game].groupby(["structure", "weights"]):
            line = line.sort_values(setting)
            ax.errorbar(line[setting], line["iqm"], yerr=np.nan_to_num([line["iqm"] - line["ci_low"], line["ci_high"] - line["iqm"]]),
                        marker="o", capsize=3, color=lines.colours[structure], ls="--" if weights == "fixed" else "-",
                        label=f"{lines.labels[structure]}, {weights}")
        values = table[setting]
        if values.min() > 0 and values.max() / values.min() >= 10:
            ax.set_xscale("log")
        ax.set_xlabel(setting)
        ax.set_ylabel(f"IQM of {RETURN}\n(last {last_fraction:.0%} of frames)")
        ax.set_title(game, fontsize="medium")
        ax.grid(alpha=0.3)
    _legend(fig, axes, "structure, weights\n(dashed: fixed)")
    _title(fig, f"Sensitivity to {setting}: final performance (IQM over runs, 95% bootstrap CI)", warning)
    _caption(fig, lines.key(table["structure"]))
    return fig


def channel_share(table: pd.DataFrame, style: Style) -> Figure:
    """Each channel's share of the final connections per structure (bars), beside 1/C (dashed):
    one panel per game and weight mode."""
    panels = _game_modes(table)
    fig, axes = _panels(len(panels), 5.0, 3.4)
    for ax, (game, mode) in zip(axes, panels):
        panel = table[(table["game"] == game) & (table["weights"] == mode)]
        channels = list(dict.fromkeys(panel["channel"]))
        structures = structure_order(panel["structure"])
        width = 0.8 / len(structures)
        for i, structure in enumerate(structures):
            shares = panel[panel["structure"] == structure].set_index("channel").reindex(channels)["share"]
            ax.bar(np.arange(len(channels)) + (i - (len(structures) - 1) / 2) * width, shares, width,
                   color=style.colours[structure], label=style.labels[structure])
        ax.axhline(panel["uniform"].iloc[0], color="black", ls="--", lw=1, label="1/C (channel-blind)")
        ax.set_xticks(range(len(channels)), channels, rotation=30, ha="right")
        ax.set_ylabel("share of final connections")
        ax.set_title(f"{game}, {mode} weights", fontsize="medium")
    _legend(fig, axes, "structure")
    _title(fig, "Which objects the structured layer reads: each input channel's share of the final "
                "connections (mean over seeds)", None)
    _caption(fig, style.key(table["structure"]))
    return fig


def topology_dots(table: pd.DataFrame, value: str, low: str, high: str, xlabel: str, title: str,
                  style: Style) -> Figure:
    """A per-structure measure (mean, range over seeds or seed pairs), one panel per game, weight
    modes side by side in their colours: spatial overlap, mask agreement."""
    fig, axes, games = _dot_panels(table, value, low, high, style)
    for ax, game in zip(axes, games):
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_title(game, fontsize="medium")
    _title(fig, title, None)
    _caption(fig, style.key(table["structure"]))
    return fig


def _dot_panels(table: pd.DataFrame, value: str, low: str, high: str, style: Style
                ) -> tuple[Figure, list[plt.Axes], list[str]]:
    """One panel per game, a row per structure (short labels): `value` with its [low, high] interval
    per weight mode in the mode's colour, modes side by side around the label's row (one mode sits
    on it), hollow where the cell has unfinished runs (an `unfinished` count column); the panels and
    their games, for the caller's titles and axis labels."""
    games = list(dict.fromkeys(table["game"]))
    order = structure_order(table["structure"])
    fig, axes = _panels(len(games), 4.2, 0.45 * len(order) + 1.6, sharey=True)
    for ax, game in zip(axes, games):
        panel = table[table["game"] == game]
        modes = _modes(panel)
        offsets = (np.arange(len(modes)) - (len(modes) - 1) / 2) * 0.3 / max(1, len(modes) - 1)
        for offset, mode in zip(offsets, modes):
            rows = panel[panel["weights"] == mode].set_index("structure").reindex(order)
            rows = rows.assign(y=np.arange(len(order)) + offset).dropna(subset=[value])
            colour = mode_colours().get(mode, "grey")
            unfinished = rows["unfinished"] > 0 if "unfinished" in rows else pd.Series(False, index=rows.index)
            for hollow, part in rows.groupby(unfinished):
                # a mean of equal values can round a hair outside their range: no negative error bars
                errors = np.clip(np.nan_to_num([part[value] - part[low], part[high] - part[value]]), 0, None)
                ax.errorbar(part[value], part["y"], xerr=errors, fmt="o", color=colour, capsize=3,
                            markerfacecolor="white" if hollow else colour,
                            label=f"{mode} weights" + (" (with unfinished runs)" if hollow else ""))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(order)), [style.labels[name] for name in order])
    axes[0].set_ylim(len(order) - 0.5, -0.5)
    _legend(fig, axes, "weight mode")
    return fig, axes, games


CONNECTIVITY = ("density_", "changed_")
DIAGNOSTICS = ("dormant_", "unwired_", "srank_", "weight_", "survival_")


def connectivity(train: pd.DataFrame, style: Style) -> Figure:
    """Density and connections changed per log interval over training, per layer and game."""
    return over_training(train, CONNECTIVITY, style, "Connectivity over training")


def diagnostics(train: pd.DataFrame, style: Style) -> Figure:
    """Dormant units, units without input, effective rank, mean |weight| and survival of growth over
    training, per layer and game."""
    return over_training(train, DIAGNOSTICS, style, "Diagnostics on a fixed probe batch over training")


def over_training(train: pd.DataFrame, prefixes: tuple[str, ...], style: Style, title: str) -> Figure:
    """The train.csv columns starting with `prefixes`, a row of panels each, per game; a quantity with
    one value in every run (units without input, under static structures) is named in the caption
    instead of drawn as a flat line.

    `train` holds train.csv columns per run and frame bin (stats.binned).
    """
    columns = [c for prefix in prefixes for c in train.columns if c.startswith(prefix)]
    long = train.melt(id_vars=["game", "weights", "structure", "path", "frame"], value_vars=columns,
                      var_name="quantity", value_name="value").dropna(subset=["value"])
    long["quantity"] = long["quantity"].map(_quantity_label)
    values = long.groupby("quantity", sort=False)["value"]
    constant = values.nunique()[lambda counts: counts == 1].index
    if len(constant) == values.ngroups:  # nothing varies: draw them all rather than nothing
        constant = constant[:0]
    flat = [f"{quantity} is {values.first()[quantity]:g} in every run" for quantity in constant]
    long = long[~long["quantity"].isin(constant)]
    seeds = train.groupby(["game", "weights", "structure"])["path"].nunique()
    shown = set(long["structure"])
    long["structure"] = long["structure"].map(style.labels)
    grid = sns.relplot(data=long, x="frame", y="value", hue="structure", style="weights",
                       palette={style.labels[k]: v for k, v in style.colours.items() if k in shown},
                       row="quantity", col="game", kind="line", errorbar=_mean_ci(200, 0),
                       height=2.8, aspect=1.6, facet_kws={"sharey": "row"})
    grid.set_titles("{col_name}")
    grid.set_axis_labels("frames", "")
    _frames_axis(grid.axes.flat)
    for ax, quantity in zip(grid.axes[:, 0], grid.row_names):
        ax.set_ylabel(quantity)
    _title(grid.figure, f"{title}: mean across seeds ({seeds_note(seeds)})", None)
    _caption(grid.figure, style.key(shown),
             f"Not drawn: {'; '.join(label.replace(chr(10), ' ') for label in flat)}." if flat else "")
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
        write_figure(fig, path, dpi=130, bbox_inches="tight")
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


QUANTITIES = {"density": "density of the {} layer",
              "changed": "connections changed\nin the {} layer\n(per log interval)",
              "dormant": "dormant share of\nthe {} layer's units\n(tau 0.025)",
              "unwired": "units of the {} layer\nwithout input",
              "srank": "effective rank of\nthe {} features",
              "weight": "mean |weight| of the\n{} connections",
              "survival": "share of the {} layer's\nlast growth surviving\nthe next update"}


def _quantity_label(column: str) -> str:
    kind, layer = column.split("_", 1)
    return QUANTITIES[kind].format(layer)


def _game_modes(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """The (game, weight mode) pairs that have rows, games in order of appearance: one panel each."""
    present = set(zip(frame["game"], frame["weights"]))
    return [(game, mode) for game in dict.fromkeys(frame["game"]) for mode in _modes(frame) if (game, mode) in present]


def _legend(fig: Figure, axes: Sequence[plt.Axes], title: str) -> None:
    """One legend beside the panels for the entries of all of them, each label once."""
    handles = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), title=title, loc="outside right center")


def _modes(frame: pd.DataFrame) -> Sequence[str]:
    """Weight modes in the config's order, so panels line up across figures."""
    present = set(frame["weights"])
    return [m for m in WEIGHT_MODES if m in present] + sorted(present - set(WEIGHT_MODES))


def _title(fig: Figure, title: str, warning: str | None) -> None:
    """Suptitle, red with a second line when capacity is not matched.

    Seaborn's grids use tight_layout, which ignores suptitles: there the title goes above the
    axes and bbox_inches="tight" keeps it in the file. The title wraps to the figure's width: a
    one-panel figure under a title twice its width would be saved mostly blank.
    """
    width = max(50, round(fig.get_figwidth() * _TITLE_CHARS_PER_INCH))
    title = textwrap.fill(title, width)
    if warning:
        title += "\n" + textwrap.fill(f"WARNING: {warning}", width)
    colour = "firebrick" if warning else "black"
    if isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
        fig.suptitle(title, color=colour)
    else:
        fig.suptitle(title, color=colour, y=1.0, va="bottom")


def _spread(values: Sequence[float], gap: float) -> list[float]:
    """Label positions for `values` (in the order given) at least `gap` apart: labels that would
    overlap form a run centred on their values' mean; lone labels stay at their value."""
    order = np.argsort(values, kind="stable")
    clusters: list[list[float]] = []
    for value in np.asarray(values, float)[order]:
        clusters.append([value])
        while len(clusters) > 1 and _start(clusters[-1], gap) < _start(clusters[-2], gap) + len(clusters[-2]) * gap:
            last = clusters.pop()
            clusters[-1] += last
    placed = [_start(cluster, gap) + i * gap if len(cluster) > 1 else cluster[0]
              for cluster in clusters for i in range(len(cluster))]
    result = [0.0] * len(placed)
    for position, index in zip(placed, order):
        result[index] = float(position)
    return result


def _start(cluster: list[float], gap: float) -> float:
    """Where a run of labels centred on the mean of `cluster` starts."""
    return float(np.mean(cluster)) - (len(cluster) - 1) * gap / 2


def _base(name: str) -> str:
    return name.split(" (", 1)[0]


def _letter(index: int) -> str:
    """a, b, ..., z, aa, ab, ...: as many as there are variants."""
    letters = string.ascii_lowercase
    return letters[index] if index < len(letters) else _letter(index // len(letters) - 1) + letters[index % len(letters)]


def _caption(fig: Figure, *lines: str) -> None:
    """Text under the panels: the key to short labels, unfinished runs. Kept in the file by
    bbox_inches="tight" (save)."""
    text = "\n".join(line for line in lines if line)
    if text:
        fig.text(0.01, 0, text, ha="left", va="top", fontsize="small", wrap=False)
