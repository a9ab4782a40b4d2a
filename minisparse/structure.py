"""The plug-in interface for connectivity generators, and their registry.

A structure only says which connections exist: at the start (`initial_mask`), when learning
starts (`begin_learning`) and during training (`update_mask`). It never touches weights or
optimizer state; the sparsity engine does. Every hook defaults to "dense, never changes",
so a new structure overrides one or two of them. Its options are its dataclass fields.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import math
import pkgutil
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from minisparse.config import ConfigError
from minisparse.structure_options import STRUCTURE_ENTRY_POINTS, coerce_options
from minisparse.layers import MaskedLinear


@dataclass(frozen=True)
class LayerSpec:
    """What a structure needs to know about the layer it wires."""

    name: str               # "structured" (reads the image) or "hidden"
    in_features: int
    out_features: int
    fan_in: int             # the budget: inputs per unit
    channels: int           # image channels of the input, 0 when the input is not an image
    fixed: bool             # weight values frozen at their initial values
    total_updates: int      # length of training, for schedules
    frames_before_learning: int  # the random-policy frames begin_learning reads

    @property
    def connections(self) -> int:
        return self.fan_in * self.out_features


@dataclass(frozen=True)
class Signals:
    """What the engine measured at an update step, for structures that learn connectivity.

    importance: |weight| for unscored layers, the connection scores for scored ones (fixed mode,
    and supermask in either mode).
    growth: |dense gradient| of the weight (unscored layers) or of the scores (scored ones).
    """

    importance: torch.Tensor
    growth: torch.Tensor


@dataclass
class Structure:
    name: ClassVar[str] = ""
    learns_connectivity: ClassVar[bool] = False
    image_only: ClassVar[bool] = False  # needs the image's geometry; a sparse hidden layer gets `random`
    uses_budget: ClassVar[bool] = True  # whether --sparsity / --fan-in change what it wires
    # Whether a connection its updates drop may come back. Pruning's never do: with fixed weights the scores
    # of absent connections are then never read again, and only the present ones train (on the sparse backend).
    regrows: ClassVar[bool] = True

    def build(self, spec: LayerSpec, generator: torch.Generator) -> nn.Module:
        """The layer for `spec`; masked linear unless a structure needs its own kind of layer."""
        scored = self.learns_connectivity and spec.fixed
        return MaskedLinear(self.initial_mask(spec, generator), scored=scored)

    def initial_mask(self, spec: LayerSpec, generator: torch.Generator) -> torch.Tensor:
        return torch.ones(spec.out_features, spec.in_features, dtype=torch.bool)

    def begin_learning(self, spec: LayerSpec, observations: np.ndarray,
                       generator: torch.Generator) -> torch.Tensor | None:
        """A new mask chosen from the frames gathered before learning starts, or None."""
        return None

    def is_update_step(self, step: int, spec: LayerSpec) -> bool:
        return False

    def last_update(self, spec: LayerSpec) -> int | None:
        """The last step at which `is_update_step` can be true, or None if it can be until training ends. After it
        the connectivity is settled: with fixed weights the layer no longer changes, and the engine freezes it."""
        return None

    def update_mask(self, mask: torch.Tensor, signals: Signals, step: int, spec: LayerSpec,
                    generator: torch.Generator) -> torch.Tensor:
        return mask

    def l1_strength(self, step: int, spec: LayerSpec) -> float:
        """Coefficient of an L1 penalty on the layer's present connections at this update (0: none)."""
        return 0.0


STRUCTURES: dict[str, type[Structure]] = {}


def register(name: str) -> Callable[[type[Structure]], type[Structure]]:
    """Class decorator: make a structure available under `name`."""
    def decorate(cls: type[Structure]) -> type[Structure]:
        taken = STRUCTURES.get(name)
        if taken is not None and _origin(taken) != _origin(cls):
            # Replacing a registered structure would label another network with its name.
            raise ConfigError(f"structure name {name!r} is already taken by {taken.__qualname__} of "
                              f"{_origin(taken)[0]}; register {cls.__qualname__} under another name")
        if not dataclasses.is_dataclass(cls) or "__dataclass_fields__" not in vars(cls):
            cls = dataclass(cls)
        cls.name = name
        STRUCTURES[name] = cls
        return cls
    return decorate


def available() -> dict[str, type[Structure]]:
    """Every registered structure: built-ins, installed entry points, and loaded plug-in files."""
    if not _loaded_builtins:
        import minisparse.structures as builtins
        for module in pkgutil.iter_modules(builtins.__path__):
            importlib.import_module(f"{builtins.__name__}.{module.name}")
        for entry in entry_points(group=STRUCTURE_ENTRY_POINTS):
            try:
                entry.load()
            except Exception as error:
                raise ConfigError(f"structure plug-in {entry.value!r} failed to load: {_describe(error)}") from None
        _loaded_builtins.append(True)
    return dict(sorted(STRUCTURES.items()))


_loaded_builtins: list[bool] = []


def load_plugins(folder: str | Path) -> list[str]:
    """Import every .py file in `folder` (once per folder); return the names they registered."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise ConfigError(f"plug-in folder {str(folder)!r} is not a directory")
    if folder in _loaded_folders:
        return _loaded_folders[folder]
    before = set(available())
    for path in sorted(folder.glob("*.py")):
        module_name = f"minisparse_plugin_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as error:  # a plug-in's sys.exit() must not end minisparse silently
            del sys.modules[module_name]
            raise ConfigError(f"structure plug-in {str(path)!r} failed to load: {_describe(error)}") from None
    _loaded_folders[folder] = sorted(set(STRUCTURES) - before)
    return _loaded_folders[folder]


_loaded_folders: dict[Path, list[str]] = {}


def make_structure(name: str, options: dict[str, Any], plugins: str | None = None) -> Structure:
    """Instantiate a registered structure (loading `plugins` first), checking its options by name and type."""
    cls = structure_class(name, plugins)
    typed = typed_options(name, options, plugins)
    try:
        return cls(**typed)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"structure {name}: {error}") from None


def typed_options(name: str, options: dict[str, Any], plugins: str | None = None) -> dict[str, Any]:
    """Options converted to the types of the structure's fields, so `-o per_unit=false` on the
    command line and `per_unit = false` in a study file give the same config (and run folder)."""
    cls = structure_class(name, plugins)
    return coerce_options(name, {f.name: getattr(cls, f.name, None) for f in dataclasses.fields(cls)}, options)


def structure_class(name: str, plugins: str | None = None) -> type[Structure]:
    """The registered class of `name` (loading `plugins` first); unknown names fail with the choices."""
    if plugins is not None:
        load_plugins(plugins)
    known = available()
    if name not in known:
        raise ConfigError(f"unknown structure {name!r}; valid choices: {', '.join(known)}")
    return known[name]


def _origin(cls: type) -> tuple[str, str]:
    """Where a class is defined: the same file imported under two module names is one origin."""
    source = inspect.getsourcefile(cls)
    return (str(Path(source).resolve()) if source else cls.__module__), cls.__qualname__


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]
