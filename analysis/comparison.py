"""`compare`: every figure and table of a study, from run directories to an output folder."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pandas as pd
from matplotlib.figure import Figure

from . import figures
from .capacity import capacity_table, capacity_warning
from .claims import claim_evidence, claim_verdicts
from .load import (BrokenRunWarning, NoRunsError, Paths, Run, find_runs, load_capacity, load_eval, load_runs,
                   load_train, mask_snapshots, run_path)
from .pictures import draw_run_masks
from .stats import (ALL_GAMES, binned, binned_returns, eval_curves, eval_scores, final_performance,
                    improvement_table, normalisation_note, paired_differences, performance_table,
                    probability_of_improvement, rank_table, run_scores, sensitivity, varied_settings)
from .tables import write_table
from .topology import topology_tables

T = TypeVar("T")


@dataclass
class Comparison:
    """What compare found and wrote: the tables (for a notebook), the files, the warnings."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def compare(paths: Paths, out: str | Path, bins: int = 40, last_fraction: float = 0.1,
            reps: int = 2000, seed: int = 0) -> Comparison:
    """Load runs under paths and write figures (PNG, PDF) and tables (CSV, Markdown, LaTeX) to out.

    Raises NoRunsError (a path is missing or holds no run with a finished episode) or
    NotADirectoryError (out is a file) before writing anything. `reps` bootstrap resamples,
    seeded by `seed`, give every confidence interval.
    """
    runs, broken_configs = _caught(lambda: find_runs(paths))
    episodes, broken_episodes = _caught(lambda: load_runs(runs))
    broken = broken_configs + broken_episodes
    runs = [run for run in runs if run not in {warning.run for warning in broken}]
    if episodes.empty:
        raise NoRunsError(f"none of the {len(runs)} runs found has finished an episode yet")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output path {out} is a file, not a folder")
    scores = run_scores(episodes, last_fraction)
    capacity = capacity_table(load_capacity(runs))
    warning = capacity_warning(capacity)
    result = Comparison(warnings=[str(w) for w in broken] + _run_warnings(runs, scores, last_fraction)
                        + ([warning] if warning else []))
    figure_warning = "structures not at matched capacity (see the capacity table)" if warning else None
    style = figures.Style.of(scores)
    seeds = figures.seeds_note(scores.groupby(["game", "weights", "structure"]).size())
    out.mkdir(parents=True, exist_ok=True)

    def table(name: str, frame: pd.DataFrame, caption: str) -> None:
        result.tables[name] = frame
        result.files.extend(write_table(frame, out, name, caption, warning))

    def figure(name: str, draw: Callable[[], Figure]) -> None:
        result.files.extend(figures.save(draw(), out, name))

    result.tables["run_scores"] = scores
    scores.to_csv(out / "run_scores.csv", index=False)
    result.files.append(out / "run_scores.csv")
    table("capacity", capacity, "Capacity of each compared structure per layer "
          "(connections = non-zero weights, flops = forward FLOPs per sample)")
    figure("learning_curves", lambda: figures.learning_curves(
        binned_returns(episodes, bins), style, figure_warning, reps=reps, seed=seed))

    performance = final_performance(episodes, last_fraction, reps, seed=seed)
    result.warnings += _left_out_of_all_games(scores, performance)
    table("final_performance", performance,
          f"Final performance: IQM of run scores (mean return over the last {last_fraction:.0%} "
          f"of frames) with 95% stratified bootstrap CIs; {seeds}{normalisation_note(performance)}")
    figure("final_performance", lambda: figures.final_performance(performance, last_fraction, figure_warning, style))

    improvement = probability_of_improvement(episodes, last_fraction, reps, seed=seed)
    if improvement.empty:
        result.warnings.append("no probability of improvement: no weight mode has two structures")
    else:
        table("probability_of_improvement", improvement,
              f"Probability of improvement P(x > y) of final scores with 95% bootstrap CIs and the one-sided "
              f"permutation p-value of x beating y; {seeds}")
        figure("probability_of_improvement", lambda: figures.improvement(improvement, seeds, figure_warning, style))

    ranks = rank_table(performance)
    if "rank_change" not in ranks:
        result.warnings.append("no fixed-versus-learned comparison: no structure was run in both weight modes")
    else:
        table("ranks", ranks, "Rank of each structure's final performance (1 = best) under fixed "
              "and learned weights; rank_change = fixed rank - learned rank")
        figure("fixed_vs_learned", lambda: figures.interaction(ranks, style, figure_warning))

    evidence = claim_evidence(episodes, last_fraction, reps, seed=seed)
    if not evidence.empty:
        table("claims", claim_verdicts(evidence), "The study protocol's claims: verdict at this budget from the "
              f"comparisons in claim_evidence (95% CIs; a claim that one of k comparisons can support needs "
              f"that one's p <= 0.05 / k; {seeds})")
        table("claim_evidence", evidence, "Each comparison behind a claim: P(x > y) of final scores (stratified by "
              "game and other settings) with its 95% bootstrap CI and one-sided permutation p-value, or how often "
              "resamples agree on one best structure; supports or contradicts only when the CI is on one side of "
              "0.5 (or 95% of resamples agree) and p <= 0.05")

    for setting in varied_settings(episodes):
        name = setting.removeprefix("option.")
        curve = sensitivity(episodes, setting, last_fraction, reps, seed=seed)
        table(f"sensitivity_{name}", curve, f"Final performance against {name}: IQM of run scores (mean return "
              f"over the last {last_fraction:.0%} of frames) with 95% bootstrap CIs")
        figure(f"sensitivity_{name}", lambda: figures.sensitivity(curve, name, last_fraction, figure_warning))

    evaluations, broken_eval = _caught(lambda: load_eval(runs))
    result.warnings += [f"{warning} (its eval.csv only)" for warning in broken_eval]
    if not evaluations.empty:
        _compare_evaluations(evaluations, style, figure_warning, table, figure, reps, seed)

    train, broken_train = _caught(lambda: load_train(runs))
    result.warnings += [f"{warning} (its train.csv rows only)" for warning in broken_train]
    changing = _changing_runs(train, runs)
    measured = train.assign(structure=train["path"].map(scores.set_index("path")["structure"]))
    measured = measured.dropna(subset=["structure"])  # runs without episodes have no label
    logged = measured[measured["path"].isin(changing)]
    if not logged.empty:
        columns = [c for c in logged.columns if c.startswith(figures.CONNECTIVITY)]
        figure("connectivity", lambda: figures.connectivity(binned(logged, columns, bins), style))
    columns = [c for c in measured.columns if c.startswith(figures.DIAGNOSTICS)]
    if columns and measured[columns].notna().any().any():
        figure("diagnostics", lambda: figures.diagnostics(binned(measured, columns, bins), style))
    by_path = {run_path(run): run for run in runs}
    _compare_topology(topology_tables(runs, scores), style, table, figure)
    for run in _one_run_each(scores[scores["path"].isin(changing)], by_path):
        if (run / "masks" / "start.npz").is_file():
            result.files.extend(draw_run_masks(run, out / "masks"))
    return result


# The per-structure topology measures: table, its column, caption, axis label and figure title.
_TOPOLOGY_DOTS = (
    ("spatial_overlap", "overlap", "Share of each unit's final connections inside its best 3x3 window (all "
     "channels), mean over units, then over seeds (min and max over seeds); conv and local: 1",
     "share of a unit's connections in its best 3x3 window",
     "How spatial the final structure is: mean over units, range over seeds"),
    ("mask_agreement", "jaccard", "Jaccard similarity of the final masks of every two seeds of a cell "
     "(mean, min and max over pairs)", "Jaccard similarity of two seeds' final masks",
     "Do seeds agree on a structure? Mean Jaccard over pairs of seeds, range over pairs"),
)


def _compare_topology(tables: dict[str, pd.DataFrame], style: figures.Style,
                      table: Callable[[str, pd.DataFrame, str], None],
                      figure: Callable[[str, Callable[[], Figure]], None]) -> None:
    """Channel shares, spatial overlap and seed agreement of the end masks (analysis.topology)."""
    share = tables["channel_share"]
    if not share.empty:
        table("channel_share", share, "Each input channel's share of the structured layer's final connections "
              "(mean over seeds) beside 1/C, the share a channel-blind structure gives it")
        figure("channel_share", lambda: figures.channel_share(share, style))
    for name, value, caption, label, title in _TOPOLOGY_DOTS:
        measured = tables[name]
        if not measured.empty:
            table(name, measured, caption)
            figure(name, lambda: figures.topology_dots(measured, value, f"{value}_min", f"{value}_max", label,
                                                       title, style))


def _compare_evaluations(evaluations: pd.DataFrame, style: figures.Style, warning: str | None,
                         table: Callable[[str, pd.DataFrame, str], None], figure: Callable[[str, Callable[[], Figure]], None],
                         reps: int, seed: int) -> None:
    """The greedy-evaluation view (eval.csv) beside the training-return one: curves, final
    performance, probability of improvement, and differences paired by evaluation seed."""
    scores = eval_scores(evaluations)
    episodes = int(scores["episodes_scored"].max())
    runs_note = figures.seeds_note(scores.groupby(["game", "weights", "structure"]).size())
    figure("eval_learning_curves", lambda: figures.learning_curves(
        eval_curves(evaluations), style, warning, reps=reps, seed=seed, greedy=True))
    performance = performance_table(scores, reps, seed=seed)
    table("eval_final_performance", performance,
          f"Final greedy performance: IQM over runs of each run's mean return in its last evaluation "
          f"(up to {episodes} episodes from seeds shared by every run), 95% stratified bootstrap CIs; {runs_note}"
          f"{normalisation_note(performance)}")
    figure("eval_final_performance", lambda: figures.final_performance(performance, 0, warning, style, greedy=True))
    improvement = improvement_table(scores, reps, seed=seed)
    if not improvement.empty:
        table("eval_probability_of_improvement", improvement,
              f"Probability of improvement P(x > y) of final greedy scores with 95% bootstrap CIs and the "
              f"one-sided permutation p-value of x beating y; {runs_note}")
    paired = paired_differences(evaluations, reps, seed=seed)
    if not paired.empty:
        table("eval_paired_differences", paired,
              "Final greedy return of x minus y, paired by evaluation seed (each structure's mean over its "
              "runs at that seed), with 95% bootstrap CIs over seeds")


def _caught(load: Callable[[], T]) -> tuple[T, list[BrokenRunWarning]]:
    """What `load` returns, and the warnings of the runs it left out as broken (for the report)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BrokenRunWarning)
        value = load()
    return value, [w.message for w in caught if isinstance(w.message, BrokenRunWarning)]


def _run_warnings(runs: list[Run], scores: pd.DataFrame, last_fraction: float) -> list[str]:
    """Runs that are unfinished, have no episode yet, or none in the scored window, by name."""
    warnings = []
    unfinished = sorted(scores.loc[~scores["complete"], "run"])
    if unfinished:
        warnings.append(f"{len(unfinished)} of {len(runs)} runs are unfinished ({_names(unfinished)}); "
                        f"their scores use the last {last_fraction:.0%} of the frames reached so far")
    empty = sorted(run.name for run in runs if run_path(run) not in set(scores["path"]))
    if empty:
        warnings.append(f"{_runs(empty)} no finished episode yet; left out ({_names(empty)})")
    unscored = sorted(scores.loc[scores["score"].isna(), "run"])
    if unscored:
        warnings.append(f"{_runs(unscored)} no episode ending in the last {last_fraction:.0%} of the "
                        f"run's frames; left out of the final performance ({_names(unscored)})")
    return warnings


def _left_out_of_all_games(scores: pd.DataFrame, performance: pd.DataFrame) -> list[str]:
    """Runs on a game that not every structure of their weight mode ran: not in the `all games` rows."""
    warnings = []
    aggregated = performance[performance["game"] == ALL_GAMES].groupby("weights")["games"].first()
    for weights, games in aggregated.items():
        mode = scores[scores["weights"] == weights]
        outside = mode[~mode["game"].isin(games.split(", "))]
        if len(outside):
            which = ", ".join(f"{structure} on {game}" for (structure, game), _ in outside.groupby(["structure", "game"]))
            warnings.append(f"the 'all games' rows of {weights} weights aggregate {games}, the games every "
                            f"structure ran; left out of them: {which}")
    return warnings


def _changing_runs(train: pd.DataFrame, runs: list[Run]) -> list[str]:
    """Runs whose connectivity changed: a nonzero changed_<layer> or intermediate mask snapshots."""
    changed = [c for c in train.columns if c.startswith("changed_")]
    paths = set(train.loc[train[changed].fillna(0).ne(0).any(axis=1), "path"]) if changed else set()
    return sorted(paths | {run_path(run) for run in runs if mask_snapshots(run)})


def _one_run_each(scores: pd.DataFrame, by_path: dict[str, Run]) -> list[Run]:
    """The first run (by game, then seed) of each structure and weight mode: one picture each."""
    first = scores.sort_values(["game", "seed"]).drop_duplicates(["structure", "weights"])
    return [by_path[p] for p in first["path"]]


def _runs(names: list[str]) -> str:
    return "1 run has" if len(names) == 1 else f"{len(names)} runs have"


def _names(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
