"""Study files: grid expansion, run names shared with `minisparse run`, and errors that point at the key."""
import re
import tomllib
from pathlib import Path

import pytest

from minisparse.config import Config, ConfigError
from minisparse.rundir import run_name
from minisparse.structure import available
from minisparse.study import load_study

STUDIES = Path(__file__).resolve().parent.parent / "studies"


def study(tmp_path: Path, text: str):
    path = tmp_path / "study.toml"
    path.write_text(text, errors="surrogateescape")  # "\udcff" writes the byte 0xff
    return load_study(path)


def shipped(name: str):
    """A shipped study; skipped only while a structure it names is not registered yet."""
    path = STUDIES / f"{name}.toml"
    structures = tomllib.loads(path.read_text())["structures"]
    missing = sorted(set(structures) - set(available()))
    if missing:
        pytest.skip(f"structures not available yet: {', '.join(missing)}")
    return load_study(path)


def test_smoke_study_has_the_runs_minisparse_run_would_make():
    smoke = shipped("smoke")
    assert len(smoke.configs) == 4
    assert {(c.structure, c.weights) for c in smoke.configs} == {
        ("conv", "fixed"), ("conv", "learned"), ("random", "fixed"), ("random", "learned")}
    # The same settings given to `minisparse run` land in the same folder, so runs are shared.
    cli = Config(structure="random", weights="fixed", frames=3000, replay_start=500, replay_capacity=2000,
                 target_period=200, epsilon_frames=1000, log_every=500, checkpoint_every=1000).validate()
    assert run_name(cli) in smoke.names()


def test_interplay_study_is_the_full_grid():
    interplay = shipped("interplay")
    configs = interplay.configs
    assert len(configs) == 2 * 6 * 2 * 10 == len(set(interplay.names()))
    assert {c.game for c in configs} == {"breakout", "space_invaders"}
    assert {c.structure for c in configs} == {"dense", "conv", "local", "random", "predictive", "l1"}
    assert {c.weights for c in configs} == {"fixed", "learned"} and {c.seed for c in configs} == set(range(10))
    assert all(c.frames == 5_000_000 and c.sparsity is None and c.fan_in is None for c in configs)


def test_dynamic_study_covers_sparsity_masking_activation_with_adam():
    configs = shipped("dynamic").configs
    assert {"set", "rigl", "prune"} <= {c.structure for c in configs}
    assert {c.sparsity for c in configs} == {0.7, 0.9}
    assert {c.mask_optimizer_state for c in configs} == {True, False}
    assert {c.activation for c in configs} == {"relu", "leaky_relu"}
    assert all(c.optimizer == "adam" and c.weights == "learned" for c in configs)
    per_condition = {}
    for c in configs:
        key = (c.game, c.structure, c.sparsity, c.mask_optimizer_state, c.activation)
        per_condition.setdefault(key, set()).add(c.seed)
    assert len(per_condition) == 2 * 3 * 2 * 2 * 2 and all(len(s) == 5 for s in per_condition.values())


def test_grid_with_per_structure_settings(tmp_path):
    configs = study(tmp_path, '''
games = "breakout"
seeds = [3, 7]
weights = ["fixed"]
sparsity = [0.8, 0.9]
[vary]
activation = ["relu", "leaky_relu"]
[overrides]
frames = 1000
lr = 1
[structures.conv]
sparsity = ["default"]
[structures.random]
options = { per_unit = false }
overrides = { dense_units = 64 }
''').configs
    # seeds outermost: a study stopped halfway has every condition at equal depth
    assert [c.seed for c in configs] == [3] * 6 + [7] * 6
    conv = [c for c in configs if c.structure == "conv"]
    random = [c for c in configs if c.structure == "random"]
    assert len(conv) == 2 * 2 and all(c.sparsity is None and c.dense_units == 128 for c in conv)
    assert len(random) == 2 * 2 * 2 and {c.sparsity for c in random} == {0.8, 0.9}
    assert all(c.structure_options == {"per_unit": False} and c.dense_units == 64 for c in random)
    assert all(c.frames == 1000 and c.lr == 1.0 and isinstance(c.lr, float) for c in configs)


def test_plugins_folder_is_resolved_against_the_study_file(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "wide.py").write_text(
        "from minisparse.structure import Structure, register\n\n\n"
        "@register('wide_for_study_test')\nclass Wide(Structure):\n    width: int = 3\n")
    configs = study(tmp_path, 'plugins = "mine"\n[structures.wide_for_study_test]\noptions = {width = 5}\n').configs
    assert configs[0].plugins == str((tmp_path / "mine").resolve())
    assert configs[0].structure_options == {"width": 5}
    with pytest.raises(ConfigError, match=r"structures.wide_for_study_test.options: .*'height'.*valid options: width"):
        study(tmp_path, 'plugins = "mine"\n[structures.wide_for_study_test]\noptions = {height = 5}\n')


MISTAKES = {
    "unknown top-level key": ('gamez = ["breakout"]', r": gamez: unknown key; valid keys: description, games"),
    "wrong type": ('[overrides]\nframes = "10"', r": overrides.frames: expected int, got str '10'"),
    "axis given as override": ('[overrides]\nseed = 3', r": overrides.seed: give it as the top-level key 'seeds'"),
    "vary not a list": ('[vary]\nactivation = "relu"', r": vary.activation: expected a list of values"),
    "bad value in vary": ('[vary]\nactivation = ["relu", "leaky"]',
                          r": vary.activation \(in the run .*\): unknown activation 'leaky'; valid choices: relu"),
    "combination": ('[overrides]\nbatch_size = 64\nreplay_capacity = 32',
                    r": overrides.batch_size \(in the run .*\): batch size 64 is larger than the replay capacity 32"),
    "fan-in too large for one game": ('games = ["seaquest", "breakout"]\nstructures = ["random"]\n'
                                      '[overrides]\nfan_in = 500',
                                      r": overrides.fan_in \(in the run breakout .*\): fan-in 500 is outside \[1, 400\]"),
    "budget for a structure that ignores it": ('structures = ["conv", "random"]\nsparsity = [0.9]',
                                               r"structure conv ignores the budget"),
    "same run twice": ('[vary]\nthreads = [1, 2]', r"two grid points are the same run .* differ only in threads"),
    "structure option value": ('[structures.set]\noptions = {anneal = "linear"}',
                               r": structures.set.options: .*unknown anneal 'linear'; valid choices: cosine"),
    "twice for one structure": ('[overrides]\nlr = 0.1\n[structures.conv]\noverrides = {lr = 0.2}',
                                r": structures.conv.overrides.lr: also set for every structure"),
    "no seeds": ('seeds = 0', r": seeds: a number of seeds must be >= 1"),
    "not TOML": ('structures = [', r": not valid TOML"),
    "not a finite number": ('[overrides]\nlr = nan', r": overrides.lr \(in the run .*\): lr must be a finite number, got nan"),
    "not a finite option": ('[structures.predictive]\noptions = {ridge = inf}',
                            r": structures.predictive.options: option ridge=inf .* must be a finite number"),
    "fraction for a whole-number option": ('[structures.set]\noptions = {period = 1.5}',
                                           r": structures.set.options: option period=1.5 .* must be a whole number"),
    "number for a true/false option": ('[structures.random]\noptions = {per_unit = 1}',
                                       r": structures.random.options: option per_unit=1 .* must be true or false"),
    "one Adam beta": ('[overrides]\nadam_betas = [0.9]', r": overrides.adam_betas: expected a list of 2 numbers, got list \[0.9\]"),
    "not UTF-8": ('description = "caf\udcff"', r": not UTF-8 text, as TOML must be \(byte \d+ is 0xff\)"),
    "empty study": ('', r": the study is empty; give at least one of games, structures"),
    "only a description": ('description = "nothing"', r": the study is empty"),
    "too many seeds": ('seeds = 100_000_000', r": seeds: 100000000 seeds make more than the limit of 10,000 runs"),
    "too many runs": ('seeds = 100\ngames = ["breakout", "asterix"]\nstructures = ["conv", "random", "local"]\n'
                      'weights = ["fixed", "learned"]\n[vary]\nlr = [1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4, 7e-4, 8e-4, 9e-4]',
                      r": the study makes 10,800 runs, more than the limit of 10,000"),
}


@pytest.mark.parametrize("case", MISTAKES, ids=list(MISTAKES))
def test_mistakes_name_the_file_and_the_key(case, tmp_path):
    text, pattern = MISTAKES[case]
    with pytest.raises(ConfigError) as error:
        study(tmp_path, text)
    message = str(error.value)
    assert message.startswith(str(tmp_path / "study.toml")) and "\n" not in message
    assert re.search(pattern, message), message


def test_missing_study_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path / "nothing.toml")


def test_cli_and_study_options_give_the_same_run_folder(tmp_path):
    """`-o per_unit=false` and `per_unit = false` in a study are the same config."""
    from minisparse.config import Config
    from minisparse.rundir import run_name
    from minisparse.structure import typed_options
    from minisparse.study import load_study

    study = tmp_path / "s.toml"
    study.write_text('games = ["breakout"]\nweights = ["fixed"]\nseeds = 1\n'
                     '[structures.random]\noptions = { per_unit = false }\n')
    (config,) = load_study(study).configs
    from_cli = Config(structure="random", weights="fixed", structure_options=typed_options("random", {"per_unit": "false"}))
    assert config.structure_options == {"per_unit": False}
    assert run_name(config) == run_name(from_cli)


@pytest.mark.parametrize("inert", [
    {"adam_betas": (0.5, 0.6), "adam_eps": 1e-3},                      # Adam's settings under RMSprop
    {"rmsprop_alpha": 0.5, "rmsprop_centered": False, "_base": {"optimizer": "adam"}},
    {"leaky_slope": 0.2},                                              # with relu
    {"distribution": "erk"},                                           # without --sparse-hidden
    {"plugins": "EMPTY"},                                              # a plug-in folder for a built-in
], ids=["adam under rmsprop", "rmsprop under adam", "slope under relu", "erk without sparse hidden",
        "plug-ins for a built-in"])
def test_settings_a_run_ignores_leave_its_folder_as_it_is(inert, tmp_path):
    from minisparse.config import Config
    from minisparse.rundir import run_name

    (tmp_path / "empty").mkdir()
    inert = {k: str(tmp_path / "empty") if v == "EMPTY" else v for k, v in inert.items()}
    base = inert.pop("_base", {})
    assert run_name(Config(structure="random", **{**base, **inert})) == run_name(Config(structure="random", **base))
    # the same settings where they do act change the folder
    acting = {"adam_betas": {"optimizer": "adam"}, "rmsprop_alpha": {"optimizer": "rmsprop"},
              "leaky_slope": {"activation": "leaky_relu"}, "distribution": {"sparse_hidden": True}}
    for name, where in acting.items():
        if name in inert:
            changed = {**inert, **where}
            assert run_name(Config(structure="random", **changed)) != run_name(
                Config(structure="random", **{k: v for k, v in changed.items() if k not in inert}))
