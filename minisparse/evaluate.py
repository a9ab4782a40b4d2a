"""Greedy evaluation during training, and playing episodes with a trained network or at random.

Evaluation plays games of its own: episode k starts from seed EVAL_SEED_BASE + k in every run of
every study (common random numbers: differences between runs are not differences of luck in the
starting states), and its exploration draws come from a generator of that seed. It never touches
the training game, the replay, the training random streams or the frame counter, so training is
the same with evaluation on or off.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from minisparse import rundir
from minisparse.config import Config
from minisparse.env import NUM_ACTIONS, Game
from minisparse.network import QNetwork, build_network
from minisparse.structure import make_structure

EVAL_SEED_BASE = 1_000_000  # far from the small seeds of training runs
# An evaluation episode ends here if the game has not (a policy that never loses some games
# would loop forever); 27,000 is the usual cap of Atari evaluation (108,000 frames at frame skip 4).
EVAL_EPISODE_LIMIT = 27_000

Policy = Callable[[np.ndarray], int]


def evaluate(config: Config, greedy: Policy) -> list[list]:
    """One evaluation: [episode, seed, return, length, truncated] for each of config.eval_episodes."""
    rows = []
    for episode in range(1, config.eval_episodes + 1):
        seed = EVAL_SEED_BASE + episode
        game = Game(config.game, seed, config.sticky_action_prob, config.difficulty_ramping)
        total, length, truncated = play_episode(game, greedy, config.eval_epsilon, np.random.default_rng(seed),
                                                EVAL_EPISODE_LIMIT)
        rows.append([episode, seed, total, length, int(truncated)])
    return rows


def play_episode(game: Game, greedy: Policy | None, epsilon: float, rng: np.random.Generator,
                 limit: int | None = None) -> tuple[float, int, bool]:
    """Play one episode from the game's reset: return, length, and whether `limit` cut it short.
    `greedy=None` plays uniformly at random."""
    game.reset()
    total, length, done = 0.0, 0, False
    while not done and (limit is None or length < limit):
        if greedy is None or (epsilon > 0 and rng.random() < epsilon):
            action = int(rng.integers(NUM_ACTIONS))
        else:
            action = greedy(game.observation())
        reward, done = game.act(action)
        total += reward
        length += 1
    return total, length, not done


def load_model(path: Path) -> tuple[Config, QNetwork]:
    """The final network of a completed run (masks included, loaded without unpickling objects)."""
    config = rundir.read_config(path)
    structure = make_structure(config.structure, config.structure_options, config.plugins)
    network = build_network(config, structure, torch.Generator().manual_seed(config.seed))
    network.load_state_dict(torch.load(path / rundir.MODEL, weights_only=True, map_location="cpu"))
    return config, network.eval()


def play(config: Config, policy: QNetwork | None, episodes: int, seed: int, epsilon: float = 0.0) -> list[float]:
    """Returns of `episodes` episodes; `policy=None` plays uniformly at random."""
    game = Game(config.game, seed, config.sticky_action_prob, config.difficulty_ramping)
    rng = np.random.default_rng(seed)
    greedy = None if policy is None else _greedy(policy)
    return [play_episode(game, greedy, epsilon, rng)[0] for _ in range(episodes)]


def _greedy(network: QNetwork) -> Policy:
    def act(observation: np.ndarray) -> int:
        with torch.inference_mode():
            return int(network(torch.from_numpy(observation).unsqueeze(0)).argmax(1))
    return act
