"""Study files: a declarative grid of runs in TOML, expanded into validated Configs before anything runs.

    description = "fixed vs learned weights"   # free text
    games = ["breakout", "space_invaders"]      # axes; each defaults to the Config default
    structures = ["conv", "random"]             # or one table per structure, see below
    weights = ["fixed", "learned"]
    seeds = 10                                  # seeds 0..9, or a list such as [3, 7]
    sparsity = [0.7, 0.9]                       # budgets; "default" = the conv's budget
    plugins = "my_structures"                   # folder of structure plug-ins, relative to this file

    [vary]                                      # more axes: any Config field -> list of values
    activation = ["relu", "leaky_relu"]

    [overrides]                                 # any Config field, for every run
    frames = 5_000_000

    [structures.rigl]                           # per structure: options, overrides, sparsity
    options = { drop_fraction = 0.3 }

Config fields and the structure registry are the only lists of valid names: a study is checked
against them in full (every grid point) so that a typo fails in one line before any run starts.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minisparse.config import Config, ConfigError
from minisparse.rundir import run_name
from minisparse.structure import available, load_plugins, make_structure, typed_options

# Top-level keys that are axes of the grid, and the Config field each one sets.
AXES = {"games": "game", "structures": "structure", "weights": "weights", "sparsity": "sparsity",
        "seeds": "seed"}
KEYS = ("description", *AXES, "plugins", "vary", "overrides")
STRUCTURE_KEYS = ("options", "overrides", "sparsity")
DEFAULT_BUDGET = "default"
MAX_RUNS = 10_000  # a grid larger than this is a typo (seeds = 100_000_000), not a study


@dataclass(frozen=True)
class Study:
    """A study file resolved into the runs it asks for, in the order they should run."""

    path: Path
    description: str
    configs: tuple[Config, ...]

    def names(self) -> list[str]:
        return [run_name(config) for config in self.configs]


def load_study(path: Path) -> Study:
    """Parse, expand and validate a study file; any mistake raises ConfigError naming file and key."""
    data = _read(path)
    return _Parser(path, data).study()


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"study file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"study file {str(path)!r} is a directory") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text, as TOML must be (byte {error.start} is {error.object[error.start]:#04x})") from None
    except PermissionError:
        raise ConfigError(f"study file {str(path)!r} cannot be read (permission denied)") from None


class _Parser:
    """Walks a study's keys in a fixed order, so every error names where in the file it is."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path, self.data = path, data
        self.hints = typing.get_type_hints(Config)
        self.fields = [f.name for f in dataclasses.fields(Config)]
        self.plugin_folder: str | None = None

    def fail(self, key: str, message: str) -> typing.NoReturn:
        raise ConfigError(f"{self.path}: {key}: {message}")

    def study(self) -> Study:
        for key in self.data:
            if key not in KEYS:
                self.fail(key, f"unknown key; valid keys: {', '.join(KEYS)}")
        if not set(self.data) - {"description"}:
            raise ConfigError(f"{self.path}: the study is empty; give at least one of "
                              f"{', '.join(k for k in KEYS if k != 'description')}")
        plugins = self.plugin_folder = self.plugins()
        overrides = self.settings("overrides", self.data.get("overrides", {}))
        vary = {field: self.axis(f"vary.{field}", field, values, single=False)
                for field, values in self.settings("vary", self.data.get("vary", {}), raw=True).items()}
        for field in set(overrides) & set(vary):
            self.fail(f"vary.{field}", "also given in [overrides]; give it in one place")
        axes = {key: self.axis(key, AXES[key], self.top_axis(key)) for key in AXES if key != "structures"}
        structures = self.structures(set(overrides) | set(vary))
        self.check_size(axes, structures, vary)
        configs = []
        # Seeds outermost, so that an interrupted or partial study has every condition at equal depth.
        for seed, game, (structure, settings), weights in itertools.product(
                axes["seeds"], axes["games"], structures.items(), axes["weights"]):
            budgets = settings.get("sparsity", axes["sparsity"])
            for sparsity, varied in itertools.product(budgets, _product(vary)):
                values = {**overrides, **settings["overrides"], **varied, "seed": seed, "game": game,
                          "structure": structure, "weights": weights, "sparsity": sparsity,
                          "structure_options": dict(settings["options"]), "plugins": plugins}
                configs.append(self.config(values, settings["origin"]))
        self.check_distinct(configs)
        return Study(self.path, str(self.data.get("description", "")), tuple(configs))

    def plugins(self) -> str | None:
        """The plug-in folder as an absolute path (stored in each run's config), its structures loaded."""
        if "plugins" not in self.data:
            return None
        folder = self.data["plugins"]
        if not isinstance(folder, str):
            self.fail("plugins", f"expected a folder name, got {folder!r}")
        folder = str((self.path.parent / folder).resolve())
        try:
            load_plugins(folder)
        except ConfigError as error:
            self.fail("plugins", str(error))
        return folder

    def top_axis(self, key: str) -> list[Any]:
        field = AXES[key]
        if key not in self.data:
            return [getattr(Config(), field)]
        values = self.data[key]
        if key == "seeds" and isinstance(values, int) and not isinstance(values, bool):
            if values < 1:
                self.fail(key, f"a number of seeds must be >= 1, got {values}")
            if values > MAX_RUNS:
                self.fail(key, f"{values} seeds make more than the limit of {MAX_RUNS:,} runs")
            return list(range(values))
        return values

    def axis(self, key: str, field: str, values: Any, single: bool = True) -> list[Any]:
        """A non-empty list of values of one Config field, type-checked; `single`: a bare value is a list of one."""
        if not isinstance(values, list):
            if not single:
                self.fail(key, f"expected a list of values, got {values!r}")
            values = [values]
        if not values:
            self.fail(key, "is empty; give at least one value")
        return [self.typed(key, field, value) for value in values]

    def settings(self, key: str, table: Any, raw: bool = False) -> dict[str, Any]:
        """A table of Config fields; fields with their own top-level key must be given there."""
        if not isinstance(table, dict):
            self.fail(key, f"expected a table of Config fields, got {table!r}")
        own = {field: axis for axis, field in AXES.items()} | {"structure_options": "structures.NAME.options",
                                                                "plugins": "plugins"}
        for field, value in table.items():
            if field in own:
                self.fail(f"{key}.{field}", f"give it as the top-level key {own[field]!r}")
            if field not in self.fields:
                valid = ", ".join(f for f in self.fields if f not in own)
                self.fail(f"{key}.{field}", f"unknown config key; valid keys: {valid}")
        return dict(table) if raw else {field: self.typed(f"{key}.{field}", field, value)
                                        for field, value in table.items()}

    def structures(self, taken: set[str]) -> dict[str, dict[str, Any]]:
        """Each structure of the grid with its options, overrides and budgets, checked by the registry."""
        given = self.data.get("structures", [Config().structure])
        tables = {name: {} for name in (given if isinstance(given, list) else [given])} \
            if not isinstance(given, dict) else given
        if not tables:
            self.fail("structures", "is empty; give at least one structure")
        known = available()
        resolved = {}
        for name, table in tables.items():
            if not isinstance(name, str) or name not in known:
                self.fail("structures", f"unknown structure {name!r}; valid choices: {', '.join(known)}")
            origin = f"structures.{name}"
            if not isinstance(table, dict):
                self.fail(origin, f"expected a table with {', '.join(STRUCTURE_KEYS)}, got {table!r}")
            for key in table:
                if key not in STRUCTURE_KEYS:
                    self.fail(f"{origin}.{key}", f"unknown key; valid keys: {', '.join(STRUCTURE_KEYS)}")
            options = table.get("options", {})
            if not isinstance(options, dict):
                self.fail(f"{origin}.options", f"expected a table of options, got {options!r}")
            try:
                make_structure(name, options, self.plugin_folder)
            except ConfigError as error:
                self.fail(f"{origin}.options", str(error))
            overrides = self.settings(f"{origin}.overrides", table.get("overrides", {}))
            clash = sorted(set(overrides) & taken)
            if clash:
                self.fail(f"{origin}.overrides.{clash[0]}", "also set for every structure; give it in one place")
            settings = {"options": typed_options(name, options, self.plugin_folder), "overrides": overrides,
                        "origin": origin}
            if "sparsity" in table:
                settings["sparsity"] = self.axis(f"{origin}.sparsity", "sparsity", table["sparsity"])
            resolved[name] = settings
        return resolved

    def typed(self, key: str, field: str, value: Any) -> Any:
        """The value as the Config field's type: ints widen to floats, lists become tuples."""
        if (field == "sparsity" and value == DEFAULT_BUDGET) or (
                value is None and type(None) in typing.get_args(self.hints[field])):
            return None  # None comes only from Config's own defaults: TOML has no null
        for kind in _alternatives(self.hints[field]):
            base = typing.get_origin(kind) or kind
            if base is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if base is tuple and isinstance(value, list):
                items = typing.get_args(kind)
                if len(items) == len(value) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    for v in value):
                    return tuple(float(v) if t is float else v for t, v in zip(items, value))
            if base is int and isinstance(value, bool):
                continue
            if isinstance(value, base):
                return value
        expected = " or ".join(_type_name(kind) for kind in _alternatives(self.hints[field]))
        if field == "sparsity":
            expected += f" or {DEFAULT_BUDGET!r}"
        self.fail(key, f"expected {expected}, got {type(value).__name__} {value!r}")

    def config(self, values: dict[str, Any], origin: str) -> Config:
        """The grid point's Config; a failing check is pinned on the key whose default would pass."""
        try:
            return Config.from_dict(values).validate()
        except ConfigError as error:
            culprit = self.culprit(values, origin)
            where = f"{culprit} (in the run {_describe(values)})"
            raise ConfigError(f"{self.path}: {where}: {error}") from None

    def culprit(self, values: dict[str, Any], origin: str) -> str:
        default = Config()
        names = {field: axis for axis, field in AXES.items()}
        for field, value in values.items():
            if field == "structure_options":
                continue
            trial = {**values, field: getattr(default, field)}
            try:
                Config.from_dict(trial).validate()
            except ConfigError:
                continue
            if field in names:
                return names[field]
            if field in self.data.get("vary", {}):
                return f"vary.{field}"
            if field in self.data.get("overrides", {}):
                return f"overrides.{field}"
            return f"{origin}.overrides.{field}"
        return "the combination of settings"

    def check_size(self, axes: dict[str, list[Any]], structures: dict[str, dict[str, Any]],
                   vary: dict[str, list[Any]]) -> None:
        """Count the grid before expanding it, so a typo fails at once instead of filling memory."""
        budgets = sum(len(settings.get("sparsity", axes["sparsity"])) for settings in structures.values())
        runs = len(axes["seeds"]) * len(axes["games"]) * len(axes["weights"]) * budgets * math.prod(map(len, vary.values()))
        if runs > MAX_RUNS:
            raise ConfigError(f"{self.path}: the study makes {runs:,} runs, more than the limit of {MAX_RUNS:,}")

    def check_distinct(self, configs: list[Config]) -> None:
        """Two grid points in one run folder would race; they arise from varying execution settings."""
        seen: dict[str, Config] = {}
        for config in configs:
            name = run_name(config)
            if name in seen:
                first = seen[name].to_dict()
                differ = [k for k, v in config.to_dict().items() if first[k] != v]
                what = (f" (they differ only in {', '.join(differ)}, which change results only at float rounding)"
                        if differ else "")
                raise ConfigError(f"{self.path}: two grid points are the same run {name}{what}")
            seen[name] = config


def _product(vary: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(vary, combination)) for combination in itertools.product(*vary.values())]


def _alternatives(kind: Any) -> tuple[Any, ...]:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return tuple(k for k in typing.get_args(kind) if k is not type(None))
    return (kind,)


def _type_name(kind: Any) -> str:
    base = typing.get_origin(kind) or kind
    if base is tuple:
        return f"a list of {len(typing.get_args(kind))} numbers"
    return {dict: "a table"}.get(base, getattr(base, "__name__", str(base)))


def _describe(values: dict[str, Any]) -> str:
    return f"{values['game']} {values['structure']} {values['weights']} seed {values['seed']}"
