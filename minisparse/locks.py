"""Per-run locks that die with their holder.

`fcntl.flock` on a lock file: the kernel releases it when the holding process exits for any
reason (SIGKILL included), so a crashed worker never leaves a stale lock and no PID has to be
trusted. Lock files are never deleted: deleting one while another process waits on it would
let two processes hold "the" lock on two different files.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on `path` for the block if nobody else does; yield whether we got it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
