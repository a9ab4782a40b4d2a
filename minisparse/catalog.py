"""Every registered structure at one budget: what it costs and what it looks like."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from minisparse.config import Config, ConfigError
from minisparse.dqn import Agent
from minisparse.layers import MaskedLinear
from minisparse.network import build_network, layer_specs
from minisparse.structure import available, load_plugins

COLUMNS = ["structure", "units", "connections", "parameters", "density", "flops", "connectivity", "note"]


def capacity_table(config: Config) -> pd.DataFrame:
    """One row per structure: the sparse layers' capacity once training has shaped them.

    Structures that learn connectivity end at the budget whatever they start from (prune and
    l1 start dense); `connectivity` says which ones change and where they start. A structure that
    cannot wire the configured layer (conv makes exactly 1024 units) has only a `note` saying why.
    """
    if config.plugins is not None:
        load_plugins(config.plugins)
    rows = []
    for name, cls in available().items():
        variant = dataclasses.replace(config, structure=name, structure_options={})
        try:
            network = build_network(variant, cls(), torch.Generator().manual_seed(config.seed))
        except ConfigError as error:  # e.g. conv and local make exactly 1024 units
            rows.append({"structure": name, "connectivity": "cannot wire this layer", "note": _reason(error, name)})
            continue
        capacity, specs = network.capacity(), layer_specs(variant)
        start = sum(capacity[layer]["connections"] for layer in specs)
        learned = {l for l in specs if cls.learns_connectivity and isinstance(getattr(network, l), MaskedLinear)}
        connections = sum(specs[l].connections if l in learned else capacity[l]["connections"] for l in specs)
        shared = sum(capacity[l]["parameters"] - capacity[l]["connections"] for l in specs)
        rows.append({"structure": name, "units": sum(capacity[l]["units"] for l in specs),
                     "connections": connections, "parameters": connections + shared,
                     "density": connections / sum(capacity[l]["units"] * capacity[l]["inputs"] for l in specs),
                     "flops": 2 * connections,
                     "connectivity": ("static" if not learned else "learned" if start == connections
                                      else f"learned, starts at {start:,}")})
    return pd.DataFrame(rows, columns=COLUMNS)


def _reason(error: ConfigError, name: str) -> str:
    return str(error).removeprefix(f"structure {name}: ").removeprefix(f"structure {name} ")


def connectivity(config: Config) -> dict[str, np.ndarray]:
    """The masks a run of `config` starts learning with (its masks/start.npz): the run's own steps
    up to its first update, so structures that wire themselves from those frames see the same ones."""
    agent = Agent(config)
    masks: dict[str, np.ndarray] = {}
    observation = agent.game.observation()
    while not masks:
        observation = agent.step(observation, lambda: masks.update(agent.engine.masks()))[0]
    return masks
