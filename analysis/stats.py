"""Statistics for comparing structures: per-run scores, IQM, probability of improvement.

Follows Agarwal et al. 2021 ("Deep RL at the edge of the statistical precipice"): a run's
score is its mean return over the last part of training; groups of runs are summarised by
the interquartile mean with stratified bootstrap confidence intervals, and pairs of groups
by the probability of improvement.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from minisparse.config import EVALUATION_KEYS, EXECUTION_KEYS, Config

# Published dense DQN returns at 5M frames (MinAtar paper, read off its plot; docs/protocol.md,
# "Reference returns"). Only used to put games on one scale when several games are aggregated.
REFERENCE_RETURNS = {"asterix": 17.0, "breakout": 10.0, "freeway": 50.0,
                     "seaquest": 20.0, "space_invaders": 43.0}
ALL_GAMES = "all games"


def normalisation_note(performance: pd.DataFrame) -> str:
    """What the `all games` rows of a final-performance table divide by ('' without such rows)."""
    aggregated = performance[performance["game"] == ALL_GAMES]
    if aggregated.empty:
        return ""
    games = sorted({game for names in aggregated["games"] for game in names.split(", ")})
    references = ", ".join(f"{game} {REFERENCE_RETURNS[game]:g}" for game in games)
    return (f". The 'all games' rows divide each run's score by the published DQN return of its game at 5M "
            f"frames ({references}; MinAtar paper, read at each game's best step size, while these runs may "
            f"use another: the protocol's is 2.5e-4), so 1 means as good as MinAtar's tuned DQN")

# Config keys that make two runs of one structure different variants (seed, game and weight
# mode are compared across, execution and evaluation settings change no training, and where a
# plug-in was loaded from is not a setting of the structure).
_VARIANT_KEYS = ({f.name for f in dataclasses.fields(Config)} - set(EXECUTION_KEYS) - set(EVALUATION_KEYS)
                 - {"game", "structure", "weights", "seed", "structure_options", "plugins"})


def iqm(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle half, robust to a few outlier seeds."""
    return scipy.stats.trim_mean(values, 0.25, axis=axis)


def variants(frame: pd.DataFrame) -> pd.Series:
    """Label each row's run by its structure plus the settings that set it apart.

    Two runs of `random` at different sparsity are different things to compare, so they
    become `random (sparsity=0.9)` and `random (sparsity=0.95)`; a structure whose runs
    share every setting keeps its plain name.
    """
    runs = frame.drop_duplicates("path").set_index("path")
    keys = [c for c in runs.columns if c in _VARIANT_KEYS or c.startswith("option.")]
    labels = {}
    for structure, group in runs.groupby("structure", sort=False):
        differing = [k for k in keys if group[k].map(_show).nunique() > 1]
        for path, row in group.iterrows():
            extra = ", ".join(f"{k.removeprefix('option.')}={_show(row[k])}" for k in differing)
            labels[path] = f"{structure} ({extra})" if extra else str(structure)
    return frame["path"].map(labels).rename("structure")


def varied_settings(frame: pd.DataFrame) -> list[str]:
    """The numeric settings (config keys and structure options) that take several values among the
    runs of one structure: a study's `[vary]` axes, such as lr, sparsity or leaky_slope."""
    runs = frame.drop_duplicates("path")
    keys = [c for c in runs.columns if c in _VARIANT_KEYS or c.startswith("option.")]
    varied = []
    for key in keys:
        values = pd.to_numeric(runs[key], errors="coerce")
        if runs[key].notna().all() and values.notna().all() and not runs[key].map(type).eq(bool).any() \
                and values.groupby(runs["structure"]).nunique().max() > 1:
            varied.append(key)
    return varied


def sensitivity(episodes: pd.DataFrame, setting: str, last_fraction: float = 0.1, reps: int = 2000,
                confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Final performance against one varied setting: the IQM of run scores with bootstrap CIs per game,
    weight mode, structure (with the other settings that set its runs apart) and value of `setting`."""
    values = episodes.drop_duplicates("path").set_index("path")[setting].astype(float)
    scores = run_scores(episodes.drop(columns=setting), last_fraction)  # labelled by the other settings
    scores = scores.dropna(subset=["score"]).assign(value=scores["path"].map(values))
    rows = []
    for (game, weights, structure, value), group in scores.groupby(["game", "weights", "structure", "value"]):
        values = group["score"].to_numpy(float)
        low, high = bootstrap_ci([values], iqm, reps, confidence, seed)
        rows.append({"game": game, "weights": weights, "structure": structure, setting.removeprefix("option."): value,
                     "runs": len(values), "iqm": float(iqm(values)), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def run_scores(episodes: pd.DataFrame, last_fraction: float = 0.1) -> pd.DataFrame:
    """One row per run: mean return of the episodes that end in the last part of its frames.

    The last part is `last_fraction` of the configured frames for a complete run and of the
    frames reached so far for an unfinished one. `normalized` divides by the published DQN
    return of the game (REFERENCE_RETURNS) so that games can be aggregated.
    """
    if not 0 < last_fraction <= 1:
        raise ValueError(f"last_fraction {last_fraction} is outside (0, 1]")

    def scored(run: pd.DataFrame) -> pd.DataFrame:
        horizon = run["frames"].iloc[0] if run["complete"].iloc[0] else run["frame"].max()
        return run[run["frame"] >= (1 - last_fraction) * horizon]

    return _scores(episodes, scored)


def eval_scores(evaluations: pd.DataFrame) -> pd.DataFrame:
    """One row per run, as run_scores: the mean return of its last greedy evaluation (eval.csv), the
    one at the end of a complete run, the latest so far of an unfinished one."""
    return _scores(evaluations, lambda run: run[run["frame"] == run["frame"].max()])


def _scores(frame: pd.DataFrame, scored: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    """One row per run of `frame` (episodes or evaluations): the mean return of the rows `scored`
    picks from it, labelled by structure variant and normalised by the game's reference return."""
    frame = frame.assign(structure=variants(frame))
    rows = []
    for path, run in frame.groupby("path", sort=True):
        first = run.iloc[0]
        last = scored(run)
        score = last["return"].mean() if len(last) else math.nan
        rows.append({"game": first["game"], "weights": first["weights"], "structure": first["structure"],
                     "seed": first["seed"], "run": first["run"], "path": path,
                     "complete": bool(first["complete"]), "frames_reached": run["frame"].max(),
                     "episodes_scored": len(last), "score": score,
                     "normalized": score / REFERENCE_RETURNS.get(first["game"], math.nan)})
    return pd.DataFrame(rows)


def eval_curves(evaluations: pd.DataFrame) -> pd.DataFrame:
    """Each run's mean greedy return per evaluation, labelled by structure (as binned_returns)."""
    keys = ["game", "weights", "structure", "seed", "path", "frame"]
    evaluations = evaluations.assign(structure=variants(evaluations))
    return evaluations.groupby(keys, as_index=False, sort=True)[["return"]].mean()


def paired_differences(evaluations: pd.DataFrame, reps: int = 2000, confidence: float = 0.95,
                       seed: int = 0) -> pd.DataFrame:
    """Mean return of X minus Y in the final greedy evaluation, paired by evaluation seed.

    Episode k of every run starts from the same seed, so for each pair of structures (within a game
    and weight mode) the difference is taken seed by seed (each structure's mean over its runs at
    that seed) and the CI resamples seeds: the starting states' luck cancels out of the comparison.
    """
    evaluations = evaluations.assign(structure=variants(evaluations))
    final = evaluations[evaluations["frame"] == evaluations.groupby("path")["frame"].transform("max")]
    rows = []
    for (game, weights), cell in final.groupby(["game", "weights"], sort=True):
        means = cell.groupby(["structure", "eval_seed"])["return"].mean().unstack(0)
        for x, y in itertools.permutations(sorted(means.columns), 2):
            both = means[[x, y]].dropna()
            differences = (both[x] - both[y]).to_numpy(float)
            low, high = bootstrap_ci([differences], _mean, reps, confidence, seed)
            rows.append({"game": game, "weights": weights, "x": x, "y": y,
                         "difference": float(differences.mean()), "ci_low": low, "ci_high": high,
                         "seeds": len(differences)})
    columns = ["game", "weights", "x", "y", "difference", "ci_low", "ci_high", "seeds"]
    return pd.DataFrame(rows, columns=columns)


def final_performance(episodes: pd.DataFrame, last_fraction: float = 0.1, reps: int = 2000,
                      confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """IQM of run scores with bootstrap CIs, per game, weight mode and structure.

    With several games an extra `all games` row per weight mode and structure aggregates
    normalized scores, resampling runs within each game (stratified bootstrap), over the games that
    every structure of that weight mode ran (`games` names them), so that no structure's aggregate
    rests on games another one never played; with fewer than two such games there is no such row.
    """
    return performance_table(run_scores(episodes, last_fraction), reps, confidence, seed)


def performance_table(scores: pd.DataFrame, reps: int = 2000, confidence: float = 0.95,
                      seed: int = 0) -> pd.DataFrame:
    """final_performance from run scores (run_scores, or eval_scores for greedy evaluations)."""
    scores = scores.dropna(subset=["score"])
    games = scores["game"].unique()
    rows = []
    for game in games:
        rows += _performance_rows(scores[scores["game"] == game], game, "score", [game], reps, confidence, seed)
    if len(games) > 1:
        for weights, mode in scores.groupby("weights", sort=True):
            common = shared_games(mode)
            if len(common) > 1:
                rows += _performance_rows(mode[mode["game"].isin(common)], ALL_GAMES, "normalized", common,
                                          reps, confidence, seed)
    return pd.DataFrame(rows)


def shared_games(scores: pd.DataFrame) -> list[str]:
    """The games on which every structure in `scores` has runs."""
    per_structure = [set(games) for games in scores.groupby("structure")["game"].unique()]
    return sorted(set.intersection(*per_structure)) if per_structure else []


def _performance_rows(subset: pd.DataFrame, game: str, value: str, games: list[str], reps: int,
                      confidence: float, seed: int) -> list[dict[str, Any]]:
    rows = []
    for (weights, structure), group in subset.groupby(["weights", "structure"], sort=True):
        strata = [g[value].to_numpy(float) for _, g in group.groupby("game")]
        low, high = bootstrap_ci(strata, _pooled_iqm, reps, confidence, seed)
        rows.append({"game": game, "weights": weights, "structure": structure,
                     "runs": len(group), "unfinished": int((~group["complete"]).sum()),
                     "iqm": float(iqm(np.concatenate(strata))), "ci_low": low, "ci_high": high,
                     "measure": "return / DQN reference" if game == ALL_GAMES else "return",
                     "games": ", ".join(games)})
    return rows


def probability_of_improvement(episodes: pd.DataFrame, last_fraction: float = 0.1,
                               reps: int = 2000, confidence: float = 0.95,
                               seed: int = 0) -> pd.DataFrame:
    """P(X > Y) for every ordered pair of structures within a weight mode, with bootstrap CIs and the
    one-sided permutation p-value of X beating Y (permutation_p).

    P(X > Y) is the chance that a run of X scores higher than a run of Y on the same game
    (ties count half: the Mann-Whitney U statistic over n*m), averaged over the games where
    both structures have runs.
    """
    return improvement_table(run_scores(episodes, last_fraction), reps, confidence, seed)


def improvement_table(scores: pd.DataFrame, reps: int = 2000, confidence: float = 0.95,
                      seed: int = 0) -> pd.DataFrame:
    """probability_of_improvement from run scores (run_scores, or eval_scores)."""
    scores = scores.dropna(subset=["score"])
    rows = []
    for weights, mode in scores.groupby("weights", sort=True):
        runs = dict(tuple(mode.groupby("structure", sort=True)))
        for x, y in itertools.combinations(runs, 2):
            games = sorted(set(runs[x]["game"]) & set(runs[y]["game"]))
            if not games:  # never run on a common game: nothing to compare
                continue
            samples = [runs[s].loc[runs[s]["game"] == game, "score"].to_numpy(float)
                       for game in games for s in (x, y)]
            p = float(_mean_improvement(*samples))
            low, high = bootstrap_ci(samples, _mean_improvement, reps, confidence, seed)
            swapped = [s for pair in zip(samples[1::2], samples[::2]) for s in pair]
            common = {"weights": weights, "games": len(games)}
            rows.append({**common, "x": x, "y": y, "probability": p, "ci_low": low, "ci_high": high,
                         "p_value": permutation_p(samples, reps, seed)})
            rows.append({**common, "x": y, "y": x, "probability": 1 - p, "ci_low": 1 - high, "ci_high": 1 - low,
                         "p_value": permutation_p(swapped, reps, seed)})
    columns = ["weights", "x", "y", "probability", "ci_low", "ci_high", "p_value", "games"]
    return pd.DataFrame(rows, columns=columns).sort_values(["weights", "x", "y"], ignore_index=True)


def rank_table(performance: pd.DataFrame) -> pd.DataFrame:
    """Rank of each structure (1 = highest IQM) under each weight mode, per game.

    Only structures run in both modes are ranked, so a rank change means the ordering of
    the same set of structures changed between fixed and learned weights.
    """
    rows = []
    for game, table in performance.groupby("game", sort=False):
        wide = table.pivot(index="structure", columns="weights", values="iqm").dropna()
        if wide.shape[1] < 2:
            continue
        ranks = wide.rank(ascending=False, method="min").astype(int)
        for structure in wide.index:
            rows.append({"game": game, "structure": structure,
                         **{f"iqm_{mode}": wide.at[structure, mode] for mode in wide.columns},
                         **{f"rank_{mode}": ranks.at[structure, mode] for mode in wide.columns}})
    table = pd.DataFrame(rows)
    if len(table) and {"rank_fixed", "rank_learned"} <= set(table.columns):
        table["rank_change"] = table["rank_fixed"] - table["rank_learned"]
    return table


def binned_returns(episodes: pd.DataFrame, bins: int = 40) -> pd.DataFrame:
    """Each run's mean return per frame bin, labelled by structure (see `binned`)."""
    return binned(episodes.assign(structure=variants(episodes)), ["return"], bins)


def binned(frame: pd.DataFrame, values: Sequence[str], bins: int) -> pd.DataFrame:
    """Each run's mean of `values` per frame bin: `bins` equal bins over the run's configured frames.

    One value per run and bin, so that a mean across seeds weighs every seed equally
    whatever its number of episodes or log rows; `frame` becomes the bin's centre. Runs of
    one length share their bins whatever else differs; a run's curve stops where its data
    stops: a bin its frames cover less than half of (the end of an unfinished run) is left
    out rather than drawn from its first few episodes.
    """
    length = frame["frames"] if "frames" in frame else pd.Series(frame["frame"].max(), index=frame.index)
    width = length.to_numpy(float) / bins
    index = np.clip(np.ceil(frame["frame"].to_numpy(float) / width) - 1, 0, bins - 1)
    centre = (index + 0.5) * width
    covered = centre <= frame.groupby("path")["frame"].transform("max").to_numpy()
    keys = ["game", "weights", "structure", "seed", "path", "frame"]
    frame = frame.assign(frame=centre)[covered]
    return frame.groupby(keys, as_index=False, sort=True)[list(values)].mean()


def bootstrap_ci(samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], reps: int,
                 confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI of statistic(*samples), resampling each sample on its own.

    scipy's unpaired multi-sample bootstrap resamples every sample independently, which is
    exactly a stratified bootstrap when the samples are the strata (games, or the two
    structures within each game). scipy needs two values per sample, so single-run samples
    are held fixed (resampling one value could only return it); with none left to resample
    the interval is undefined (NaN).
    """
    varying = [i for i, s in enumerate(samples) if len(s) > 1]
    if not varying:
        return math.nan, math.nan

    def resampled_statistic(*drawn: np.ndarray, axis: int = -1) -> np.ndarray:
        full = [np.broadcast_to(s, drawn[0].shape[:-1] + s.shape) for s in samples]
        for i, values in zip(varying, drawn):
            full[i] = values
        return statistic(*full, axis=axis)

    result = scipy.stats.bootstrap([samples[i] for i in varying], resampled_statistic,
                                   n_resamples=reps, confidence_level=confidence,
                                   method="percentile", vectorized=True, paired=False,
                                   rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return values.mean(axis=axis)


def _pooled_iqm(*strata: np.ndarray, axis: int = -1) -> np.ndarray:
    return iqm(np.concatenate(strata, axis=axis), axis=axis)


def permutation_p(samples: Sequence[np.ndarray], reps: int = 2000, seed: int = 0) -> float:
    """One-sided p-value of P(x > y) (samples alternate x, y per game, as _mean_improvement's): how often
    shuffling the x and y labels within each game gives a value at least as high as the observed one.

    Every arrangement is counted when there are at most `reps` of them, else `reps` random ones. Unlike a
    bootstrap CI, this stays honest with a few seeds: 3 runs against 3 can reach no p below 1/20 = 0.05,
    2 against 2 no p below 1/6, however far apart they are.
    """
    observed = float(_mean_improvement(*samples))
    if not np.isfinite(observed):
        return math.nan
    strata = [(scipy.stats.rankdata(np.concatenate([x, y])), len(x)) for x, y in zip(samples[::2], samples[1::2])]
    if math.prod(math.comb(len(ranks), n) for ranks, n in strata) <= reps:
        shares = [_share(ranks[np.array(list(itertools.combinations(range(len(ranks)), n)))], len(ranks))
                  for ranks, n in strata]
        total = functools.reduce(np.add.outer, shares).ravel() / len(strata)
        return float(np.mean(total >= observed - 1e-12))
    rng = np.random.default_rng(seed)
    total = sum(_share(rng.permuted(np.broadcast_to(ranks, (reps, len(ranks))), axis=1)[:, :n], len(ranks))
                for ranks, n in strata) / len(strata)
    return float((1 + np.sum(total >= observed - 1e-12)) / (1 + reps))


def _share(x_ranks: np.ndarray, pooled: int) -> np.ndarray:
    """U/(n*m) from the ranks (ties averaged) of the n values called x among `pooled`, along the last axis:
    the share of (x, y) pairs with x above y, ties counting half."""
    n = x_ranks.shape[-1]
    return (x_ranks.sum(axis=-1) - n * (n + 1) / 2) / (n * (pooled - n))


def _mean_improvement(*pairs: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over games of U/(n*m); samples alternate x, y per game."""
    shares = [scipy.stats.mannwhitneyu(x, y, axis=axis, method="asymptotic").statistic
              / (x.shape[axis] * y.shape[axis]) for x, y in zip(pairs[::2], pairs[1::2])]
    return np.mean(shares, axis=0)


def _show(value: object) -> str:
    return "default" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
