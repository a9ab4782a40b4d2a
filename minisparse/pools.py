"""Where a sweep's runs execute: worker processes on this machine, or Ray tasks on a cluster.

Both pools run `runner.execute` for each job, so locking, skipping, resuming and recording
failures behave the same; they differ only in how work is started, watched and stopped.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from minisparse import runner
from minisparse.config import ConfigError

RAY_INSTALL = 'pip install -e ".[ray]" (from a minisparse checkout) or pip install "ray[default]>=2.9"'
# Signals that stop a worker without saying anything about the run: it resumes next time.
STOPPING_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Finished(NamedTuple):
    name: str
    outcome: str
    detail: str = ""


class LocalPool:
    """One fresh worker process per run (one torch thread each), at most `workers` at a time.

    A process per run, not a long-lived pool: a worker that dies (SIGKILL, out of memory) takes
    only its own run with it, and no state leaks from one run into the next.
    """

    def __init__(self, workers: int, out: Path):
        self.workers, self.out = workers, out
        self.processes: dict[str, subprocess.Popen] = {}
        self.stopping = False

    def has_room(self) -> bool:
        return len(self.processes) < self.workers

    def submit(self, name: str, job: runner.Job) -> None:
        log = runner.log_path(self.out, name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as output:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-P", "-m", "minisparse.runner", job.to_json(), str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)

    def started(self) -> set[str]:
        return set(self.processes)

    def active(self) -> bool:
        return bool(self.processes)

    def finished(self, timeout: float) -> list[Finished]:
        """Runs whose worker exited within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            done = [self._outcome(name, process.returncode) for name, process in list(self.processes.items())
                    if process.poll() is not None]
            for item in done:
                del self.processes[item.name]
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(0.1)

    def interrupt(self) -> None:
        """SIGINT every worker: the training loop writes a checkpoint and exits."""
        self.stopping = True
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)

    def close(self) -> None:
        """Wait for the workers; if the sweep is leaving early (an error), stop them cleanly first."""
        if self.processes and not self.stopping:
            self.interrupt()
        for process in self.processes.values():
            process.wait()

    def _outcome(self, name: str, status: int) -> Finished:
        outcomes = {code: outcome for outcome, code in runner.EXIT_STATUS.items()}
        if status in outcomes:
            return Finished(name, outcomes[status])
        if status < 0 and -status in STOPPING_SIGNALS:
            return Finished(name, runner.INTERRUPTED, f"worker killed by {signal.Signals(-status).name}")
        if self.stopping:
            return Finished(name, runner.INTERRUPTED, f"worker exited with status {status} while stopping")
        cause = f"killed by {signal.Signals(-status).name}" if status < 0 else f"exited with status {status}"
        log = runner.log_path(self.out, name)
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:]) if log.exists() else ""
        runner.record_failure(self.out / name, f"the worker process {cause}; the end of its output:\n{tail}")
        return Finished(name, runner.FAILED, f"worker {cause}")


def require_ray() -> Any:
    """The ray module, imported only when asked for: the local backend works without it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--backend ray needs Ray, which is not installed; install it with: {RAY_INSTALL}") \
            from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail in seconds on a wrong address; Ray itself retries an unreachable one for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    return (str(error) or type(error).__name__).strip().splitlines()[0]


def _execute(job_json: str) -> str:
    """The Ray task: the same code a local worker runs, inside a Ray worker process."""
    return runner.execute(runner.Job(**json.loads(job_json)))


class RayPool:
    """One Ray task per run, each asking for `cpus` CPUs and `gpus` GPUs; Ray queues what does not fit.

    Run directories are written by the tasks under `out`, which must be the same path on every
    node (a shared filesystem); locks are flock()s there, so they work across nodes where the
    filesystem supports flock (local disks, NFSv4, Lustre, CephFS; not object-store mounts).
    """

    def __init__(self, address: str | None, cpus: float, gpus: float, out: Path, sweep: str):
        ray = require_ray()
        self.ray, self.out, self.sweep = ray, out, sweep
        if address not in (None, "auto"):
            _check_reachable(address)
        try:  # "local": a fresh instance that ends with the sweep, even when RAY_ADDRESS is set
            ray.init(address=address or "local", log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError) as error:
            raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {_first_line(error)}") from None
        # max_calls=1: a fresh worker process per run, as locally; Ray's retries after a worker or
        # node dies are kept, and a retried task resumes the run from its checkpoint.
        self.task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=1)(_execute)
        self.refs: dict[Any, str] = {}

    def has_room(self) -> bool:
        return True

    def submit(self, name: str, job: runner.Job) -> None:
        self.refs[self.task.options(name=name).remote(job.to_json())] = name

    def started(self) -> set[str]:
        """Submitted runs whose task has taken the lock (Ray does not say which tasks are queued)."""
        running = set()
        for name in self.refs.values():
            events = runner.read_events(self.out, name)
            if events and events[-1]["event"] == "started" and events[-1]["sweep"] == self.sweep:
                running.add(name)
        return running

    def active(self) -> bool:
        return bool(self.refs)

    def finished(self, timeout: float) -> list[Finished]:
        if not self.refs:
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout)
        return [self._outcome(ref) for ref in ready]

    def interrupt(self) -> None:
        """Cancel every task: queued ones never start, running ones get KeyboardInterrupt and checkpoint."""
        for ref in self.refs:
            self.ray.cancel(ref)

    def close(self) -> None:
        self.ray.shutdown()

    def _outcome(self, ref: Any) -> Finished:
        from ray import exceptions

        name = self.refs.pop(ref)
        try:
            return Finished(name, self.ray.get(ref))
        except exceptions.TaskCancelledError:
            return Finished(name, runner.INTERRUPTED, "cancelled")
        except (exceptions.WorkerCrashedError, exceptions.NodeDiedError) as error:
            return Finished(name, runner.INTERRUPTED, type(error).__name__)
        except exceptions.RayError as error:
            runner.record_failure(self.out / name, f"the Ray task failed:\n{error}")
            return Finished(name, runner.FAILED, type(error).__name__)
