"""`minisparse compare` on real, tiny runs of two structures in both weight modes.

Checks the contract between the core's run directories and the analysis: what the core
writes loads, scores as the episodes say, and compares at matched capacity.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from minisparse.analysis import load_capacity, load_runs, run_scores
from minisparse.analysis.command import compare as compare_command
from minisparse.cli import cli

FRAMES = 1000
STRUCTURES = ("conv", "random")


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real")
    for structure, weights in itertools.product(STRUCTURES, ("learned", "fixed")):
        result = CliRunner().invoke(cli, [
            "run", "--structure", structure, "--weights", weights, "--frames", str(FRAMES),
            "--replay-start", "600", "--log-every", "200", "--device", "cpu", "--out", str(root)])
        assert result.exit_code == 0, result.output
    return root


def test_real_runs_load_complete_with_their_config(real_runs: Path) -> None:
    episodes = load_runs(real_runs)
    assert episodes["path"].nunique() == 4 and episodes["complete"].all()
    assert set(zip(episodes["structure"], episodes["weights"])) == set(
        itertools.product(STRUCTURES, ("learned", "fixed")))
    for _, run in episodes.groupby("path"):
        assert run["frame"].tolist() == run["length"].cumsum().tolist()  # frame = frames when it ended
        assert run["frame"].max() <= FRAMES
    capacity = load_capacity(real_runs)
    structured = capacity[capacity["layer"] == "structured"]
    assert structured["connections"].nunique() == 1  # the default budget matches the conv's


def test_real_run_scores_are_the_mean_return_of_the_last_tenth(real_runs: Path) -> None:
    scores = run_scores(load_runs(real_runs)).set_index("path")
    for run in (p for p in real_runs.iterdir() if not p.name.startswith(".")):  # .sweep: the runs' locks
        episodes = pd.read_csv(run / "episodes.csv")
        last = episodes[episodes["frame"] >= 0.9 * FRAMES]
        assert scores.loc[str(run.resolve()), "score"] == pytest.approx(last["return"].mean())


def test_compare_real_runs(real_runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(compare_command, [str(real_runs), "--out", str(out), "--reps", "200"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr  # matched capacity, all runs complete
    assert "compared 4 runs of 2 structures" in result.stdout
    assert len(pd.read_csv(out / "final_performance.csv")) == 4
    assert len(pd.read_csv(out / "probability_of_improvement.csv")) == 4
    ranks = pd.read_csv(out / "ranks.csv")
    assert sorted(ranks["structure"]) == list(STRUCTURES)
    for name in ("learning_curves", "final_performance", "probability_of_improvement", "fixed_vs_learned"):
        assert (out / f"{name}.png").stat().st_size > 10_000
    assert not (out / "masks").exists()  # neither structure changes its connections


def test_pruned_runs_are_compared_at_the_capacity_they_end_with(real_runs: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [
        "run", "--structure", "prune", "-o", "start=0", "-o", "end=0.5", "-o", "period=50",
        "--frames", str(FRAMES), "--replay-start", "600", "--device", "cpu", "--out", str(tmp_path / "prune")])
    assert result.exit_code == 0, result.output
    capacity = load_capacity(tmp_path / "prune").set_index("layer")
    assert capacity.loc["structured", "connections"] == 1024 * 36  # pruned to the conv's budget
    start = json.loads(next((tmp_path / "prune").glob("*/config.json")).read_text())["capacity"]
    assert start["structured"]["connections"] == 1024 * 400  # it started dense
    compared = CliRunner().invoke(compare_command, [str(real_runs), str(tmp_path / "prune"),
                                                    "--out", str(tmp_path / "report"), "--reps", "100"])
    assert compared.exit_code == 0, compared.output
    assert "not at matched capacity" not in compared.stderr
