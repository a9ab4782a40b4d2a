"""Read run directories (docs/run-directory.md) into tidy pandas frames.

Every loader accepts one run, a folder of runs, a study folder with runs nested at any depth,
or an export of one (`minisparse export`, a zip of the runs' files), so a notebook and
`minisparse compare` see the same rows. A run is a `Path` to its folder, or a `zipfile.Path`
to its folder inside an export: the loaders only use what both provide.
"""
from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd

PathLike = Union[str, "os.PathLike[str]"]
Paths = Union[PathLike, Iterable[PathLike]]
Run = Union[Path, zipfile.Path]

EXPORT_MANIFEST = "export.json"
EXPORT_FORMAT = "minisparse-export"

EPISODE_COLUMNS = ["frame", "episode", "return", "length", "epsilon", "seconds"]
TRAIN_COLUMNS = ["frame", "updates", "loss", "mean_q", "frames_per_s"]
EVAL_COLUMNS = ["frame", "episode", "eval_seed", "return", "length", "truncated"]  # eval.csv's seed renamed
CAPACITY_COLUMNS = ["units", "inputs", "connections", "parameters", "density", "flops"]
RUN_COLUMNS = ["run", "path", "complete"]  # added to every row, after the config columns


class BrokenRunWarning(UserWarning):
    """A run left out because one of its files cannot be read; the message names the file and why."""

    def __init__(self, run: Run, message: str):
        super().__init__(message)
        self.run = run


class NoRunsError(Exception):
    """A path is missing, holds no run directory, or holds a config.json that is not a run's.

    A user mistake rather than a bug: the CLI reports it as one line with exit status 2.
    """


def find_runs(paths: Paths | Iterable[Run]) -> list[Run]:
    """Return every run directory (a folder with a readable config.json) at or below the paths, or
    in the exports among them, sorted by path.

    Hidden folders (a run being created, a sweep's bookkeeping) are not runs. A run whose config.json
    cannot be read is left out with a BrokenRunWarning; a path with no readable run raises NoRunsError.
    """
    runs: dict[str, Run] = {}
    for path in _as_list(paths):
        if not path.exists():
            raise NoRunsError(f"{path} does not exist")
        found = _runs_at(path)
        if not found:
            raise NoRunsError(f"{path} holds no runs (no config.json at or below it)")
        readable = []
        for run in found:
            try:
                _read_config(run)
                readable.append(run)
            except NoRunsError as error:
                if len(found) == 1:
                    raise
                warnings.warn(BrokenRunWarning(run, f"left out {run.name}: {error}"), stacklevel=2)
        if not readable:
            raise NoRunsError(f"{path} holds no readable runs (each one's config.json is broken)")
        runs.update((run_path(run), run) for run in readable)
    return [runs[key] for key in sorted(runs)]


def _runs_at(path: Run) -> list[Run]:
    if isinstance(path, zipfile.Path) or is_export(path):
        inside = path if isinstance(path, zipfile.Path) else zipfile.Path(path.resolve())
        return [folder for folder in _folders(inside) if (folder / "config.json").is_file()]
    if (path / "config.json").is_file():
        return [path.resolve()]
    return [config.parent.resolve() for config in path.rglob("config.json")
            if not any(part.startswith(".") for part in config.parent.relative_to(path).parts)]


def _folders(folder: zipfile.Path) -> list[zipfile.Path]:
    """Every folder at or below `folder` in an export."""
    below = [entry for entry in folder.iterdir() if entry.is_dir()]
    return [folder] + [nested for entry in below for nested in _folders(entry)]


def is_export(path: Path) -> bool:
    """Whether `path` is an export file (a zip whose manifest says so)."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        if EXPORT_MANIFEST not in archive.namelist():
            return False
        try:
            return json.loads(archive.read(EXPORT_MANIFEST)).get("format") == EXPORT_FORMAT
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return False


def run_path(run: Run) -> str:
    """How tables name a run's location: its folder, or <export>/<folder in it>."""
    return str(run).rstrip("/")


def load_mask(file: Run) -> np.ndarray:
    """The structured layer's connectivity in a masks/*.npz file: (units, C*100) booleans."""
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist (masks are written when a run starts)")
    with np.load(io.BytesIO(file.read_bytes()), allow_pickle=False) as masks:
        return masks["structured"].astype(bool)


def mask_snapshots(run: Run) -> list[Run]:
    """The run's masks/frame_<N>.npz snapshots, by frame."""
    masks = run / "masks"
    if not masks.is_dir():
        return []
    found = [file for file in masks.iterdir() if file.name.startswith("frame_") and file.name.endswith(".npz")]
    return sorted(found, key=lambda file: int("".join(filter(str.isdigit, file.name)) or 0))


def load_runs(paths: Paths) -> pd.DataFrame:
    """One row per finished episode of every run, with the run's config columns.

    Columns: frame, episode, return, length, epsilon, seconds, the flattened config
    (structure_options as `option.<key>`), run (folder name), path and complete
    (complete.json exists; unfinished runs are loaded too).
    """
    return _load_csv(paths, "episodes.csv", EPISODE_COLUMNS)


def load_train(paths: Paths) -> pd.DataFrame:
    """One row per train.csv row (loss, mean_q, density_<layer>, changed_<layer>, ...) of every run."""
    return _load_csv(paths, "train.csv", TRAIN_COLUMNS)


def load_eval(paths: Paths) -> pd.DataFrame:
    """One row per greedy evaluation episode (eval.csv) of every run that evaluated, with the run's
    config columns; eval.csv's `seed` (the episode's game seed) is `eval_seed` here, beside the run's `seed`."""
    return _load_csv(paths, "eval.csv", EVAL_COLUMNS, rename={"seed": "eval_seed"})


def load_capacity(paths: Paths) -> pd.DataFrame:
    """One row per run and layer (including `total`): the capacity a complete run ended with
    (complete.json), else the one it started with (config.json). Structures that learn their
    connectivity reach the budget only by the end (prune and l1 start dense)."""
    rows = []
    for run in find_runs(paths):
        info = run_info(run)
        capacity = _read_config(run).get("capacity", {})
        if info["complete"]:
            capacity = _read_json(run / "complete.json").get("capacity", capacity)
        rows += [{**info, "layer": layer, **values} for layer, values in capacity.items()]
    return pd.DataFrame(rows, columns=None if rows else ["layer", *CAPACITY_COLUMNS, *RUN_COLUMNS])


def run_info(run: Run) -> dict[str, Any]:
    """The per-run columns: flattened config, run, path, complete."""
    data = _read_config(run)
    config = data["config"]
    info: dict[str, Any] = {}
    for key, value in config.items():
        if key == "structure_options":  # every option with the value the run used
            if "structure" in data:
                value = data["structure"]["options"]
            else:  # recorded before runs stored them: the given ones over the structure's defaults
                value = {**_builtin_defaults(config.get("structure")), **(value or {})}
            info.update({f"option.{k}": _hashable(v) for k, v in value.items()})
        else:
            info[key] = _hashable(value)
    info.update(run=run.name, path=run_path(run), complete=(run / "complete.json").is_file())
    return info


def _load_csv(paths: Paths, name: str, columns: list[str], rename: dict[str, str] | None = None) -> pd.DataFrame:
    """Each run's `name` with its run columns; a file that does not parse as the core writes it is left
    out with a BrokenRunWarning naming the file and the reason (the rest still load)."""
    frames = []
    for run in find_runs(paths):
        file = run / name
        try:
            rows = _read_table(file, columns, rename or {}) if file.is_file() else None
        except ValueError as error:
            warnings.warn(BrokenRunWarning(run, f"left out {run.name}: {file} {error}"), stacklevel=3)
            continue
        if rows is not None and len(rows):
            info = pd.DataFrame([run_info(run)]).iloc[[0] * len(rows)].set_axis(rows.index)
            frames.append(pd.concat([rows, info], axis=1))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*columns, *RUN_COLUMNS])


def _builtin_defaults(name: str | None) -> dict[str, Any]:
    """A built-in structure's options and defaults, read without importing it; none for a plug-in's
    (reading runs never imports their plug-ins)."""
    from minisparse.structure_options import builtin_structure_options, builtin_structures

    return builtin_structure_options(name) if name in builtin_structures() else {}


def _read_table(file: Run, columns: list[str], rename: dict[str, str]) -> pd.DataFrame | None:
    """The CSV (columns renamed by `rename`) with its required `columns` present and numeric (None when
    it is empty), else ValueError saying what is wrong."""
    data = file.read_bytes()
    if not data:
        return None
    try:
        rows = pd.read_csv(io.BytesIO(data)).rename(columns=rename)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"does not parse as CSV ({str(error).splitlines()[0]})") from None
    missing = [column for column in columns if column not in rows.columns]
    if missing:
        raise ValueError(f"lacks the column(s) {', '.join(missing)} (it has {', '.join(map(str, rows.columns))})")
    for column in columns:
        numbers = pd.to_numeric(rows[column], errors="coerce")
        bad = rows[column][numbers.isna() & rows[column].notna()]
        if len(bad):
            raise ValueError(f"has a non-number in column {column} (row {bad.index[0] + 2}: {bad.iloc[0]!r})")
        rows[column] = numbers
    return rows


def _read_config(run: Run) -> dict[str, Any]:
    file = run / "config.json"
    data = _read_json(file)
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise NoRunsError(f"{file} is not a minisparse run config (it has no 'config' object)")
    return data


def _read_json(file: Run) -> Any:
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise NoRunsError(f"{file} is not valid JSON ({error})") from None


def _hashable(value: Any) -> Any:
    """Lists from JSON become tuples so that config columns can be grouped on."""
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def _as_list(paths: Paths | Iterable[Run]) -> list[Run]:
    if isinstance(paths, (str, os.PathLike, zipfile.Path)):
        paths = [paths]
    return [p if isinstance(p, zipfile.Path) else Path(p) for p in paths]
