"""Every user mistake: one line naming the bad value and the choices, exit 2, nothing on disk."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, minisparse, minisparse_in_process

CASES = {
    "unknown game": (["--game", "pong"], ["pong", "breakout", "seaquest"]),
    "unknown structure": (["--structure", "nope"], ["nope", "conv", "random", "dense"]),
    "sparsity of one": (["--sparsity", "1.0"], ["1.0", "[0, 1)"]),
    "negative sparsity": (["--sparsity", "-0.1"], ["-0.1", "[0, 1)"]),
    "fan-in larger than the input": (["--fan-in", "401"], ["401", "400"]),
    "zero frames": (["--frames", "0"], ["frames", "0"]),
    "batch larger than replay": (["--batch-size", "64", "--replay-capacity", "32"], ["64", "32"]),
    "unknown weights": (["--weights", "frozen"], ["frozen", "learned", "fixed"]),
    "not a number": (["--lr", "fast"], ["fast"]),
    "unknown structure option": (["--structure", "random", "-o", "bogus=1"], ["bogus", "per_unit"]),
    "gamma above one": (["--gamma", "1.5"], ["gamma", "1.5", "[0, 1]"]),
    "zero learning rate": (["--lr", "0"], ["lr", "0", "> 0"]),
    "negative replay start": (["--replay-start", "-5"], ["replay-start", "-5", ">= 0"]),
    "negative epsilon frames": (["--epsilon-frames", "-1"], ["epsilon-frames", "-1", ">= 0"]),
    "zero target period": (["--target-period", "0"], ["target-period", "0", "> 0"]),
    "sticky actions above one": (["--sticky-action-prob", "5"], ["sticky-action-prob", "5", "[0, 1]"]),
    "final epsilon above one": (["--epsilon-end", "3"], ["epsilon-end", "3", "[0, 1]"]),
    "adam beta of one or more": (["--adam-betas", "0.9", "1.5"], ["adam-betas", "1.5", "[0, 1)"]),
    "zero rmsprop eps": (["--rmsprop-eps", "0"], ["rmsprop-eps", "0", "> 0"]),
    "nan learning rate": (["--lr", "nan"], ["lr", "nan", "finite"]),
    "infinite learning rate": (["--lr", "inf"], ["lr", "inf", "finite"]),
    "nan rmsprop eps": (["--rmsprop-eps", "nan"], ["rmsprop-eps", "nan", "finite"]),
    "nan adam eps": (["--optimizer", "adam", "--adam-eps", "nan"], ["adam-eps", "nan", "finite"]),
    "infinite structure option": (["--structure", "predictive", "-o", "ridge=inf"], ["ridge", "inf", "finite"]),
    "nan structure option": (["--structure", "set", "-o", "drop_fraction=nan"], ["drop_fraction", "nan", "finite"]),
    "more threads than CPUs": (["--threads", "100000"], ["threads", "100000", "CPUs"]),
    "replay beyond memory": (["--replay-capacity", str(10**12)], ["GiB", "--replay-capacity"]),
    "hidden units beyond memory": (["--structure", "random", "--hidden-units", str(10**9)], ["GiB", "--hidden-units"]),
    "dense units beyond memory": (["--dense-units", str(10**9)], ["GiB", "--dense-units"]),
    "set drop fraction out of range": (["--structure", "set", "-o", "drop_fraction=1.5"], ["drop_fraction", "1.5", "[0, 1]"]),
    "rigl end out of range": (["--structure", "rigl", "-o", "end=2"], ["end", "2.0", "(0, 1]"]),
    "predictive ridge not positive": (["--structure", "predictive", "-o", "ridge=-1"], ["ridge", "-1.0", "> 0"]),
    "budget for conv": (["--structure", "conv", "--sparsity", "0.5"], ["conv", "ignores the budget", "--sparsity"]),
    "budget for dense, sparse hidden": (["--structure", "dense", "--sparse-hidden", "--fan-in", "40"],
                                        ["dense", "ignores the budget", "--fan-in"]),
    "units local cannot lay out": (["--structure", "local", "--hidden-units", "100"], ["local", "64", "100"]),
    "units the conv does not make": (["--structure", "conv", "--hidden-units", "512"], ["conv", "1024", "512"]),
    "predictive without frames to fit": (["--structure", "predictive", "--replay-start", "0"],
                                         ["predictive", "--replay-start", "0"]),
}


def assert_one_line_error(result, expected):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_run_options(case, tmp_path, monkeypatch, capsys):
    args, expected = CASES[case]
    out = tmp_path / "runs"
    # --frames first: a case's own options come later and win, and a case that stopped being an error would
    # train 2,000 frames here instead of 5M
    result = minisparse_in_process(monkeypatch, capsys, "run", "--out", str(out), "--frames", "2000", *args)
    assert_one_line_error(result, expected)
    assert not out.exists() or not any(out.iterdir())


def test_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = minisparse("run", "--out", str(target), *TINY)
    assert_one_line_error(result, [str(target), "file"])
    assert target.read_text() == "x"


def test_resume_missing_directory(tmp_path):
    result = minisparse("run", "--resume", str(tmp_path / "nothing"))
    assert_one_line_error(result, ["nothing"])


def test_resume_folder_that_is_not_a_run(tmp_path):
    result = minisparse("run", "--resume", str(tmp_path))
    assert_one_line_error(result, ["config.json"])


def copy_run(source, target):
    import shutil
    shutil.copytree(source, target)
    return target


def test_resume_corrupt_config(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "complete.json").unlink()
    (run / "config.json").write_text("{not json")
    assert_one_line_error(minisparse("run", "--resume", str(run)), ["corrupt", "config.json"])


def test_resume_incompatible_config(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "complete.json").unlink()
    text = (run / "config.json").read_text().replace('"game": "breakout"', '"game": "pong"')
    (run / "config.json").write_text(text)
    assert_one_line_error(minisparse("run", "--resume", str(run)), ["incompatible", "pong"])


def test_resume_corrupt_checkpoint(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "complete.json").unlink()
    (run / "checkpoint.pt").write_bytes(b"\x80\x04garbage")
    assert_one_line_error(minisparse("run", "--resume", str(run)), ["corrupt", "checkpoint.pt"])


class Exploit:
    def __reduce__(self):
        return (print, ("unpickled an arbitrary object",))


def test_checkpoint_never_unpickles_arbitrary_objects(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "complete.json").unlink()
    torch.save({"meta": Exploit()}, run / "checkpoint.pt")
    result = minisparse("run", "--resume", str(run))
    assert "unpickled an arbitrary object" not in result.stdout + result.stderr
    assert_one_line_error(result, ["checkpoint.pt"])


def test_resume_takes_no_other_options(tiny_run):
    assert_one_line_error(minisparse("run", "--resume", str(tiny_run), "--fan-in", "10"), ["--resume", "--fan-in"])
    assert_one_line_error(minisparse("run", "--resume", str(tiny_run), "--config", str(tiny_run)), ["--config"])


@pytest.mark.parametrize("make, expected", [
    (lambda run, tmp: tmp / "missing", ["missing", "no such run directory or file"]),
    (lambda run, tmp: tmp, ["no config.json", "not a run directory"]),
    (lambda run, tmp: run / "episodes.csv", ["episodes.csv", "not a run's config.json"]),
    (lambda run, tmp: (tmp / "odd" / "config.json").mkdir(parents=True) or tmp / "odd", ["cannot read", "config.json"]),
])
def test_config_of_something_that_is_not_a_run(make, expected, tiny_run, tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(minisparse("run", "--config", str(make(tiny_run, tmp_path)), "--out", str(out)),
                          ["--config", *expected])
    assert not out.exists()


def test_config_of_a_run_an_export_file_does_not_hold(tiny_run, tmp_path):
    assert minisparse("export", str(tiny_run.parent), "--out", str(tmp_path / "study.zip")).returncode == 0
    out = tmp_path / "out"
    assert_one_line_error(minisparse("run", "--config", str(tmp_path / "study.zip" / "no-such-run"), "--out", str(out)),
                          ["--config", "holds no run", "no-such-run"])
    assert not out.exists()


def test_resume_with_a_checkpoint_of_another_config(tiny_run, tmp_path):
    from minisparse.config import Config
    from minisparse.dqn import Agent

    run = copy_run(tiny_run, tmp_path / "run")
    (run / "complete.json").unlink()
    torch.save(Agent(Config(structure="conv", replay_start=500, replay_capacity=2000)).state_dict(),
               run / "checkpoint.pt")
    before = (run / "episodes.csv").read_bytes()
    assert_one_line_error(minisparse("run", "--resume", str(run)), ["checkpoint.pt belongs to another run"])
    assert (run / "episodes.csv").read_bytes() == before


def test_resume_refuses_a_checkpoint_of_the_same_config_with_another_seed(tiny_run, tmp_path):
    """Same network shapes, so it would load: only the run identity in the checkpoint tells them apart."""
    from minisparse import rundir
    from minisparse.dqn import Agent

    run = copy_run(tiny_run, tmp_path / "run")
    (run / "complete.json").unlink()
    config = rundir.read_config(run)
    config.seed = 7
    torch.save(Agent(config).state_dict(), run / "checkpoint.pt")
    assert_one_line_error(minisparse("run", "--resume", str(run)), ["belongs to another run", "'seed': 7"])


@pytest.mark.parametrize("edit", [('"lr": 0.00025', '"lr": 0.001'), ('"gamma": 0.99', '"gamma": 0.5'),
                                  ('"frames": 3000', '"frames": 6000')])
def test_resume_refuses_an_edited_config(edit, tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "complete.json").unlink()
    text = (run / "config.json").read_text()
    assert edit[0] in text
    (run / "config.json").write_text(text.replace(edit[0], edit[1]))
    before = (run / "episodes.csv").read_bytes()
    assert_one_line_error(minisparse("run", "--resume", str(run)), ["config.json was edited", "restore it"])
    assert (run / "episodes.csv").read_bytes() == before


def test_resume_refuses_code_whose_structure_defaults_changed(tiny_run, tmp_path):
    """A run's name leaves out options at their defaults, so a later default (l1's strength went from 0.1
    to 0.001) keeps the name: resuming under it would train the rest of the run differently."""
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "complete.json").unlink()
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["structure"]["options"]["per_unit"] is True
    recorded["structure"]["options"]["per_unit"] = False  # as if it started when the default was False
    (run / "config.json").write_text(json.dumps(recorded))
    before = (run / "episodes.csv").read_bytes()
    assert_one_line_error(minisparse("run", "--resume", str(run)),
                          ["structure options differ", "per_unit=False -> True", "code that started it"])
    assert (run / "episodes.csv").read_bytes() == before


STRUCTURES_CASES = {
    "unknown structure": (["show", "nope", "--out", "{out}/x.png"], ["nope", "conv", "rigl"]),
    "picture suffix": (["show", "random", "--out", "{out}/x.txt"], ["x.txt", ".png", ".pdf"]),
    "run without masks": (["show", "{out}", "--out", "{out}/pictures"], ["masks/start.npz"]),
    "unknown game": (["--game", "pong"], ["pong", "breakout", "space_invaders"]),
}


@pytest.mark.parametrize("case", STRUCTURES_CASES, ids=list(STRUCTURES_CASES))
def test_bad_structures_options(case, tmp_path):
    args, expected = STRUCTURES_CASES[case]
    result = minisparse("structures", *(a.format(out=tmp_path) for a in args))
    assert_one_line_error(result, expected)
    assert not any(tmp_path.iterdir())


OUTPUT_UNDER_A_FILE = {
    "run": ["run", *TINY, "--out", "{file}/runs"],
    "sweep": ["sweep", str(Path(__file__).parents[1] / "studies" / "smoke.toml"), "--out", "{file}/runs"],
    "structures show": ["structures", "show", "random", "--out", "{file}/random.png"],
    "bench": ["bench", "--frames", "10", "--json", "{file}/bench.json"],
}


@pytest.mark.parametrize("command", OUTPUT_UNDER_A_FILE, ids=list(OUTPUT_UNDER_A_FILE))
def test_an_output_path_under_a_file_is_refused_before_any_work(command, tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    result = minisparse(*(a.format(file=file) for a in OUTPUT_UNDER_A_FILE[command]), timeout=60)
    assert_one_line_error(result, [str(file), "is a file"])
    assert sorted(tmp_path.iterdir()) == [file] and file.read_text() == "x"


def test_structures_show_names_a_missing_run_directory(tmp_path):
    missing = tmp_path / "runs" / "breakout-rigl-learned-s0-1a2b3c4d"
    assert_one_line_error(minisparse("structures", "show", str(missing), "--out", str(tmp_path / "pictures")),
                          [str(missing), "does not exist"])


def test_running_a_config_again_points_at_its_run(tiny_run, tmp_path):
    again = ["run", "--structure", "random", "--weights", "fixed", *TINY]
    before = sorted(p.name for p in tiny_run.parent.iterdir())
    assert_one_line_error(minisparse(*again, "--out", str(tiny_run.parent)),
                          [str(tiny_run), "is complete", "another --seed", "another --out", "delete that folder"])
    assert sorted(p.name for p in tiny_run.parent.iterdir()) == before
    unfinished = copy_run(tiny_run, tmp_path / tiny_run.name)
    (unfinished / "complete.json").unlink()
    assert_one_line_error(minisparse(*again, "--out", str(tmp_path)), [f"--resume {unfinished}"])


@pytest.mark.parametrize("loading", ["libtorch", "ft2font"])  # torch; matplotlib, which MinAtar tries
def test_ctrl_c_before_training_starts_exits_130_and_leaves_nothing(loading, tmp_path):
    out = tmp_path / "runs"
    # A child inherits an ignored SIGINT (exec keeps SIG_IGN, and Python then installs no KeyboardInterrupt),
    # and something earlier in a test worker can leave it ignored: start the run as a terminal would.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen([sys.executable, "-m", "minisparse", "run", "--out", str(out), *TINY],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, inherited)
    deadline = time.monotonic() + 60
    while not _has_loaded(process.pid, loading) and time.monotonic() < deadline:
        time.sleep(0.002)  # interrupt while that library is being imported
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["minisparse: interrupted"]
    assert not out.exists()


def _has_loaded(pid: int, library: str) -> bool:
    """Whether the minisparse process `pid` has mapped `library`. Until it has exec'd, /proc shows the forked
    copy of the test's own process, which has torch loaded: a SIGINT sent then is lost at exec."""
    proc = Path(f"/proc/{pid}")
    return (proc / "cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", b"minisparse"] \
        and library in (proc / "maps").read_text()


def test_a_run_being_trained_cannot_be_resumed_by_another_process(tmp_path):
    """Before, a second `run --resume` trained the same folder at once (and removed the first one's
    temporary files); now `run` takes the lock sweeps take."""
    out = tmp_path / "runs"
    first = subprocess.Popen([sys.executable, "-m", "minisparse", "run", "--out", str(out), "--frames", "1000000",
                              "--replay-start", "500", "--log-every", "500"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*/train.csv")) and time.monotonic() < deadline:
            time.sleep(0.2)
        run = next(out.glob("breakout-*"))
        second = minisparse("run", "--resume", str(run), timeout=60)  # without the lock it trains on
        assert_one_line_error(second, ["being trained by another process", run.name])
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=60)
    assert first.returncode == 130, first.stderr
    assert not list(run.glob("**/.*.tmp"))


def test_resume_refuses_a_checkpoint_with_a_negative_replay_count(tiny_run, tmp_path):
    from minisparse import rundir
    from minisparse.dqn import Agent

    run = copy_run(tiny_run, tmp_path / "run")
    (run / "complete.json").unlink()
    state = Agent(rundir.read_config(run)).state_dict()
    state["replay"]["added"] = -5
    torch.save(state, run / "checkpoint.pt")
    assert_one_line_error(minisparse("run", "--resume", str(run)), ["replay count -5 is negative"])


def test_structures_listing_at_other_hidden_units_marks_those_that_cannot_wire_them():
    """Before, every --hidden-units but 1024 failed the whole listing by blaming conv."""
    result = minisparse("structures", "--hidden-units", "100")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert rows["conv"].split()[1:7] == ["-"] * 5 + ["cannot"] and "cannot wire this layer" in rows["local"]
    assert rows["random"].split()[1:3] == ["100", "3,600"]  # 9 inputs per unit per channel, 4 channels
    assert "conv: builds 1024 hidden units; --hidden-units 100 would need another structure" in result.stdout
    assert "local: needs hidden units in multiples of 64, got 100" in result.stdout
    # connectivity in its own words, not the weight modes': static, or learned (and where it starts)
    assert rows["random"].endswith("static") and rows["rigl"].endswith("learned")
    assert rows["prune"].endswith("learned, starts at 40,000")
