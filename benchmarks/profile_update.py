"""Where a training frame's time goes: wall time per torch operation and per stage, in the real loop.

    python benchmarks/profile_update.py --structure conv --weights learned --frames 2000 [--operations]

Runs `minisparse bench`'s workload (a prefilled agent, one update per frame, epsilon 0.1) and
times its stages: acting, the game, replay sampling, the TD loss and gradients, the optimizer
step. With --operations it also times every torch call (a TorchFunctionMode, so nested calls
are not counted twice); that adds a few microseconds to each call, so read those shares as a
ranking. torch.profiler's per-operator times proved unreliable at this scale.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

from minisparse.bench import FINAL_EPSILON, minisparse_workload
from minisparse.config import Config, ConfigError


class OperationTimes(TorchFunctionMode):
    """Wall time of each torch function called directly from Python, keyed by name and caller line."""

    def __init__(self, times: Counter):
        super().__init__()
        self.times = times

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        caller = sys._getframe(1)
        start = time.perf_counter()
        result = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", str(func))
        self.times[f"{name} ({caller.f_code.co_filename.rsplit('/', 1)[-1]}:{caller.f_lineno})"] += \
            time.perf_counter() - start
        return result


def timed(times: Counter, name: str, function: Callable) -> Callable:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            times[name] += time.perf_counter() - start
    return wrapper


class TimedTD:
    """The agent's TD object with its update timed (acting is timed through agent.act)."""

    def __init__(self, td: Any, update: Callable):
        self.greedy, self.update = td.greedy, update

    def __call__(self, batch: tuple) -> Any:
        return self.update(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structure", default="conv")
    parser.add_argument("--weights", default="learned")
    parser.add_argument("--backend", default="auto", help="as `minisparse run --backend` (default auto, as runs)")
    parser.add_argument("--sparsity", type=float, default=None)
    parser.add_argument("--game", default="breakout")
    parser.add_argument("--prefill", type=int, default=5000)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--operations", action="store_true",
                        help="also time every torch call (adds a few us to each, so stages read slower)")
    options = parser.parse_args()

    torch.set_num_threads(1)
    try:
        config = Config(game=options.game, structure=options.structure, weights=options.weights,
                        backend=options.backend, sparsity=options.sparsity, replay_start=options.prefill,
                        epsilon_frames=0, epsilon_end=FINAL_EPSILON, device="cpu", threads=1).validate()
    except ConfigError as error:
        parser.error(str(error))
    workload = minisparse_workload(config, options.prefill)
    agent = workload.agent
    workload.frames(500)

    stages, operations = Counter(), Counter()
    agent.act = timed(stages, "stage: act (greedy action on 90% of frames)", agent.act)
    agent.game.act = timed(stages, "stage: game step", agent.game.act)
    agent.replay.sample_tensors = timed(stages, "stage: replay sample", agent.replay.sample_tensors)
    agent.optimizer.step = timed(stages, "stage: optimizer step (RMSprop, compiled)", agent.optimizer.step)
    agent.td = TimedTD(agent.td, timed(stages, "stage: TD loss and gradients", agent.td))
    start = time.perf_counter()
    if options.operations:
        with OperationTimes(operations):
            workload.frames(options.frames)
    else:
        workload.frames(options.frames)
    frame = (time.perf_counter() - start) / options.frames

    print(f"{options.structure} {options.weights} ({options.backend}) on {options.game}: "
          f"{frame * 1e6:.0f} us per frame ({1 / frame:.0f} frames/s under the timers)\n")
    print(f"{'us/frame':>9} {'share':>6}  stage")
    for name, seconds in stages.most_common():
        print(f"{seconds / options.frames * 1e6:>9.1f} {seconds / options.frames / frame:>6.1%}  {name}")
    if operations:
        print(f"\n{'us/frame':>9} {'share':>6}  torch operation (caller)")
    for name, seconds in operations.most_common(options.top):
        print(f"{seconds / options.frames * 1e6:>9.1f} {seconds / options.frames / frame:>6.1%}  {name}")


if __name__ == "__main__":
    main()
