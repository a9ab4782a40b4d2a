"""The hand-derived TD update gives autograd's loss and gradients, and only where it applies."""
import copy

import numpy as np
import pytest
import torch

from minisparse.config import Config
from minisparse.dqn import Agent
from minisparse.replay import Batch
from minisparse.td import AutogradTD, FastTD, td_loss


def random_batch(agent: Agent, seed: int) -> Batch:
    """Binary frames at MinAtar's density, and terminal transitions among them."""
    generator = torch.Generator().manual_seed(seed)
    size, inputs = agent.config.batch_size, agent.config.input_size
    states = (torch.rand(2 * size, inputs, generator=generator) < 0.1).float()
    actions = torch.randint(0, 6, (size,), generator=generator)
    rewards = torch.randint(0, 2, (size,), generator=generator).float()
    dones = (torch.rand(size, generator=generator) < 0.2).float()
    return Batch(states, actions, rewards, dones)


@pytest.mark.parametrize("structure, weights, activation, backend", [
    ("conv", "learned", "relu", "dense"), ("conv", "fixed", "relu", "dense"), ("conv", "learned", "leaky_relu", "dense"),
    ("random", "learned", "relu", "dense"), ("random", "fixed", "leaky_relu", "dense"), ("dense", "learned", "relu", "dense"),
    ("random", "learned", "relu", "sparse"), ("random", "fixed", "relu", "sparse"),
    ("supermask", "fixed", "relu", "dense"), ("supermask", "learned", "leaky_relu", "dense"),
    ("l1", "fixed", "relu", "dense"),
])
def test_fast_td_gives_autograds_loss_and_gradients(structure, weights, activation, backend):
    agent = Agent(Config(structure=structure, weights=weights, activation=activation, leaky_slope=0.05,
                         backend=backend))
    assert isinstance(agent.td, FastTD)
    trained = [agent.target.hidden, agent.target.head] + ([] if weights == "fixed" else [agent.target.structured])
    with torch.no_grad():  # a target that differs from the online network where training changes it
        for p in (p for layer in trained for p in layer.parameters()):
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    q, target = copy.deepcopy(agent.q), copy.deepcopy(agent.target)
    for seed in range(3):
        batch = random_batch(agent, seed)
        for p in agent.trainable:
            p.grad = None
        loss, mean_q = agent.td(batch)
        q.zero_grad(set_to_none=True)
        reference_loss, reference_mean_q = td_loss(q, target, batch, agent.config.gamma)
        reference_loss.backward()
        assert loss.item() == pytest.approx(reference_loss.item(), rel=1e-5)
        assert mean_q.item() == pytest.approx(reference_mean_q.item(), rel=1e-5, abs=1e-7)
        for (name, fast), slow in zip(agent.q.named_parameters(), q.parameters()):
            if slow.grad is None:
                assert fast.grad is None, name
            else:  # a sparse backend's compact gradient holds the present connections only
                torch.testing.assert_close(fast.grad.to_dense(), slow.grad.to_dense(), rtol=1e-4, atol=1e-7, msg=name)
    frozen = agent.engine.plans["structured"].frozen
    assert all(p.grad is None for p in agent.q.structured.parameters()) == frozen


@pytest.mark.parametrize("config, reason", [
    (dict(structure="random", sparse_hidden=True), "hidden layer is sparse"),
])
def test_networks_the_fast_update_does_not_cover_take_autograd(config, reason):
    agent = Agent(Config(**config))
    assert reason in agent.autograd_reason() and not isinstance(agent.td, FastTD)
    assert agent.execution()["update"] == f"autograd ({agent.autograd_reason()})"
    before = [p.detach().clone() for p in agent.trainable]
    loss, _ = agent.td(random_batch(agent, 0))
    assert np.isfinite(loss.item())
    assert all(p.grad is not None and p.grad.shape == b.shape for p, b in zip(agent.trainable, before))


@pytest.mark.parametrize("structure, backend, activation", [
    ("conv", "dense", "relu"), ("random", "dense", "leaky_relu"), ("random", "sparse", "relu"),
    ("supermask", "dense", "relu"),
])
def test_fast_greedy_actions_are_the_networks_argmax(structure, backend, activation):
    agent = Agent(Config(structure=structure, backend=backend, activation=activation, leaky_slope=0.05))
    reference = AutogradTD(agent.q, agent.target, agent.config.gamma)
    with torch.no_grad():  # a head that tells frames apart (a fresh one prefers one action nearly everywhere)
        generator = torch.Generator().manual_seed(1)
        for layer in (agent.q.hidden, agent.q.head):
            layer.weight.normal_(0, 1, generator=generator)
    rng = np.random.default_rng(0)
    actions = []
    for _ in range(200):  # real frames
        observation = agent.game.observation()
        actions.append(agent.td.greedy(observation))
        assert actions[-1] == reference.greedy(observation)
        if agent.game.act(int(rng.integers(6)))[1]:
            agent.game.reset()
    assert len(set(actions)) > 1  # the frames tell the actions apart, so agreement is not by chance


def test_fast_td_results_stay_valid_after_the_next_update():
    agent = Agent(Config())
    assert isinstance(agent.td, FastTD)
    loss, mean_q = agent.td(random_batch(agent, 0))
    first = (loss.item(), mean_q.item())
    agent.td(random_batch(agent, 1))
    assert (loss.item(), mean_q.item()) == first
