"""The pilot studies' shipped files hold every run their study file asks for, complete, and the shipped
report is what `minisparse compare` draws from them, so the README's numbers can be traced to the data."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from minisparse import rundir
from minisparse.analysis import claim_evidence, load_runs, load_train
from minisparse.analysis.stats import final_performance
from minisparse.study import load_study

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["dynamic-pilot", "interplay-pilot"]


@pytest.mark.parametrize("pilot", SHIPPED)
def test_a_shipped_pilot_holds_every_run_of_its_study_complete(pilot: str) -> None:
    study = load_study(ROOT / "studies" / f"{pilot}.toml")
    episodes = load_runs(ROOT / "docs" / "results" / f"{pilot}.zip")
    runs = episodes.drop_duplicates("path")
    assert sorted(runs["run"]) == sorted(study.names())  # names carry each config's fingerprint
    for path in runs["path"]:  # what `minisparse run --config STUDY.zip/RUN` starts again
        assert rundir.config_like(Path(path)).fingerprint() == path.rsplit("-", 1)[-1]
    assert runs["complete"].all()
    assert set(runs.groupby(["game", "structure", "weights"])["seed"].nunique()) == {3}
    last_rows = load_train(ROOT / "docs" / "results" / f"{pilot}.zip").groupby("path")["frame"].max()
    assert set(last_rows) == {300_000} and len(last_rows) == len(runs)


@pytest.mark.parametrize("pilot", SHIPPED)
def test_the_shipped_report_is_what_compare_draws_from_the_shipped_file(pilot: str) -> None:
    episodes = load_runs(ROOT / "docs" / "results" / f"{pilot}.zip")
    report = ROOT / "docs" / "results" / "report" / pilot
    pd.testing.assert_frame_equal(pd.read_csv(report / "final_performance.csv"),
                                  final_performance(episodes).reset_index(drop=True), check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_csv(report / "claim_evidence.csv"),
                                  claim_evidence(episodes).reset_index(drop=True), check_dtype=False)
