"""A structure written from the README's walkthrough is listed and runs; broken plug-ins fail clearly."""
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, minisparse, only_run

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough_file(folder: Path) -> Path:
    code = re.search(r"Save this as `my_structures/checkerboard.py`:\n\n```python\n(.*?)```", README.read_text(),
                     re.S).group(1)
    folder.mkdir()
    path = folder / "checkerboard.py"
    path.write_text(code)
    return path


def test_readme_structure_is_listed_and_runs(tmp_path):
    plugins = walkthrough_file(tmp_path / "my_structures").parent
    listing = minisparse("structures", "--plugins", str(plugins), "--game", "breakout")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.strip().startswith("checkerboard"))
    assert "36,864" in row  # matched capacity: the conv's connection count
    result = minisparse("run", "--plugins", str(plugins), "--structure", "checkerboard",
                        "--out", str(tmp_path / "runs"), *TINY)
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path / "runs")
    mask = np.load(run / "masks" / "end.npz")["structured"]
    colour = (np.arange(400) % 100 // 10 + np.arange(400) % 10) % 2
    assert (mask.sum(1) == 36).all()
    assert not (mask[0::2] & (colour == 1)).any() and not (mask[1::2] & (colour == 0)).any()
    resumed = minisparse("run", "--resume", str(run))  # the config remembers the plug-in folder
    assert resumed.returncode == 0, resumed.stderr


def test_broken_plugin_names_the_file(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "bad.py").write_text("from minisparse.structure import register\n\ndef oops(:\n")
    result = minisparse("structures", "--plugins", str(folder))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.py" in lines[0] and "SyntaxError" in lines[0]
    (folder / "bad.py").write_text("import not_a_module_anywhere\n")
    result = minisparse("run", "--plugins", str(folder), "--out", str(tmp_path / "runs"), *TINY)
    assert result.returncode == 2 and "bad.py" in result.stderr and "not_a_module_anywhere" in result.stderr
    assert not (tmp_path / "runs").exists()


PLUGIN_FAILURES = {
    "re-registers a built-in name": ('from minisparse.structure import Structure, register\n\n'
                                    '@register("conv")\nclass Impostor(Structure):\n    pass\n',
                                    ["impostor.py", "'conv'", "already taken"]),
    "calls sys.exit at import": ("import sys\nsys.exit(0)\n", ["impostor.py", "SystemExit"]),
}


@pytest.mark.parametrize("case", PLUGIN_FAILURES, ids=list(PLUGIN_FAILURES))
def test_a_plugin_that_would_replace_a_structure_or_exit_is_refused_everywhere(case, tmp_path):
    """Before, `@register("conv")` silently swapped the built-in: a `breakout-conv-...` folder held
    a dense layer; and a plug-in's sys.exit() ended minisparse with status 0 and no word."""
    code, expected = PLUGIN_FAILURES[case]
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "impostor.py").write_text(code)
    study = tmp_path / "study.toml"
    study.write_text('plugins = "plugins"\nstructures = ["conv"]\n[overrides]\nframes = 1000\n')
    for args in (["run", "--plugins", str(folder), "--out", str(tmp_path / "runs"), *TINY],
                 ["structures", "--plugins", str(folder)],
                 ["sweep", str(study), "--out", str(tmp_path / "runs")]):
        result = minisparse(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and all(fragment in lines[0] for fragment in expected), (args, lines)
    assert not (tmp_path / "runs").exists()
