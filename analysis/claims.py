"""The study protocol's six questions, each answered from run scores with a verdict.

Every claim is tested with the probability of improvement P(x > y) (stratified by game and by the
settings the claim is not about), its bootstrap CI and one-sided permutation p-values, except "the
best fixed structure is not the best learned one", which is tested by how often bootstrap resamples
of the runs pick the same best structure under both weight modes and by the p-values of the orderings
that pick the bests. A row supports (contradicts) only when its 95% CI lies above (below) 0.5 and the
p-value of x beating y (y beating x) is at most 0.05 (for the winners: when 95% of resamples agree and
those p-values are at most 0.05); otherwise it is undecided. The CI alone would decide too often
with few seeds: two runs against two that do not overlap give the CI [1, 1], while the chance of that
ordering with no difference at all is 1/6. A claim that one comparison can
support ("in some game") is corrected for having k chances: see claim_verdicts.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from .stats import _VARIANT_KEYS, _mean_improvement, bootstrap_ci, iqm, permutation_p, run_scores, variants

DENSE = "dense"
SPATIAL = ("conv", "local")
DYNAMIC = ("set", "rigl")
SUPPORTS, CONTRADICTS, UNDECIDED = "supports", "contradicts", "undecided"

CLAIMS = {
    "sparse_beats_dense": "At matched capacity, sparse structures beat the dense layer",
    "best_depends_on_weights": "The best structure under fixed weights is not the best under learned weights",
    "spatial_not_always_best": "The spatial structures (conv, local) are not always the best sparse ones",
    "fixed_can_match_learned": "Fixed random sparse weights can match or beat learned ones in some game",
    "masking_moments_helps": "Masking the optimizer's moments helps RigL/SET at 90% sparsity",
    "leaky_relu_helps": "leaky_relu helps at 90% sparsity",
}
_EVIDENCE_COLUMNS = ["claim", "game", "weights", "comparison", "statistic", "estimate", "ci_low", "ci_high",
                     "p_value", "runs", "verdict"]


def claim_evidence(episodes: pd.DataFrame, last_fraction: float = 0.1, reps: int = 2000,
                   confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per comparison behind each claim that the runs (load_runs' episodes) can test, on
    run_scores' scores. A row's verdict says whether it supports the claim."""
    runs = episodes.drop_duplicates("path").set_index("path")
    configs = runs[[c for c in runs.columns if c in _VARIANT_KEYS or c.startswith("option.")] + ["structure"]]
    scores = run_scores(episodes, last_fraction).dropna(subset=["score"])
    scores = scores.assign(base=scores["path"].map(configs["structure"]))
    rows: list[dict] = []
    for test in (_sparse_beats_dense, _best_depends_on_weights, _spatial_not_always_best,
                 _fixed_can_match_learned):
        rows += test(scores, reps, confidence, seed)
    at_90 = scores["path"].map(configs["sparsity"]) == 0.9  # what the two claims are about
    rows += _setting_helps("masking_moments_helps", scores[at_90 & scores["base"].isin(DYNAMIC)], configs,
                           "mask_optimizer_state", True, False, reps, confidence, seed)
    rows += _setting_helps("leaky_relu_helps", scores[at_90], configs, "activation", "leaky_relu", "relu",
                           reps, confidence, seed)
    return pd.DataFrame(rows, columns=_EVIDENCE_COLUMNS)


def claim_verdicts(evidence: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per testable claim: its verdict at this budget and the comparisons behind it.

    "Sparse beats dense", "masking helps" and "leaky_relu helps" are general claims: supported when
    every comparison supports them, contradicted when every one contradicts them, mixed when some
    are decided either way. The other three say "not always" or "in some game": one supporting
    comparison of k supports them if its p-value is at most (1 - confidence) / k, Bonferroni's bound on
    finding one among k by chance; only all comparisons contradicting them contradicts them.
    """
    rows = []
    for claim, text in CLAIMS.items():
        rows_of_claim = evidence[evidence["claim"] == claim]
        if rows_of_claim.empty:
            continue
        verdicts = rows_of_claim["verdict"]
        counts = {v: int((verdicts == v).sum()) for v in (SUPPORTS, CONTRADICTS, UNDECIDED)}
        if claim in ("best_depends_on_weights", "spatial_not_always_best", "fixed_can_match_learned"):
            bound = (1 - confidence) / len(verdicts)
            found = ((verdicts == SUPPORTS) & (rows_of_claim["p_value"] <= bound)).any()
            verdict = ("supported" if found else
                       "contradicted" if counts[CONTRADICTS] == len(verdicts) else "undecided")
        else:
            verdict = ("supported" if counts[SUPPORTS] == len(verdicts) else
                       "contradicted" if counts[CONTRADICTS] == len(verdicts) else
                       "undecided" if counts[UNDECIDED] == len(verdicts) else "mixed")
        rows.append({"claim": text, "verdict": verdict, "comparisons": len(verdicts), **counts,
                     "deciding": "; ".join(rows_of_claim.loc[verdicts != UNDECIDED, "comparison"])})
    return pd.DataFrame(rows, columns=["claim", "verdict", "comparisons", SUPPORTS, CONTRADICTS, UNDECIDED,
                                       "deciding"])


def _improvement_row(claim: str, game: str, weights: str, comparison: str, x: list[np.ndarray],
                     y: list[np.ndarray], reps: int, confidence: float, seed: int) -> dict:
    """P(x > y) over strata (pairs x[i], y[i]) with its CI and the one-sided p-value in the estimate's
    direction. Supporting needs the CI above 0.5 and the p-value of x beating y at most 1 - confidence;
    contradicting, the CI below 0.5 and that of y beating x."""
    samples = [s for pair in zip(x, y) for s in pair]
    p = float(_mean_improvement(*samples))
    low, high = bootstrap_ci(samples, _mean_improvement, reps, confidence, seed)
    p_better = permutation_p(samples, reps, seed)
    p_worse = permutation_p([s for pair in zip(y, x) for s in pair], reps, seed)
    better = low > 0.5 and p_better <= 1 - confidence  # NaN (one run a side) compares False
    worse = high < 0.5 and p_worse <= 1 - confidence
    p_value = p_better if p >= 0.5 else p_worse
    verdict = SUPPORTS if better else CONTRADICTS if worse else UNDECIDED
    return {"claim": claim, "game": game, "weights": weights, "comparison": comparison, "statistic": "P(x > y)",
            "estimate": p, "ci_low": low, "ci_high": high, "p_value": p_value, "runs": sum(len(s) for s in samples),
            "verdict": verdict}


def _per_game(frame: pd.DataFrame, x: Callable[[pd.DataFrame], pd.Series],
              y: Callable[[pd.DataFrame], pd.Series]) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """The games where both x and y have runs, and the scores of each per game."""
    games = [g for g, cell in frame.groupby("game", sort=True) if x(cell).any() and y(cell).any()]
    cells = [frame[frame["game"] == g] for g in games]
    return games, [c.loc[x(c), "score"].to_numpy(float) for c in cells], \
        [c.loc[y(c), "score"].to_numpy(float) for c in cells]


def _sparse_beats_dense(scores: pd.DataFrame, reps: int, confidence: float, seed: int) -> list[dict]:
    rows = []
    for weights, mode in scores.groupby("weights", sort=True):
        for structure in sorted(mode.loc[mode["base"] != DENSE, "structure"].unique()):
            games, x, y = _per_game(mode, lambda c: c["structure"] == structure, lambda c: c["base"] == DENSE)
            if games:
                rows.append(_improvement_row("sparse_beats_dense", ", ".join(games), weights,
                                             f"{structure} vs dense", x, y, reps, confidence, seed))
    return rows


def _best_depends_on_weights(scores: pd.DataFrame, reps: int, confidence: float, seed: int) -> list[dict]:
    """Per game: the best structure (IQM) in each mode, how often resamples agree on one best, and the
    p-value of the orderings that make the two bests what they are (see _winners_p)."""
    rng = np.random.default_rng(seed)
    rows = []
    for game, cell in scores.groupby("game", sort=True):
        modes = cell.groupby("structure")["weights"].nunique()
        both = sorted(modes[modes == 2].index)
        if len(both) < 2 or set(cell["weights"]) != {"fixed", "learned"}:
            continue
        cell = cell[cell["structure"].isin(both)]
        runs, winners = {}, {}
        for weights in ("fixed", "learned"):
            runs[weights] = [cell.loc[(cell["weights"] == weights) & (cell["structure"] == s), "score"]
                             .to_numpy(float) for s in both]
            drawn = np.stack([iqm(r[rng.integers(0, len(r), (reps, len(r)))], axis=1) for r in runs[weights]],
                             axis=1)
            winners[weights] = drawn.argmax(axis=1)
        fixed, learned = (int(np.argmax([iqm(r) for r in runs[w]])) for w in ("fixed", "learned"))
        if cell.groupby(["weights", "structure"]).size().min() < 2:  # one run cannot be resampled
            same, p_value, verdict = np.nan, np.nan, UNDECIDED
        else:
            same = float(np.mean(winners["fixed"] == winners["learned"]))
            p_value = _winners_p(runs, fixed, learned, reps, seed)
            verdict = (UNDECIDED if p_value > 1 - confidence else
                       SUPPORTS if fixed != learned and same < 1 - confidence else
                       CONTRADICTS if fixed == learned and same > confidence else UNDECIDED)
        rows.append({"claim": "best_depends_on_weights", "game": game, "weights": "fixed vs learned",
                     "comparison": f"best fixed {both[fixed]}, best learned {both[learned]}",
                     "statistic": "share of resamples with one best in both modes", "estimate": same,
                     "ci_low": np.nan, "ci_high": np.nan, "p_value": p_value, "runs": len(cell),
                     "verdict": verdict})
    return rows


def _winners_p(runs: dict[str, list[np.ndarray]], fixed: int, learned: int, reps: int, seed: int) -> float:
    """The larger one-sided permutation p-value of the orderings a verdict rests on. Two different bests:
    the fixed one beats the learned one under fixed weights, and the other way round. One best in both
    modes: it beats the runner-up in each. Resamples alone would agree 100% whenever 3 runs beat 3 (their
    chance with no difference at all is 1/20), so the verdict needs both p-values too."""
    def runner_up(weights: str, best: int) -> int:
        return max((i for i in range(len(runs[weights])) if i != best), key=lambda i: iqm(runs[weights][i]))

    pairs = ({"fixed": (fixed, learned), "learned": (learned, fixed)} if fixed != learned else
             {w: (fixed, runner_up(w, fixed)) for w in ("fixed", "learned")})
    return max(permutation_p([runs[w][x], runs[w][y]], reps, seed) for w, (x, y) in pairs.items())


def _spatial_not_always_best(scores: pd.DataFrame, reps: int, confidence: float, seed: int) -> list[dict]:
    """Per game and mode: each non-spatial sparse structure against the better spatial one (by IQM)."""
    rows = []
    for (game, weights), cell in scores.groupby(["game", "weights"], sort=True):
        spatial = cell[cell["base"].isin(SPATIAL)]
        if spatial.empty:
            continue
        best = spatial.groupby("structure")["score"].apply(lambda s: iqm(s.to_numpy(float))).idxmax()
        others = cell[~cell["base"].isin(SPATIAL + (DENSE,))]
        for structure, runs in others.groupby("structure", sort=True):
            best_runs = cell.loc[cell["structure"] == best, "score"].to_numpy(float)
            rows.append(_improvement_row("spatial_not_always_best", game, weights, f"{structure} vs {best}",
                                         [runs["score"].to_numpy(float)], [best_runs], reps, confidence, seed))
    return rows


def _fixed_can_match_learned(scores: pd.DataFrame, reps: int, confidence: float, seed: int) -> list[dict]:
    """Per game and sparse structure run in both modes: P(fixed > learned). A CI straddling 0.5 is
    undecided: a few seeds cannot show that two groups match, only that one beats the other."""
    rows = []
    sparse = scores[scores["base"] != DENSE]
    for (game, structure), cell in sparse.groupby(["game", "structure"], sort=True):
        if set(cell["weights"]) != {"fixed", "learned"}:
            continue
        rows.append(_improvement_row("fixed_can_match_learned", game, "fixed vs learned",
                                     f"{structure} fixed vs learned",
                                     [cell.loc[cell["weights"] == "fixed", "score"].to_numpy(float)],
                                     [cell.loc[cell["weights"] == "learned", "score"].to_numpy(float)],
                                     reps, confidence, seed))
    return rows


def _setting_helps(claim: str, scores: pd.DataFrame, configs: pd.DataFrame, setting: str, on: object,
                   off: object, reps: int, confidence: float, seed: int) -> list[dict]:
    """Per base structure and mode: P(runs with setting=on > runs with it off), stratified by game and by
    the structure's other settings (so that, say, relu runs are only compared with relu runs)."""
    values = scores["path"].map(configs[setting])
    tested = scores[values.isin([on, off])].assign(value=values)
    rows = []
    labels = variants(configs.drop(columns=setting).reset_index())  # a structure and its other settings
    others = pd.Series(labels.to_numpy(), index=configs.index)
    for (weights, base), cell in tested.groupby(["weights", "base"], sort=True):
        others_of_cell = cell["path"].map(others)
        x, y, games = [], [], set()
        for (game, _), stratum in cell.groupby([cell["game"], others_of_cell], sort=True):
            if stratum["value"].eq(on).any() and stratum["value"].eq(off).any():
                x.append(stratum.loc[stratum["value"] == on, "score"].to_numpy(float))
                y.append(stratum.loc[stratum["value"] == off, "score"].to_numpy(float))
                games.add(game)
        if x:
            rows.append(_improvement_row(claim, ", ".join(sorted(games)), weights,
                                         f"{base}: {setting}={on} vs {off}", x, y, reps, confidence, seed))
    return rows

