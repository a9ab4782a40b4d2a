"""Shared helpers: run the real CLI in a subprocess, with settings small enough for CI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

# A real run, shrunk: learning starts after 500 frames and the buffer holds 2,000 transitions.
TINY = ["--frames", "3000", "--replay-start", "500", "--replay-capacity", "2000", "--target-period", "200",
        "--epsilon-frames", "1000", "--log-every", "500", "--checkpoint-every", "1000"]


def minisparse(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minisparse", *args], capture_output=True, text=True,
                          timeout=timeout)


def minisparse_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str
                          ) -> subprocess.CompletedProcess:
    """The CLI's entry point (`minisparse.cli.main`, exit status and all) in this process: for commands that
    stop at a mistake before any work, where a subprocess would spend seconds importing torch each time."""
    import torch
    from minisparse.cli import main
    monkeypatch.setattr(sys, "argv", ["minisparse", *args])
    capsys.readouterr()
    threads = torch.get_num_threads()  # a run that fails as its agent is built has set them already
    try:
        with pytest.raises(SystemExit) as stopped:
            main()
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, stopped.value.code, captured.out, captured.err)


def only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]  # .sweep: the runs' locks
    assert len(runs) == 1, runs
    return runs[0]


def episodes(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "episodes.csv")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One completed tiny run of random structure, fixed weights, shared by read-only tests."""
    out = tmp_path_factory.mktemp("tiny")
    result = minisparse("run", "--structure", "random", "--weights", "fixed", "--out", str(out), *TINY)
    assert result.returncode == 0, result.stderr
    return only_run(out)
