"""`minisparse export`: a study's runs as one file that the analysis reads exactly like the folder."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import minisparse

from minisparse.analysis import find_runs, load_capacity, load_runs, load_train
from minisparse.analysis.command import compare as compare_command
from minisparse.cli import cli

FRAMES = 1000


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real runs nested as a study lays them out: a static structure and one that prunes (mask pictures)."""
    root = tmp_path_factory.mktemp("study")
    for game, extra in (("breakout", ["--structure", "conv"]),
                        ("asterix", ["--structure", "prune", "-o", "start=0", "-o", "end=0.5", "-o", "period=50"])):
        result = CliRunner().invoke(cli, ["run", "--game", game, *extra, "--frames", str(FRAMES), "--replay-start", "600",
                                          "--log-every", "200", "--device", "cpu", "--out", str(root / game)])
        assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def exported(study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "study.zip"
    result = CliRunner().invoke(cli, ["export", str(study), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 2 runs (2 complete)" in result.output
    return out


def _without_paths(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="path").reset_index(drop=True)


@pytest.mark.parametrize("load", [load_runs, load_train, load_capacity])
def test_an_export_loads_the_same_tables_as_its_folder(study: Path, exported: Path, load) -> None:
    from_folder, from_file = load(study), load(exported)
    assert len(from_file) > 0
    pd.testing.assert_frame_equal(_without_paths(from_file), _without_paths(from_folder))
    assert sorted(from_file["path"].unique()) == [f"{exported}/asterix/{name}" for name in
                                                   sorted(p.name for p in (study / "asterix").iterdir()
                                                          if not p.name.startswith("."))] + \
        [f"{exported}/breakout/{p.name}" for p in (study / "breakout").iterdir() if not p.name.startswith(".")]


def test_an_export_holds_the_compact_files_only(study: Path, exported: Path) -> None:
    with zipfile.ZipFile(exported) as archive:
        names, infos = archive.namelist(), archive.infolist()
    assert all(not name.endswith((".pt", ".ckpt")) and "checkpoint" not in name and "/.sweep" not in name
               for name in names)
    for run in find_runs(study):
        relative = run.relative_to(study.resolve()).as_posix()
        for file in ("config.json", "complete.json", "episodes.csv", "train.csv", "eval.csv", "masks/start.npz",
                     "masks/end.npz"):
            assert f"{relative}/{file}" in names
    for info in infos:  # text compressed; masks (.npz) are compressed already
        assert info.compress_type == (zipfile.ZIP_STORED if info.filename.endswith(".npz") else zipfile.ZIP_LZMA)


def test_compare_reads_an_export_like_the_folder(study: Path, exported: Path, tmp_path: Path) -> None:
    reports = {}
    for name, source in (("folder", study), ("file", exported)):
        out = tmp_path / name
        result = CliRunner().invoke(compare_command, [str(source), "--out", str(out), "--reps", "200"])
        assert result.exit_code == 0, result.output
        reports[name] = out
    tables = sorted(p.name for p in reports["folder"].glob("*.csv"))
    assert tables == sorted(p.name for p in reports["file"].glob("*.csv")) and "final_performance.csv" in tables
    for table in tables:
        folder, file = (pd.read_csv(reports[name] / table) for name in ("folder", "file"))
        pd.testing.assert_frame_equal(folder.drop(columns="path", errors="ignore"),
                                      file.drop(columns="path", errors="ignore"))
    pictures = sorted(p.name for p in (reports["file"] / "masks").glob("*.png"))
    assert pictures == sorted(p.name for p in (reports["folder"] / "masks").glob("*.png")) and len(pictures) == 1


def test_export_refuses_bad_input_in_one_line_and_writes_nothing(study: Path, exported: Path, tmp_path: Path) -> None:
    not_an_export = tmp_path / "notes.txt"
    not_an_export.write_text("mine")
    cases = [(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "a.zip")], "does not exist"),
             (["export", str(exported), "--out", str(tmp_path / "b.zip")], "is already an export"),
             (["export", str(study), "--out", str(not_an_export)], "is not a minisparse export"),
             (["export", str(study), "--out", str(tmp_path)], "is a directory")]
    for args, message in cases:
        result = minisparse(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not_an_export.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no file, no partial file


def test_export_replaces_an_older_export_of_the_study(study: Path, exported: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(study / "breakout", partial)
    out = tmp_path / "growing.zip"
    assert CliRunner().invoke(cli, ["export", str(partial), "--out", str(out)]).exit_code == 0
    assert load_runs(out)["run"].nunique() == 1
    shutil.copytree(study / "asterix", partial / "asterix")
    assert CliRunner().invoke(cli, ["export", str(partial), "--out", str(out)]).exit_code == 0
    assert load_runs(out)["run"].nunique() == 2
