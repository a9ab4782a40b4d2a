"""One run of a sweep, under its lock: what a local worker process and a Ray task both execute.

The lock is taken by the process that trains, so it is released exactly when that process ends,
however it ends. Everything is decided again under the lock (complete? failed before?), because
another sweep may have finished or failed the run since this sweep looked.

Bookkeeping lives beside the run directories, in `<out>/.sweep/`: `<run>.lock` (the lock),
`<run>.events` (one JSON line per start and end of the run, written only under the lock) and,
for the local backend, `<run>.log` (the worker's output).

Torch-free at import (the core is imported inside the functions that need it), so that the
sweep command, which uses the names below, keeps `minisparse --help` instant.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from minisparse.locks import try_lock

BOOKKEEPING = ".sweep"

COMPLETED = "completed"              # trained to the end by this worker
ALREADY_COMPLETE = "already complete"
ELSEWHERE = "running elsewhere"      # another sweep holds the lock
FAILED = "failed"                    # raised; error.txt holds the traceback
FAILED_BEFORE = "failed earlier"     # error.txt present and no --retry-failed
INTERRUPTED = "interrupted"          # stopped by a signal; resumes from its checkpoint next time

# Exit statuses of a local worker process, one per outcome; any other status means the worker crashed.
EXIT_STATUS = {COMPLETED: 0, FAILED: 10, ALREADY_COMPLETE: 11, ELSEWHERE: 12, FAILED_BEFORE: 13, INTERRUPTED: 14}


@dataclass(frozen=True)
class Job:
    """Everything a worker needs, as plain data (a command-line argument or a Ray task argument)."""

    config: dict[str, Any]
    out: str
    retry_failed: bool
    sweep: str                       # id of the sweep that runs it, for the events file

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def lock_path(out: Path, name: str) -> Path:
    return out / BOOKKEEPING / f"{name}.lock"


def events_path(out: Path, name: str) -> Path:
    return out / BOOKKEEPING / f"{name}.events"


def log_path(out: Path, name: str) -> Path:
    return out / BOOKKEEPING / f"{name}.log"


@contextmanager
def exclusive(out: Path, name: str) -> Iterator[None]:
    """Hold the run's lock (the one sweeps take) for the block, or fail in one line if another process has it."""
    from minisparse.config import ConfigError

    with try_lock(lock_path(out, name)) as held:
        if not held:
            raise ConfigError(f"run {str(out / name)!r} is being trained by another process (a sweep or "
                              f"another minisparse run holds its lock); wait for it to end")
        yield


def read_events(out: Path, name: str) -> list[dict[str, Any]]:
    """Every start and end of the run recorded so far, oldest first."""
    try:
        lines = events_path(out, name).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.endswith("}")]


def execute(job: Job) -> str:
    """Run (or resume) the job's run to the end unless it is complete, failed or locked; return the outcome."""
    from minisparse import dqn, rundir
    from minisparse.config import Config

    config = Config.from_dict(job.config)
    out = Path(job.out)
    name = rundir.run_name(config)
    path = out / name
    with try_lock(lock_path(out, name)) as held:
        if not held:
            return ELSEWHERE
        if rundir.is_complete(path):
            return ALREADY_COMPLETE
        if (path / rundir.ERROR).exists():
            if not job.retry_failed:
                return FAILED_BEFORE
            _clear_failure(path)
        _event(out, name, "started", job.sweep)
        try:
            if (path / rundir.CONFIG).exists():
                dqn.resume(path)
            else:
                dqn.start(config, out)
        except (dqn.Interrupted, KeyboardInterrupt):
            _event(out, name, INTERRUPTED, job.sweep)
            return INTERRUPTED
        except Exception:
            record_failure(path, traceback.format_exc())
            _event(out, name, FAILED, job.sweep)
            return FAILED
        _event(out, name, COMPLETED, job.sweep)
        return COMPLETED


def record_failure(path: Path, text: str) -> None:
    """error.txt in the run's folder, made if the run failed before the core created it."""
    from minisparse import rundir

    path.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write(path / rundir.ERROR, lambda f: f.write(text))


def _clear_failure(path: Path) -> None:
    """Forget an earlier failure; a folder made only to hold error.txt goes too, so the run starts afresh."""
    from minisparse import rundir

    (path / rundir.ERROR).unlink()
    if not (path / rundir.CONFIG).exists():
        path.rmdir()


def _event(out: Path, name: str, event: str, sweep: str) -> None:
    line = json.dumps({"event": event, "sweep": sweep, "host": socket.gethostname(), "pid": os.getpid(),
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    with open(events_path(out, name), "a") as file:
        file.write(line + "\n")


def _stop_with_parent(parent: int) -> None:
    """Ask Linux to send SIGTERM when the sweep dies, so no orphan trains on unsupervised."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the sweep died before the request took effect
            raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    """Local worker process: `python -m minisparse.runner JOB_JSON SWEEP_PID`; the exit status is the outcome."""
    # Until the training loop installs its own handlers, SIGTERM and SIGINT stop the worker the same way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        _stop_with_parent(int(argv[1]))
        return EXIT_STATUS[execute(Job(**json.loads(argv[0])))]
    except KeyboardInterrupt:
        return EXIT_STATUS[INTERRUPTED]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
