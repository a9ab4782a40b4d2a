"""How a run stops short of its end, as exceptions the CLI turns into one line and an exit status.

Torch-free, so that the entry point can name them without importing the core (`--help` stays instant).
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutOfSpace(Exception):
    """The disk filled up; the run directory is intact as of its last complete write, and can be resumed."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written and the run can be resumed."""

    def __init__(self, signum: int, path: Path):
        super().__init__(f"interrupted by {signal.Signals(signum).name}; resume with: minisparse run --resume {path}")
        self.signum = signum


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them to the usual handlers.

    For imports of the training stack: some swallow the KeyboardInterrupt a signal raises and let the
    command run on (MinAtar tries matplotlib inside a bare `except:`; one landing in numpy's import
    under torch's was seen lost too)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if held:
        signal.raise_signal(held[0])
