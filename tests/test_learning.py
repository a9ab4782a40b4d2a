"""The agent learns: a short real run on breakout beats the random policy by a clear margin."""
import numpy as np

from conftest import minisparse, only_run
from minisparse.evaluate import load_model, play

MARGIN = 1.5  # points per episode; the random policy scores about 0.6 on breakout
EPISODES = 30


def test_trained_conv_agent_beats_random_policy_on_breakout(tmp_path):
    result = minisparse("run", "--game", "breakout", "--structure", "conv", "--frames", "50000",
                        "--replay-start", "1000", "--epsilon-frames", "20000", "--replay-capacity", "50000",
                        "--log-every", "10000", "--out", str(tmp_path), timeout=1500)
    assert result.returncode == 0, result.stderr
    config, network = load_model(only_run(tmp_path))
    greedy = np.mean(play(config, network, EPISODES, seed=123))
    uniform = np.mean(play(config, None, EPISODES, seed=123))
    assert greedy >= uniform + MARGIN, (greedy, uniform)
