"""Masks travel with the layer; masked weights stay zero; fixed weights never move."""
import copy

import pytest
import torch

from minisparse.config import Config
from minisparse.dqn import Agent
from minisparse.optim import make_optimizer
from minisparse.layers import MaskedLinear
from minisparse.network import build_network, layer_specs
from minisparse.sparsity import SparsityEngine
from minisparse.structure import make_structure
from minisparse.structures.random import Random


def network_and_engine(structure="random", weights="learned", optimizer="rmsprop", **config):
    config = Config(structure=structure, weights=weights, optimizer=optimizer, **config).validate()
    s = make_structure(config.structure, config.structure_options)
    net = build_network(config, s, torch.Generator().manual_seed(config.seed))
    engine = SparsityEngine(net, s, layer_specs(config), seed=0)
    opt = make_optimizer(config, engine.trainable_parameters())
    engine.attach(opt)
    return net, engine, opt


def train_steps(net, engine, opt, steps=20, channels=4):
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = (torch.rand(32, channels, 10, 10, generator=generator) < 0.2).float()
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        engine.before_step()
        opt.step()
        engine.after_step()


@pytest.mark.parametrize("structure, weights, expected", [
    ("random", "fixed", dict(frozen=True, scored=False, backend="sparse", compact=False)),
    ("random", "learned", dict(frozen=False, scored=False, backend="sparse", compact=True)),
    ("set", "fixed", dict(frozen=False, scored=True, backend="dense", compact=False)),
    ("set", "learned", dict(frozen=False, scored=False, backend="sparse", compact=True)),
    ("prune", "fixed", dict(frozen=False, scored=True, backend="sparse", compact=True)),  # complete at the start
    ("conv", "fixed", dict(frozen=True, scored=False, backend="dense", compact=False)),
    ("dense", "learned", dict(frozen=False, scored=False, backend="sparse", compact=True)),
])
def test_one_plan_per_layer_says_how_it_runs_and_the_layers_follow_it(structure, weights, expected):
    """The plan is resolved in one place; the masked layer, its target copy, the optimizer and the TD update
    all follow it (a scored layer runs dense while it may regrow; a frozen one is computed once)."""
    agent = Agent(Config(structure=structure, weights=weights, backend="auto", sparsity=0.9 if structure == "set"
                         else None, replay_start=100).validate())
    plan = agent.engine.plans["structured"]
    assert {key: getattr(plan, key) for key in expected} == expected
    assert plan.structure == structure and plan.learns_weights == (weights == "learned")
    layer = agent.q.structured
    if isinstance(layer, MaskedLinear):
        assert layer.backend == agent.target.structured.backend == plan.backend
        trained = layer.score if plan.scored else layer.weight
        assert (trained in agent.optimizer.compact) == plan.compact == layer.compact_gradient
    assert agent.autograd_reason() is None
    assert agent.td.plans["structured"] is plan  # the update reads the plan the engine keeps current


def test_random_structure_matches_the_conv_budget_per_unit():
    net, _, _ = network_and_engine("random")
    mask = net.structured.mask
    assert mask.shape == (1024, 400)
    assert (mask.sum(1) == 36).all()  # 9 * C for breakout's 4 channels
    conv, _, _ = network_and_engine("conv")
    assert net.capacity()["structured"]["connections"] == conv.capacity()["structured"]["connections"] == 1024 * 36


def test_capacity_counts_shared_weights_once():
    conv, _, _ = network_and_engine("conv")
    cap = conv.capacity()["structured"]
    assert cap["parameters"] == 16 * 4 * 9 + 16  # shared kernels and one bias per filter
    random, _, _ = network_and_engine("random")
    assert random.capacity()["structured"]["parameters"] == 1024 * 36 + 1024
    assert cap["flops"] == 2 * 1024 * 36
    assert cap["density"] == pytest.approx(0.09)
    dense, _, _ = network_and_engine("dense")
    assert dense.capacity()["structured"]["connections"] == 1024 * 400


def test_initialisation_is_scaled_by_each_units_real_fan_in():
    net, _, _ = network_and_engine("random", fan_in=16)
    weight = net.structured.weight
    assert weight[~net.structured.mask].abs().max() == 0
    assert weight.abs().max() <= 16 ** -0.5
    assert weight.abs().max() > 0.9 * 16 ** -0.5  # the full range is used, not the dense 1/sqrt(400)


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_masked_weights_and_their_optimizer_state_stay_exactly_zero(optimizer):
    net, engine, opt = network_and_engine("random", optimizer=optimizer)
    before = net.structured.weight.detach().clone()
    train_steps(net, engine, opt)
    layer = net.structured
    assert layer.weight[~layer.mask].abs().max() == 0
    assert not torch.equal(layer.weight, before)  # the present connections did learn
    moments = [v for v in opt.state[layer.weight].values() if torch.is_tensor(v) and v.shape == layer.mask.shape]
    assert len(moments) == 2
    for moment in moments:  # absent connections' gradients were zero before every step
        assert moment[~layer.mask].abs().max() == 0 and moment[layer.mask].abs().max() > 0


class PenalizedRandom(Random):
    """Static connectivity with an L1 penalty: a plug-in that changes no connection but shrinks weights."""

    def l1_strength(self, step, spec):
        return 1e4  # a proximal step of lr * 1e4 (over 1) zeroes every weight


@pytest.mark.parametrize("structure, backend, hooked", [
    ("random", "sparse", False),  # gradient masked by construction, optimizer state masked
    ("random", "dense", True),    # its dense gradient is masked by the hooks
    ("set", "sparse", True),      # connections change
    ("penalized", "sparse", True),
])
def test_per_update_hooks_skip_only_the_layers_they_cannot_act_on(structure, backend, hooked):
    """The engine's per-update hooks leave out a static layer they have nothing to do for, and keep every
    layer they act on: its weights still follow the mask, and a static structure's L1 penalty still applies."""
    config = Config(structure="random" if structure == "penalized" else structure, backend=backend,
                    sparsity=0.9 if structure == "set" else None).validate()
    s = PenalizedRandom() if structure == "penalized" else make_structure(config.structure, config.structure_options)
    net = build_network(config, s, torch.Generator().manual_seed(config.seed))
    engine = SparsityEngine(net, s, layer_specs(config), seed=0, backend=backend)
    opt = make_optimizer(config, engine.trainable_parameters())
    engine.attach(opt)
    assert ("structured" in engine._hooked) == hooked
    penalized = structure == "penalized"
    train_steps(net, engine, opt, steps=5)
    layer = net.structured
    assert layer.weight[~layer.mask].abs().max() == 0
    if penalized:
        assert layer.weight.abs().max() == 0
    else:
        assert layer.weight[layer.mask].abs().max() > 0


@pytest.mark.parametrize("structure", ["random", "conv", "dense"])
def test_fixed_weights_stay_bit_identical_and_hold_no_optimizer_state(structure):
    net, engine, opt = network_and_engine(structure, weights="fixed")
    frozen = {k: v.clone() for k, v in net.structured.state_dict().items()}
    hidden_before = net.hidden.weight.detach().clone()
    train_steps(net, engine, opt)
    for key, value in net.structured.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert not torch.equal(net.hidden.weight, hidden_before)  # the layers after it learn
    frozen_ids = {id(p) for p in net.structured.parameters()}
    assert all(id(p) not in frozen_ids for p in opt.state)
    assert all(id(p) not in frozen_ids for group in opt.param_groups for p in group["params"])


def test_masks_travel_with_state_dict_deepcopy_and_target_sync():
    net, _, _ = network_and_engine("random")
    assert "structured.mask" in net.state_dict()
    other, _, _ = network_and_engine("random", seed=5)
    assert not torch.equal(other.structured.mask, net.structured.mask)
    other.load_state_dict(net.state_dict())
    assert torch.equal(other.structured.mask, net.structured.mask)
    assert torch.equal(copy.deepcopy(net).structured.mask, net.structured.mask)


def test_agent_target_network_is_synced_with_masks():
    agent = Agent(Config(structure="random", replay_start=10, batch_size=4, target_period=3))
    with torch.no_grad():
        agent.q.structured.mask[0, :] = False  # a connectivity change the target must follow
    for _ in range(12):
        agent.replay.add(agent.game.observation(), 0, 0.0, agent.game.observation(), False)
    for _ in range(3):
        agent.update()
    assert torch.equal(agent.target.structured.mask, agent.q.structured.mask)
    assert isinstance(agent.target.structured, MaskedLinear)
    assert not any(p.requires_grad for p in agent.target.parameters())


def test_a_full_mask_is_not_multiplied_and_masking_resumes_once_connections_are_absent():
    """Multiplying by a mask of ones changes nothing, so the engine skips it (a dense structure's
    update was a tenth masking); once pruning removes connections their weights stay at zero."""
    net, engine, opt = network_and_engine("prune", backend="dense", **{"structure_options": {"start": 0.0, "period": 5}})
    layer = net.structured
    assert layer.mask.all() and engine._float_mask(layer) is None
    train_steps(net, engine, opt, steps=12)
    assert not layer.mask.all() and engine._float_mask(layer) is not None
    assert (layer.weight[~layer.mask] == 0).all()
