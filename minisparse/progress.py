"""What a long run shows while it works: a live bar on a terminal, plain log lines otherwise."""
from __future__ import annotations

import sys
import time
from collections import deque
from typing import TextIO

from tqdm import tqdm


class Progress:
    """Frames, frames/s, ETA and the mean return of recent episodes."""

    def __init__(self, total: int, start: int, label: str, log_every: int,
                 stream: TextIO | None = None, live: bool | None = None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.total, self.label, self.log_every = total, label, log_every
        self.returns: deque[float] = deque(maxlen=20)
        self._start_frame, self._start_time = start, time.monotonic()
        self._bar = tqdm(total=total, initial=start, unit="frame", unit_scale=True, desc=label,
                         file=self.stream, dynamic_ncols=True, smoothing=0.05) if self.live else None

    def episode(self, episode_return: float) -> None:
        self.returns.append(episode_return)

    def advance(self, frame: int, epsilon: float) -> None:
        if self._bar is not None:
            if frame - self._bar.n >= 250 or frame == self.total:
                self._bar.update(frame - self._bar.n)
                self._bar.set_postfix_str(f"return {self.recent_return():.2f} eps {epsilon:.2f}", refresh=False)
        elif frame % self.log_every == 0 or frame == self.total:
            rate = self.rate(frame)
            eta = (self.total - frame) / rate if rate > 0 else float("inf")
            print(f"{self.label} frame {frame}/{self.total} ({100 * frame / self.total:.0f}%) "
                  f"{rate:.0f} frames/s ETA {duration(eta)} return(last {len(self.returns)}) "
                  f"{self.recent_return():.2f} eps {epsilon:.2f}", file=self.stream, flush=True)

    def rate(self, frame: int) -> float:
        elapsed = time.monotonic() - self._start_time
        return (frame - self._start_frame) / elapsed if elapsed > 0 else 0.0

    def recent_return(self) -> float:
        return sum(self.returns) / len(self.returns) if self.returns else float("nan")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def duration(seconds: float) -> str:
    """H:MM:SS, or ? when unknown."""
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
