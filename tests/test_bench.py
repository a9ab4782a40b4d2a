"""`minisparse bench` from the command line: the table and JSON it promises, and one-line errors.

Speeds are not asserted (a timed unit test would only measure the machine); the figures'
consistency is: ratios against the baseline row, one row per configuration, the layer table.
"""
import json

import pytest

from conftest import minisparse
from test_cli_errors import assert_one_line_error


def test_bench_writes_the_table_and_json_it_promises(tmp_path):
    out = tmp_path / "results" / "bench.json"
    result = minisparse("bench", "--structures", "conv,random", "--weights", "fixed", "--sparsities", "0.95",
                        "--backends", "dense,sparse", "--prefill", "64", "--frames", "20", "--rounds", "2",
                        "--layers", "0.05,0.5", "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    names = [row["name"] for row in report["rows"]]
    assert names == ["baseline (plain PyTorch)", "conv fixed", "random fixed s=0.95 dense",
                     "random fixed s=0.95 sparse"]
    baseline = report["rows"][0]["frames_per_s"]
    for row in report["rows"]:
        assert len(row["rounds"]) == 2 and row["frames_per_s"] == pytest.approx(max(row["rounds"]))
        assert row["ratio"] == pytest.approx(row["frames_per_s"] / baseline, rel=1e-3)
        assert row["peak_rss_mb"] is None or row["peak_rss_mb"] >= 0
        assert row["name"] in result.stdout
    assert report["rows"][0]["replay_mb"] is None
    assert all(row["replay_mb"] > 0 for row in report["rows"][1:])
    layers = report["layers"]["fixed"]
    assert list(report["layers"]) == ["fixed"]
    assert [step["density"] for step in layers["steps"]] == [0.05, 0.5]
    assert all(step["inputs"] == 400 and not step["trains"] for step in layers["steps"])
    assert all(step["dense_us"] > 0 and step["sparse_us"] > 0 for step in layers["steps"])
    measured = layers["crossover_density"]
    found = f"{measured:g}" if measured is not None else "none (sparse faster up to 0.5)"
    assert f"measured crossover density: {found}; auto's model: " in result.stdout


@pytest.mark.parametrize("args, expected", [
    (["--structures", "conv,nope"], ["nope", "conv", "random"]),
    (["--backends", "fast"], ["fast", "dense", "sparse", "auto"]),
    (["--weights", "frozen"], ["frozen", "learned", "fixed"]),
    (["--sparsities", "lots"], ["lots"]),
    (["--game", "pong"], ["pong", "breakout"]),
    (["--layers", "0.05,1.5"], ["layer density", "1.5", "(0, 1]"]),
    (["--layers", "abc"], ["layer density", "abc"]),
])
def test_bench_bad_input_is_one_line(args, expected, tmp_path):
    out = tmp_path / "bench.json"
    result = minisparse("bench", "--prefill", "64", "--frames", "5", "--rounds", "1", "--json", str(out), *args)
    assert_one_line_error(result, expected)
    assert not out.exists()
