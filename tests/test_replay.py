import numpy as np
import torch

from minisparse.replay import Replay


def random_observation(rng, shape):
    return rng.random(shape) < 0.3


def test_transitions_come_back_exactly_across_wraparound_and_episode_ends():
    rng = np.random.default_rng(0)
    shape = (7, 10, 10)  # odd channel count: packed bits need padding
    replay = Replay(capacity=50, observation_shape=shape)
    stored = []
    observation = random_observation(rng, shape)
    for step in range(137):
        next_observation = random_observation(rng, shape)
        done = step % 11 == 10
        action, reward = int(rng.integers(6)), float(rng.normal())
        replay.add(observation, action, reward, next_observation, done)
        stored.append((observation, action, reward, next_observation, done))
        observation = random_observation(rng, shape) if done else next_observation
    assert len(replay) == 50
    live = stored[-50:]
    obs, actions, rewards, next_obs, dones = replay.sample(2000, np.random.default_rng(1))
    lookup = {(o.tobytes(), a, np.float32(r)): (n, d) for o, a, r, n, d in live}
    for o, a, r, n, d in zip(obs, actions, rewards, next_obs, dones):
        expected_next, expected_done = lookup[(o.astype(bool).tobytes(), a, r)]
        assert d == expected_done
        if not d:  # after a terminal the next state is masked out by the target
            np.testing.assert_array_equal(n.astype(bool), expected_next)
    assert obs.dtype == np.uint8 and obs.shape == (2000, *shape)


def test_seaquest_sized_buffer_fits_in_50_megabytes():
    replay = Replay(capacity=100_000, observation_shape=(10, 10, 10))
    assert replay.nbytes <= 50 * 2**20


def test_state_dict_round_trip_reproduces_samples():
    rng = np.random.default_rng(3)
    replay = Replay(20, (4, 10, 10))
    for _ in range(30):
        replay.add(random_observation(rng, (4, 10, 10)), 1, 1.0, random_observation(rng, (4, 10, 10)), False)
    copy = Replay(20, (4, 10, 10))
    copy.load_state_dict(replay.state_dict())
    for a, b in zip(replay.sample(64, np.random.default_rng(5)), copy.sample(64, np.random.default_rng(5))):
        np.testing.assert_array_equal(a, b)


def test_kept_features_are_every_slots_encoding_through_wraparound_episode_ends_and_a_reload():
    rng = np.random.default_rng(2)
    shape = (3, 10, 10)
    projection = rng.normal(size=(300, 8)).astype(np.float32)
    calls = []

    def encode(frame):
        calls.append(1)
        return frame.reshape(-1).astype(np.float32) @ projection

    replay = Replay(capacity=30, observation_shape=shape)
    observation = random_observation(rng, shape)
    for step in range(100):
        if step == 12:  # kept from the middle of filling on: the stored frames are encoded at once
            replay.keep_features(encode, 8)
            assert len(calls) == 13  # each written slot's
        next_observation = random_observation(rng, shape)
        done = step % 9 == 8
        before = len(calls)
        replay.add(observation, 0, 0.0, next_observation, done)
        if step > 12:  # a continuing episode's state was stored as the previous next state: encoded once
            assert len(calls) - before == (2 if step % 9 == 0 else 1)
        observation = random_observation(rng, shape) if done else next_observation
    frames = replay._unpack(np.arange(31))
    np.testing.assert_array_equal(replay.features, np.stack([encode(f) for f in frames]))

    batch = replay.sample_tensors(16, np.random.default_rng(4), torch.device("cpu"))
    drawn = np.concatenate(replay.sample(16, np.random.default_rng(4))[::3])  # the same draws' frames
    np.testing.assert_array_equal(batch.features.numpy(), np.stack([encode(f) for f in drawn]))
    assert batch.states is None

    copy = Replay(30, shape)
    copy.keep_features(encode, 8)
    copy.load_state_dict(replay.state_dict())
    assert copy.features is None  # they were kept for the frames replaced
    copy.keep_features(encode, 8)
    np.testing.assert_array_equal(copy.features, replay.features)


def test_kept_features_of_an_empty_frame_in_a_fresh_slot_are_its_encoding():
    """A slot's bits start at zero: an all-zero first frame must still be encoded."""
    replay = Replay(capacity=4, observation_shape=(1, 10, 10))
    replay.keep_features(lambda frame: np.full(3, frame.sum() + 1.0, np.float32), 3)
    empty, lit = np.zeros((1, 10, 10), bool), np.ones((1, 10, 10), bool)
    replay.add(empty, 0, 0.0, empty, False)
    replay.add(empty, 0, 0.0, lit, False)
    np.testing.assert_array_equal(replay.features[:3, 0], [1.0, 1.0, 101.0])
