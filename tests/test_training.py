"""Real runs: the run directory, reproducibility, and resume after real kills."""
import dataclasses
import json
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY, episodes, minisparse, only_run
from minisparse.config import Config
from minisparse.dqn import Agent
from minisparse.structure import make_structure

RESULT_COLUMNS = ["frame", "episode", "return", "length", "epsilon"]  # all but wall-clock seconds


def test_run_directory_says_everything(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["config"]["structure"] == "random" and config["config"]["weights"] == "fixed"
    assert config["config"]["replay_start"] == 500 and config["config"]["gamma"] == 0.99
    assert {"torch", "minatar", "numpy", "python"} <= set(config["versions"])
    assert config["capacity"]["structured"]["connections"] == 1024 * 36
    defaults = dataclasses.asdict(make_structure("random", {}))
    assert config["config"]["structure_options"] == {} and defaults  # given: none; recorded: every one
    assert config["structure"] == {"name": "random", "options": defaults}
    assert config["execution"] == {"update": "hand-derived", "device": "cpu", "denormals": "flushed to zero",
                                   "replay": "frames, and the structured layer's features once learning starts",
                                   "layers": {"structured": {
        "structure": "random", "learns_weights": False, "learns_connectivity": False, "scored": False,
        "backend": "sparse", "compact": False}}}
    eps = episodes(tiny_run)
    assert list(eps.columns) == ["frame", "episode", "return", "length", "epsilon", "seconds"]
    assert eps["frame"].is_monotonic_increasing and eps["frame"].iloc[-1] <= 3000
    assert (eps["length"].cumsum() == eps["frame"]).all()
    assert eps["epsilon"].iloc[0] == 1.0 and eps["epsilon"].iloc[-1] == pytest.approx(0.1)
    train = pd.read_csv(tiny_run / "train.csv")
    assert list(train.columns) == ["frame", "updates", "loss", "mean_q", "frames_per_s",
                                   "density_structured", "changed_structured", "dormant_structured",
                                   "unwired_structured", "srank_structured", "weight_structured",
                                   "survival_structured"]
    assert (train["unwired_structured"] == 0).all() and train["survival_structured"].isna().all()  # static
    assert train["frame"].tolist() == [1000, 1500, 2000, 2500, 3000]
    assert train["updates"].iloc[-1] == 2500 and np.isfinite(train["loss"]).all()
    assert (train["density_structured"] == 0.09).all()
    for name in ("start", "end"):
        mask = np.load(tiny_run / "masks" / f"{name}.npz")["structured"]
        assert mask.shape == (1024, 400) and mask.dtype == bool and (mask.sum(1) == 36).all()
    state = torch.load(tiny_run / "model.pt", weights_only=True)
    np.testing.assert_array_equal(state["structured.mask"].numpy(), mask)
    assert json.loads((tiny_run / "complete.json").read_text())["frames"] == 3000
    assert not (tiny_run / "checkpoint.pt").exists()
    assert not list(tiny_run.rglob("*.tmp"))


def test_training_flushes_denormals_in_torch_and_in_the_compiled_optimizer():
    """Moments of connections whose gradient stays zero decay through numbers below 2^-126, which x86 handles
    on a slow path: flushing them made a random/learned agent train 1.2-1.4x faster."""
    torch.set_flush_denormal(False)
    tiny = torch.tensor([2.0 ** -130])
    assert (tiny * 2).item() > 0  # kept until a run says otherwise
    agent = Agent(Config(replay_start=100, replay_capacity=500, frames=500).validate())
    assert (tiny * 2).item() == 0.0
    observation = agent.game.observation()
    for _ in range(120):
        observation = agent.step(observation)[0]
    bias = agent.q.hidden.bias
    square_avg = agent.optimizer.state[bias]["square_avg"]
    square_avg.fill_(2.0 ** -126)  # the smallest normal number: one decay (x 0.95) makes it subnormal
    for parameter in agent.trainable:
        parameter.grad = torch.zeros_like(parameter) if parameter is bias else None
    agent.optimizer.step()
    assert (square_avg == 0).all()


def test_same_seed_same_returns_different_seed_different_returns(tiny_run, tmp_path):
    """Runs started from tiny_run's config (--config), as anyone checking a shipped run would: all of it,
    then all of it but the seed."""
    again = minisparse("run", "--config", str(tiny_run), "--out", str(tmp_path / "a"))
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(episodes(only_run(tmp_path / "a"))[RESULT_COLUMNS], episodes(tiny_run)[RESULT_COLUMNS])
    other = minisparse("run", "--config", str(tiny_run / "config.json"), "--seed", "1", "-o", "per_unit=false",
                       "--out", str(tmp_path / "b"))
    assert other.returncode == 0, other.stderr
    assert not episodes(only_run(tmp_path / "b"))[RESULT_COLUMNS].equals(episodes(tiny_run)[RESULT_COLUMNS])
    settings = [json.loads((run / "config.json").read_text())["config"] for run in (tiny_run, only_run(tmp_path / "b"))]
    changed = {key for key in settings[0] if settings[0][key] != settings[1][key]}
    assert changed == {"seed", "structure_options"} and settings[1]["structure_options"] == {"per_unit": False}


def test_a_run_inside_an_export_file_starts_again_from_its_config(tiny_run, tmp_path):
    """As a shipped pilot cell is checked: `--config STUDY.zip/RUN`, the name compare's tables give it."""
    exported = minisparse("export", str(tiny_run.parent), "--out", str(tmp_path / "study.zip"))
    assert exported.returncode == 0, exported.stderr
    again = minisparse("run", "--config", str(tmp_path / "study.zip" / tiny_run.name), "--out", str(tmp_path / "a"))
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(episodes(only_run(tmp_path / "a"))[RESULT_COLUMNS], episodes(tiny_run)[RESULT_COLUMNS])


@pytest.mark.parametrize("given, budget, options", [
    ({"fan_in": 40}, {"sparsity": None, "fan_in": 40}, {"period": 20}),  # a budget given replaces the run's
    ({"seed": 3}, {"sparsity": 0.9, "fan_in": None}, {"period": 20}),
    ({"structure": "set"}, {"sparsity": 0.9, "fan_in": None}, {}),  # another structure: its own options
    ({"structure": "conv"}, {"sparsity": None, "fan_in": None}, {}),  # which ignores a budget
])
def test_config_overrides_settle_the_budget_and_structure_options(given, budget, options):
    from minisparse.cli import settings_like

    before = Config(structure="rigl", sparsity=0.9, structure_options={"period": 20}).validate()
    fields, kept = settings_like(before, given)
    assert {key: fields[key] for key in budget} == budget and kept == options
    Config(**fields, structure_options=kept).validate()


def start_run(out, *extra):
    args = [sys.executable, "-m", "minisparse", "run", "--structure", "conv", "--out", str(out), *TINY,
            "--checkpoint-every", "700", *extra]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(out, process, deadline=120):
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        checkpoint = list(out.glob("*/checkpoint.pt"))
        if checkpoint or process.poll() is not None:
            return
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    result = minisparse("run", "--structure", "conv", "--out", str(out), *TINY, "--checkpoint-every", "700")
    assert result.returncode == 0, result.stderr
    return only_run(out)


def assert_same_results(run, uninterrupted):
    """Episodes (but their wall-clock seconds) and greedy evaluations of an uninterrupted run."""
    pd.testing.assert_frame_equal(episodes(run)[RESULT_COLUMNS], episodes(uninterrupted)[RESULT_COLUMNS])
    evaluations = pd.read_csv(run / "eval.csv")
    assert len(evaluations) == 10 * 10  # ten evaluations of ten episodes (TINY: 3000 frames)
    pd.testing.assert_frame_equal(evaluations, pd.read_csv(uninterrupted / "eval.csv"))
    train, whole = (pd.read_csv(r / "train.csv").drop(columns="frames_per_s") for r in (run, uninterrupted))
    pd.testing.assert_frame_equal(train, whole)  # loss, mean Q and the diagnostics on the same probe batch


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_killed_run_resumes_to_the_same_returns(how, uninterrupted, tmp_path):
    out = tmp_path / "runs"
    process = start_run(out)
    wait_for_checkpoint(out, process)
    time.sleep(random.Random(how).uniform(0.0, 2.0))  # a random moment after the first checkpoint
    process.send_signal(getattr(signal, how))
    _, stderr = process.communicate(timeout=120)
    run = only_run(out)
    if how == "SIGKILL":
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode in (130, 143), stderr
        assert "resume with: minisparse run --resume" in stderr
        assert "Traceback" not in stderr
    assert not (run / "complete.json").exists()
    result = minisparse("run", "--resume", str(run))
    assert result.returncode == 0, result.stderr
    assert_same_results(run, uninterrupted)
    assert not list(run.rglob("*.tmp"))


def test_kill_during_resume_then_resume_again(uninterrupted, tmp_path):
    out = tmp_path / "runs"
    process = start_run(out)
    wait_for_checkpoint(out, process)
    process.kill()
    process.wait()
    run = only_run(out)
    resumed = subprocess.Popen([sys.executable, "-m", "minisparse", "run", "--resume", str(run)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    written = (run / "checkpoint.pt").stat().st_mtime_ns
    deadline = time.monotonic() + 120
    while (run / "checkpoint.pt").stat().st_mtime_ns == written and time.monotonic() < deadline:
        time.sleep(0.05)  # until the resumed session has trained on and checkpointed again
    resumed.kill()
    assert resumed.wait() == -signal.SIGKILL  # killed mid-training, not after finishing
    result = minisparse("run", "--resume", str(run))
    assert result.returncode == 0, result.stderr
    assert_same_results(run, uninterrupted)


def test_resuming_a_complete_run_changes_nothing(tiny_run):
    before = (tiny_run / "episodes.csv").read_bytes()
    result = minisparse("run", "--resume", str(tiny_run))
    assert result.returncode == 0
    assert (tiny_run / "episodes.csv").read_bytes() == before


def test_a_run_ends_with_a_summary_of_its_frames_speed_and_returns(tmp_path):
    result = minisparse("run", "--out", str(tmp_path), *TINY)
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path)
    first, line = result.stdout.strip().splitlines()[-2:]
    assert first == f"run complete: {run}"
    rows = episodes(run)
    tenth = len(rows) // 10
    early, late = rows["return"].head(tenth).mean(), rows["return"].tail(tenth).mean()
    random_policy = rows.loc[rows["frame"] <= 500, "return"].mean()
    assert line.startswith("3,000 frames in 0:00:")
    assert (f"mean return of the first and last {tenth} of {len(rows)} episodes: {early:.2f} -> {late:.2f} "
            f"(random policy, before learning: {random_policy:.2f})") in line


def test_a_run_on_the_autograd_update_says_so_once_and_records_it(tmp_path):
    result = minisparse("run", "--structure", "random", "--sparse-hidden", "--out", str(tmp_path), *TINY,
                        "--frames", "600")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "takes autograd" in line]
    assert len(notes) == 1 and "the hidden layer is sparse" in notes[0]
    execution = json.loads((only_run(tmp_path) / "config.json").read_text())["execution"]
    assert execution["update"] == "autograd (the hidden layer is sparse)"
