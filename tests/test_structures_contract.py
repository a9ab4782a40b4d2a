"""Every registered structure, in both weight modes, through a short real run."""
import dataclasses

import numpy as np
import pytest
import torch

from minisparse import dqn
from minisparse.config import Config
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


def test_connectivity_learning_structures_change_their_mask_in_both_modes(tmp_path):
    for structure in ("set", "rigl", "supermask", "prune"):
        for weights in ("learned", "fixed"):
            config = Config(structure=structure, weights=weights, **SHORT)
            path = dqn.start(config, tmp_path / f"{structure}-{weights}")
            start = np.load(path / "masks" / "start.npz")["structured"]
            end = np.load(path / "masks" / "end.npz")["structured"]
            assert (start != end).any(), (structure, weights)


@pytest.mark.parametrize("structure", ["predictive", "random"])
def test_the_structures_picture_shows_the_mask_a_run_starts_learning_with(structure, tmp_path):
    from minisparse.catalog import connectivity

    config = Config(structure=structure, **SHORT)
    path = dqn.start(dataclasses.replace(config, frames=SHORT["replay_start"] + 1), tmp_path)
    started = np.load(path / "masks" / "start.npz")["structured"]
    np.testing.assert_array_equal(connectivity(config)["structured"], started)
