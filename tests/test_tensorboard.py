"""--tensorboard: the run's rows as TensorBoard scalars, read back with tensorboard's own reader."""
from __future__ import annotations

import signal
import subprocess
import sys

import pandas as pd
import pytest

from conftest import TINY, minisparse, only_run

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def scalars(run) -> dict[str, list[tuple[int, float]]]:
    events = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_scalars_mirror_the_run_tables(tmp_path) -> None:
    result = minisparse("run", "--structure", "set", "--out", str(tmp_path), "--tensorboard", *TINY)
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path)
    logged = scalars(run)
    episodes = pd.read_csv(run / "episodes.csv")
    assert logged["episode/return"] == [(f, pytest.approx(r)) for f, r in zip(episodes["frame"], episodes["return"])]
    train = pd.read_csv(run / "train.csv")
    for column in ("loss", "mean_q", "density_structured", "dormant_structured", "srank_structured"):
        assert [step for step, _ in logged[f"train/{column}"]] == train["frame"].tolist()
        assert [value for _, value in logged[f"train/{column}"]] == pytest.approx(train[column].tolist(), rel=1e-6)
    evaluations = pd.read_csv(run / "eval.csv").groupby("frame")["return"].mean()
    assert logged["eval/return"] == [(f, pytest.approx(r)) for f, r in evaluations.items()]


def test_a_resumed_run_shows_no_step_twice(tmp_path) -> None:
    args = [sys.executable, "-m", "minisparse", "run", "--out", str(tmp_path), "--tensorboard", *TINY,
            "--checkpoint-every", "1000"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = None
    while process.poll() is None:
        found = list(tmp_path.glob("*/train.csv"))
        if found and len(pd.read_csv(found[0])) >= 3:  # past the first checkpoint (frame 1,000)
            run = found[0].parent
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    assert run is not None and not (run / "complete.json").exists()
    assert minisparse("run", "--resume", str(run)).returncode == 0
    logged = scalars(run)
    for tag in ("episode/return", "train/loss", "eval/return"):
        steps = [step for step, _ in logged[tag]]
        assert steps == sorted(set(steps)), tag  # each step once, in order
    assert [s for s, _ in logged["train/loss"]] == pd.read_csv(run / "train.csv")["frame"].tolist()
