"""The MinAtar game as the agent sees it, with its exact state saved and restored without pickle."""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from minisparse.stops import interrupts_held

with interrupts_held():  # MinAtar's import swallows Ctrl-C (stops.py)
    from minatar import Environment

NUM_ACTIONS = 6
# Attributes of a MinAtar game object that are constants, not state.
_CONSTANT_ATTRIBUTES = ("channels", "action_map", "ramping", "random")


def channel_names(game: str) -> list[str]:
    """The game's observation channels in order, as MinAtar names them (paddle, ball, trail, brick...)."""
    channels = Environment(game).env.channels
    return sorted(channels, key=channels.get)


class Game:
    """A seeded MinAtar environment whose observations are (C, 10, 10) booleans."""

    def __init__(self, name: str, seed: int, sticky_action_prob: float, difficulty_ramping: bool):
        self._env = Environment(name, sticky_action_prob=sticky_action_prob,
                                difficulty_ramping=difficulty_ramping)
        self._env.seed(seed)
        self._env.reset()
        self.channels: int = self._env.n_channels

    def observation(self) -> np.ndarray:
        return self._env.state().transpose(2, 0, 1)

    def act(self, action: int) -> tuple[float, bool]:
        reward, terminal = self._env.act(action)
        return float(reward), bool(terminal)

    def reset(self) -> None:
        self._env.reset()

    def get_state(self) -> str:
        """Everything that decides the future of this game, as JSON."""
        game = self._env.env
        attributes = {k: _encode(v) for k, v in vars(game).items() if k not in _CONSTANT_ATTRIBUTES}
        kind, key, pos, has_gauss, cached = self._env.random.get_state()
        return json.dumps({
            "attributes": attributes,
            "last_action": int(self._env.last_action),
            "random": [kind, key.tolist(), pos, has_gauss, cached],
        })

    def set_state(self, blob: str) -> None:
        state = json.loads(blob)
        game = self._env.env
        for name, value in state["attributes"].items():
            setattr(game, name, _decode(value))
        self._env.last_action = state["last_action"]
        kind, key, pos, has_gauss, cached = state["random"]
        self._env.random.set_state((kind, np.array(key, dtype=np.uint32), pos, has_gauss, cached))


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "ndarray" in value:
        return np.array(value["ndarray"], dtype=value["dtype"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value
