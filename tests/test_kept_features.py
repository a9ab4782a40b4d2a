"""A first layer that never changes while learning is computed once per stored frame, not per sample."""
import io

import pytest
import torch

from minisparse.config import Config
from minisparse.dqn import Agent

SMALL = dict(replay_start=300, replay_capacity=1500, target_period=100, epsilon_frames=500, seed=4)


def trained(agent: Agent, frames: int) -> Agent:
    """`agent` after `frames` more frames; its rewards are appended to `agent.rewards`."""
    observation = agent.game.observation()
    agent.rewards = getattr(agent, "rewards", [])
    for _ in range(frames):
        observation, reward, _ = agent.step(observation)
        agent.rewards.append(reward)
    return agent


@pytest.mark.parametrize("structure, weights, keeps", [
    ("conv", "fixed", True), ("random", "fixed", True), ("predictive", "fixed", True),
    ("conv", "learned", False), ("random", "learned", False), ("set", "fixed", False), ("supermask", "fixed", False),
])
def test_only_a_frozen_first_layer_has_its_features_kept(structure, weights, keeps):
    agent = trained(Agent(Config(structure=structure, weights=weights, backend="auto", **SMALL)), 320)
    assert (agent.replay.features is not None) == keeps == agent.engine.plans["structured"].frozen
    assert agent.execution()["replay"].startswith("frames, and") == keeps  # what config.json records


@pytest.mark.parametrize("structure, backend, exact", [("random", "sparse", True), ("local", "sparse", True),
                                                       ("conv", "dense", False), ("random", "dense", False)])
def test_training_on_kept_features_is_training_on_the_frames(structure, backend, exact):
    """Bit for bit where a frame's features add up its inputs in the batch product's order (the sparse
    backend); within rounding where the batch product is a BLAS call."""
    config = Config(structure=structure, weights="fixed", backend=backend, **SMALL)
    kept = trained(Agent(config), 1300)
    plain = Agent(config)
    plain.td.frozen_features = lambda: None
    trained(plain, 1300)
    assert kept.replay.features is not None and plain.replay.features is None
    for (name, a), b in zip(kept.q.state_dict().items(), plain.q.state_dict().values()):
        if exact:
            assert torch.equal(a, b), name
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert kept.rewards == plain.rewards and sum(kept.rewards) > 0
    loss, plain_loss = kept._statistics[0].item(), plain._statistics[0].item()
    assert loss == plain_loss if exact else loss == pytest.approx(plain_loss, rel=1e-5)


def test_a_resumed_run_encodes_its_replay_again_to_the_same_features_and_results():
    config = Config(structure="conv", weights="fixed", **SMALL)
    whole = trained(Agent(config), 900)
    buffer = io.BytesIO()
    torch.save(whole.state_dict(), buffer)
    trained(whole, 400)
    buffer.seek(0)
    resumed = Agent(config)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    trained(resumed, 400)
    assert torch.equal(torch.from_numpy(resumed.replay.features), torch.from_numpy(whole.replay.features))
    for (name, a), b in zip(whole.q.state_dict().items(), resumed.q.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.rewards == whole.rewards[-400:]


def test_acting_and_storing_compute_each_frames_features_once():
    agent = trained(Agent(Config(structure="random", weights="fixed", backend="sparse", **{
        **SMALL, "epsilon_frames": 0, "epsilon_end": 0.0})), 320)  # greedy on every frame from here
    layer, computed = agent.q.structured, []
    features = layer.frame_features
    layer.frame_features = lambda frame, slope: computed.append(1) or features(frame, slope)
    agent.load_state_dict(agent.state_dict())  # the layer's features are taken up again, now counted
    computed.clear()
    observation, ends = agent.game.observation(), 0
    for _ in range(300):
        observation, _, done = agent.step(observation)
        ends += done
    assert len(computed) == 1 + 300 + ends  # the first frame, each next state, each new episode's first frame


def test_loading_a_state_from_before_learning_keeps_no_features():
    config = Config(structure="random", weights="fixed", **SMALL)
    before_learning = Agent(config).state_dict()
    agent = trained(Agent(config), 400)
    assert agent.replay.features is not None
    agent.load_state_dict(before_learning)
    assert agent.replay.features is None and len(agent.replay) == 0
    trained(agent, 320)  # learning starts again, and with it the features
    assert agent.replay.features is not None
