"""Fit the cost model `--backend auto` decides by (layers.BACKEND_COSTS) to layer timings on this CPU.

    python benchmarks/fit_auto_backend.py [--repeats 30] [--rounds 3]

Times a masked layer's work per DQN step on both backends (minisparse.bench.layer_benchmark)
over a grid of the shapes minisparse builds (structured layers of 256-1024 units over the games'
own frames, 4-10 channels) and densities, trained and frozen. Then fits, per
backend and mode, microseconds = a * size + b * (units + inputs) + c, where size is the weight
entries (dense) or the present connections (sparse), by non-negative least squares on relative
error; complete layers (density 1) on the sparse backend run other products, so they get their own
line ("complete"). Prints the constants to paste into layers.py and, per shape, the measured crossover
density next to the one the model predicts.
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import nnls

from minisparse.bench import crossover, layer_benchmark
from minisparse.layers import crossover_density, predicted_us

SHAPES = (("breakout", 1024), ("freeway", 1024), ("seaquest", 1024), ("space_invaders", 512), ("breakout", 256))
DENSITIES = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)


def fit(rows: list[dict], line: str) -> tuple[float, float, float]:
    """The cost line of `line`: dense (every row), sparse (rows of layers that are not complete) or complete."""
    if line != "dense":
        rows = [r for r in rows if (r["connections"] == r["units"] * r["inputs"]) == (line == "complete")]
    size = [r["units"] * r["inputs"] if line == "dense" else r["connections"] for r in rows]
    features = np.array([[s, r["units"] + r["inputs"], 1.0] for s, r in zip(size, rows)])
    measured = np.array([r["dense_us" if line == "dense" else "sparse_us"] for r in rows])
    coefficients, _ = nnls(features / measured[:, None], np.ones(len(rows)))
    return tuple(float(f"{c:.3g}") for c in coefficients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    costs, measured = {}, {}
    for trains in (True, False):
        rows = []
        for game, units in SHAPES:
            results = layer_benchmark(DENSITIES, game, units, trains, repeats=options.repeats, rounds=options.rounds)
            measured[trains, units, results[0]["inputs"]] = crossover(results), results[-1]["speedup"]  # density 1
            rows += results
        costs[trains] = {line: fit(rows, line) for line in ("dense", "sparse", "complete")}
    print("BACKEND_COSTS = {")
    for trains, mode in ((True, "trained"), (False, "frozen")):
        print(f"    {trains}: {costs[trains]},  # {mode}".replace("'", '"'))
    print("}\n")
    print("crossover density (measured, model); a complete layer: sparse's speed-up (measured, model)")
    print(f"{'units':>6} {'inputs':>7} {'mode':>8} {'measured':>9} {'model':>6} {'complete':>9} {'model':>6}")
    for (trains, units, inputs), (density, complete) in measured.items():
        model = crossover_density(units, inputs, trains, costs)
        line = costs[trains]
        predicted = (predicted_us(line["dense"], units * inputs, units, inputs)
                     / predicted_us(line["complete"], units * inputs, units, inputs))
        print(f"{units:>6} {inputs:>7} {'trained' if trains else 'frozen':>8} {density!s:>9} {model:>6.3f} "
              f"{complete:>9.2f} {predicted:>6.2f}")


if __name__ == "__main__":
    main()
