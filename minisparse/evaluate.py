"""Play episodes with a trained network, or with the uniform-random policy it should beat."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from minisparse import rundir
from minisparse.config import Config
from minisparse.env import NUM_ACTIONS, Game
from minisparse.network import QNetwork, build_network
from minisparse.structure import make_structure


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
    returns = []
    for _ in range(episodes):
        game.reset()
        total, done = 0.0, False
        while not done:
            if policy is None or rng.random() < epsilon:
                action = int(rng.integers(NUM_ACTIONS))
            else:
                with torch.inference_mode():
                    observation = torch.from_numpy(game.observation()).unsqueeze(0)
                    action = int(policy(observation).argmax(1))
            reward, done = game.act(action)
            total += reward
        returns.append(total)
    return returns
