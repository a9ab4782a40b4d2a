"""The Q-network: (C,10,10) -> structured layer (1024 units) -> act -> dense 128 -> act -> head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minisparse.config import Config
from minisparse.env import NUM_ACTIONS
from minisparse.layers import layer_capacity
from minisparse.structure import LayerSpec, Structure

CONV_FAN_IN_PER_CHANNEL = 9  # a 3x3 receptive field


class QNetwork(nn.Module):
    def __init__(self, structured: nn.Module, hidden: nn.Module, head: nn.Module,
                 activation: str, leaky_slope: float):
        super().__init__()
        self.structured, self.hidden, self.head = structured, hidden, head
        self.activation, self.leaky_slope = activation, leaky_slope

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = observations.flatten(1).float()
        x = self._act(self.structured(x))
        return self.head(self._act(self.hidden(x)))

    def _act(self, x: torch.Tensor) -> torch.Tensor:
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


def layer_specs(config: Config) -> dict[str, LayerSpec]:
    """The layers a structure wires, with their budgets."""
    return {"structured": LayerSpec(
        name="structured", in_features=config.input_size, out_features=config.hidden_units,
        fan_in=structured_fan_in(config), channels=config.channels, fixed=config.weights == "fixed",
        total_updates=max(0, config.frames - config.replay_start))}


def build_network(config: Config, structure: Structure, generator: torch.Generator) -> QNetwork:
    """A freshly initialised network whose structured layer `structure` wires."""
    spec = layer_specs(config)["structured"]
    structured = structure.build(spec, generator)
    if structured.out_features != config.hidden_units:
        raise ValueError(f"structure {structure.name} built {structured.out_features} units, "
                         f"expected {config.hidden_units}")
    structured.reset_parameters(generator)
    hidden = nn.Linear(config.hidden_units, config.dense_units)
    head = nn.Linear(config.dense_units, NUM_ACTIONS)
    for layer in (hidden, head):
        _reset_linear(layer, generator)
    return QNetwork(structured, hidden, head, config.activation, config.leaky_slope)


def _reset_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    bound = layer.in_features ** -0.5
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) * bound)
