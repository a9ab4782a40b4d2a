"""Installed packages register structures through entry points; progress says what a run is doing."""
import io
import os
import subprocess
import sys

import pytest

from minisparse.progress import Progress


def test_structure_from_an_installed_packages_entry_point(tmp_path):
    (tmp_path / "band_structures.py").write_text(
        "from minisparse.structure import Structure, register\n\n"
        "@register('band')\nclass Band(Structure):\n    '''Dense: stands in for a real structure.'''\n")
    info = tmp_path / "band_structures-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: band-structures\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[minisparse.structures]\nband = band_structures\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "minisparse", "structures"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert any(line.strip().startswith("band ") for line in result.stdout.splitlines())


def test_plain_progress_lines_when_not_a_terminal():
    stream = io.StringIO()
    progress = Progress(total=1000, start=0, label="run", log_every=500, stream=stream, live=False)
    for frame in range(1, 1001):
        if frame % 100 == 0:
            progress.episode(float(frame // 100))
        progress.advance(frame, epsilon=0.5)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "frame 1000/1000 (100%)" in lines[1] and "frames/s" in lines[1] and "ETA" in lines[1]
    assert "return(last 10) 5.50" in lines[1]


def test_live_bar_shows_frames_rate_and_recent_return():
    stream = io.StringIO()
    progress = Progress(total=1000, start=0, label="run", log_every=500, stream=stream, live=True)
    progress.episode(3.0)
    for frame in range(1, 1001):
        progress.advance(frame, epsilon=0.25)
    progress.close()
    text = stream.getvalue()
    assert "1.00k/1.00k" in text and "frame/s" in text and "return 3.00" in text and "eps 0.25" in text


PROBE = ("import atexit, sys; atexit.register(lambda: print('torch imported' if 'torch' in sys.modules "
         "else 'torch not imported', file=sys.stderr)); sys.argv = ['minisparse', *sys.argv[1:]]; "
         "from minisparse.cli import main; main()")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["run", "--help"], ["sweep", "--help"],
                                  ["compare", "--help"], ["bench", "--help"], ["structures", "--help"],
                                  ["export", "--help"], ["run", "--game", "pong"], ["run", "--lr", "nan"],
                                  ["run", "--frames", "0"], ["run", "--structure", "cnov"],
                                  ["run", "--structure", "random", "-o", "bogus=1"],
                                  ["run", "--structure", "set", "-o", "period=1.5"]],
                         ids=" ".join)
def test_help_version_and_option_errors_never_import_torch(args):
    """torch's import costs seconds of CPU; help and option mistakes must answer at once."""
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True)
    assert result.returncode == (0 if "--help" in args or "--version" in args else 2), result.stderr
    assert result.stderr.strip().splitlines()[-1] == "torch not imported", result.stderr


def test_run_help_groups_its_options_and_names_the_structures():
    result = subprocess.run([sys.executable, "-m", "minisparse", "run", "--help"], capture_output=True, text=True)
    text = result.stdout
    sections = ["What to train:", "Capacity:", "The game:", "DQN hyperparameters:", "Execution:", "Output:"]
    positions = [text.index(section) for section in sections]
    assert positions == sorted(positions)
    for option, section in (("--structure", "What to train:"), ("--sparsity", "Capacity:"), ("--lr", "DQN hyperparameters:"),
                            ("--threads", "Execution:"), ("--resume", "Output:")):
        after = sections[sections.index(section) + 1] if section != "Output:" else None
        assert text.index(section) < text.index(f"  {option} ") < (text.index(after) if after else len(text))
    assert "conv, dense, l1, local, predictive, prune, random, rigl, set, supermask" in " ".join(text.split())
    assert "full protocol" in text
