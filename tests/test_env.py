import numpy as np
import pytest

from minisparse.config import CHANNELS, GAMES
from minisparse.env import Game


@pytest.mark.parametrize("name", GAMES)
def test_restored_state_replays_the_same_future(name):
    """A checkpoint restores the game mid-episode, including its random stream and sticky action."""
    rng = np.random.default_rng(0)
    game = Game(name, seed=7, sticky_action_prob=0.1, difficulty_ramping=True)
    for _ in range(300):
        _, done = game.act(int(rng.integers(6)))
        if done:
            game.reset()
    saved = game.get_state()
    actions = rng.integers(6, size=400)

    def future(g):
        trace = []
        for a in actions:
            reward, done = g.act(int(a))
            trace.append((reward, done, g.observation().tobytes()))
            if done:
                g.reset()
        return trace

    expected = future(game)
    restored = Game(name, seed=999, sticky_action_prob=0.1, difficulty_ramping=True)
    restored.set_state(saved)
    assert future(restored) == expected
    assert restored.observation().shape == (CHANNELS[name], 10, 10)
