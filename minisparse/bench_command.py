"""`minisparse bench`: the command line of the benchmark harness in minisparse.bench.

Kept apart so that `minisparse --help` does not import torch.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from minisparse.config import BACKENDS, CHANNELS, GAMES, OPTIMIZERS, WEIGHT_MODES, ConfigError
from minisparse.outputs import check_output_file


def _floats(text: str) -> tuple[float | None, ...]:
    values = []
    for item in text.split(","):
        item = item.strip()
        if item in ("", "default", "none"):
            values.append(None)
            continue
        try:
            value = float(item)
        except ValueError:
            raise ConfigError(f"sparsity {item!r} is not a number (or 'default')") from None
        if not 0.0 <= value < 1.0:  # also refuses nan
            raise ConfigError(f"sparsity {item!r} is outside [0, 1)")
        values.append(value)
    return tuple(values)


def _densities(text: str) -> tuple[float, ...]:
    values = []
    for item in text.split(","):
        try:
            values.append(float(item))
        except ValueError:
            raise ConfigError(f"layer density {item.strip()!r} is not a number") from None
        if not 0 < values[-1] <= 1:
            raise ConfigError(f"layer density {values[-1]} is outside (0, 1]")
    return tuple(values)


def _names(text: str, valid: tuple[str, ...] | None, what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ConfigError(f"no {what} in {text!r}; give one or more of: {', '.join(valid or ())}")
    for name in names:
        if valid is not None and name not in valid:
            raise ConfigError(f"unknown {what} {name!r}; valid choices: {', '.join(valid)}")
    return names


@click.command()
@click.option("--game", default="breakout", show_default=True, metavar="|".join(GAMES), help="MinAtar game.")
@click.option("--structures", default="conv", show_default=True, help="Comma-separated structures.")
@click.option("--weights", default="learned,fixed", show_default=True, help="Comma-separated weight modes.")
@click.option("--sparsities", default="default", show_default=True,
              help="Comma-separated sparsities of masked structures ('default' = the conv's budget).")
@click.option("--backends", default="dense", show_default=True, help="Comma-separated backends: dense, sparse, auto.")
@click.option("--optimizer", default="rmsprop", show_default=True, metavar="|".join(OPTIMIZERS),
              help="Optimizer of every minisparse row (the dynamic study trains with adam).")
@click.option("--prefill", default=5_000, show_default=True, type=click.IntRange(min=32),
              help="Random frames stored before timing (the replay start).")
@click.option("--warmup", default=5_000, show_default=True, type=click.IntRange(min=0),
              help="Training frames before timing, so that what is timed is training's steady state: optimizer "
                   "moments of connections without gradient take about 1,500 updates to decay to zero.")
@click.option("--frames", default=1_000, show_default=True, type=click.IntRange(min=1),
              help="Frames of the training loop per timed round.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1),
              help="Timed rounds per configuration; the best counts.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Include the plain PyTorch DQN (benchmarks/baseline_dqn.py) as the reference row.")
@click.option("--minatar-script", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="MinAtar's examples/dqn.py (from a clone of its repository): time it as the first row, "
                   "so every ratio is to MinAtar's own script.")
@click.option("--layers", "layer_densities", default=None, metavar="D1,D2,...",
              help="Also time the game's structured layer alone, dense vs sparse, at these densities "
                   "(per weight mode: a trained layer's update, a frozen one's features of a frame).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the results as JSON here.")
def bench(game: str, structures: str, weights: str, sparsities: str, backends: str, optimizer: str,
          prefill: int, warmup: int, frames: int, rounds: int, seed: int, baseline: bool, minatar_script: Path | None,
          layer_densities: str | None, json_path: Path | None) -> None:
    """Measure training frames/s of structures x weight modes x sparsities x backends on one CPU thread.

    \b
    Examples:
      minisparse bench --structures conv,random --sparsities default,0.95 --backends dense,sparse
      minisparse bench --minatar-script MinAtar/examples/dqn.py
      minisparse bench --structures set,rigl --sparsities 0.9 --backends auto --optimizer adam
    """
    import numpy as np
    import torch

    from minisparse.bench import (BASELINE_FILE, crossover, format_layer_table, format_table, layer_benchmark,
                                  run_benchmark)
    from minisparse.layers import crossover_density
    from minisparse.structure import available

    if game not in GAMES:
        raise ConfigError(f"unknown game {game!r}; valid choices: {', '.join(GAMES)}")
    chosen = _names(structures, tuple(available()), "structure")
    modes = _names(weights, WEIGHT_MODES, "weight mode")
    chosen_backends = _names(backends, BACKENDS, "backend")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; valid choices: {', '.join(OPTIMIZERS)}")
    densities = _densities(layer_densities) if layer_densities else ()
    if json_path is not None:
        check_output_file(json_path)
    if baseline and not BASELINE_FILE.exists():
        raise ConfigError(f"the baseline needs a source checkout ({BASELINE_FILE} is missing); use --no-baseline")
    rows = run_benchmark(game, chosen, modes, _floats(sparsities), chosen_backends, prefill, frames,
                         warmup=warmup, rounds=rounds, seed=seed, baseline=baseline, minatar_script=minatar_script,
                         optimizer=optimizer, echo=lambda m: click.echo(m, err=True))
    click.echo(f"\n{game}, {optimizer}, batch 32, prefill {prefill}, warmup {warmup}, {frames} frames x {rounds} rounds, "
               f"1 thread, frames/s in CPU time (best round); x base = ratio to the first row\n")
    click.echo(format_table(rows))
    result: dict[str, Any] = {"game": game, "optimizer": optimizer, "prefill": prefill, "warmup": warmup,
                              "frames": frames, "rounds": rounds, "torch": torch.__version__, "numpy": np.__version__,
                              "rows": [asdict(r) for r in rows]}
    if densities:
        inputs = CHANNELS[game] * 100
        result["layers"] = {}
        for mode in modes:
            trains = mode == "learned"
            layers = layer_benchmark(densities, game=game, trains=trains)
            measured, model = crossover(layers), crossover_density(1024, inputs, trains)
            click.echo(f"\nstructured layer alone, {mode} weights ({'update' if trains else 'forward'}; "
                       f"1024 x {inputs}, batch 32, CPU us), masked dense vs sparse\n")
            click.echo(format_layer_table(layers))
            found = f"{measured:g}" if measured is not None else f"none (sparse faster up to {max(densities):g})"
            click.echo(f"measured crossover density: {found}; auto's model: {model:.3f}")
            result["layers"][mode] = {"steps": layers, "crossover_density": measured, "auto_crossover": model}
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2))
        click.echo(f"\nwrote {json_path}")
