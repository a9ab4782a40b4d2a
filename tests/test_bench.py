"""`minisparse bench` from the command line: the table and JSON it promises, and one-line errors;
the row that times MinAtar's own script.

Speeds are not asserted (a timed unit test would only measure the machine); the figures'
consistency is: ratios against the baseline row, one row per configuration, the layer table.
"""
import json
from pathlib import Path

import pytest

from conftest import minisparse
from minisparse.bench import load_minatar_script, minatar_script_workload
from test_cli_errors import assert_one_line_error

ROOT = Path(__file__).resolve().parent.parent

# MinAtar's examples/dqn.py is not on PyPI, so this stand-in has its interface (the names and
# signatures the benchmark calls) around the real game, and records what the benchmark does:
# the frame counter and epsilon acting sees (by the script's schedule), the batches `train`
# gets, and whether the target network holds the policy's weights.
SCRIPT_INTERFACE = """
import torch
from minatar import Environment

BATCH_SIZE, REPLAY_BUFFER_SIZE, TARGET_NETWORK_UPDATE_FREQ = 8, 1000, 10
STEP_SIZE, SQUARED_GRAD_MOMENTUM, MIN_SQUARED_GRAD = 0.00025, 0.95, 0.01
EPSILON, END_EPSILON, FIRST_N_FRAMES = 1.0, 0.1, 100000
device = torch.device("cpu")
acted, trained = [], []


class QNetwork(torch.nn.Linear):
    def __init__(self, channels, actions):
        super().__init__(channels * 100, actions)


class replay_buffer(list):
    def __init__(self, size):
        super().__init__()

    def add(self, *transition):
        self.append(transition)

    def sample(self, size):
        return self[-size:]


def get_state(frame):
    return torch.tensor(frame).float().reshape(1, -1)


def world_dynamics(t, replay_start, actions, state, env, policy):
    epsilon, past = None, t - replay_start
    if past >= 0:
        epsilon = END_EPSILON if past >= FIRST_N_FRAMES else EPSILON + (END_EPSILON - EPSILON) * past / FIRST_N_FRAMES
    acted.append((t, replay_start, epsilon))
    reward, done = env.act(t % actions)
    return get_state(env.state()), torch.tensor([[0]]), torch.tensor([[float(reward)]]), torch.tensor([[done]])


def train(sample, policy, target, optimizer):
    trained.append((len(sample), bool(torch.equal(policy.weight, target.weight))))
    with torch.no_grad():
        policy.weight.add_(1.0)
"""


def test_bench_writes_the_table_and_json_it_promises(tmp_path):
    out = tmp_path / "results" / "bench.json"
    result = minisparse("bench", "--structures", "conv,random", "--weights", "fixed", "--sparsities", "0.95",
                        "--backends", "dense,sparse", "--prefill", "64", "--warmup", "10", "--frames", "20",
                        "--rounds", "2", "--layers", "0.05,0.5", "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert (report["prefill"], report["warmup"], report["frames"], report["rounds"]) == (64, 10, 20, 2)
    names = [row["name"] for row in report["rows"]]
    assert names == ["baseline (plain PyTorch)", "conv fixed", "random fixed s=0.95 dense",
                     "random fixed s=0.95 sparse"]
    baseline = report["rows"][0]["frames_per_s"]
    for row in report["rows"]:
        assert len(row["rounds"]) == 2 and row["frames_per_s"] == pytest.approx(max(row["rounds"]))
        assert row["ratio"] == pytest.approx(row["frames_per_s"] / baseline, rel=1e-3)
        assert row["peak_rss_mb"] is None or row["peak_rss_mb"] >= 0
        assert row["name"] in result.stdout
    assert report["rows"][0]["replay_mb"] is None
    assert all(row["replay_mb"] > 0 for row in report["rows"][1:])
    layers = report["layers"]["fixed"]
    assert list(report["layers"]) == ["fixed"]
    assert [step["density"] for step in layers["steps"]] == [0.05, 0.5]
    assert all(step["inputs"] == 400 and not step["trains"] for step in layers["steps"])
    assert all(step["dense_us"] > 0 and step["sparse_us"] > 0 for step in layers["steps"])
    measured = layers["crossover_density"]
    found = f"{measured:g}" if measured is not None else "none (sparse faster up to 0.5)"
    assert f"measured crossover density: {found}; auto's model: " in result.stdout


@pytest.mark.parametrize("args, expected", [
    (["--structures", "conv,nope"], ["nope", "conv", "random"]),
    (["--backends", "fast"], ["fast", "dense", "sparse", "auto"]),
    (["--weights", "frozen"], ["frozen", "learned", "fixed"]),
    (["--sparsities", "lots"], ["lots"]),
    (["--game", "pong"], ["pong", "breakout"]),
    (["--optimizer", "sgd"], ["optimizer", "sgd", "rmsprop", "adam"]),
    (["--layers", "0.05,1.5"], ["layer density", "1.5", "(0, 1]"]),
    (["--layers", "abc"], ["layer density", "abc"]),
    (["--structures", ","], ["no structure", "','", "conv"]),
    (["--weights", ""], ["no weight mode", "learned", "fixed"]),
    (["--sparsities", "nan"], ["sparsity", "nan", "[0, 1)"]),
    (["--structures", "random", "--sparsities", "1.5"], ["sparsity", "1.5", "[0, 1)"]),
])
def test_bench_bad_input_is_one_line(args, expected, tmp_path):
    """Refused before any timing: the baseline row alone takes seconds at the default workload."""
    out = tmp_path / "bench.json"
    result = minisparse("bench", "--prefill", "5000", "--frames", "1000", "--rounds", "3", "--json", str(out), *args,
                        timeout=60)
    assert_one_line_error(result, expected)
    assert not out.exists()


def test_minatar_script_row_runs_the_scripts_loop_at_the_benchmarks_workload(tmp_path):
    path = tmp_path / "dqn.py"
    path.write_text(SCRIPT_INTERFACE)
    script = load_minatar_script(path)
    workload = minatar_script_workload(script, "breakout", seed=0, prefill=40)
    assert script.trained == []
    workload.frames(25)
    assert [t for t, _, _ in script.acted] == list(range(66))
    assert {start for _, start, _ in script.acted} == {40}
    assert {epsilon for t, _, epsilon in script.acted if t >= 40} == {0.1}
    assert len(script.trained) == 25 and {size for size, _ in script.trained} == {8}
    # the target copies the policy after every 10th update: updates 11 and 21 see equal weights
    assert [i + 1 for i, (_, equal) in enumerate(script.trained) if equal] == [1, 11, 21]
    assert workload.replay_mb is None


@pytest.mark.parametrize("script, expected", [
    (ROOT / "README.md", ["README.md", "does not load as a Python script"]),
    (ROOT / "benchmarks" / "baseline_dqn.py", ["is not MinAtar's examples/dqn.py", "QNetwork", "world_dynamics"]),
    (ROOT / "no" / "such" / "dqn.py", ["--minatar-script", "dqn.py", "does not exist"]),
])
def test_bench_refuses_a_file_that_is_not_minatars_script(script, expected, tmp_path):
    out = tmp_path / "bench.json"
    result = minisparse("bench", "--prefill", "64", "--warmup", "0", "--frames", "5", "--rounds", "1",
                        "--json", str(out), "--minatar-script", str(script))
    assert_one_line_error(result, expected)
    assert not out.exists()


def test_bench_rows_train_with_the_chosen_optimizer():
    from minisparse.bench import configurations

    grid = list(configurations("breakout", ["set", "conv"], ["learned"], [0.9], ["auto"], 0, 64, optimizer="adam"))
    assert [row.name for row, _ in grid] == ["set learned s=0.9 auto", "conv learned"]
    assert all(config.optimizer == "adam" for _, config in grid)
    assert {config.optimizer for _, config in configurations("breakout", ["conv"], ["fixed"], [None], ["dense"], 0, 64)} \
        == {"rmsprop"}  # the protocol's optimizer unless asked


def test_run_speed_sums_each_phases_time_over_its_train_csv_rows(tmp_path):
    """benchmarks/run_speed.py: frames/s of a phase is its frames over the time its rows took, the first row
    (random-policy frames included) left out; phases split at the first and last row that rewired."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("run_speed", ROOT / "benchmarks" / "run_speed.py")
    run_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_speed)
    run = tmp_path / "run"
    run.mkdir()
    rows = [(1000, 999.0, 0), (2000, 100.0, 0), (3000, 50.0, 5), (4000, 200.0, 0), (5000, 100.0, 3),
            (6000, 400.0, 0), (7000, 400.0, 0)]
    lines = ["frame,frames_per_s,changed_structured"] + [f"{f},{s},{c}" for f, s, c in rows]
    (run / "train.csv").write_text("\n".join(lines) + "\n")
    speeds = run_speed.phase_speeds(run)
    assert speeds == {"learning": pytest.approx(6000 / (10 + 20 + 5 + 10 + 2.5 + 2.5), abs=0.1),
                      "before": 100.0, "rewiring": pytest.approx(3000 / (20 + 5 + 10), abs=0.1), "after": 400.0}
