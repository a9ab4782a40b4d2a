"""Sweeps for real: worker processes and a real Ray instance train tiny runs; nothing is mocked."""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from minisparse.locks import try_lock
from minisparse.runner import lock_path, read_events
from minisparse.study import load_study

STUDIES = Path(__file__).resolve().parent.parent / "studies"
RESULT_COLUMNS = ["frame", "episode", "return", "length", "epsilon"]  # all but wall-clock seconds
TINY = """
[overrides]
frames = 700
replay_start = 500
replay_capacity = 2000
target_period = 100
epsilon_frames = 200
log_every = 100
checkpoint_every = 200
"""
# `minisparse sweep`, through the real entry point (one-line errors, exit statuses).
CLI = ("from minisparse.cli import cli, main; from minisparse.sweep import sweep; "
       "cli.add_command(sweep); main()")
SUMMARY_LINE = re.compile(r"^  (completed now|already complete|completed elsewhere|failed|failed earlier|interrupted|"
                          r"running elsewhere|not started)\s+(\d+)$", re.M)


def sweep_command(*args) -> list[str]:
    return [sys.executable, "-P", "-c", CLI, "sweep", *map(str, args)]  # -P: as the console script, no cwd on sys.path


def sweep(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_command(*args), capture_output=True, text=True, timeout=timeout)


def start_sweep(*args) -> subprocess.Popen:
    return subprocess.Popen(sweep_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def counts(stdout: str) -> dict[str, int]:
    """The summary's table: how many runs ended which way."""
    return {what: int(number) for what, number in SUMMARY_LINE.findall(stdout)}


def starts(out: Path, name: str) -> int:
    """How many times any worker started training the run."""
    return sum(event["event"] == "started" for event in read_events(out, name))


def runs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def write_study(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    study = folder / "study.toml"
    study.write_text(text)
    return study


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """The shipped smoke study, swept once on the local backend with two workers."""
    out = tmp_path_factory.mktemp("smoke") / "runs"
    result = sweep(STUDIES / "smoke.toml", "--out", out, "--workers", 2)
    assert result.returncode == 0, result.stdout + result.stderr
    assert counts(result.stdout) == {"completed now": 4}, result.stdout
    return out


def test_smoke_study_completes_and_a_second_sweep_skips_every_run(smoke):
    finished = runs(smoke)
    assert [p.name.rsplit("-", 2)[0] for p in finished] == [
        "breakout-conv-fixed", "breakout-conv-learned", "breakout-random-fixed", "breakout-random-learned"]
    for run in finished:
        assert json.loads((run / "complete.json").read_text())["frames"] == 3000
        assert json.loads((run / "config.json").read_text())["config"]["threads"] == 1
        assert starts(smoke, run.name) == 1
    stamps = {run: (run / "complete.json").stat().st_mtime_ns for run in finished}
    again = sweep(STUDIES / "smoke.toml", "--out", smoke, "--workers", 2)
    assert again.returncode == 0, again.stdout + again.stderr
    assert counts(again.stdout) == {"already complete": 4}, again.stdout
    assert {run: (run / "complete.json").stat().st_mtime_ns for run in finished} == stamps
    assert all(starts(smoke, run.name) == 1 for run in finished)


def test_killed_worker_and_ctrl_c_resume_without_redoing_finished_runs(smoke, tmp_path):
    out = tmp_path / "runs"
    finished = runs(smoke)
    victim = finished[-1]  # random learned: the slowest, so Ctrl-C below lands while it trains
    for run in finished[:-1]:  # three runs done elsewhere and copied here, as after syncing from a cluster
        shutil.copytree(run, out / run.name)
    stamps = {run.name: (out / run.name / "complete.json").stat().st_mtime_ns for run in finished[:-1]}
    process = start_sweep(STUDIES / "smoke.toml", "--out", out, "--workers", 1)
    deadline = time.monotonic() + 120
    while not (out / victim.name / "checkpoint.pt").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    worker = read_events(out, victim.name)[-1]["pid"]
    assert Path(f"/proc/{worker}/stat").read_text().split()[3] == str(process.pid)  # a worker of this sweep
    os.kill(worker, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stdout + stderr
    assert counts(stdout) == {"already complete": 3, "interrupted": 1}, stdout
    assert "SIGKILL" in stderr and not (out / victim.name / "complete.json").exists()

    # Ctrl-C on the resumed sweep: the worker is told, stops cleanly, and the sweep waits for it.
    process = start_sweep(STUDIES / "smoke.toml", "--out", out, "--workers", 1)
    checkpoint = out / victim.name / "checkpoint.pt"
    killed_at = checkpoint.stat().st_mtime_ns
    while starts(out, victim.name) < 2 or checkpoint.stat().st_mtime_ns == killed_at:  # training again
        assert process.poll() is None and time.monotonic() < deadline + 120, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + stderr
    assert counts(stdout) == {"already complete": 3, "interrupted": 1}, stdout
    last = read_events(out, victim.name)[-1]
    assert last["event"] == "interrupted" and not Path(f"/proc/{last['pid']}").exists()

    again = sweep(STUDIES / "smoke.toml", "--out", out, "--workers", 1)
    assert again.returncode == 0, again.stdout + again.stderr
    assert counts(again.stdout) == {"completed now": 1, "already complete": 3}, again.stdout
    assert starts(out, victim.name) == 3
    pd.testing.assert_frame_equal(pd.read_csv(out / victim.name / "episodes.csv")[RESULT_COLUMNS],
                                  pd.read_csv(victim / "episodes.csv")[RESULT_COLUMNS])
    for name, stamp in stamps.items():
        assert (out / name / "complete.json").stat().st_mtime_ns == stamp
        assert starts(out, name) == 0


def test_workers_run_the_installed_package_even_from_a_folder_holding_a_minisparse_folder(tmp_path):
    """A sweep started in a source checkout: its `minisparse/` folder must not shadow the package
    (`python -m` would put the working folder first on sys.path)."""
    (tmp_path / "minisparse").mkdir()
    (tmp_path / "minisparse" / "__init__.py").write_text("raise ImportError('the working folder shadowed minisparse')")
    study = write_study(tmp_path / "study", 'structures = ["conv"]\nweights = ["fixed"]\n' + TINY)
    result = subprocess.run(sweep_command(study, "--out", tmp_path / "runs", "--workers", 1),
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert counts(result.stdout) == {"completed now": 1}, result.stdout


def test_two_concurrent_sweeps_never_run_a_run_twice(tmp_path):
    study = write_study(tmp_path, 'structures = ["conv"]\nweights = ["fixed", "learned"]\n' + TINY)
    out = tmp_path / "runs"
    first, second = (start_sweep(study, "--out", out, "--workers", 2) for _ in range(2))
    results = [process.communicate(timeout=300) + (process.returncode,) for process in (first, second)]
    for stdout, stderr, status in results:
        assert status == 0, stdout + stderr
    finished = runs(out)
    assert len(finished) == 2 and all((run / "complete.json").exists() for run in finished)
    assert [starts(out, run.name) for run in finished] == [1, 1]
    assert sum(counts(stdout).get("completed now", 0) for stdout, _, _ in results) == 2


PLUGIN = '''
from pathlib import Path

from minisparse.structure import Structure, register


@register("explode")
class Explode(Structure):
    """Fails when learning starts while the file `trigger` exists (the run folder exists by then)."""

    trigger: str = ""

    def begin_learning(self, spec, observations, generator):
        if Path(self.trigger).exists():
            raise RuntimeError("boom when learning starts")
        return None


@register("explode_early")
class ExplodeEarly(Structure):
    """Fails while the network is built, before the run has a folder, while `trigger` exists."""

    trigger: str = ""

    def initial_mask(self, spec, generator):
        if Path(self.trigger).exists():
            raise RuntimeError("boom before the run folder exists")
        return super().initial_mask(spec, generator)
'''


def test_failing_runs_are_recorded_the_sweep_carries_on_and_retry_is_on_request(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "explode.py").write_text(PLUGIN)
    trigger = tmp_path / "trigger"
    trigger.touch()
    study = write_study(tmp_path, f'''plugins = "plugins"
weights = ["fixed"]
[structures.conv]
[structures.explode]
options = {{trigger = "{trigger}"}}
[structures.explode_early]
options = {{trigger = "{trigger}"}}
''' + TINY)
    out = tmp_path / "runs"
    first = sweep(study, "--out", out, "--workers", 2)
    assert first.returncode == 1, first.stdout + first.stderr
    assert counts(first.stdout) == {"completed now": 1, "failed": 2}, first.stdout
    conv, explode, early = (next(out.glob(f"breakout-{name}-fixed-*")) for name in ("conv", "explode", "explode_early"))
    assert (conv / "complete.json").exists()
    assert "RuntimeError: boom when learning starts" in (explode / "error.txt").read_text()
    assert "Traceback" in (explode / "error.txt").read_text() and (explode / "config.json").exists()
    assert "RuntimeError: boom before the run folder exists" in (early / "error.txt").read_text()
    retry = first.stdout.split("retry them with:\n", 1)[1].splitlines()[0].strip()
    assert retry == shlex.join(["minisparse", "sweep", str(study), "--out", str(out), "--workers", "2",
                                "--retry-failed"])
    assert f"{explode}: RuntimeError: boom when learning starts" in first.stdout

    not_retried = sweep(study, "--out", out, "--workers", 2)
    assert not_retried.returncode == 1
    assert counts(not_retried.stdout) == {"already complete": 1, "failed earlier": 2}, not_retried.stdout
    assert starts(out, explode.name) == starts(out, early.name) == 1

    trigger.unlink()  # whatever made them fail is fixed
    retried = sweep(*shlex.split(retry)[2:])
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert counts(retried.stdout) == {"completed now": 2, "already complete": 1}, retried.stdout
    for run in (explode, early):
        assert (run / "complete.json").exists() and not (run / "error.txt").exists()
        assert starts(out, run.name) == 2
    assert starts(out, conv.name) == 1


QUITTER = '''
import os
from minisparse.structure import Structure, register


@register("quitter")
class Quitter(Structure):
    """Ends its worker process with status 0 after 100 updates, as a run that stops early would."""

    learns_connectivity = True

    def is_update_step(self, step, spec):
        if step == 100:
            os._exit(0)
        return False
'''


def test_a_worker_that_exits_0_without_finishing_its_run_is_not_counted_complete(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "quitter.py").write_text(QUITTER)
    study = write_study(tmp_path, 'plugins = "plugins"\nstructures = ["quitter"]\nweights = ["learned"]\n' + TINY)
    result = sweep(study, "--out", tmp_path / "runs", "--workers", 1)
    assert result.returncode == 1, result.stdout + result.stderr
    assert counts(result.stdout) == {"failed": 1}, result.stdout
    assert "reported 'completed' but the run has no complete.json" in result.stdout
    assert not list((tmp_path / "runs").glob("*/complete.json"))


BAD_STUDIES = {
    "structure typo": ('structures = ["conv", "rigll"]', ["structures", "'rigll'", "conv, dense", "random"]),
    "option typo": ('[structures.random]\noptions = {per_unt = true}',
                    ["structures.random.options", "'per_unt'", "per_unit"]),
    "not a finite number": ('[overrides]\nlr = inf', ["overrides.lr", "lr must be a finite number, got inf"]),
}


def test_non_finite_sweep_option_is_one_line(tmp_path):
    study = write_study(tmp_path, 'structures = ["conv"]\n' + TINY)
    result = sweep(study, "--out", tmp_path / "runs", "--backend", "ray", "--gpus-per-run", "nan")
    assert result.returncode == 2 and "'nan' is not a finite number" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case", BAD_STUDIES, ids=list(BAD_STUDIES))
def test_study_mistakes_fail_in_one_line_with_exit_2_before_anything_is_written(case, tmp_path):
    text, expected = BAD_STUDIES[case]
    study = write_study(tmp_path, text)
    out = tmp_path / "runs"
    result = sweep(study, "--out", out)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in [str(study), *expected]:
        assert fragment in lines[0], (fragment, lines[0])
    assert not out.exists()


@pytest.fixture
def ray_cluster():
    """A real Ray instance started by this test process, as a running cluster would be."""
    ray = pytest.importorskip("ray", reason='needs Ray: pip install -e ".[ray]"')
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()


def test_ray_backend_runs_tasks_under_the_same_locks_and_skips_complete_runs(ray_cluster, tmp_path):
    study = write_study(tmp_path, 'structures = ["conv"]\nweights = ["fixed", "learned"]\n' + TINY)
    out = tmp_path / "runs"
    unreachable = sweep(study, "--out", out, "--backend", "ray", "--address", "127.0.0.1:1")
    assert unreachable.returncode == 2 and not out.exists()
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in unreachable.stderr
    # Hold one run's lock as a concurrent sweep would: the Ray task must leave that run alone.
    fixed, learned = load_study(study).names()
    with try_lock(lock_path(out, learned)) as held:
        assert held
        first = sweep(study, "--out", out, "--backend", "ray", "--address", ray_cluster, "--cpus-per-run", 1)
    assert first.returncode == 0, first.stdout + first.stderr
    assert counts(first.stdout) == {"completed now": 1, "running elsewhere": 1}, first.stdout
    assert (out / fixed / "complete.json").exists() and not (out / learned).exists()
    assert starts(out, fixed) == 1 and starts(out, learned) == 0
    stamp = (out / fixed / "complete.json").stat().st_mtime_ns

    second = sweep(study, "--out", out, "--backend", "ray")  # no --address: a local Ray instance of its own
    assert second.returncode == 0, second.stdout + second.stderr
    assert counts(second.stdout) == {"completed now": 1, "already complete": 1}, second.stdout
    assert (out / learned / "complete.json").exists()
    assert starts(out, fixed) == 1 and starts(out, learned) == 1
    assert (out / fixed / "complete.json").stat().st_mtime_ns == stamp


def test_ray_backend_without_ray_names_the_install_command(tmp_path):
    study = write_study(tmp_path, 'structures = ["conv"]\n' + TINY)
    without_ray = "import sys; sys.modules['ray'] = None; " + CLI  # as if Ray were not installed
    result = subprocess.run([sys.executable, "-c", without_ray, "sweep", str(study), "--out", str(tmp_path / "runs"),
                             "--backend", "ray"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert 'pip install -e ".[ray]"' in result.stderr and not (tmp_path / "runs").exists()


def test_a_run_another_sweep_holds_counts_as_it_progresses_and_as_done_once_complete(tmp_path):
    """Two sweeps sharing a folder (the pilots ran so): a run one sweep found locked by the other stayed
    'running elsewhere' with the frames it had then, so both sweeps' counts and ETA went stale."""
    from minisparse.runner import ELSEWHERE
    from minisparse.sweep import COMPLETED_ELSEWHERE, Run, _counts, refresh
    config = load_study(write_study(tmp_path, 'structures = ["conv"]\n' + TINY)).configs[0]
    run = Run(config, tmp_path / "runs" / "held", status=ELSEWHERE)
    run.path.mkdir(parents=True)
    (run.path / "train.csv").write_text("frame,loss\n100,0.5\n200,0.4\n")
    refresh([run], set())
    assert run.frames == 200 and _counts([run], set())["running elsewhere"] == 1
    (run.path / "complete.json").write_text(json.dumps({"frames": 600}))
    refresh([run], set())
    assert run.status == COMPLETED_ELSEWHERE and run.frames == 600
    assert _counts([run], set())["done"] == 1 and _counts([run], set())["running elsewhere"] == 0
