"""Run directories: what a run leaves on disk, every file written atomically.

The layout is documented in docs/run-directory.md.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import platform
import subprocess
import tempfile
import time
import warnings
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from minisparse.config import Config, ConfigError
from minisparse.outputs import check_output_root

CONFIG, EPISODES, TRAIN, EVAL = "config.json", "episodes.csv", "train.csv", "eval.csv"
MODEL, CHECKPOINT, COMPLETE, ERROR = "model.pt", "checkpoint.pt", "complete.json", "error.txt"
EPISODE_COLUMNS = ("frame", "episode", "return", "length", "epsilon", "seconds")
EVAL_COLUMNS = ("frame", "episode", "seed", "return", "length", "truncated")
MAX_SNAPSHOTS = 20
_UMASK = os.umask(0)
os.umask(_UMASK)


def run_name(config: Config) -> str:
    return f"{config.game}-{config.structure}-{config.weights}-s{config.seed}-{config.fingerprint()}"


def create(config: Config, out: Path, capacity: dict[str, Any], structure_options: dict[str, Any],
           execution: dict[str, Any]) -> Path:
    """Make the run's folder with its config.json; nothing is left behind if this fails.
    `structure_options` are every option of the structure with the value the run uses (the config
    holds the given ones only, so that adding an option later keeps existing runs' names);
    `execution` is how it computes (Agent.execution)."""
    check_output_root(out)
    path = out / run_name(config)
    if is_complete(path):
        raise ConfigError(f"run directory {str(path)!r} already exists and is complete; to train this config "
                          f"again, give another --seed or another --out, or delete that folder")
    if path.exists():
        raise ConfigError(f"run directory {str(path)!r} already exists; continue it with --resume {path}")
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=out))
    try:
        write_json(staging / CONFIG, {"config": config.to_dict(), "fingerprint": config.fingerprint(),
                                      "structure": {"name": config.structure, "options": structure_options},
                                      "capacity": capacity, "execution": execution,
                                      "versions": package_versions(), "git_commit": git_commit(),
                                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        (staging / "masks").mkdir()
        os.chmod(staging, 0o777 & ~_UMASK)
        staging.rename(path)
    except BaseException:
        for child in sorted(staging.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() else child.unlink()
        staging.rmdir()
        raise
    return path


def read_config(path: Path) -> Config:
    """The resolved config a run directory was started with."""
    if not path.is_dir():
        raise ConfigError(f"cannot resume {str(path)!r}: no such run directory")
    return _config_in(path / CONFIG, f"cannot resume {str(path)!r}")


def config_like(path: Path) -> Config:
    """The settings of a run directory, of its config.json, or of a run in an export file
    (`STUDY.zip/RUN`, as compare's tables name it), to start another run like it."""
    context = f"--config {str(path)!r}"
    if path.exists():
        return _config_in(path / CONFIG if path.is_dir() else path, context)
    archive = next((parent for parent in path.parents if parent.is_file()), None)
    if archive is None or not zipfile.is_zipfile(archive):
        raise ConfigError(f"{context}: no such run directory or file")
    run = path.relative_to(archive).as_posix()
    member = zipfile.Path(archive, at=f"{run}/{CONFIG}")
    if not member.exists():
        raise ConfigError(f"{context}: {archive} holds no run {run!r}")
    return _config_in(member, context)


def _config_in(file: Path | zipfile.Path, context: str) -> Config:
    try:
        data = json.loads(file.read_text())
        return Config.from_dict(data["config"]).validate()
    except FileNotFoundError:
        raise ConfigError(f"{context}: it has no {CONFIG}, so it is not a run directory") from None
    except OSError as error:
        raise ConfigError(f"{context}: cannot read {file} ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise ConfigError(f"{context}: {file.name} is corrupt or not a run's {CONFIG} ({error})") from None
    except ConfigError as error:
        raise ConfigError(f"{context}: incompatible {CONFIG} ({error})") from None


def check_identity(path: Path, config: Config, structure_options: dict[str, Any]) -> None:
    """Refuse to resume a run whose config.json was edited after it started: the checkpoint would bring
    back the old optimizer settings while other edits (gamma, frames) changed the run mid-way, and
    config.json would describe neither. Refuse too under code whose structure options (every option,
    defaults included: `structure_options`) differ from those it started with: the run's name leaves
    out options at their defaults, so a changed default (l1's strength) keeps the name while the rest
    of the run would train differently from what config.json records."""
    data = json.loads((path / CONFIG).read_text())
    started_as = data.get("fingerprint") or path.name.rsplit("-", 1)[-1]  # older runs: the folder's id
    now = config.fingerprint()
    if now != started_as:
        raise ConfigError(f"cannot resume {str(path)!r}: {CONFIG} was edited after the run started (its settings "
                          f"now hash to {now}, the run's are {started_as}); restore it, or start a new run "
                          f"with the new settings")
    started_with = data.get("structure", {}).get("options")
    options_now = json.loads(json.dumps(structure_options, default=str))
    if started_with is not None and started_with != options_now:
        changed = ", ".join(f"{key}={started_with.get(key)!r} -> {options_now.get(key)!r}"
                            for key in sorted(set(started_with) | set(options_now))
                            if started_with.get(key) != options_now.get(key))
        raise ConfigError(f"cannot resume {str(path)!r}: this code's structure options differ from the ones the run "
                          f"started with ({changed}); resume it with the code that started it")


class DiskFull(Exception):
    """The disk filled up while a run's file was written; the file before the write is intact."""

    def __init__(self, path: Path):
        super().__init__(f"no space left on the device while writing {path}")
        self.path = path


def atomic_write(path: Path, write: Any, mode: str = "w") -> None:
    """Write through a temporary file in the same folder, then rename over the target; the target
    is never half-written, and a full disk raises DiskFull (torch hides ENOSPC under its own error)."""
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        _raise_if_disk_full(error, path)
        raise
    try:
        with os.fdopen(handle, mode) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException as error:
        os.unlink(temporary)
        _raise_if_disk_full(error, path)
        raise


def _raise_if_disk_full(error: BaseException, path: Path) -> None:
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(path) from None
        error = error.__cause__ or error.__context__


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda f: json.dump(data, f, indent=2, sort_keys=True))


def write_csv(path: Path, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def write_masks(path: Path, masks: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez_compressed(f, **masks), mode="wb")


def save_torch(path: Path, data: Any) -> None:
    atomic_write(path, lambda f: torch.save(data, f), mode="wb")


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint's contents, loaded without unpickling arbitrary objects; None if there is none."""
    file = path / CHECKPOINT
    if not file.exists():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(file, weights_only=True, map_location="cpu")
    except Exception as error:
        reason = (str(error) or type(error).__name__).splitlines()[0].split(". ")[0]
        raise ConfigError(f"cannot resume {str(path)!r}: {CHECKPOINT} is corrupt ({reason})") from None


def remove_stale_temporaries(path: Path) -> None:
    """Temporary files left by a run killed in the middle of a write."""
    for leftover in path.rglob(".*.tmp"):
        leftover.unlink()


def summary(path: Path) -> str:
    """One line on a complete run: frames, wall time, speed, and mean return of its first and last
    10% of episodes beside the episodes played before learning started (the random policy)."""
    from minisparse.progress import duration

    done = json.loads((path / COMPLETE).read_text())
    config = json.loads((path / CONFIG).read_text())["config"]
    with open(path / EPISODES, newline="") as file:
        rows = [(int(row["frame"]), float(row["return"])) for row in csv.DictReader(file)]
    returns = [value for _, value in rows]
    if not returns:
        return f"{done['frames']:,} frames in {duration(done['seconds'])}; no episode finished"
    tenth = max(1, len(returns) // 10)
    random_policy = [value for frame, value in rows if frame <= config["replay_start"]]
    line = (f"{done['frames']:,} frames in {duration(done['seconds'])} "
            f"({done['frames'] / max(done['seconds'], 1e-9):,.0f} frames/s); mean return of the first and last "
            f"{tenth} of {len(returns)} episodes: {np.mean(returns[:tenth]):.2f} -> {np.mean(returns[-tenth:]):.2f}")
    if random_policy:
        line += f" (random policy, before learning: {np.mean(random_policy):.2f})"
    if (path / EVAL).is_file():
        with open(path / EVAL, newline="") as file:
            evaluations = [(int(row["frame"]), float(row["return"])) for row in csv.DictReader(file)]
        if evaluations:
            last = max(frame for frame, _ in evaluations)
            final = [value for frame, value in evaluations if frame == last]
            line += f"; greedy evaluation at frame {last:,}: {np.mean(final):.2f} over {len(final)} episodes"
    return line


def is_complete(path: Path) -> bool:
    return (path / COMPLETE).exists()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("minisparse", "torch", "minatar", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def git_commit() -> str | None:
    """The source tree's commit, when minisparse runs from a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None
