"""`minisparse sweep`: run every run of a study that is not complete, locally or on Ray.

A grid point's run directory is `OUT/run_name(config)`, a function of the config's fingerprint,
so a sweep can be started again at any time: complete runs are skipped, interrupted ones resume
from their checkpoints, failed ones wait for --retry-failed. Per-run locks (see runner.py) make
concurrent sweeps on one folder safe.

The core and the structure registry import torch, so they are imported inside the functions
that use them: registering this command must not slow down `minisparse --help`.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import time
import uuid
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import click

from minisparse import runner
from minisparse.config import Config, ConfigError
from minisparse.numbers import FiniteFloatRange
from minisparse.outputs import check_output_root
from minisparse.pools import Finished, LocalPool, RayPool, require_ray
from minisparse.progress import duration
from minisparse.sweep_progress import SweepProgress, frames_done


COMPLETED_ELSEWHERE = "completed elsewhere"  # by another sweep that held its lock, while this one ran


@dataclass
class Run:
    """One grid point and what this sweep knows about it."""

    config: Config
    path: Path
    status: str = "queued"        # "queued", "submitted", or a runner outcome
    detail: str = ""
    frames: int = 0

    @property
    def name(self) -> str:
        return self.path.name


@click.command("sweep")
@click.argument("study", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder that receives the run directories  [default: runs/<study file name>]")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: worker processes on this machine; ray: one Ray task per run.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="local: runs at the same time, one torch thread each  [default: CPU cores]")
@click.option("--address", default=None,
              help="ray: address of a running cluster, e.g. ray://head:10001 or auto  "
                   "[default: start a local Ray instance]")
@click.option("--cpus-per-run", type=click.IntRange(min=1), default=1, show_default=True,
              help="ray: CPUs each run asks for (its torch threads).")
@click.option("--gpus-per-run", type=FiniteFloatRange(min=0), default=0.0, show_default=True,
              help="ray: GPUs each run asks for (a fraction shares one GPU between runs).")
@click.option("--retry-failed", is_flag=True, help="Run again the runs that failed before (error.txt).")
@click.pass_context
def sweep(ctx: click.Context, study: Path, out: Path | None, backend: str, workers: int | None,
          address: str | None, cpus_per_run: int, gpus_per_run: float, retry_failed: bool) -> None:
    """Run every run of a STUDY file (TOML) that is not complete.

    \b
    Example:
      minisparse sweep studies/smoke.toml --out runs/smoke
      minisparse sweep studies/interplay.toml --backend ray --address auto --out /shared/interplay
    """
    _check_backend_options(ctx, backend)
    from minisparse.study import load_study

    if backend == "ray":
        require_ray()
    resolved = load_study(study)
    out = out if out is not None else Path("runs") / study.stem
    check_output_root(out)
    threads = 1 if backend == "local" else cpus_per_run
    runs = [_prepare(dataclasses.replace(config, threads=threads), out, retry_failed) for config in resolved.configs]
    sweep_id = uuid.uuid4().hex[:12]
    jobs = {run.name: runner.Job(run.config.to_dict(), str(out.resolve()), retry_failed, sweep_id)
            for run in runs if run.status == "queued"}
    started = time.monotonic()
    stopped = False
    if jobs:
        pool = (LocalPool(workers or _cores(), out) if backend == "local"
                else RayPool(address, cpus_per_run, gpus_per_run, out.resolve(), sweep_id))
        out.mkdir(parents=True, exist_ok=True)
        progress = SweepProgress(sum(run.config.frames for run in runs), sum(run.frames for run in runs))
        try:
            stopped = _drive(runs, jobs, pool, progress)
        finally:
            progress.close()
            pool.close()
    title = f"{study} ({resolved.description})" if resolved.description else str(study)
    click.echo(summary(runs, title, time.monotonic() - started, _command(ctx, out)))
    if stopped:
        ctx.exit(130)
    finished = (runner.COMPLETED, runner.ALREADY_COMPLETE, COMPLETED_ELSEWHERE, runner.ELSEWHERE)
    ctx.exit(0 if all(run.status in finished for run in runs) else 1)


def _check_backend_options(ctx: click.Context, backend: str) -> None:
    """Options of the other backend are mistakes, not silently ignored settings."""
    belongs = {"workers": "local", "address": "ray", "cpus_per_run": "ray", "gpus_per_run": "ray"}
    for name, owner in belongs.items():
        if owner != backend and ctx.get_parameter_source(name).name == "COMMANDLINE":
            raise ConfigError(f"--{name.replace('_', '-')} applies to --backend {owner}, not {backend}")


def _prepare(config: Config, out: Path, retry_failed: bool) -> Run:
    """The run and what is on disk already: complete, failed before, or (partly) to do."""
    from minisparse import rundir

    run = Run(config, out / rundir.run_name(config))
    if rundir.is_complete(run.path):
        run.status = runner.ALREADY_COMPLETE
    elif (run.path / rundir.ERROR).exists() and not retry_failed:
        run.status = runner.FAILED_BEFORE
    run.frames = frames_done(run.path)
    return run


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _drive(runs: list[Run], jobs: dict[str, runner.Job], pool: LocalPool | RayPool,
           progress: SweepProgress) -> bool:
    """Feed the pool until every job has finished; on SIGINT/SIGTERM stop the workers and wait for them."""
    by_name = {run.name: run for run in runs}
    queue = deque(jobs.items())
    stopping = False
    with _caught_signals() as caught:
        while queue or pool.active():
            if caught and not stopping:
                stopping = True
                queue.clear()
                pool.interrupt()
                progress.note(f"stopping: waiting for the running runs to write checkpoints "
                              f"(received {signal.Signals(caught[0]).name})")
            while queue and pool.has_room():
                name, job = queue.popleft()
                pool.submit(name, job)
                by_name[name].status = "submitted"
            for item in pool.finished(timeout=1.0):
                _record(by_name[item.name], item, progress)
            running = pool.started()
            refresh(runs, running)
            progress.update(_counts(runs, running), sum(run.frames for run in runs))
    return stopping


def refresh(runs: list[Run], running: set[str]) -> None:
    """Read from disk how far the running runs are, and the runs another sweep holds: two sweeps
    sharing a folder (two nodes, or two workers started apart) each count the other's progress, and
    a run the other sweep finishes counts as done, not as still running there."""
    from minisparse import rundir

    for run in runs:
        if run.name in running or run.status == runner.ELSEWHERE:
            run.frames = frames_done(run.path)
        if run.status == runner.ELSEWHERE and rundir.is_complete(run.path):
            run.status = COMPLETED_ELSEWHERE


def _record(run: Run, item: Finished, progress: SweepProgress) -> None:
    from minisparse import rundir

    run.status, run.detail = item.outcome, item.detail
    run.frames = frames_done(run.path)
    if item.outcome in (runner.COMPLETED, runner.ALREADY_COMPLETE) and not rundir.is_complete(run.path):
        # Completion is what the run directory says, not what a worker process reports.
        run.status = runner.FAILED
        run.detail = (f"its worker reported '{item.outcome}' but the run has no {rundir.COMPLETE} "
                      f"({run.frames:,} of {run.config.frames:,} frames); the next sweep resumes it")
    if item.outcome == runner.FAILED:
        run.detail = run.detail or _last_line(run.path / rundir.ERROR)
    note = f" ({run.detail})" if run.detail else ""
    progress.note(f"{item.outcome}: {run.name}{note}")


@contextmanager
def _caught_signals() -> Iterator[list[int]]:
    """SIGINT/SIGTERM become an entry in the yielded list instead of KeyboardInterrupt mid-bookkeeping."""
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _counts(runs: list[Run], running: set[str]) -> dict[str, int]:
    tally = Counter(run.status for run in runs)
    return {"done": tally[runner.COMPLETED] + tally[runner.ALREADY_COMPLETE] + tally[COMPLETED_ELSEWHERE],
            "running": len(running),
            "failed": tally[runner.FAILED] + tally[runner.FAILED_BEFORE],
            "queued": tally["queued"] + tally["submitted"] - len(running),
            "interrupted": tally[runner.INTERRUPTED],
            "running elsewhere": tally[runner.ELSEWHERE]}


def summary(runs: list[Run], title: str, seconds: float, command: str) -> str:
    """What happened to every run, and the commands that finish the study."""
    from minisparse import rundir

    tally = Counter(run.status for run in runs)
    frames = sum(run.frames for run in runs)
    lines = [f"sweep of {title}: {len(runs)} runs in {duration(seconds)}"]
    for status in (runner.COMPLETED, runner.ALREADY_COMPLETE, COMPLETED_ELSEWHERE, runner.FAILED,
                   runner.FAILED_BEFORE, runner.INTERRUPTED, runner.ELSEWHERE, "queued", "submitted"):
        if tally[status]:
            label = {"queued": "not started", "submitted": "not started", runner.COMPLETED: "completed now"}
            lines.append(f"  {label.get(status, status):<18} {tally[status]}")
    lines.append(f"  frames of the study so far: {frames}/{sum(run.config.frames for run in runs)}")
    failed = [run for run in runs if run.status in (runner.FAILED, runner.FAILED_BEFORE)]
    if failed:
        lines.append("failed runs (traceback in each one's error.txt):")
        lines += [f"  {run.path}: {run.detail or _last_line(run.path / rundir.ERROR)}" for run in failed]
        lines.append("retry them with:")
        lines.append(f"  {command}" if "--retry-failed" in command else f"  {command} --retry-failed")
    unfinished = [run for run in runs if run.status in (runner.INTERRUPTED, "queued", "submitted")]
    if unfinished:
        lines.append(f"{len(unfinished)} runs are unfinished; they resume from their checkpoints with:")
        lines.append(f"  {command}")
    if tally[runner.ELSEWHERE]:
        lines.append(f"{tally[runner.ELSEWHERE]} runs were left to the other sweep that holds their lock")
    return "\n".join(lines)


def _last_line(file: Path) -> str:
    try:
        lines = [line for line in file.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return ""
    return lines[-1].strip() if lines else ""


def _command(ctx: click.Context, out: Path) -> str:
    """This sweep's command line as the user gave it, to be run again."""
    words = ["minisparse", "sweep", str(ctx.params["study"]), "--out", str(out)]
    for name, value in ctx.params.items():
        if name in ("study", "out") or ctx.get_parameter_source(name).name != "COMMANDLINE":
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value not in (False, None):
            words += [flag, str(value)]
    return shlex.join(words)
