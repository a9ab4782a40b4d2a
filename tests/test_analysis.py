"""Tests of minisparse.analysis on synthetic run directories with known returns.

`write_run` follows docs/run-directory.md exactly, so these runs look like the core's.
Expected statistics are computed here independently: IQM by sorting and averaging the
middle half, probability of improvement by counting pairs, bootstrap intervals by a
plain numpy percentile bootstrap.
"""
from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from minisparse.analysis import (NoRunsError, binned_returns, compare, eval_scores, final_performance,  # noqa: E402
                                 find_runs, load_capacity, load_eval, load_runs, load_train,
                                 paired_differences, probability_of_improvement, rank_table, run_scores,
                                 sensitivity, varied_settings)
from minisparse.analysis.command import compare as compare_command  # noqa: E402
from minisparse.analysis.stats import REFERENCE_RETURNS, bootstrap_ci, iqm, permutation_p  # noqa: E402
from minisparse.config import CHANNELS, Config  # noqa: E402

FRAMES = 10_000
EPISODE_FRAMES = np.arange(250, FRAMES, 500)  # 20 episodes; the last 10% window holds 9250 and 9750
LAST = EPISODE_FRAMES >= 0.9 * FRAMES


def write_run(root: Path, *, game: str = "breakout", structure: str = "conv", weights: str = "learned",
              seed: int = 0, final: float = 1.0, early: float = 0.0, complete: bool = True,
              episode_frames: np.ndarray = EPISODE_FRAMES, connections: int | None = None,
              options: dict | None = None, changes: bool = False, frames: int = FRAMES, **config: object) -> Path:
    """A run directory as the core writes it; the last-10% episodes return `final` (then final+2, final-2)."""
    cfg = Config(game=game, structure=structure, weights=weights, seed=seed, frames=frames,
                 structure_options=options or {}, **config)
    run = root / f"{game}-{structure}-{weights}-s{seed}-{cfg.fingerprint()}"
    (run / "masks").mkdir(parents=True)
    inputs = CHANNELS[game] * 100
    budget = 9 * CHANNELS[game] * 1024
    structured = (1024 * inputs if structure == "dense" else budget) if connections is None else connections
    capacity = {
        "structured": _layer(1024, inputs, structured),
        "hidden": _layer(128, 1024, 128 * 1024),
        "head": _layer(6, 128, 6 * 128),
    }
    capacity["total"] = {k: sum(layer[k] for layer in capacity.values()) for k in capacity["structured"]}
    (run / "config.json").write_text(json.dumps({
        "config": cfg.to_dict(), "capacity": capacity, "versions": {"python": "3.11", "minisparse": "0.1.0"},
        "git_commit": None, "created": "2025-01-01T00:00:00+0000"}, indent=2))
    returns = np.where(episode_frames >= 0.9 * episode_frames.max() if not complete
                       else episode_frames >= 0.9 * frames, final, early)
    in_window = np.flatnonzero(returns == final) if final != early else np.array([], int)
    if len(in_window) == 2:  # mean stays `final`, but the episodes differ
        returns[in_window] = [final + 2, final - 2]
    pd.DataFrame({"frame": episode_frames, "episode": np.arange(1, len(episode_frames) + 1),
                  "return": returns, "length": np.diff(episode_frames, prepend=0),
                  "epsilon": np.linspace(1, 0.1, len(episode_frames)),
                  "seconds": episode_frames / 1000}).to_csv(run / "episodes.csv", index=False)
    log = np.arange(2000, int(episode_frames.max()) + 1, 2000)
    pd.DataFrame({"frame": log, "updates": log - 1000, "loss": 0.1, "mean_q": 1.0, "frames_per_s": 500.0,
                  "density_structured": structured / (1024 * inputs),
                  "changed_structured": 37 if changes else 0}).to_csv(run / "train.csv", index=False)
    rng = np.random.default_rng(seed)
    start = np.zeros((1024, inputs), bool)
    for unit in start:
        unit[rng.choice(inputs, structured // 1024, replace=False)] = True
    np.savez_compressed(run / "masks" / "start.npz", structured=start)
    if changes:
        np.savez_compressed(run / "masks" / "frame_4000.npz", structured=np.roll(start, 1, axis=1))
    if complete:
        np.savez_compressed(run / "masks" / "end.npz", structured=np.roll(start, 3, axis=1))
        (run / "complete.json").write_text(json.dumps(
            {"frames": FRAMES, "episodes": len(episode_frames), "seconds": 10.0,
             "finished": "2025-01-01T00:10:00+0000"}))
    return run


def _layer(units: int, inputs: int, connections: int) -> dict:
    return {"units": units, "inputs": inputs, "connections": connections, "parameters": connections + units,
            "density": connections / (units * inputs), "flops": 2 * connections}


# Final scores of the study: (game, weights) -> structure -> one score per seed.
# conv leads with learned weights, random with fixed weights (the ranking changes);
# ties between conv and set under fixed weights exercise the half counts.
SCORES = {
    ("breakout", "learned"): {"conv": [8, 9, 10, 30], "random": [4, 5, 6, 7], "set": [6, 7, 8, 9],
                              "dense": [9, 10, 11, 12]},
    ("breakout", "fixed"): {"conv": [2, 3, 4, 5], "random": [6, 7, 8, 1], "set": [3, 4, 5, 6],
                            "dense": [1, 2, 3, 4]},
    ("asterix", "learned"): {"conv": [20, 22, 24, 26], "random": [10, 12, 14, 16], "set": [15, 15, 17, 19],
                             "dense": [18, 20, 22, 24]},
    ("asterix", "fixed"): {"conv": [8, 9, 10, 11], "random": [12, 14, 16, 18], "set": [9, 10, 11, 12],
                           "dense": [5, 6, 7, 8]},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two games x four structures x two weight modes x four seeds, nested two folders deep."""
    root = tmp_path_factory.mktemp("study")
    for (game, weights), structures in SCORES.items():
        for structure, finals in structures.items():
            for seed, final in enumerate(finals):
                write_run(root / game / weights, game=game, structure=structure, weights=weights, seed=seed,
                          final=float(final), changes=structure == "set")
    return root


@pytest.fixture(scope="module")
def episodes(study: Path) -> pd.DataFrame:
    return load_runs(study)


def middle_half_mean(*strata: np.ndarray, axis: int = -1) -> np.ndarray:
    """hand_iqm of the strata pooled, along `axis` (a bootstrap statistic)."""
    values = np.sort(np.concatenate(strata, axis=axis), axis=axis)
    quarter = values.shape[axis] // 4
    return values.take(range(quarter, values.shape[axis] - quarter), axis=axis).mean(axis=axis)


def mean_improvement(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """P(X > Y) (ties half) averaged over games, from samples x1, y1, x2, y2, ... (bootstrap statistic)."""
    pairs = [(x[..., :, None] > y[..., None, :]) + 0.5 * (x[..., :, None] == y[..., None, :])
             for x, y in zip(samples[::2], samples[1::2])]
    return np.mean([p.mean(axis=(-1, -2)) for p in pairs], axis=0)


def hand_iqm(values: list[float]) -> float:
    """Mean of the middle half after sorting (len divisible by 4)."""
    values = sorted(values)
    quarter = len(values) // 4
    return float(np.mean(values[quarter:len(values) - quarter]))


def hand_improvement(x: list[float], y: list[float]) -> float:
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)
    return wins / (len(x) * len(y))


# --- loading -------------------------------------------------------------------------------------

def test_load_runs_one_row_per_episode_with_config_columns(study: Path, episodes: pd.DataFrame) -> None:
    assert len(episodes) == 64 * len(EPISODE_FRAMES)
    for column in ("frame", "episode", "return", "length", "epsilon", "seconds", "game", "structure",
                   "weights", "seed", "sparsity", "fan_in", "activation", "optimizer", "run", "path", "complete"):
        assert column in episodes.columns, column
    run = episodes[(episodes["game"] == "asterix") & (episodes["structure"] == "random")
                   & (episodes["weights"] == "fixed") & (episodes["seed"] == 2)]
    assert run["frame"].tolist() == EPISODE_FRAMES.tolist()
    assert run.loc[run["frame"] >= 9000, "return"].tolist() == [18.0, 14.0]  # final 16 -> 16+2, 16-2
    assert run["run"].iloc[0].startswith("asterix-random-fixed-s2-")
    assert episodes["complete"].all()
    assert episodes["adam_betas"].iloc[0] == (0.9, 0.999)  # lists become hashable tuples


def test_load_accepts_a_run_a_folder_of_runs_and_several_paths(study: Path) -> None:
    one = next((study / "breakout" / "learned").iterdir())
    assert load_runs(one)["path"].nunique() == 1
    assert load_runs(study / "breakout" / "learned")["path"].nunique() == 16
    assert load_runs([study / "breakout", study / "asterix" / "fixed"])["path"].nunique() == 48
    assert find_runs([study, one]) == find_runs(study)  # no run counted twice


def test_structure_options_become_option_columns_and_unfinished_runs_are_marked(tmp_path: Path) -> None:
    write_run(tmp_path, structure="set", options={"drop_fraction": 0.3, "period": 100})
    write_run(tmp_path, structure="conv", complete=False, episode_frames=np.arange(100, 5000, 200))
    frame = load_runs(tmp_path)
    done = frame[frame["structure"] == "set"]
    assert (done["option.drop_fraction"] == 0.3).all() and (done["option.period"] == 100).all()
    assert done["complete"].all()
    assert not frame.loc[frame["structure"] == "conv", "complete"].any()
    assert len(frame[frame["structure"] == "conv"]) == len(np.arange(100, 5000, 200))


def test_load_train_and_capacity(study: Path) -> None:
    train = load_train(study / "breakout" / "learned")
    assert len(train) == 16 * 4 and {"density_structured", "changed_structured", "structure"} <= set(train.columns)
    assert (train.loc[train["structure"] == "set", "changed_structured"] == 37).all()
    capacity = load_capacity(study / "asterix")
    assert len(capacity) == 32 * 4  # runs x (structured, hidden, head, total)
    dense = capacity[(capacity["structure"] == "dense") & (capacity["layer"] == "structured")]
    assert (dense["connections"] == 1024 * 400).all() and (dense["units"] == 1024).all()


def test_a_folder_without_runs_or_a_missing_path_raises_no_runs_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(NoRunsError, match="holds no runs"):
        load_runs(tmp_path / "empty")
    with pytest.raises(NoRunsError, match="does not exist"):
        load_runs(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"name": "not a run"}')
    with pytest.raises(NoRunsError, match="not a minisparse run config"):
        load_capacity(tmp_path / "other")


# --- statistics ----------------------------------------------------------------------------------

def test_run_scores_average_the_episodes_of_the_last_tenth_of_frames(tmp_path: Path, episodes: pd.DataFrame) -> None:
    scores = run_scores(episodes)
    for (game, weights), structures in SCORES.items():
        for structure, finals in structures.items():
            got = scores[(scores["game"] == game) & (scores["weights"] == weights)
                         & (scores["structure"] == structure)].sort_values("seed")
            assert got["score"].tolist() == pytest.approx(finals)
            assert (got["episodes_scored"] == LAST.sum()).all()
            assert got["normalized"].tolist() == pytest.approx([f / REFERENCE_RETURNS[game] for f in finals])
    # An unfinished run is scored on the last 10% of the frames it reached (here 4,000).
    write_run(tmp_path, complete=False, final=7.0, episode_frames=np.arange(100, 4001, 100))
    unfinished = run_scores(load_runs(tmp_path)).iloc[0]
    assert not unfinished["complete"]
    assert unfinished["episodes_scored"] == 5  # frames 3600..4000
    assert unfinished["score"] == pytest.approx(7.0)
    # A longer window takes in the early episodes (return 0) too.
    wide = run_scores(load_runs(tmp_path), last_fraction=0.5).iloc[0]
    assert wide["score"] == pytest.approx(7.0 * 5 / 21)


def test_final_performance_iqm_per_game_and_across_games(episodes: pd.DataFrame) -> None:
    table = final_performance(episodes, reps=500)
    assert set(table["game"]) == {"breakout", "asterix", "all games"}
    for (game, weights), structures in SCORES.items():
        for structure, finals in structures.items():
            row = table[(table["game"] == game) & (table["weights"] == weights) & (table["structure"] == structure)]
            assert len(row) == 1
            assert row["iqm"].item() == pytest.approx(hand_iqm(finals), abs=1e-9)
            assert row["ci_low"].item() <= row["iqm"].item() <= row["ci_high"].item()
            assert min(finals) <= row["ci_low"].item() and row["ci_high"].item() <= max(finals)
            expected = bootstrap_ci([np.array(finals, float)], middle_half_mean, 500, 0.95, seed=0)
            assert (row["ci_low"].item(), row["ci_high"].item()) == pytest.approx(expected, abs=1e-12)
    for weights in ("learned", "fixed"):
        for structure in ("conv", "random", "set", "dense"):
            pooled = [f / REFERENCE_RETURNS[game] for game in ("breakout", "asterix")
                      for f in SCORES[(game, weights)][structure]]
            row = table[(table["game"] == "all games") & (table["weights"] == weights)
                        & (table["structure"] == structure)]
            assert row["iqm"].item() == pytest.approx(hand_iqm(pooled), abs=1e-9)
            assert row["runs"].item() == 8 and row["measure"].item() == "return / DQN reference"
            strata = [np.array(SCORES[(game, weights)][structure], float) / REFERENCE_RETURNS[game]
                      for game in ("asterix", "breakout")]  # runs resampled within each game
            expected = bootstrap_ci(strata, middle_half_mean, 500, 0.95, seed=0)
            assert (row["ci_low"].item(), row["ci_high"].item()) == pytest.approx(expected, abs=1e-12)


def test_iqm_matches_sorting_and_averaging_the_middle_half() -> None:
    values = np.random.default_rng(3).normal(size=40)
    assert iqm(values) == pytest.approx(np.sort(values)[10:30].mean(), abs=1e-12)


def test_bootstrap_ci_matches_a_plain_percentile_bootstrap() -> None:
    values = np.random.default_rng(4).exponential(size=24)
    low, high = bootstrap_ci([values], lambda x, axis: iqm(x, axis=axis), 20_000, 0.95, seed=1)
    draws = np.random.default_rng(99).choice(values, size=(20_000, len(values)), replace=True)
    by_hand = np.sort(draws, axis=1)[:, 6:18].mean(axis=1)
    spread = by_hand.std()
    assert low == pytest.approx(np.percentile(by_hand, 2.5), abs=0.1 * spread)
    assert high == pytest.approx(np.percentile(by_hand, 97.5), abs=0.1 * spread)


def test_stratified_bootstrap_matches_independent_resampling_within_each_stratum() -> None:
    # Two games whose runs happen to have equal scores: resampling the games independently
    # (not with shared indices) gives the narrower interval computed here by hand.
    game = np.arange(1.0, 9.0)
    pooled_mean = lambda *s, axis: np.concatenate(s, axis=axis).mean(axis=axis)  # noqa: E731
    low, high = bootstrap_ci([game, game.copy()], pooled_mean, 20_000, 0.95, seed=2)
    rng = np.random.default_rng(7)
    by_hand = (rng.choice(game, (20_000, 8)).mean(axis=1) + rng.choice(game, (20_000, 8)).mean(axis=1)) / 2
    spread = by_hand.std()
    assert low == pytest.approx(np.percentile(by_hand, 2.5), abs=0.1 * spread)
    assert high == pytest.approx(np.percentile(by_hand, 97.5), abs=0.1 * spread)


def test_bootstrap_is_stratified_and_seeded() -> None:
    # Resampling within each stratum keeps 4 zeros and 4 hundreds in every draw, so the pooled
    # mean never moves; a bootstrap that mixed the strata would give a wide interval.
    strata = [np.zeros(4), np.full(4, 100.0)]
    pooled_mean = lambda *s, axis: np.concatenate(s, axis=axis).mean(axis=axis)  # noqa: E731
    assert bootstrap_ci(strata, pooled_mean, 1000, 0.95, seed=0) == pytest.approx((50.0, 50.0))
    varied = [np.arange(6.0), np.arange(6.0) * 3]
    assert bootstrap_ci(varied, pooled_mean, 1000, 0.95, 5) == bootstrap_ci(varied, pooled_mean, 1000, 0.95, 5)
    # A single run per stratum cannot be resampled: no interval.
    assert all(np.isnan(bootstrap_ci([np.ones(1), np.ones(1)], pooled_mean, 1000, 0.95, 0)))


def test_probability_of_improvement_counts_pairs_and_averages_over_games(episodes: pd.DataFrame) -> None:
    table = probability_of_improvement(episodes, reps=300)
    assert len(table) == 2 * 4 * 3  # modes x ordered pairs of 4 structures
    for weights in ("learned", "fixed"):
        for x, y in itertools.permutations(["conv", "random", "set", "dense"], 2):
            expected = np.mean([hand_improvement(SCORES[(g, weights)][x], SCORES[(g, weights)][y])
                                for g in ("breakout", "asterix")])
            row = table[(table["weights"] == weights) & (table["x"] == x) & (table["y"] == y)]
            assert row["probability"].item() == pytest.approx(expected, abs=1e-12)
            assert row["ci_low"].item() <= row["probability"].item() <= row["ci_high"].item()
            assert 0 <= row["ci_low"].item() and row["ci_high"].item() <= 1
            assert row["games"].item() == 2
            first, second = sorted((x, y))  # each unordered pair is bootstrapped once, games as strata
            samples = [np.array(SCORES[(g, weights)][s], float) for g in ("asterix", "breakout")
                       for s in (first, second)]
            low, high = bootstrap_ci(samples, mean_improvement, 300, 0.95, seed=0)
            expected = (low, high) if x == first else (1 - high, 1 - low)
            assert (row["ci_low"].item(), row["ci_high"].item()) == pytest.approx(expected, abs=1e-12)
            ordered = [np.array(SCORES[(g, weights)][s], float) for g in ("asterix", "breakout") for s in (x, y)]
            assert row["p_value"].item() == permutation_p(ordered, 300, 0)  # x beating y, not y beating x
    # conv vs set under fixed weights on breakout has ties: (3,3), (4,4), (5,5) count half.
    assert hand_improvement([2, 3, 4, 5], [3, 4, 5, 6]) == pytest.approx((0 + 0.5 + 1.5 + 2.5) / 16)


def test_rank_table_shows_the_ranking_change_between_weight_modes(episodes: pd.DataFrame) -> None:
    ranks = rank_table(final_performance(episodes, reps=100)).set_index(["game", "structure"])
    assert ranks.loc[("breakout", "conv"), "rank_learned"] == 2  # dense (10.5) > conv (9.5)
    assert ranks.loc[("breakout", "random"), "rank_fixed"] == 1  # random (6.5) leads fixed
    assert ranks.loc[("asterix", "random"), "rank_learned"] == 4
    assert ranks.loc[("asterix", "random"), "rank_change"] == 1 - 4
    for game in ("breakout", "asterix", "all games"):
        assert sorted(ranks.loc[game, "rank_fixed"]) == [1, 2, 3, 4]


def test_binned_returns_give_each_run_one_mean_per_bin(episodes: pd.DataFrame) -> None:
    binned = binned_returns(episodes, bins=4)  # edges 0, 2500, 5000, 7500, 10000 (the runs' frames)
    run = binned[(binned["game"] == "breakout") & (binned["structure"] == "conv")
                 & (binned["weights"] == "learned") & (binned["seed"] == 3)]
    assert run["frame"].tolist() == pytest.approx([1250, 3750, 6250, 8750])
    # The last bin holds frames 7750..9750: three early episodes (0) and the final two (32, 28).
    assert run["return"].tolist() == pytest.approx([0, 0, 0, (0 * 3 + 32 + 28) / 5])


def test_curves_stop_where_a_run_stops_and_runs_of_another_length_get_their_own_bins(tmp_path: Path) -> None:
    write_run(tmp_path, seed=0, final=1.0)
    write_run(tmp_path, seed=1, final=1.0, complete=False, episode_frames=np.arange(250, 5300, 500))  # at 5250
    write_run(tmp_path, seed=0, final=1.0, frames=20_000, episode_frames=np.arange(250, 20_000, 500))
    binned = binned_returns(load_runs(tmp_path), bins=4)
    centres = binned.groupby(["structure", "seed"])["frame"].apply(list).to_dict()
    assert centres[("conv (frames=10000)", 0)] == [1250, 3750, 6250, 8750]
    # The unfinished run's frames cover half of no bin past 5000: its third bin (one episode) is left out.
    assert centres[("conv (frames=10000)", 1)] == [1250, 3750]
    assert centres[("conv (frames=20000)", 0)] == [2500, 7500, 12500, 17500]


def test_variants_split_runs_of_one_structure_with_different_settings(tmp_path: Path) -> None:
    write_run(tmp_path, structure="random", sparsity=0.9, final=3.0)
    write_run(tmp_path, structure="random", sparsity=0.95, final=5.0)
    write_run(tmp_path, structure="conv", final=4.0)
    scores = run_scores(load_runs(tmp_path)).set_index("structure")["score"]
    assert scores.to_dict() == {"conv": 4.0, "random (sparsity=0.9)": 3.0, "random (sparsity=0.95)": 5.0}


# --- compare: figures, tables, capacity check, command line ----------------------------------------

FIGURES = ("learning_curves", "final_performance", "probability_of_improvement", "fixed_vs_learned",
           "connectivity")
TABLES = ("final_performance", "probability_of_improvement", "ranks", "capacity", "claims", "claim_evidence")


@pytest.fixture(scope="module")
def compared(study: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("compared") / "out"
    return out, compare(study, out, reps=200)


def test_compare_draws_every_figure_as_png_and_pdf(compared) -> None:
    out, result = compared
    for name in FIGURES:
        image = matplotlib.image.imread(out / f"{name}.png")
        assert image.shape[0] > 300 and image.shape[1] > 500, name
        assert image[..., :3].std() > 0.05, f"{name}.png is blank"
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-", name
    assert set(result.files) >= {out / f"{name}.{s}" for name in FIGURES for s in ("png", "pdf")}


def test_compare_writes_every_table_as_csv_markdown_and_latex(compared, episodes: pd.DataFrame) -> None:
    out, result = compared
    for name in TABLES:
        csv = pd.read_csv(out / f"{name}.csv")
        assert len(csv) == len(result.tables[name]) > 0, name
        markdown = (out / f"{name}.md").read_text()
        assert markdown.startswith("**") and sum(line.startswith("|") for line in markdown.splitlines()) == len(csv) + 2
        latex = (out / f"{name}.tex").read_text()
        assert "\\begin{tabular}" in latex and "\\caption{" in latex
        assert latex.count("\\\\") == len(csv) + 1  # header and one line per row
    expected = final_performance(episodes, reps=200)
    written = pd.read_csv(out / "final_performance.csv")
    assert written["iqm"].tolist() == pytest.approx(expected["iqm"].tolist())
    assert len(pd.read_csv(out / "run_scores.csv")) == 64


def test_compare_draws_masks_and_connectivity_only_for_changing_structures(compared) -> None:
    out, result = compared
    pictures = sorted(p.name for p in (out / "masks").glob("*.png"))
    assert len(pictures) == 2  # set, learned and fixed: one run each
    assert all("-set-" in name for name in pictures)
    assert {p.name for p in (out / "masks").glob("*.pdf")} == {n.replace(".png", ".pdf") for n in pictures}


def test_matched_capacity_gives_no_warning_and_dense_is_the_reference(compared) -> None:
    out, result = compared
    capacity = pd.read_csv(out / "capacity.csv")
    assert not any("capacity" in w for w in result.warnings)
    assert set(capacity.loc[capacity["structure"] == "dense", "matched"]) == {"reference"}
    assert set(capacity.loc[capacity["structure"] != "dense", "matched"]) == {"yes"}
    structured = capacity[(capacity["layer"] == "structured") & (capacity["game"] == "breakout")]
    assert set(structured.columns) >= {"hidden units", "connections", "parameters", "density", "flops"}
    assert structured.set_index(["structure", "weights"]).loc[("conv", "fixed"), "connections"] == 9 * 4 * 1024
    assert (structured["runs"] == 4).all()
    assert "Warning" not in (out / "capacity.md").read_text()


@pytest.fixture(scope="module")
def unmatched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conv and random at different budgets, dense, both modes, two seeds; one run unfinished."""
    root = tmp_path_factory.mktemp("unmatched")
    for weights, seed in itertools.product(("learned", "fixed"), (0, 1)):
        write_run(root, structure="conv", weights=weights, seed=seed, final=5.0 + seed)
        write_run(root, structure="random", weights=weights, seed=seed, final=3.0 + seed, connections=20_480)
        write_run(root, structure="dense", weights=weights, seed=seed, final=4.0 + seed,
                  complete=not (weights == "fixed" and seed == 1))
    return root


def test_command_warns_in_terminal_tables_and_figures_when_capacity_differs(unmatched: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(compare_command, [str(unmatched), "--out", str(out), "--reps", "200"])
    assert result.exit_code == 0, result.output
    assert "warning: not at matched capacity" in result.stderr
    assert "breakout structured layer (random 20,480; conv 36,864)" in result.stderr
    assert "dense" not in result.stderr.split("matched capacity")[1]  # the reference is not checked
    assert "1 of 12 runs are unfinished" in result.stderr
    assert "compared 12 runs of 3 structures" in result.stdout
    claims = pd.read_csv(out / "claims.csv")
    assert len(claims) and all(f"{row.verdict:<12} {row.claim} ({row.comparisons} comparisons)" in result.stdout
                               for row in claims.itertuples())  # the verdicts, in the terminal too
    capacity = pd.read_csv(out / "capacity.csv")
    assert set(capacity.loc[capacity["layer"] == "structured", "matched"]) == {"NO", "reference"}
    assert "**Warning:** not at matched capacity" in (out / "capacity.md").read_text()
    assert "Warning: not at matched capacity" in (out / "capacity.tex").read_text()
    performance = pd.read_csv(out / "final_performance.csv").set_index(["weights", "structure"])
    assert performance.loc[("fixed", "dense"), "unfinished"] == 1
    assert performance.loc[("learned", "dense"), "unfinished"] == 0


def test_figures_carry_the_capacity_warning_and_the_number_of_seeds(episodes: pd.DataFrame) -> None:
    from minisparse.analysis import figures
    table = final_performance(episodes, reps=100)
    style = figures.Style.of(run_scores(episodes))
    fig = figures.final_performance(table, 0.1, "structures not at matched capacity", style)
    title = " ".join(fig.get_suptitle().split())
    assert "WARNING: structures not at matched capacity" in title and "n=4 seeds" in title
    one_game = figures.final_performance(table[table["game"] == table["game"].iloc[0]], 0.1, None, style)
    widest = max(len(line) for line in one_game.get_suptitle().splitlines())
    assert widest <= one_game.get_figwidth() * figures._TITLE_CHARS_PER_INCH  # not wider than its one panel
    assert fig.axes[0].get_xlabel().startswith("IQM of return per episode")
    assert figures.final_performance(table, 0.1, None, style).get_suptitle().count("WARNING") == 0
    assert figures.seeds_note([3, 5, 4]) == "n=3-5 seeds"


LONG_SETTINGS = [{"lr": lr, "activation": activation, "target_period": period}
                 for lr in (2.5e-4, 1e-3) for activation in ("relu", "leaky_relu") for period in (1000, 4000)]


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study's worth of runs: 8 variants each of conv and random (long labels), 2 seeds, learned
    weights only, one random variant in fixed mode on asterix alone, and an unfinished run."""
    root = tmp_path_factory.mktemp("crowded")
    for (index, settings), structure, seed in itertools.product(enumerate(LONG_SETTINGS), ("conv", "random"), (0, 1)):
        unfinished = structure == "random" and index == 0 and seed == 1
        write_run(root, structure=structure, seed=seed, final=float(index + seed), complete=not unfinished,
                  episode_frames=np.arange(250, 2300, 500) if unfinished else EPISODE_FRAMES, **settings)
    for seed in (0, 1):
        write_run(root, game="asterix", structure="random", weights="fixed", seed=seed, final=2.0 + seed)
    return root


def test_figures_of_a_crowded_study_use_short_labels_a_key_and_mark_unfinished_runs(crowded: Path) -> None:
    from minisparse.analysis import figures
    episodes = load_runs(crowded)
    scores = run_scores(episodes)
    style = figures.Style.of(scores)
    assert sorted(set(style.labels.values())) == [f"{base} {letter}" for base in ("conv", "random") for letter in "abcdefgh"]
    assert len(style.unfinished) == 1

    performance = final_performance(episodes, reps=100)
    fig = figures.final_performance(performance, 0.1, None, style)
    labels = [tick.get_text() for tick in fig.axes[0].get_yticklabels()]
    assert max(map(len, labels)) <= len("random h")  # short labels; the full settings are in the key
    caption = "\n".join(text.get_text() for text in fig.texts)
    assert "conv a = conv (activation=leaky_relu, target_period=1000, lr=0.00025)" in caption
    assert "hollow markers: 1 unfinished run (" in caption and style.unfinished[0] in caption
    hollow = [line for ax in fig.axes for line in ax.lines if line.get_markerfacecolor() == "white"]
    assert len(hollow) == 1  # the one cell with an unfinished run
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    breakout = panels["breakout"]  # learned weights only: each point sits on its label's row
    rows = {round(float(y), 6) for line in breakout.lines for y in line.get_ydata()}
    assert rows <= set(map(float, range(len(labels))))
    for game, mode in (("breakout", "learned"), ("asterix", "fixed")):  # one weight mode per game here
        colours = {matplotlib.colors.to_rgb(line.get_color()) for line in panels[game].lines}
        assert colours == {figures.mode_colours()[mode]}

    curves = figures.learning_curves(binned_returns(episodes, bins=4), style, None, reps=100)
    titles = sorted(ax.get_title() for ax in curves.axes if ax.get_visible())
    assert titles == ["asterix, fixed weights, random", "breakout, learned weights, conv",
                      "breakout, learned weights, random"]  # a panel per structure with variants; none empty
    assert all(ax.lines for ax in curves.axes if ax.get_visible())
    dashed = [line for ax in curves.axes for line in ax.lines if line.get_linestyle() == "--"]
    assert dashed and "dashed: 1 unfinished run" in "\n".join(t.get_text() for t in curves.texts)

    heatmap = figures.improvement(probability_of_improvement(episodes, reps=100), "n=2 seeds", None, style)
    ticks = [tick.get_text() for tick in heatmap.axes[0].get_xticklabels()]
    assert ticks and max(map(len, ticks)) <= len("random h")


def test_the_heatmap_stars_exactly_the_pairs_with_p_at_most_005(tmp_path: Path) -> None:
    """conv's three runs all beat random's (p = 0.05); local's overlap both."""
    from minisparse.analysis import figures
    for structure, finals in (("conv", [10, 11, 12]), ("random", [1, 2, 3]), ("local", [2.5, 9, 13])):
        for seed, final in enumerate(finals):
            write_run(tmp_path, structure=structure, seed=seed, final=float(final))
    episodes = load_runs(tmp_path)
    table = probability_of_improvement(episodes, reps=100)
    heatmap = figures.improvement(table, "n=3 seeds", None, figures.Style.of(run_scores(episodes)))
    starred = sorted(text.get_text() for text in heatmap.axes[0].texts if text.get_text().endswith("*"))
    assert starred == ["1.00*"]
    assert table.loc[table["p_value"] <= 0.05, ["x", "y"]].values.tolist() == [["conv", "random"]]


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing", "does not exist"),
    (lambda root: (root / "empty").mkdir() or root / "empty", "holds no runs"),
    (lambda root: (root / "episodes.csv").unlink() or root, "has finished an episode"),
])
def test_command_user_mistakes_are_one_line_with_status_2_and_write_nothing(tmp_path: Path, make, message: str) -> None:
    run = write_run(tmp_path / "runs", final=1.0)
    path = make(run)
    out = tmp_path / "report"
    result = CliRunner().invoke(compare_command, [str(path), "--out", str(out)])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("fraction", ["nan", "inf", "0", "1.5"])
def test_command_refuses_a_last_fraction_outside_0_1_or_not_finite(tmp_path: Path, fraction: str) -> None:
    write_run(tmp_path / "runs")
    result = CliRunner().invoke(compare_command, [str(tmp_path / "runs"), "--out", str(tmp_path / "report"),
                                                  "--last-fraction", fraction])
    assert result.exit_code == 2 and "--last-fraction" in result.output and fraction in result.output
    assert not (tmp_path / "report").exists()


def test_command_refuses_an_output_path_that_is_a_file(tmp_path: Path) -> None:
    write_run(tmp_path / "runs")
    (tmp_path / "report").write_text("keep me")
    result = CliRunner().invoke(compare_command, [str(tmp_path / "runs"), "--out", str(tmp_path / "report")])
    assert result.exit_code == 2 and "is a file, not a folder" in result.stderr
    assert (tmp_path / "report").read_text() == "keep me"


def test_runs_without_an_episode_in_the_window_are_named_and_left_out(tmp_path: Path) -> None:
    write_run(tmp_path / "runs", structure="conv", seed=0, final=2.0)
    write_run(tmp_path / "runs", structure="conv", seed=1, final=2.0, episode_frames=np.array([100, 5000]))
    result = compare(tmp_path / "runs", tmp_path / "out", reps=100)
    assert any("1 run has no episode ending in the last 10%" in w and "conv-learned-s1" in w
               for w in result.warnings)
    assert result.tables["final_performance"]["runs"].tolist() == [1]


def test_structures_never_run_on_a_common_game_are_not_compared(tmp_path: Path) -> None:
    for seed in range(2):
        write_run(tmp_path, game="breakout", structure="conv", seed=seed, final=float(seed))
        write_run(tmp_path, game="asterix", structure="random", seed=seed, final=float(seed))
        write_run(tmp_path, game="asterix", structure="set", seed=seed, final=float(seed + 1))
    table = probability_of_improvement(load_runs(tmp_path), reps=100)
    assert sorted(zip(table["x"], table["y"])) == [("random", "set"), ("set", "random")]


BREAKAGES = {
    "broken quoting": ("episodes.csv", lambda text: text.replace("\n250,", '\n"250,', 1), "does not parse as CSV"),
    "text in the return column": ("episodes.csv", lambda text: text.replace(",0.0,", ",lots,", 1),
                                  "non-number in column return"),
    "random bytes": ("episodes.csv", lambda text: "\x00\xff\xfe garbage \x81", "episodes.csv"),
    "renamed column": ("episodes.csv", lambda text: text.replace("return", "score", 1), "lacks the column(s) return"),
    "invalid config.json": ("config.json", lambda text: text[:40], "not valid JSON"),
    "config.json of something else": ("config.json", lambda text: '{"name": "x"}', "not a minisparse run config"),
}


@pytest.mark.parametrize("case", BREAKAGES, ids=list(BREAKAGES))
def test_compare_leaves_out_a_broken_run_with_one_warning_and_reports_the_rest(case, tmp_path: Path) -> None:
    """Before, one corrupt file stopped compare from writing any report."""
    name, corrupt, reason = BREAKAGES[case]
    for seed in range(3):
        write_run(tmp_path / "runs", structure="conv", seed=seed, final=1.0)
        write_run(tmp_path / "runs", structure="random", seed=seed, final=2.0)
    broken = next((tmp_path / "runs").glob("breakout-random-learned-s1-*"))
    file = broken / name
    if case == "random bytes":
        file.write_bytes(b"\x00\xff\xfe garbage \x81\n\x02,\x03")
    else:
        file.write_text(corrupt(file.read_text()))
    result = compare(tmp_path / "runs", tmp_path / "out", reps=100)
    named = [w for w in result.warnings if broken.name in w]
    assert len(named) == 1 and name in named[0] and reason in named[0], result.warnings
    assert sorted(result.tables["run_scores"]["structure"].value_counts().items()) == [("conv", 3), ("random", 2)]
    capacity = result.tables["capacity"]
    assert capacity.loc[capacity["structure"] == "random", "runs"].unique().tolist() == [2]
    assert (tmp_path / "out" / "final_performance.csv").is_file()


def test_a_staging_folder_or_sweep_bookkeeping_is_not_a_run(tmp_path: Path) -> None:
    run = write_run(tmp_path / "runs", structure="conv", seed=0)
    shutil.copytree(run, tmp_path / "runs" / f".{run.name}.tmpab12")  # a run being created
    shutil.copytree(run, tmp_path / "runs" / ".sweep" / "copy")
    assert find_runs(tmp_path / "runs") == [run.resolve()]
    assert load_capacity(tmp_path / "runs")["run"].unique().tolist() == [run.name]


def test_all_games_rows_aggregate_only_the_games_every_structure_ran(tmp_path: Path) -> None:
    """Before, conv's 'all games' score averaged breakout and asterix while random's was asterix alone."""
    for seed in range(2):
        write_run(tmp_path / "runs", game="breakout", structure="conv", seed=seed, final=10.0)
        write_run(tmp_path / "runs", game="asterix", structure="conv", seed=seed, final=1.7)
        write_run(tmp_path / "runs", game="asterix", structure="random", seed=seed, final=3.4)
        write_run(tmp_path / "runs", game="breakout", structure="random", seed=seed, final=5.0)
        write_run(tmp_path / "runs", game="freeway", structure="conv", seed=seed, final=25.0)
    result = compare(tmp_path / "runs", tmp_path / "out", reps=100)
    table = result.tables["final_performance"].set_index(["game", "structure"])
    assert table.loc[("all games", "conv"), "games"] == "asterix, breakout"
    assert table.loc[("all games", "conv"), "runs"] == 4  # the freeway runs are not in it
    assert table.loc[("all games", "random"), "iqm"] == pytest.approx((0.2 + 0.5) / 2)
    assert table.loc[("freeway", "conv"), "games"] == "freeway"
    assert any("aggregate asterix, breakout" in w and "conv on freeway" in w for w in result.warnings)
    only_one_shared = final_performance(load_runs(tmp_path / "runs").query("structure != 'random' or game != 'breakout'"),
                                        reps=100)
    assert "all games" not in set(only_one_shared["game"])  # random shares asterix alone with conv


def write_eval(run: Path, final: list[float], frames: tuple[int, ...] = (5000, 10_000)) -> None:
    """eval.csv with len(final) episodes per evaluation; the last evaluation returns `final`."""
    rows = [{"frame": frame, "episode": k + 1, "seed": 1_000_001 + k, "length": 50, "truncated": 0,
             "return": value if frame == frames[-1] else 0.0}
            for frame in frames for k, value in enumerate(final)]
    pd.DataFrame(rows, columns=["frame", "episode", "seed", "return", "length", "truncated"]).to_csv(
        run / "eval.csv", index=False)


def test_greedy_evaluations_are_scored_compared_and_paired_by_seed(tmp_path: Path) -> None:
    finals = {("conv", 0): [3, 5, 7], ("conv", 1): [5, 7, 9], ("random", 0): [1, 2, 3], ("random", 1): [3, 4, 5]}
    for (structure, seed), final in finals.items():
        write_eval(write_run(tmp_path / "runs", structure=structure, seed=seed, final=1.0), final)
    evaluations = load_eval(tmp_path / "runs")
    assert {"eval_seed", "seed"} <= set(evaluations.columns) and len(evaluations) == 4 * 2 * 3
    scores = eval_scores(evaluations).set_index(["structure", "seed"])["score"]
    assert scores.to_dict() == {("conv", 0): 5, ("conv", 1): 7, ("random", 0): 2, ("random", 1): 4}
    paired = paired_differences(evaluations, reps=200).set_index(["x", "y"])
    # Per evaluation seed, conv's mean over runs minus random's: 4-2, 6-3, 8-4.
    assert paired.loc[("conv", "random"), "difference"] == pytest.approx(3.0)
    assert paired.loc[("random", "conv"), "difference"] == pytest.approx(-3.0)
    assert paired.loc[("conv", "random"), "seeds"] == 3
    assert 2.0 <= paired.loc[("conv", "random"), "ci_low"] <= 3.0 <= paired.loc[("conv", "random"), "ci_high"] <= 4.0

    result = compare(tmp_path / "runs", tmp_path / "out", reps=200)
    performance = pd.read_csv(tmp_path / "out" / "eval_final_performance.csv").set_index("structure")
    assert performance.loc["conv", "iqm"] == pytest.approx(6.0) and performance.loc["random", "iqm"] == pytest.approx(3.0)
    improvement = result.tables["eval_probability_of_improvement"].set_index(["x", "y"])
    assert improvement.loc[("conv", "random"), "probability"] == 1.0
    for name in ("eval_learning_curves", "eval_final_performance"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 10_000
    assert result.tables["final_performance"].set_index("structure").loc["conv", "iqm"] == pytest.approx(1.0)


def test_runs_without_evaluations_give_no_evaluation_view(study: Path, compared) -> None:
    out, result = compared
    assert not any(name.startswith("eval_") for name in result.tables)
    assert load_eval(study).empty


def test_normalised_scores_say_what_they_are_normalised_by(compared) -> None:
    out, _ = compared
    caption = (out / "final_performance.md").read_text().splitlines()[0]
    assert "asterix 17, breakout 10" in caption and "best step size" in caption and "2.5e-4" in caption


def test_a_varied_setting_gets_a_sensitivity_curve_per_structure_and_weight_mode(tmp_path: Path) -> None:
    for lr, seed, structure in itertools.product((1e-4, 1e-3, 1e-2), (0, 1), ("conv", "random")):
        final = {1e-4: 1.0, 1e-3: 3.0, 1e-2: 2.0}[lr] + seed + (structure == "random")
        write_run(tmp_path / "runs", structure=structure, seed=seed, final=final, lr=lr)
    episodes = load_runs(tmp_path / "runs")
    assert varied_settings(episodes) == ["lr"]
    curve = sensitivity(episodes, "lr", reps=200).set_index(["structure", "lr"])
    assert curve.loc[("conv", 1e-3), "iqm"] == pytest.approx(3.5)  # seeds score 3 and 4
    assert curve.loc[("random", 1e-2), "iqm"] == pytest.approx(3.5) and curve.loc[("random", 1e-4), "runs"] == 2
    result = compare(tmp_path / "runs", tmp_path / "out", reps=200)
    assert len(result.tables["sensitivity_lr"]) == 6
    assert (tmp_path / "out" / "sensitivity_lr.png").stat().st_size > 10_000


def test_no_sensitivity_curve_without_a_varied_setting(compared) -> None:
    out, result = compared
    assert not any(name.startswith("sensitivity_") for name in result.tables)


def test_a_diagnostic_with_one_value_in_every_run_is_named_not_drawn() -> None:
    from minisparse.analysis import figures

    rows = [{"game": "breakout", "weights": weights, "structure": structure, "path": f"{structure}-{weights}",
             "frame": frame, "dormant_structured": 0.1 * frame + (structure == "conv"), "unwired_structured": 0.0}
            for structure in ("conv", "random") for weights in ("fixed", "learned") for frame in (1, 2, 3)]
    style = figures.Style(figures.structure_palette(pd.Series(["conv", "random"])), {"conv": "conv", "random": "random"})
    fig = figures.diagnostics(pd.DataFrame(rows), style)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_visible() and ax.get_ylabel()]
    assert len(labels) == 1 and labels[0].startswith("dormant share")
    assert "Not drawn: units of the structured layer without input is 0 in every run." in \
        "\n".join(text.get_text() for text in fig.texts)


def test_a_figure_drawn_again_writes_the_same_files(tmp_path: Path) -> None:
    """A shipped report regenerated from the same runs changes in git only where its content does:
    the PDF carries no creation date (one second apart, it would differ)."""
    import time

    import matplotlib.pyplot as plt

    from minisparse.analysis import figures
    written = []
    for name in ("first", "second"):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 3])
        written.append([path.read_bytes() for path in figures.save(fig, tmp_path, name)])
        time.sleep(1.1)
    assert written[0] == written[1]
