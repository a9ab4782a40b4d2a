"""The Q-network: (C,10,10) -> structured layer (1024 units) -> act -> dense 128 -> act -> head."""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from minisparse.config import Config, ConfigError
from minisparse.env import NUM_ACTIONS
from minisparse.layers import layer_capacity, sync_masked_layers, uniform
from minisparse.structure import LayerSpec, Structure, make_structure

CONV_FAN_IN_PER_CHANNEL = 9  # a 3x3 receptive field


class QNetwork(nn.Module):
    def __init__(self, structured: nn.Module, hidden: nn.Module, head: nn.Module,
                 activation: str, leaky_slope: float):
        super().__init__()
        self.structured, self.hidden, self.head = structured, hidden, head
        self.activation, self.leaky_slope = activation, leaky_slope

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = observations.flatten(1).float()
        x = self.activate(self.structured(x))
        return self.head(self.activate(self.hidden(x)))

    def named_parameters(self, *args, **kwargs) -> Iterator[tuple[str, nn.Parameter]]:
        """The parameters, masked layers' weights and scores brought up to date (MaskedLinear.sync)."""
        sync_masked_layers(self)
        return super().named_parameters(*args, **kwargs)

    def activate(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "leaky_relu":
            return F.leaky_relu(x, self.leaky_slope)
        return F.relu(x)

    def capacity(self) -> dict[str, dict[str, float]]:
        layers = {"structured": layer_capacity(self.structured), "hidden": layer_capacity(self.hidden),
                  "head": layer_capacity(self.head)}
        total = {key: sum(layer[key] for layer in layers.values())
                 for key in ("units", "connections", "parameters", "flops")}
        total["density"] = total["connections"] / sum(l["units"] * l["inputs"] for l in layers.values())
        return {**layers, "total": total}


def structured_fan_in(config: Config) -> int:
    """The budget in inputs per hidden unit: the conv's 9*C unless --fan-in or --sparsity say otherwise."""
    if config.fan_in is not None:
        return config.fan_in
    if config.sparsity is not None:
        return max(1, round((1.0 - config.sparsity) * config.input_size))
    return CONV_FAN_IN_PER_CHANNEL * config.channels


def layer_densities(shapes: dict[str, tuple[int, int]], density: float, distribution: str) -> dict[str, float]:
    """Split an overall density over layers of (units, inputs): the same everywhere, or ERK.

    ERK (Evci et al. 2020) gives each layer a density proportional to (units + inputs) / (units * inputs),
    scaled so the total number of connections is kept; layers that would exceed 1 are made dense
    and the rest is redistributed.
    """
    if distribution == "uniform":
        return {name: density for name in shapes}
    budget = density * sum(u * i for u, i in shapes.values())
    dense: set[str] = set()
    while True:
        free = {n: (u + i) / (u * i) for n, (u, i) in shapes.items() if n not in dense}
        remaining = budget - sum(u * i for n, (u, i) in shapes.items() if n in dense)
        scale = remaining / sum(free[n] * shapes[n][0] * shapes[n][1] for n in free)
        overfull = {n for n in free if scale * free[n] > 1.0}
        if not overfull:
            return {n: 1.0 if n in dense else scale * free[n] for n in shapes}
        dense |= overfull


def layer_specs(config: Config) -> dict[str, LayerSpec]:
    """The layers a structure wires, with their budgets (inputs per unit)."""
    shapes = {"structured": (config.hidden_units, config.input_size)}
    if config.sparse_hidden:
        shapes["hidden"] = (config.dense_units, config.hidden_units)
    density = structured_fan_in(config) / config.input_size
    densities = layer_densities(shapes, density, config.distribution)
    total_updates = max(0, config.frames - config.replay_start)
    return {name: LayerSpec(name=name, in_features=inputs, out_features=units,
                            fan_in=max(1, round(densities[name] * inputs)),
                            channels=config.channels if name == "structured" else 0,
                            fixed=config.weights == "fixed" and name == "structured",
                            total_updates=total_updates, frames_before_learning=config.replay_start)
            for name, (units, inputs) in shapes.items()}


def layer_structures(structure: Structure, specs: dict[str, LayerSpec]) -> dict[str, Structure]:
    """Which structure wires each sparse layer: image-only structures leave the hidden layer to `random`."""
    fallback = make_structure("random", {}) if structure.image_only else structure
    return {name: structure if name == "structured" else fallback for name in specs}


def build_network(config: Config, structure: Structure, generator: torch.Generator) -> QNetwork:
    """A freshly initialised network whose sparse layers `structure` wires."""
    specs = layer_specs(config)
    wiring = layer_structures(structure, specs)
    try:
        layers = {name: wiring[name].build(spec, generator) for name, spec in specs.items()}
    except ValueError as error:  # the structure cannot wire a layer of this config
        raise ConfigError(f"structure {structure.name}: {error}") from None
    units = layers["structured"].out_features
    if units != config.hidden_units:
        raise ConfigError(f"structure {structure.name} builds {units} hidden units; "
                          f"--hidden-units {config.hidden_units} would need another structure")
    hidden = layers.get("hidden") or nn.Linear(config.hidden_units, config.dense_units)
    head = nn.Linear(config.dense_units, NUM_ACTIONS)
    layers["structured"].reset_parameters(generator)
    for layer in (hidden, head):
        if isinstance(layer, nn.Linear):
            _reset_linear(layer, generator)
        else:
            layer.reset_parameters(generator)
    return QNetwork(layers["structured"], hidden, head, config.activation, config.leaky_slope)


def _reset_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    bound = layer.in_features ** -0.5
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            p.copy_(uniform(p.shape, bound, generator))
