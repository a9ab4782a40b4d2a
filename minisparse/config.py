"""One config object: the CLI builds it, the run directory stores it, resume and analysis read it.

Defaults are the study protocol (MinAtar's reference DQN), so published curves apply.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
WEIGHT_MODES = ("learned", "fixed")
ACTIVATIONS = ("relu", "leaky_relu")
OPTIMIZERS = ("rmsprop", "adam")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("dense", "sparse", "auto")
DISTRIBUTIONS = ("uniform", "erk")


class ConfigError(ValueError):
    """A user mistake in the configuration: reported as one line, exit status 2."""


@dataclass
class Config:
    # what is studied
    game: str = "breakout"
    structure: str = "conv"
    weights: str = "learned"
    seed: int = 0
    frames: int = 5_000_000
    # capacity: None keeps the conv's budget (9*C inputs per hidden unit)
    sparsity: float | None = None
    fan_in: int | None = None
    structure_options: dict[str, Any] = field(default_factory=dict)
    plugins: str | None = None
    # multi-layer sparsity: the dense 128-unit layer sparse too, the budget split by `distribution`
    sparse_hidden: bool = False
    distribution: str = "uniform"
    # network
    hidden_units: int = 1024
    dense_units: int = 128
    activation: str = "relu"
    leaky_slope: float = 0.01
    # environment
    sticky_action_prob: float = 0.1
    difficulty_ramping: bool = True
    # DQN (MinAtar reference)
    batch_size: int = 32
    replay_capacity: int = 100_000
    replay_start: int = 5_000
    target_period: int = 1_000
    epsilon_start: float = 1.0
    epsilon_end: float = 0.1
    epsilon_frames: int = 100_000
    gamma: float = 0.99
    optimizer: str = "rmsprop"
    lr: float = 2.5e-4
    rmsprop_alpha: float = 0.95
    rmsprop_eps: float = 0.01
    rmsprop_centered: bool = True
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    mask_optimizer_state: bool = True
    # greedy evaluation on games of its own (None: ten points over the run; 0: off)
    eval_every: int | None = None
    eval_episodes: int = 10
    eval_epsilon: float = 0.0
    # execution
    device: str = "auto"
    backend: str = "auto"
    threads: int = 1
    checkpoint_every: int = 100_000
    log_every: int = 10_000
    tensorboard: bool = False

    def validate(self) -> "Config":
        """Raise ConfigError naming the bad value and the valid choices."""
        self.check_settings()
        self._check_structure()
        return self

    def check_settings(self) -> "Config":
        """The checks that need no structure registry (which imports torch), so that the command
        line reports these mistakes at once."""
        for name, value in self.to_dict().items():
            for number in value if isinstance(value, tuple) else (value,):
                if isinstance(number, float) and not math.isfinite(number):
                    raise ConfigError(f"{name.replace('_', '-')} must be a finite number, got {number}")
        _choice("game", self.game, GAMES)
        _choice("weights", self.weights, WEIGHT_MODES)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("device", self.device, DEVICES)
        _choice("backend", self.backend, BACKENDS)
        _choice("distribution", self.distribution, DISTRIBUTIONS)
        if self.sparsity is not None and not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"sparsity {self.sparsity} is outside [0, 1)")
        if self.sparsity is not None and self.fan_in is not None:
            raise ConfigError("give --sparsity or --fan-in, not both")
        if self.fan_in is not None and not 1 <= self.fan_in <= self.input_size:
            raise ConfigError(
                f"fan-in {self.fan_in} is outside [1, {self.input_size}] "
                f"(the {self.game} input has {self.input_size} values)")
        for name in ("frames", "batch_size", "replay_capacity", "target_period",
                     "hidden_units", "dense_units", "threads", "checkpoint_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed {self.seed} is outside [0, 2**32)")
        if self.eval_episodes <= 0:
            raise ConfigError(f"eval-episodes must be > 0, got {self.eval_episodes}")
        if not 0.0 <= self.eval_epsilon <= 1.0:
            raise ConfigError(f"eval-epsilon {self.eval_epsilon} is outside [0, 1]")
        for name in ("replay_start", "epsilon_frames", "eval_every"):
            if (getattr(self, name) or 0) < 0:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.batch_size > self.replay_capacity:
            raise ConfigError(
                f"batch size {self.batch_size} is larger than the replay capacity {self.replay_capacity}")
        for name in ("gamma", "sticky_action_prob", "epsilon_start", "epsilon_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name.replace('_', '-')} {getattr(self, name)} is outside [0, 1]")
        for name, value in (("rmsprop-alpha", self.rmsprop_alpha), ("leaky-slope", self.leaky_slope),
                            *(("adam-betas", beta) for beta in self.adam_betas)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} {value} is outside [0, 1)")
        for name in ("lr", "rmsprop_eps", "adam_eps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        return self

    def _check_structure(self) -> None:
        """The structure is registered, and takes the budget if one is given (a budget given to a
        structure that ignores it would label identical runs differently)."""
        budget = "sparsity" if self.sparsity is not None else "fan-in" if self.fan_in is not None else None
        if budget and not self.takes_budget():
            raise ConfigError(f"structure {self.structure} ignores the budget, so --{budget} does not apply "
                              f"(it sets the budget of the structures that take one)")

    def takes_budget(self) -> bool:
        """Whether --sparsity / --fan-in change what this network wires: the structure takes a budget, or the
        sparse hidden layer does (image-only structures leave that layer to random)."""
        from minisparse.structure import structure_class

        cls = structure_class(self.structure, self.plugins)
        return cls.uses_budget or (self.sparse_hidden and cls.image_only)

    @property
    def eval_interval(self) -> int:
        """Frames between greedy evaluations (0: none)."""
        if self.eval_every is None:
            return max(1, self.frames // 10)
        return self.eval_every

    @property
    def channels(self) -> int:
        return CHANNELS[self.game]

    @property
    def input_size(self) -> int:
        return self.channels * 100

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}")
        data = dict(data)
        if "adam_betas" in data:
            data["adam_betas"] = tuple(data["adam_betas"])
        return cls(**data)

    def fingerprint(self) -> str:
        """Stable short hash of the settings that change results and differ from their defaults.

        Settings at their defaults (structure options included) are left out, so that a run keeps
        its name when a later version adds a setting whose default reproduces the old behaviour.
        config.json holds every value and this fingerprint; resuming checks that they still agree.
        """
        import hashlib
        defaults, inert = Config().to_dict(), self.inert_settings()
        relevant = {k: v for k, v in self.to_dict().items()
                    if k not in EXECUTION_KEYS and k not in inert and v != defaults[k]}
        options = self.changed_structure_options()
        relevant.pop("structure_options", None)
        if options:
            relevant["structure_options"] = options
        blob = json.dumps(relevant, sort_keys=True, default=str).encode()
        return hashlib.sha1(blob).hexdigest()[:8]

    def inert_settings(self) -> set[str]:
        """Settings this config ignores (Adam's with RMSprop, the leaky slope with relu, the layer
        distribution without --sparse-hidden, a plug-in folder for a built-in structure). They stay in
        config.json but not in the fingerprint, so runs that compute the same thing share a folder."""
        from minisparse.structure import structure_class

        inert = set()
        if self.optimizer != "adam":
            inert |= {"adam_betas", "adam_eps"}
        if self.optimizer != "rmsprop":
            inert |= {"rmsprop_alpha", "rmsprop_eps", "rmsprop_centered"}
        if self.activation != "leaky_relu":
            inert.add("leaky_slope")
        if not self.sparse_hidden:
            inert.add("distribution")
        if self.eval_interval == 0:
            inert |= {"eval_episodes", "eval_epsilon"}
        if self.plugins is not None and structure_class(self.structure, self.plugins).__module__.startswith(
                "minisparse.structures."):
            inert.add("plugins")
        return inert

    def changed_structure_options(self) -> dict[str, Any]:
        """The structure options that differ from the structure's defaults."""
        from minisparse.structure import structure_class

        cls = structure_class(self.structure, self.plugins)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        return {k: v for k, v in self.structure_options.items() if defaults.get(k, dataclasses.MISSING) != v}


# Settings that change how a run executes, not what it computes: results agree to float
# rounding, so runs that differ only in these are one experiment (one run folder, one variant).
EXECUTION_KEYS = frozenset({"device", "backend", "threads", "checkpoint_every", "log_every", "tensorboard"})
# Settings of the greedy evaluation: they change eval.csv (so the run's folder) but not training,
# so runs that differ only in these are one variant of a structure.
EVALUATION_KEYS = frozenset({"eval_every", "eval_episodes", "eval_epsilon"})

# Observation channels of each MinAtar game (10 x 10 x C).
CHANNELS = {"asterix": 4, "breakout": 4, "freeway": 7, "seaquest": 10, "space_invaders": 6}


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")
