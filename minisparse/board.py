"""Optional TensorBoard logging (`--tensorboard`, `pip install "minisparse[tensorboard]"`).

The run's tables stay the record; this mirrors their rows as scalars under <run>/tensorboard,
stepped by frame, each time the tables are written: training returns and lengths, greedy
evaluation means, and every train.csv column (loss, mean Q, frames/s, density, connections changed,
diagnostics). A resumed run purges the events past its checkpoint's frame before writing again, so
no step shows twice.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from minisparse.config import ConfigError

FOLDER = "tensorboard"


class Board:
    def __init__(self, run: Path, frame: int, written: tuple[int, int, int]):
        """Write under `run`/tensorboard; a run resumed at `frame` first purges the events after it (written
        before a kill, and written again now). `written` counts the episode, train and evaluation rows
        the checkpoint holds, all mirrored before it was taken."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError('--tensorboard needs the tensorboard package: pip install "minisparse[tensorboard]"') from None
        self.writer = SummaryWriter(str(run / FOLDER), purge_step=frame + 1 if frame > 0 else None)
        self.episodes, self.train, self.evaluations = written

    def write(self, episode_rows: list[list[Any]], train_columns: list[str], train_rows: list[list[Any]],
              eval_rows: list[list[Any]]) -> None:
        """Mirror the rows added since the last call (the rows as the run's CSV files hold them)."""
        for frame, _, episode_return, length, *_ in episode_rows[self.episodes:]:
            self.writer.add_scalar("episode/return", episode_return, frame)
            self.writer.add_scalar("episode/length", length, frame)
        for row in train_rows[self.train:]:
            frame = row[0]
            for column, value in zip(train_columns[1:], row[1:]):
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    self.writer.add_scalar(f"train/{column}", value, frame)
        new_evaluations = eval_rows[self.evaluations:]
        for frame in sorted({row[0] for row in new_evaluations}):
            returns = [row[3] for row in new_evaluations if row[0] == frame]
            self.writer.add_scalar("eval/return", sum(returns) / len(returns), frame)
        self.episodes, self.train, self.evaluations = len(episode_rows), len(train_rows), len(eval_rows)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
