"""The protocol's claims get the verdicts their planted scores call for, and only with enough seeds."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

import numpy as np
import scipy.stats

from minisparse.analysis import claim_evidence, claim_verdicts, load_runs
from minisparse.analysis.stats import permutation_p
from tests.test_analysis import write_run


def planted(root: Path, cells: dict[tuple, list[float]]) -> pd.DataFrame:
    """Runs whose scores are `cells[(game, structure, weights, settings...)]`, one per seed."""
    for (game, structure, weights, *settings), finals in cells.items():
        for seed, final in enumerate(finals):
            write_run(root, game=game, structure=structure, weights=weights, seed=seed, final=float(final),
                      **dict(settings))
    return load_runs(root)


def evidence_of(episodes: pd.DataFrame, claim: str) -> pd.DataFrame:
    evidence = claim_evidence(episodes, reps=500)
    return evidence[evidence["claim"] == claim].set_index("comparison")


def verdict_of(episodes: pd.DataFrame, claim_text_start: str) -> str:
    verdicts = claim_verdicts(claim_evidence(episodes, reps=500))
    return verdicts.loc[verdicts["claim"].str.startswith(claim_text_start), "verdict"].item()


HIGH, LOW = [10, 11, 12], [1, 2, 3]


def test_sparse_beats_dense_needs_every_sparse_structure_above_dense(tmp_path: Path) -> None:
    cells = {("breakout", "random", "learned"): HIGH, ("breakout", "local", "learned"): HIGH,
             ("breakout", "dense", "learned"): LOW}
    episodes = planted(tmp_path / "a", cells)
    rows = evidence_of(episodes, "sparse_beats_dense")
    assert rows.loc["random vs dense", "estimate"] == 1.0 and rows.loc["random vs dense", "ci_low"] > 0.5
    assert set(rows["verdict"]) == {"supports"}
    assert verdict_of(episodes, "At matched capacity") == "supported"

    cells[("breakout", "local", "learned")] = [0, 0.5, 0.7]
    episodes = planted(tmp_path / "b", cells)
    assert evidence_of(episodes, "sparse_beats_dense").loc["local vs dense", "verdict"] == "contradicts"
    assert verdict_of(episodes, "At matched capacity") == "mixed"


def test_a_single_seed_decides_nothing(tmp_path: Path) -> None:
    episodes = planted(tmp_path, {("breakout", "random", "fixed"): [9], ("breakout", "dense", "fixed"): [1],
                                  ("breakout", "random", "learned"): [9], ("breakout", "dense", "learned"): [1]})
    evidence = claim_evidence(episodes, reps=200)
    assert len(evidence) and set(evidence["verdict"]) == {"undecided"}
    assert set(claim_verdicts(evidence)["verdict"]) == {"undecided"}


def test_two_seeds_that_do_not_overlap_decide_nothing(tmp_path: Path) -> None:
    """Their bootstrap CI is [1, 1], yet the chance of that ordering with no difference at all is 1/6."""
    episodes = planted(tmp_path, {("breakout", "random", "fixed"): [9, 10], ("breakout", "dense", "fixed"): [1, 2]})
    row = evidence_of(episodes, "sparse_beats_dense").iloc[0]
    assert row["ci_low"] == 1.0 and row["p_value"] == pytest.approx(1 / 6) and row["verdict"] == "undecided"
    assert verdict_of(episodes, "At matched capacity") == "undecided"


@pytest.mark.parametrize("x, y", [([10, 11, 12], [1, 2, 3]), ([3, 8, 9, 14], [1, 2, 5, 11, 13]),
                                  ([2, 4, 6], [1, 3, 5]), (np.arange(8) + 3.5, np.arange(8))])
def test_the_permutation_p_value_is_the_exact_rank_test(x: list[float], y: list[float]) -> None:
    """Counted over every arrangement, or over 2000 random ones when there are more (8 runs against 8)."""
    x, y = np.array(x, float), np.array(y, float)
    exact = scipy.stats.mannwhitneyu(x, y, alternative="greater", method="exact").pvalue
    sampled = math.comb(len(x) + len(y), len(x)) > 2000
    assert permutation_p([x, y]) == pytest.approx(exact, abs=0.01 if sampled else 1e-12)
    assert permutation_p([x, y, x, y]) < exact  # the same difference in a second game is more evidence


def test_the_best_structure_changes_with_the_weight_mode(tmp_path: Path) -> None:
    cells = {("breakout", "predictive", "fixed"): HIGH, ("breakout", "conv", "fixed"): LOW,
             ("breakout", "predictive", "learned"): LOW, ("breakout", "conv", "learned"): HIGH}
    row = evidence_of(planted(tmp_path / "a", cells), "best_depends_on_weights").iloc[0]
    assert row.name == "best fixed predictive, best learned conv"
    assert row["estimate"] == 0.0 and row["p_value"] == pytest.approx(0.05) and row["verdict"] == "supports"

    cells[("breakout", "predictive", "learned")] = [20, 21, 22]
    row = evidence_of(planted(tmp_path / "b", cells), "best_depends_on_weights").iloc[0]
    assert row.name == "best fixed predictive, best learned predictive"
    assert row["estimate"] == 1.0 and row["verdict"] == "contradicts"

    cells[("breakout", "predictive", "learned")] = [0, 11, 30]  # overlaps conv's: resamples disagree
    row = evidence_of(planted(tmp_path / "c", cells), "best_depends_on_weights").iloc[0]
    assert 0.05 < row["estimate"] < 0.95 and row["verdict"] == "undecided"


def test_resamples_agreeing_on_the_bests_do_not_decide_alone(tmp_path: Path) -> None:
    """Two runs above two: every resample picks the same bests, yet each ordering has p = 1/6."""
    cells = {("breakout", "predictive", "fixed"): [10, 11], ("breakout", "conv", "fixed"): [1, 2],
             ("breakout", "predictive", "learned"): [1, 2], ("breakout", "conv", "learned"): [10, 11],
             ("space_invaders", "predictive", "fixed"): HIGH, ("space_invaders", "conv", "fixed"): LOW,
             ("space_invaders", "predictive", "learned"): LOW, ("space_invaders", "conv", "learned"): HIGH}
    episodes = planted(tmp_path, cells)
    rows = evidence_of(episodes, "best_depends_on_weights").set_index("game")
    assert rows.loc["breakout", "estimate"] == 0.0 and rows.loc["breakout", "p_value"] == pytest.approx(1 / 6)
    assert rows["verdict"].to_dict() == {"breakout": "undecided", "space_invaders": "supports"}
    assert verdict_of(episodes, "The best structure") == "undecided"  # 0.05 > 0.05 / 2 games


def test_a_non_spatial_structure_is_tested_against_the_better_spatial_one(tmp_path: Path) -> None:
    """One game and mode is enough, once it beats the chance of one of the claim's two comparisons
    coming out this way by luck: at 3 seeds a side it cannot (p = 0.05 > 0.05 / 2), at 5 it does."""
    for seeds, verdict in ((3, "undecided"), (5, "supported")):
        high, low = list(range(10, 10 + seeds)), list(range(1, 1 + seeds))
        cells = {("breakout", "conv", "fixed"): [5.5] * seeds, ("breakout", "local", "fixed"): low,
                 ("breakout", "random", "fixed"): high, ("breakout", "dense", "fixed"): [30] * seeds,
                 ("breakout", "conv", "learned"): high, ("breakout", "local", "learned"): low,
                 ("breakout", "random", "learned"): low}
        episodes = planted(tmp_path / str(seeds), cells)
        rows = evidence_of(episodes, "spatial_not_always_best")
        assert sorted(rows.index) == ["random vs conv", "random vs conv"]  # dense is not a sparse structure
        assert sorted(rows["verdict"]) == ["contradicts", "supports"]
        assert verdict_of(episodes, "The spatial structures") == verdict


def test_fixed_weights_matching_learned_ones_somewhere(tmp_path: Path) -> None:
    high, low = [10, 11, 12, 13, 14], [1, 2, 3, 4, 5]
    cells = {("breakout", "random", "fixed"): high, ("breakout", "random", "learned"): low,
             ("space_invaders", "random", "fixed"): low, ("space_invaders", "random", "learned"): high}
    episodes = planted(tmp_path / "a", cells)
    rows = evidence_of(episodes, "fixed_can_match_learned")
    assert rows.set_index("game")["verdict"].to_dict() == {"breakout": "supports", "space_invaders": "contradicts"}
    assert verdict_of(episodes, "Fixed random") == "supported"

    cells[("breakout", "random", "fixed")] = [0] * 5
    assert verdict_of(planted(tmp_path / "b", cells), "Fixed random") == "contradicted"


def test_setting_effects_compare_runs_that_share_every_other_setting(tmp_path: Path) -> None:
    """leaky_relu runs score far above relu ones, and masking adds a little within each activation:
    pooled, masked and unmasked runs would overlap; compared within an activation, masking always wins."""
    cells = {}
    for activation, base in (("relu", 0), ("leaky_relu", 100)):
        for masked, bonus in ((True, 5), (False, 0)):
            cells[("breakout", "set", "learned", ("activation", activation), ("mask_optimizer_state", masked),
                   ("sparsity", 0.9), ("optimizer", "adam"))] = [base + bonus + s for s in (0, 1, 2)]
    episodes = planted(tmp_path, cells)
    masking = evidence_of(episodes, "masking_moments_helps").iloc[0]
    assert masking.name == "set: mask_optimizer_state=True vs False"
    assert masking["estimate"] == 1.0 and masking["verdict"] == "supports" and masking["runs"] == 12
    leaky = evidence_of(episodes, "leaky_relu_helps").iloc[0]
    assert leaky["estimate"] == 1.0 and leaky["verdict"] == "supports"
    assert verdict_of(episodes, "Masking the optimizer") == "supported"


def test_the_setting_claims_read_only_the_runs_they_are_about(tmp_path: Path) -> None:
    """Masking: SET and RigL at 90% sparsity; leaky_relu: any structure at 90%. Pruning and 70% runs, however
    clear their difference, are left out."""
    cells = {}
    for structure, sparsity in (("set", 0.9), ("set", 0.7), ("prune", 0.9)):
        for masked in (True, False):
            for activation, bonus in (("relu", 0), ("leaky_relu", 50)):
                cells[("breakout", structure, "learned", ("activation", activation), ("mask_optimizer_state", masked),
                       ("sparsity", sparsity))] = [bonus + 10 * masked + s for s in (0, 1, 2)]
    evidence = claim_evidence(planted(tmp_path, cells), reps=200)
    masking = evidence[evidence["claim"] == "masking_moments_helps"]
    assert list(masking["comparison"]) == ["set: mask_optimizer_state=True vs False"]
    assert masking["runs"].item() == 12  # set at 0.9 only
    leaky = evidence[evidence["claim"] == "leaky_relu_helps"].set_index("comparison")["runs"].to_dict()
    assert leaky == {"prune: activation=leaky_relu vs relu": 12, "set: activation=leaky_relu vs relu": 12}


@pytest.mark.parametrize("cells", [
    {("breakout", "conv", "learned"): HIGH},
    {("breakout", "set", "learned", ("activation", "relu")): HIGH},
])
def test_runs_that_cannot_test_a_claim_give_no_rows(tmp_path: Path, cells: dict) -> None:
    evidence = claim_evidence(planted(tmp_path, cells), reps=200)
    assert evidence.empty and claim_verdicts(evidence).empty
