"""Greedy evaluation during training: its own games and seeds, never a change to training."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from conftest import TINY, episodes, minisparse, only_run
from minisparse.config import Config
from minisparse.evaluate import EVAL_SEED_BASE, evaluate

RESULT_COLUMNS = ["frame", "episode", "return", "length", "epsilon"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The same learned random run with evaluation off, and on every 1,000 frames at epsilon 0.05;
    and a conv run of another seed with the default evaluation."""
    found = {}
    for name, extra in (("off", ["--structure", "random", "--eval-every", "0"]),
                        ("on", ["--structure", "random", "--eval-every", "1000", "--eval-epsilon", "0.05",
                                "--eval-episodes", "4"]),
                        ("other", ["--structure", "conv", "--seed", "3"])):
        out = tmp_path_factory.mktemp(name)
        result = minisparse("run", "--out", str(out), *TINY, *extra)
        assert result.returncode == 0, result.stderr
        found[name] = only_run(out)
    return found


def test_training_is_the_same_with_evaluation_on_or_off(runs) -> None:
    off, on = runs["off"], runs["on"]
    pd.testing.assert_frame_equal(episodes(on)[RESULT_COLUMNS], episodes(off)[RESULT_COLUMNS])
    train_on, train_off = pd.read_csv(on / "train.csv"), pd.read_csv(off / "train.csv")
    pd.testing.assert_frame_equal(train_on.drop(columns="frames_per_s"), train_off.drop(columns="frames_per_s"))
    final_on = torch.load(on / "model.pt", weights_only=True)
    final_off = torch.load(off / "model.pt", weights_only=True)
    assert all(torch.equal(final_on[key], final_off[key]) for key in final_off)
    assert not (off / "eval.csv").exists()


def test_evaluations_are_written_at_their_frames_with_shared_seeds(runs) -> None:
    on = pd.read_csv(runs["on"] / "eval.csv")
    assert list(on.columns) == ["frame", "episode", "seed", "return", "length", "truncated"]
    assert on["frame"].tolist() == [f for f in (1000, 2000, 3000) for _ in range(4)]
    assert on["seed"].tolist() == [EVAL_SEED_BASE + k for _ in range(3) for k in (1, 2, 3, 4)]
    other = pd.read_csv(runs["other"] / "eval.csv")  # default: ten evaluations of ten episodes
    assert sorted(other["frame"].unique()) == list(range(300, 3001, 300))
    assert other.groupby("frame")["seed"].apply(list).map(lambda seeds: seeds == [EVAL_SEED_BASE + k for k in range(1, 11)]).all()
    assert (other["length"] > 0).all() and set(other["truncated"]) <= {0, 1}


def test_evaluation_is_greedy_at_epsilon_zero_and_repeatable() -> None:
    config = Config(game="breakout", eval_episodes=5)
    always_stay = evaluate(config, lambda observation: 0)
    assert evaluate(config, lambda observation: 0) == always_stay  # seeded by episode: the same games again
    assert [row[1] for row in always_stay] == [EVAL_SEED_BASE + k for k in range(1, 6)]
    noisy = evaluate(Config(game="breakout", eval_episodes=5, eval_epsilon=1.0), lambda observation: 0)
    assert noisy != always_stay  # epsilon 1: uniform-random actions instead of the policy's


def test_the_run_summary_reports_the_final_evaluation(runs) -> None:
    from minisparse.rundir import summary

    final = pd.read_csv(runs["on"] / "eval.csv").query("frame == 3000")["return"].mean()
    assert f"greedy evaluation at frame 3,000: {final:.2f} over 4 episodes" in summary(runs["on"])


@pytest.mark.parametrize("args, words", [(["--eval-episodes", "0"], ["eval-episodes", "0"]),
                                         (["--eval-epsilon", "1.5"], ["eval-epsilon", "1.5", "[0, 1]"]),
                                         (["--eval-every", "-5"], ["eval-every", "-5", ">= 0"])])
def test_bad_evaluation_settings_are_one_line(tmp_path, args, words) -> None:
    result = minisparse("run", "--out", str(tmp_path / "runs"), *args)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert all(word in result.stderr for word in words), result.stderr
    assert not (tmp_path / "runs").exists()
