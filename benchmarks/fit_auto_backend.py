"""Fit the cost model `--backend auto` decides by (layers.BACKEND_COSTS) to layer timings on this CPU.

    python benchmarks/fit_auto_backend.py [--repeats 30] [--rounds 3]

Times a masked layer's work per DQN step on both backends (minisparse.bench.layer_benchmark)
over a grid of the shapes minisparse builds (structured layers of 256-1024 units over 4-10
channels, a sparse 128-unit hidden layer) and densities, trained and frozen. Then fits, per
backend and mode, microseconds = a * size + b * (units + inputs) + c, where size is the weight
entries (dense) or the present connections (sparse), by non-negative least squares on relative
error. Prints the constants to paste into layers.py and, per shape, the measured crossover
density next to the one the model predicts.
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import nnls

from minisparse.bench import crossover, layer_benchmark
from minisparse.layers import crossover_density

SHAPES = ((1024, 400), (1024, 700), (1024, 1000), (512, 600), (256, 400), (128, 1024))
DENSITIES = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45)


def fit(rows: list[dict], backend: str) -> tuple[float, float, float]:
    size = [r["units"] * r["inputs"] if backend == "dense" else r["connections"] for r in rows]
    features = np.array([[s, r["units"] + r["inputs"], 1.0] for s, r in zip(size, rows)])
    measured = np.array([r[f"{backend}_us"] for r in rows])
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
        for units, inputs in SHAPES:
            results = layer_benchmark(DENSITIES, units, inputs, trains, repeats=options.repeats, rounds=options.rounds)
            measured[trains, units, inputs] = crossover(results)
            rows += results
        costs[trains] = {backend: fit(rows, backend) for backend in ("dense", "sparse")}
    print("BACKEND_COSTS = {")
    for trains, mode in ((True, "trained"), (False, "frozen")):
        print(f"    {trains}: {costs[trains]},  # {mode}".replace("'", '"'))
    print("}\n")
    print(f"{'units':>6} {'inputs':>7} {'mode':>8} {'measured':>9} {'model':>6}")
    for (trains, units, inputs), density in measured.items():
        model = crossover_density(units, inputs, trains, costs)
        print(f"{units:>6} {inputs:>7} {'trained' if trains else 'frozen':>8} {density!s:>9} {model:>6.3f}")


if __name__ == "__main__":
    main()
