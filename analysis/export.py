"""One file for a study's results: the compact files of every run, packed into a zip.

An export holds, per run, the files the analysis reads (config.json with the resolved config and
capacity, complete.json, episodes.csv, train.csv, eval.csv and the start and end masks), under the run's
path relative to the study folder, and `export.json` saying what it is. Models, checkpoints and
mask snapshots stay behind. `load_runs` and `minisparse compare` read an export exactly as they
read the folder it came from: the same bytes are parsed by the same code. Python's zipfile
(`python -m zipfile -e FILE DIR`) or 7-Zip unpacks it back into run folders.

Text is LZMA-compressed: on a pilot run's episodes.csv it measured 92 kB against deflate's 152 kB
(CSV 614 kB); Info-ZIP's unzip cannot read LZMA, hence the tools above. The masks (.npz) are
already compressed and are stored as they are.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from .load import EXPORT_FORMAT, EXPORT_MANIFEST, NoRunsError, find_runs, is_export

RUN_FILES = ("config.json", "complete.json", "episodes.csv", "train.csv", "eval.csv", "masks/start.npz",
             "masks/end.npz")


def export_study(study: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Write every run under `study` into the export file `out` (written whole, then renamed into
    place, so a failure leaves no partial file); return its manifest."""
    study, out = Path(study), Path(out)
    if is_export(study):
        raise NoRunsError(f"{study} is already an export")
    runs = find_runs(study)
    names = [run.relative_to(study.resolve()).as_posix() if run != study.resolve() else run.name for run in runs]
    manifest = {"format": EXPORT_FORMAT, "version": 1, "study": study.resolve().name, "runs": len(runs),
                "complete": sum((run / "complete.json").is_file() for run in runs), "files": list(RUN_FILES)}
    staging = out.with_name(f".{out.name}.partial")
    try:
        with zipfile.ZipFile(staging, "w") as archive:
            archive.writestr(EXPORT_MANIFEST, json.dumps(manifest, indent=2), zipfile.ZIP_LZMA)
            for run, name in zip(runs, names):
                for file in RUN_FILES:
                    if (run / file).is_file():
                        packed = zipfile.ZIP_STORED if file.endswith(".npz") else zipfile.ZIP_LZMA
                        archive.write(run / file, f"{name}/{file}", packed)
        staging.replace(out)
    finally:
        staging.unlink(missing_ok=True)
    return manifest
