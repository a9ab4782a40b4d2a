"""The fast TD update is the same algorithm as a plain one: same losses, weights and greedy actions.

The reference below is the cleanrl-style update with stock PyTorch pieces: the replay's numpy
batch, nn.functional.conv2d / a masked dense matrix, torch.optim.RMSprop(centered=True) without
foreach. It starts from copies of the agent's networks and sees the very same batches.
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minisparse.config import Config
from minisparse.dqn import Agent
from minisparse.optim import Adam, RMSprop
from minisparse.layers import MaskedLinear, SharedConv


def reference_q(net: torch.nn.Module, observations: torch.Tensor) -> torch.Tensor:
    structured = net.structured
    if isinstance(structured, SharedConv):
        h = F.conv2d(observations, structured.conv.weight, structured.conv.bias).flatten(1)
    else:
        h = F.linear(observations.flatten(1), structured.weight * structured.mask, structured.bias)
    h = F.relu(F.linear(F.relu(h), net.hidden.weight, net.hidden.bias))
    return F.linear(h, net.head.weight, net.head.bias)


def reference_update(q, target, optimizer, batch, gamma) -> float:
    observations, actions, rewards, next_observations, dones = (torch.from_numpy(a) for a in batch)
    with torch.no_grad():
        next_q = reference_q(target, next_observations.float()).max(1).values
        td_target = rewards + gamma * (1.0 - dones) * next_q
    q_taken = reference_q(q, observations.float()).gather(1, actions.unsqueeze(1)).squeeze(1)
    loss = F.smooth_l1_loss(q_taken, td_target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def filled_agent(**config) -> Agent:
    config = Config(replay_start=300, replay_capacity=1000, target_period=40, epsilon_frames=0, epsilon_end=0.0,
                    **config)
    agent = Agent(config)
    rng = np.random.default_rng(7)
    observation = agent.game.observation()
    for _ in range(config.replay_start):
        action = int(rng.integers(6))
        reward, done = agent.game.act(action)
        next_observation = agent.game.observation()
        agent.replay.add(observation, action, reward, next_observation, done)
        if done:
            agent.game.reset()
            next_observation = agent.game.observation()
        observation = next_observation
    agent.counters.frame = config.replay_start
    agent.begin_learning()
    return agent


@pytest.mark.parametrize("structure, weights, backend, sparsity", [
    ("conv", "learned", "dense", None),
    ("conv", "fixed", "dense", None),
    ("random", "learned", "dense", None),
    ("random", "learned", "sparse", 0.95),
    ("random", "fixed", "sparse", None),
    ("dense", "learned", "dense", None),
    ("dense", "learned", "sparse", None),  # a complete layer's products; RMSprop defers idle inputs' decay
    ("local", "learned", "sparse", None),
    ("predictive", "fixed", "sparse", None),
])
def test_fast_update_matches_the_plain_reference(structure, weights, backend, sparsity):
    agent = filled_agent(structure=structure, weights=weights, backend=backend, sparsity=sparsity)
    q, target = copy.deepcopy(agent.q), copy.deepcopy(agent.target)
    for module in (q, target):
        for layer in module.modules():
            if isinstance(layer, MaskedLinear):
                layer.backend = "dense"
    trainable = [p for p in q.parameters() if p.requires_grad]
    optimizer = torch.optim.RMSprop(trainable, lr=2.5e-4, alpha=0.95, eps=0.01, centered=True, foreach=False)
    probes = torch.from_numpy(agent.replay.sample(16, np.random.default_rng(3))[0]).float()
    for update in range(1, 161):
        rng = np.random.default_rng()
        rng.bit_generator.state = agent.rng.bit_generator.state
        batch = agent.replay.sample(agent.config.batch_size, rng)
        before = agent._statistics[0].item()
        agent.update()
        fast_loss = agent._statistics[0].item() - before
        slow_loss = reference_update(q, target, optimizer, batch, agent.config.gamma)
        if update % agent.config.target_period == 0:
            target.load_state_dict(q.state_dict())
        assert fast_loss == pytest.approx(slow_loss, rel=1e-4, abs=1e-6), update
        if update % 20 == 0:
            for (name, fast), slow in zip(agent.q.named_parameters(), q.parameters()):
                torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6, msg=f"{name} after {update} updates")
            greedy = [agent.act(o.numpy().astype(bool)) for o in probes]
            assert greedy == reference_q(q, probes).argmax(1).tolist()
    assert agent.counters.updates == 160


SHAPES = [(16, 4, 3, 3), (16,), (128, 1024), (128,), (6, 128), (6,)]


def parameter_pairs(generator: torch.Generator) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    ours = [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in SHAPES]
    return ours, [torch.nn.Parameter(p.detach().clone()) for p in ours]


def step_both(fast: torch.optim.Optimizer, plain: torch.optim.Optimizer, generator: torch.Generator,
              steps: int, zero_every: int = 0) -> None:
    """Give both optimizers' parameters the same random gradients (all zero every `zero_every`-th step) and step."""
    ours, stock = fast.param_groups[0]["params"], plain.param_groups[0]["params"]
    for step in range(steps):
        for a, b in zip(ours, stock):
            a.grad = torch.randn(a.shape, generator=generator) * float(not zero_every or step % zero_every)
            b.grad = a.grad.clone()
        fast.step()
        plain.step()
    for a, b in zip(ours, stock):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_rmsprop_matches_torchs_and_shares_its_checkpoints():
    generator = torch.Generator().manual_seed(0)
    for centered in (True, False):
        ours, stock = parameter_pairs(generator)
        fast = RMSprop(ours, lr=2.5e-4, alpha=0.95, eps=0.01, centered=centered)
        plain = torch.optim.RMSprop(stock, lr=2.5e-4, alpha=0.95, eps=0.01, centered=centered, foreach=False)
        step_both(fast, plain, generator, 10)
        for a, b in zip(ours, stock):
            torch.testing.assert_close(fast.state[a]["square_avg"], plain.state[b]["square_avg"], rtol=1e-6, atol=0)
        fast.load_state_dict(plain.state_dict())  # checkpoints of either load into the other


def test_rmsprop_reads_gradients_rewritten_in_their_buffers_and_parameters_given_new_storage():
    """The fast update writes each step's gradients into the same tensors, and the optimizer keeps its views of
    them: it must read every step's values, and follow a parameter whose storage is replaced."""
    generator = torch.Generator().manual_seed(0)
    ours, stock = parameter_pairs(generator)
    fast = RMSprop(ours, lr=2.5e-4, alpha=0.95, eps=0.01, centered=True)
    plain = torch.optim.RMSprop(stock, lr=2.5e-4, alpha=0.95, eps=0.01, centered=True, foreach=False)
    buffers = [torch.empty_like(a) for a in ours]
    for step in range(6):
        if step == 3:
            for a in ours:
                a.data = a.data.clone()
        for a, b, buffer in zip(ours, stock, buffers):
            a.grad = buffer.copy_(torch.randn(a.shape, generator=generator))
            b.grad = buffer.clone()
        fast.step()
        plain.step()
        for a, b in zip(ours, stock):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_adam_matches_torchs_and_loads_its_checkpoints():
    generator = torch.Generator().manual_seed(0)
    ours, stock = parameter_pairs(generator)
    fast = Adam(ours, lr=2.5e-4, betas=(0.9, 0.999), eps=3.125e-4)
    plain = torch.optim.Adam(stock, lr=2.5e-4, betas=(0.9, 0.999), eps=3.125e-4, foreach=False)
    step_both(fast, plain, generator, 12, zero_every=3)  # a zero gradient still moves by momentum
    for a, b in zip(ours, stock):
        for name in ("exp_avg", "exp_avg_sq"):  # torch lerps with an fma: a rounding apart
            torch.testing.assert_close(fast.state[a][name], plain.state[b][name], rtol=1e-6, atol=1e-7)
        assert float(fast.state[a]["step"]) == float(plain.state[b]["step"]) == 12
    fast.load_state_dict(copy.deepcopy(plain.state_dict()))
    step_both(fast, plain, generator, 2)
