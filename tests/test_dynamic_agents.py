"""Structures that learn their connectivity, in a real agent: exact resume across topology
changes, and RigL growing where the gradient was largest before masking."""
import io

import pytest
import torch

from minisparse.config import Config
from minisparse.dqn import Agent

SMALL = {"replay_start": 100, "replay_capacity": 500, "target_period": 25, "frames": 500}
DYNAMIC = {
    "set": {"period": 20},
    "rigl": {"period": 20},
    "prune": {"start": 0.0, "end": 0.8, "period": 20},
    "l1": {"start": 0.0, "end": 0.8, "period": 20},
    "supermask": {},
}
LEARNING_RATE = {"supermask": 0.01}  # scores cross the top-k threshold within a few hundred updates


def play(agent: Agent, frames: int) -> list[tuple[float, bool]]:
    observation, outcomes = agent.game.observation(), []
    for _ in range(frames):
        observation, reward, done = agent.step(observation)
        outcomes.append((reward, done))
    return outcomes


def through_checkpoint(state: dict) -> dict:
    """What a resumed run reads: the state saved and loaded as run directories do it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("structure", sorted(DYNAMIC))
def test_a_resumed_dynamic_run_continues_exactly(structure):
    optimizer = "adam" if structure == "rigl" else "rmsprop"
    config = Config(structure=structure, structure_options=DYNAMIC[structure], optimizer=optimizer,
                    lr=LEARNING_RATE.get(structure, 2.5e-4), sparsity=0.95, **SMALL).validate()
    agent = Agent(config)
    play(agent, 250)
    state = through_checkpoint(agent.state_dict())
    changes = agent.engine.topology_changes
    outcomes = play(agent, 250)
    assert agent.engine.topology_changes > changes  # the connectivity moved after the checkpoint
    resumed = Agent(config)
    resumed.load_state_dict(state)
    assert play(resumed, 250) == outcomes
    assert resumed.engine.topology_changes == agent.engine.topology_changes
    for (name, a), b in zip(agent.q.state_dict().items(), resumed.q.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_rigl_in_an_agent_grows_where_the_dense_gradient_was_largest(backend):
    config = Config(structure="rigl", structure_options={"period": 20}, sparsity=0.95, backend=backend,
                    **SMALL).validate()
    agent = Agent(config)
    play(agent, config.replay_start + 20)  # the next update (step 20) changes the topology
    probe = Agent(config)  # an exact copy takes that update's gradient, unmasked
    probe.load_state_dict(agent.state_dict())
    batch = probe.replay.sample_tensors(config.batch_size, probe.rng, probe.device)
    probe.engine.before_backward()
    probe.td(batch)
    gradient = probe.q.structured.weight.grad.abs()
    assert gradient.shape == probe.q.structured.mask.shape
    before = agent.q.structured.mask.clone()
    agent.update()
    after = agent.q.structured.mask
    grown, left_absent = after & ~before, ~after & ~before
    assert grown.sum() > 0
    assert gradient[grown].min() >= gradient[left_absent].max()


@pytest.mark.parametrize("structure, backend", [("l1", "auto"), ("set", "auto"), ("set", "dense")])
def test_a_fixed_weight_run_resumed_before_or_after_its_connectivity_settled_continues_exactly(structure, backend):
    """With fixed weights the layer freezes once its rewiring is over (and the replay keeps its features from
    then on): a run resumed from a checkpoint before that, or after it, freezes as the original did."""
    options = {**DYNAMIC[structure], "end": 0.3}  # the last rewiring at update 120 of 400
    config = Config(structure=structure, structure_options=options, weights="fixed", sparsity=0.95,
                    backend=backend, **SMALL).validate()
    agent = Agent(config)
    play(agent, 200)
    before = through_checkpoint(agent.state_dict())
    play(agent, 150)
    assert agent.engine.plans["structured"].frozen and agent.replay.features is not None
    after = through_checkpoint(agent.state_dict())
    outcomes = play(agent, 150)
    for state, frames in ((before, 300), (after, 150)):
        resumed = Agent(config)
        resumed.load_state_dict(state)
        assert play(resumed, frames)[-150:] == outcomes
        for (name, a), b in zip(agent.q.state_dict().items(), resumed.q.state_dict().values()):
            assert torch.equal(a, b), name
