"""How a run stops short of its end, as exceptions the CLI turns into one line and an exit status.

Torch-free, so that the entry point can name them without importing the core (`--help` stays instant).
"""
from __future__ import annotations

import signal
from pathlib import Path


class OutOfSpace(Exception):
    """The disk filled up; the run directory is intact as of its last complete write, and can be resumed."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written and the run can be resumed."""

    def __init__(self, signum: int, path: Path):
        super().__init__(f"interrupted by {signal.Signals(signum).name}; resume with: minisparse run --resume {path}")
        self.signum = signum
