"""A full disk, for real: runs write into a small tmpfs mount (needs root, as CI has; skipped otherwise)."""
import json
import os
import subprocess

import pandas as pd
import pytest

from conftest import minisparse

RUN = ["--frames", "4000", "--replay-start", "500", "--replay-capacity", "2000", "--target-period", "200",
       "--epsilon-frames", "1000", "--log-every", "500", "--checkpoint-every", "1000"]
OUT_OF_SPACE = 75


@pytest.fixture
def disk(tmp_path):
    """An empty tmpfs folder and a function that resizes it; a checkpoint of RUN's agent is about 2.3 MB."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("mounting a small tmpfs needs root")

    def resize(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)

    yield folder, resize
    subprocess.run(["umount", str(folder)], check=True)


def one_line(result, *fragments):
    """The error is one line (after the progress lines) with status 75, not a traceback."""
    errors = [line for line in result.stderr.strip().splitlines() if line.startswith("minisparse:")]
    assert result.returncode == OUT_OF_SPACE, result.stderr
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(fragment in errors[0] for fragment in fragments), errors[0]
    return errors[0]


def no_temporaries(folder):
    return not [p for p in folder.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def test_a_full_disk_at_start_writes_nothing(disk):
    folder, _ = disk
    filler = folder / "filler"
    try:
        with open(filler, "wb") as file:
            while True:
                file.write(b"\0" * 4096)
                file.flush()
    except OSError:  # full
        pass
    result = minisparse("run", "--out", str(folder / "runs"), *RUN)
    one_line(result, "no space left", "nothing was written")
    assert not (folder / "runs").exists() or not list((folder / "runs").iterdir())


@pytest.mark.parametrize("size, checkpoints_before", [("1m", 0), ("3m", 1)], ids=["first checkpoint", "a later one"])
def test_a_full_disk_at_a_checkpoint_keeps_the_run_intact_and_it_resumes(disk, size, checkpoints_before):
    folder, resize = disk
    resize(size)
    result = minisparse("run", "--out", str(folder / "runs"), *RUN)
    run = next((folder / "runs").glob("breakout-*"))
    line = one_line(result, "no space left", "checkpoint.pt", "intact", f"minisparse run --resume {run}")
    assert f"at frame {1000 * (checkpoints_before + 1):,}" in line
    assert no_temporaries(folder)
    assert (run / "checkpoint.pt").exists() == bool(checkpoints_before)
    json.loads((run / "config.json").read_text())
    resize("16m")
    resumed = minisparse("run", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "complete.json").read_text())["frames"] == 4000
    assert pd.read_csv(run / "episodes.csv")["frame"].is_monotonic_increasing
