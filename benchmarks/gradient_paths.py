"""Time the sparse backend's two weight-gradient paths on real replay batches (where layers.DOT_PRODUCTS_BELOW lies).

    python benchmarks/gradient_paths.py [--game breakout] [--batches 50] [--rounds 7]

Fills a replay by random play (`minisparse bench`'s workload), then times `Connections.present_gradient` over
the same batches with each path forced: a dot product per connection, or one matrix product of the active
inputs with every unit gathered at the connections. It does so for the masks of random, local and predictive
at the budget and for random masks over a grid of densities, alternating the two paths round by round, and
prints each path's median microseconds per batch, the dot products' share of the matrix product's time, and
the density the rule reads (`Connections.active_density`, the mean over the batches).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from minisparse import layers
from minisparse.bench import FINAL_EPSILON, minisparse_workload
from minisparse.config import Config
from minisparse.layers import Connections, Inputs

DENSITIES = (0.03, 0.06, 0.09, 0.12, 0.15, 0.2, 0.3)
PATHS = {"dots": float("inf"), "matrix": 0.0}  # DOT_PRODUCTS_BELOW forcing each path


def masks(game: str, prefill: int, count: int) -> tuple[dict[str, torch.Tensor], list[Inputs]]:
    """The structured masks of random, local and predictive on `game` (once learning began: predictive fits its
    mask to the frames gathered before), and `count` real batches' inputs (32 states each)."""
    found = {}
    for structure in ("random", "local", "predictive"):
        config = Config(game=game, structure=structure, weights="learned", backend="sparse", replay_start=prefill,
                        epsilon_frames=0, epsilon_end=FINAL_EPSILON, device="cpu", threads=1).validate()
        workload = minisparse_workload(config, prefill)
        workload.frames(1)
        found[structure] = workload.agent.q.structured.mask.clone()
    rng = np.random.default_rng(0)
    sampled = (workload.agent.replay.sample_tensors(32, rng, torch.device("cpu")).states[:32] for _ in range(count))
    return found, [Inputs.of(states.reshape(32, -1).contiguous()) for states in sampled]


def time_paths(connections: Connections, batches: list[Inputs], rounds: int) -> dict[str, float]:
    """Median microseconds per batch of each path, rounds alternating between them."""
    units = connections.shape[0]
    generator = torch.Generator().manual_seed(0)
    grads_out = [torch.randn(units, 32, generator=generator) for _ in batches]
    out = torch.empty(connections.flat.shape[0])
    times = {name: [] for name in PATHS}
    for _ in range(rounds):
        for name, threshold in PATHS.items():
            layers.DOT_PRODUCTS_BELOW = threshold
            start = time.perf_counter()
            for inputs, grad_out in zip(batches, grads_out):
                connections.present_gradient(grad_out, inputs, out)
            times[name].append((time.perf_counter() - start) / len(batches) * 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="breakout")
    parser.add_argument("--prefill", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    torch.set_num_threads(1)
    found, batches = masks(options.game, options.prefill, options.batches)
    generator = torch.Generator().manual_seed(1)
    units, inputs = next(iter(found.values())).shape
    cases = {**{f"{name} (budget)": mask for name, mask in found.items()},
             **{f"random {d:.2f}": torch.rand(units, inputs, generator=generator) < d for d in DENSITIES}}
    print(f"{options.game}: {units} x {inputs}, {len(batches)} batches of 32, median of {options.rounds} rounds")
    print(f"{'mask':>18} {'active density':>15} {'dots us':>8} {'matrix us':>10} {'dots / matrix':>14}")
    for name, mask in cases.items():
        connections = Connections.of(mask)
        median = time_paths(connections, batches, options.rounds)
        density = statistics.mean(connections.active_density(inputs) for inputs in batches)
        print(f"{name:>18} {density:>15.3f} {median['dots']:>8.1f} "
              f"{median['matrix']:>10.1f} {median['dots'] / median['matrix']:>14.2f}")


if __name__ == "__main__":
    main()
