"""What a sweep shows while it works: a live bar on a terminal, plain periodic lines otherwise.

Progress is read from the run directories themselves (the core rewrites episodes.csv and
train.csv every `log_every` frames), so it works the same for local workers and Ray tasks
on a shared filesystem, and needs nothing from the training loop.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from minisparse.progress import duration


def frames_done(path: Path) -> int:
    """Frames a run has trained so far (0 if it has not written a table yet)."""
    from minisparse import rundir  # here, not at the top: it imports torch

    try:
        return int(json.loads((path / rundir.COMPLETE).read_text())["frames"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, ValueError):
        return max(_last_frame(path / rundir.TRAIN), _last_frame(path / rundir.EPISODES))


def _last_frame(table: Path) -> int:
    """First column of the last row; only the file's tail is read, as episodes.csv grows long."""
    try:
        with open(table, "rb") as file:
            file.seek(0, 2)
            file.seek(max(0, file.tell() - 4096))
            lines = file.read().decode(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return 0
    try:
        return int(float(lines[-1].split(",")[0])) if lines else 0
    except ValueError:  # only the header so far
        return 0


class SweepProgress:
    """Runs done, running, failed and queued, frames of the whole study and aggregate frames/s."""

    def __init__(self, total_frames: int, start_frames: int, stream: TextIO | None = None,
                 live: bool | None = None, every: float = 30.0):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.total, self.start_frames, self.every = total_frames, start_frames, every
        self.started = self._last_line = time.monotonic()
        self.frames = start_frames
        self._bar = tqdm(total=total_frames, initial=start_frames, unit="frame", unit_scale=True,
                         desc="sweep", file=self.stream, dynamic_ncols=True) if self.live else None

    def rate(self) -> float:
        """Frames per second summed over all runs, since this sweep started (or since its frames last fell)."""
        elapsed = time.monotonic() - self.started
        return (self.frames - self.start_frames) / elapsed if elapsed > 0 else 0.0

    def update(self, counts: dict[str, int], frames: int) -> None:
        if frames < self.start_frames:  # a resumed run rewound its tables to its last checkpoint
            self.start_frames, self.started = frames, time.monotonic()
        self.frames = frames
        status = ", ".join(f"{number} {what}" for what, number in counts.items() if number or what in (
            "done", "running", "failed", "queued"))
        if self._bar is not None:
            self._bar.update(frames - self._bar.n)
            self._bar.set_postfix_str(f"{status} | {self.rate():.0f} frames/s", refresh=True)
        elif time.monotonic() - self._last_line >= self.every:
            self._last_line = time.monotonic()
            rate = self.rate()
            eta = (self.total - frames) / rate if rate > 0 else float("inf")
            print(f"sweep: {status}; frames {frames}/{self.total} ({100 * frames / max(self.total, 1):.0f}%) "
                  f"{rate:.0f} frames/s ETA {duration(eta)}", file=self.stream, flush=True)

    def note(self, line: str) -> None:
        """An event worth its own line (a run finished, failed, was interrupted)."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
