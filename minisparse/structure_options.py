"""Structure names and options, checked before torch is imported.

The built-in structures live one per file, named as the structure, so their names come from the
file names and their options (dataclass fields with defaults) from the files' syntax trees: a typo
on the command line costs a tenth of a second instead of torch's import. tests/
test_structures_contract.py checks both against the imported classes. Option typing (text from
the command line, values from study files) is here too, so the CLI, study files and the registry
convert options one way.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import math
import pkgutil
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from minisparse.config import ConfigError

STRUCTURE_ENTRY_POINTS = "minisparse.structures"  # where installed plug-in packages register structures


def builtin_structures() -> list[str]:
    """The built-in structures' names, found without importing them (each lives in a file of its name)."""
    spec = importlib.util.find_spec("minisparse.structures")
    return sorted(module.name for module in pkgutil.iter_modules(spec.submodule_search_locations))


def check_structure(name: str, options: dict[str, Any], plugins: str | None) -> None:
    """Refuse an unknown structure, or a built-in one's unknown or mistyped option, before torch is
    imported (a typo costs a tenth of a second, not seconds). Plug-ins (a folder or installed packages)
    are known only once imported, so with any of them this leaves the checks to the registry."""
    if plugins is not None or entry_points(group=STRUCTURE_ENTRY_POINTS):
        return
    if name not in builtin_structures():
        raise ConfigError(f"unknown structure {name!r}; valid choices: {', '.join(builtin_structures())}")
    coerce_options(name, builtin_structure_options(name), options)


def builtin_structure_options(name: str) -> dict[str, Any]:
    """A built-in structure's options and defaults, read from its file (and the built-in classes it
    extends) without importing it; tests check them against the imported dataclass."""
    classes = _builtin_classes()
    registered = next(cls for cls in classes.values() if cls["registers"] == name)
    options: dict[str, Any] = {}
    for cls in _lineage(registered, classes):
        options.update(cls["fields"])
    return options


@functools.cache
def _builtin_classes() -> dict[str, dict[str, Any]]:
    """Every class in the built-in structure files: its bases, the name it registers, its fields."""
    folder = Path(importlib.util.find_spec("minisparse.structures").submodule_search_locations[0])
    classes = {}
    for file in sorted(folder.glob("*.py")):
        for node in ast.parse(file.read_text()).body:
            if isinstance(node, ast.ClassDef):
                registers = [d.args[0].value for d in node.decorator_list if isinstance(d, ast.Call)
                             and getattr(d.func, "id", None) == "register" and d.args]
                fields = {item.target.id: ast.literal_eval(item.value) for item in node.body
                          if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                          and item.value is not None and "ClassVar" not in ast.unparse(item.annotation)}
                classes[node.name] = {"bases": [b.id for b in node.bases if isinstance(b, ast.Name)],
                                      "registers": registers[0] if registers else None, "fields": fields}
    return classes


def _lineage(cls: dict[str, Any], classes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """`cls` and the built-in classes it extends, base first (so a subclass's defaults win)."""
    bases = [classes[base] for base in cls["bases"] if base in classes]
    return [ancestor for base in bases for ancestor in _lineage(base, classes)] + [cls]


_KINDS = {bool: "true or false", int: "a whole number", float: "a number"}


def coerce_options(structure: str, defaults: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """`options` checked against a structure's options (`defaults`: name -> default) and converted to
    the types of their defaults: text from the command line is parsed, and a study file's TOML value
    must already be of that type (an int widens to a float); non-finite numbers are refused."""
    for key in options:
        if key not in defaults:
            valid = ", ".join(sorted(defaults)) or "none"
            raise ConfigError(f"unknown option {key!r} for structure {structure}; valid options: {valid}")
    typed = {key: _coerce(structure, key, value, defaults[key]) for key, value in options.items()}
    for key, value in typed.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"option {key}={value} of structure {structure} must be a finite number")
    return typed


def _coerce(structure: str, key: str, value: Any, default: Any) -> Any:
    if default is None or isinstance(default, str):
        return value
    kind = type(default)
    if isinstance(value, str):
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return kind(value)
        except ValueError:
            raise ConfigError(f"option {key}={value!r} of structure {structure} must be {_KINDS[kind]}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise ConfigError(f"option {key}={value!r} of structure {structure} must be {_KINDS.get(kind, kind.__name__)}")
    return value
