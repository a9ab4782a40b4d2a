"""Every registered structure, in both weight modes, through a short real run."""
import dataclasses

import numpy as np
import pytest
import torch

from minisparse import dqn
from minisparse.config import Config
from minisparse.structure_options import builtin_structure_options, builtin_structures
from minisparse.network import layer_specs
from minisparse.structure import available

SHORT = dict(frames=900, replay_start=200, replay_capacity=1000, batch_size=16, target_period=100,
             epsilon_frames=300, log_every=300, checkpoint_every=300)


def finished_network(tmp_path, structure, weights):
    config = Config(structure=structure, weights=weights, **SHORT)
    path = dqn.start(config, tmp_path)
    state = torch.load(path / "model.pt", weights_only=True)
    return config, path, state


@pytest.mark.parametrize("weights", ["learned", "fixed"])
@pytest.mark.parametrize("structure", list(available()))
def test_structure_contract(structure, weights, tmp_path):
    config, path, state = finished_network(tmp_path, structure, weights)
    initial = dqn.Agent(config)  # the same seed builds the same initial network
    if weights == "fixed":  # fixed values are set when learning starts (predictive wires itself then)
        started = dqn.start(dataclasses.replace(config, frames=config.replay_start + 1), tmp_path / "started")
        initial.q.load_state_dict(torch.load(started / "model.pt", weights_only=True))
    end = np.load(path / "masks" / "end.npz")["structured"]
    spec = layer_specs(config)["structured"]
    if structure == "dense":
        assert end.all()
    else:
        assert end.sum() == spec.connections == 1024 * 36
    if structure in ("random", "local", "predictive"):
        assert (end.sum(1) == spec.fan_in).all()  # these promise an exact per-unit fan-in
    if "structured.mask" in state:
        mask = state["structured.mask"]
        np.testing.assert_array_equal(mask.numpy(), end)
        if weights == "learned" and "structured.score" not in state:  # a scored layer's gate hides them
            assert (state["structured.weight"][~mask] == 0).all()
    structured = {k: v for k, v in state.items() if k.startswith("structured.") and not k.endswith(("mask", "score"))}
    before = {f"structured.{k}": v for k, v in initial.q.structured.state_dict().items()}
    changed = [k for k in structured if not torch.equal(structured[k], before[k])]
    if weights == "fixed":
        assert changed == []  # bit-identical weight values
    else:
        assert changed  # the structured layer learned
    assert not torch.equal(state["hidden.weight"], initial.q.hidden.state_dict()["weight"])


def test_no_connectivity_update_comes_after_a_structures_last_update():
    """The engine freezes a fixed-weight layer's scores after `last_update`: an update step after it would
    rewire by scores that stopped training. Pruning, SET and RigL settle; supermask rewires to the end."""
    config = Config(frames=5200)
    spec = layer_specs(config)["structured"]
    settling = []
    for name in available():
        built = dqn.Agent(dataclasses.replace(config, structure=name)).engine.structures["structured"]
        last = built.last_update(spec)
        if last is not None:
            steps = [step for step in range(spec.total_updates + 1) if built.is_update_step(step, spec)]
            assert steps and max(steps) <= last <= spec.total_updates, name
            settling.append(name)
    assert {"prune", "l1", "set", "rigl"} <= set(settling) and "supermask" not in settling


def test_connectivity_learning_structures_change_their_mask_in_both_modes(tmp_path):
    for structure in ("set", "rigl", "supermask", "prune"):
        for weights in ("learned", "fixed"):
            config = Config(structure=structure, weights=weights, **SHORT)
            path = dqn.start(config, tmp_path / f"{structure}-{weights}")
            start = np.load(path / "masks" / "start.npz")["structured"]
            end = np.load(path / "masks" / "end.npz")["structured"]
            assert (start != end).any(), (structure, weights)
            if structure == "prune":  # its one change in this short run comes after the last log row
                continue
            snapshots = sorted((path / "masks").glob("frame_*.npz"))  # taken as the topology changed
            assert 0 < len(snapshots) <= 20, (structure, weights)
            assert any((np.load(s)["structured"] != start).any() for s in snapshots), (structure, weights)


@pytest.mark.parametrize("structure", ["predictive", "random"])
def test_the_structures_picture_shows_the_mask_a_run_starts_learning_with(structure, tmp_path):
    from minisparse.catalog import connectivity

    config = Config(structure=structure, **SHORT)
    path = dqn.start(dataclasses.replace(config, frames=SHORT["replay_start"] + 1), tmp_path)
    started = np.load(path / "masks" / "start.npz")["structured"]
    np.testing.assert_array_equal(connectivity(config)["structured"], started)


def test_local_reads_the_conv_windows_at_the_conv_budget_and_the_nearest_inputs_below_it():
    from minisparse.layers import receptive_field_mask
    from minisparse.structure import make_structure

    local = make_structure("local", {})
    for fan_in, channels in ((36, 4), (90, 10)):
        spec = layer_specs(Config(game="seaquest" if channels == 10 else "breakout", structure="local"))["structured"]
        assert spec.fan_in == fan_in
        mask = local.initial_mask(spec, torch.Generator().manual_seed(0))
        assert torch.equal(mask, receptive_field_mask(channels, 16))
    spec = layer_specs(Config(structure="local", fan_in=4))["structured"]  # one input per channel: the centres
    mask = local.initial_mask(spec, torch.Generator().manual_seed(0))
    unit = torch.arange(1024) % 64
    centre_pixel = (unit // 8 + 1) * 10 + unit % 8 + 1
    expected = torch.zeros(1024, 4, 100, dtype=torch.bool)
    expected[torch.arange(1024), :, centre_pixel] = True
    assert torch.equal(mask, expected.view(1024, 400))


def test_epsilon_is_one_before_learning_then_decays_linearly_from_the_replay_start():
    config = Config(replay_start=100, epsilon_frames=1000, epsilon_start=1.0, epsilon_end=0.1)
    values = [dqn.epsilon(config, frame) for frame in (0, 99, 100, 600, 1100, 5000)]
    assert values == pytest.approx([1.0, 1.0, 1.0, 0.55, 0.1, 0.1])


def test_the_listing_applies_a_budget_to_the_structures_that_take_one():
    from conftest import minisparse

    listing = minisparse("structures", "--sparsity", "0.9")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[3:] if line.strip()}
    assert f"{1024 * 40:,}" in rows["random"] and f"{1024 * 40:,}" in rows["local"]  # 10% of 400 inputs
    assert f"{1024 * 36:,}" in rows["conv"] and f"{1024 * 400:,}" in rows["dense"]  # they ignore it


def test_each_builtin_file_registers_the_structure_of_its_name():
    """The CLI names and checks built-in structures from the file names alone (no torch import)."""
    registered = available()
    for name in builtin_structures():
        assert registered[name].__module__ == f"minisparse.structures.{name}"
    assert set(builtin_structures()) == {name for name, cls in registered.items()
                                         if cls.__module__.startswith("minisparse.structures.")}


def test_builtin_options_read_from_the_files_are_the_dataclass_fields():
    """The CLI checks a built-in structure's options from its file, before torch is imported."""
    for name in builtin_structures():
        cls = available()[name]
        assert builtin_structure_options(name) == {f.name: f.default for f in dataclasses.fields(cls)}, name
