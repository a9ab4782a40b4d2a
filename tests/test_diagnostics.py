"""Diagnostics in train.csv: planted dormant and unwired units, known ranks, grown-connection survival."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY, minisparse, only_run
from minisparse import dqn
from minisparse.config import Config
from minisparse.diagnostics import (DORMANT_TAU, PROBE_SIZE, dormant_share, effective_rank, layer_diagnostics,
                                    probe_batch)
from minisparse.network import build_network
from minisparse.sparsity import SparsityEngine
from minisparse.structure import make_structure


def test_dormant_share_counts_units_below_tau_of_the_layer_mean_among_live_units() -> None:
    pre = torch.ones(50, 10)  # every unit active with mean |a| 1 ...
    pre[:, 0] = -1.0  # ... but unit 0 never positive: dormant under relu, and under leaky_relu's positive part
    pre[:, 1] = 0.01  # unit 1 at 0.01 of ~1: below tau = 0.025
    pre[:, 2] = 0.5  # unit 2 at half the mean: alive
    live = torch.ones(10, dtype=torch.bool)
    assert dormant_share(pre, live, "relu") == pytest.approx(2 / 10)
    assert dormant_share(pre, live, "leaky_relu") == pytest.approx(2 / 10)
    live[0] = False  # a unit with no live input is not counted among the dormant
    assert dormant_share(pre, live, "relu") == pytest.approx(1 / 9)
    assert DORMANT_TAU == 0.025


def test_effective_rank_of_features_with_known_spectra() -> None:
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(64, 64, generator=generator))[0]
    for rank in (1, 5, 30):
        features = basis[:, :rank] @ torch.linalg.qr(torch.randn(32, rank, generator=generator))[0].T  # equal values
        assert effective_rank(features) == rank
    spectrum = torch.tensor([100.0, 2.0] + [0.0] * 30)  # the first holds 98% of the sum
    assert effective_rank(torch.diag(spectrum)) == 2 and effective_rank(torch.diag(spectrum), delta=0.02) == 1
    assert effective_rank(torch.zeros(8, 4)) == 0


def test_layer_diagnostics_on_a_network_with_planted_dormant_and_unwired_units() -> None:
    config = Config(structure="random")
    network = build_network(config, make_structure("random", {}), torch.Generator().manual_seed(0))
    layer = network.structured
    with torch.no_grad():
        layer.mask[:100] = False  # 100 units without input
        layer.weight.mul_(layer.mask)
        layer.bias[:100] = 0.0
        layer.weight[100:300] = -layer.weight[100:300].abs() * layer.mask[100:300]  # never positive on binary input
        layer.bias[100:300] = -1.0
    probe = torch.from_numpy(np.random.default_rng(0).random((PROBE_SIZE, 4, 10, 10)) < 0.1)
    measured = layer_diagnostics(network, probe, ["structured"], {"structured": 0.25})["structured"]
    assert measured["unwired"] == 100
    assert measured["dormant"] >= 200 / 924 and measured["dormant"] < 0.5
    assert measured["weight"] == pytest.approx(float(layer.weight.detach().abs()[layer.mask].mean()))
    assert measured["survival"] == 0.25
    assert 0 < measured["srank"] <= min(PROBE_SIZE, 1024 - 300)


def test_survival_is_the_share_of_the_previous_growth_kept_by_the_next_update() -> None:
    config = Config(structure="set", sparsity=0.9, optimizer="adam")
    structure = make_structure("set", {})
    from minisparse.network import layer_specs
    network = build_network(config, structure, torch.Generator().manual_seed(0))
    engine = SparsityEngine(network, structure, layer_specs(config), seed=0)
    mask = network.structured.mask.clone()
    first = mask.clone()
    free = (~mask).nonzero()[:10]
    first[free[:, 0], free[:, 1]] = True  # grow 10
    with torch.no_grad():  # as in the engine's after_step
        engine._set_mask("structured", network.structured, first)
    assert "structured" not in engine.survival  # no earlier growth to survive yet
    second = first.clone()
    second[free[:4, 0], free[:4, 1]] = False  # drop 4 of the 10 grown
    with torch.no_grad():
        engine._set_mask("structured", network.structured, second)
    assert engine.survival["structured"] == pytest.approx(0.6)
    restored = SparsityEngine(network, structure, layer_specs(config), seed=0)
    restored.load_state_dict(engine.state_dict())
    assert restored.survival == engine.survival and torch.equal(restored.grown["structured"], engine.grown["structured"])


def test_the_probe_batch_is_fixed_by_the_seed_and_leaves_training_alone() -> None:
    observations = np.random.default_rng(1).random((1000, 4, 10, 10)) < 0.1
    assert torch.equal(probe_batch(observations, 3), probe_batch(observations, 3))
    assert not torch.equal(probe_batch(observations, 3), probe_batch(observations, 4))
    assert probe_batch(observations, 3).shape == (PROBE_SIZE, 4, 10, 10)
    agent = dqn.Agent(Config(structure="random", replay_start=100, replay_capacity=1000))
    observation = agent.game.observation()
    for _ in range(101):
        observation, *_ = agent.step(observation)
    assert agent.probe is not None and len(agent.probe) == 101  # fewer frames than PROBE_SIZE: all of them


def test_train_csv_carries_the_diagnostics_of_a_rewiring_run(tmp_path) -> None:
    result = minisparse("run", "--structure", "set", "--sparsity", "0.9", "-o", "period=100", "--out", str(tmp_path),
                        "--eval-every", "0", *TINY)
    assert result.returncode == 0, result.stderr
    train = pd.read_csv(only_run(tmp_path) / "train.csv")
    for column in ("dormant", "unwired", "srank", "weight", "survival"):
        assert f"{column}_structured" in train.columns
    assert train["dormant_structured"].between(0, 1).all() and (train["srank_structured"] >= 1).all()
    assert train["survival_structured"].iloc[1:].between(0, 1).all()  # rewired every 100 updates
    assert (train["weight_structured"] > 0).all()
