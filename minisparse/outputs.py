"""Output paths checked before any work starts: a mistake costs one line, not a finished run."""
from __future__ import annotations

import os
from pathlib import Path

from minisparse.config import ConfigError


def check_output_root(out: Path) -> None:
    """Fail in one line, creating nothing, when `out` cannot be (or become) a writable folder."""
    absolute = existing = Path(os.path.abspath(out))
    while not os.path.lexists(existing):  # a dangling link exists, as a name mkdir cannot take
        existing = existing.parent
    what = "a file" if existing.is_file() else "not a directory"
    if existing == absolute and not out.is_dir():
        raise ConfigError(f"output path {str(out)!r} is {what}")
    if not existing.is_dir():
        raise ConfigError(f"output path {str(out)!r} cannot be made: {str(existing)!r} is {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output path {str(out)!r} cannot be made: {str(existing)!r} is not writable")


def check_output_file(path: Path) -> None:
    """As check_output_root, for a file to be written into its folder."""
    if path.is_dir():
        raise ConfigError(f"output file {str(path)!r} is a directory")
    check_output_root(path.parent)
