"""`minisparse bench`: training speed of the real loop, side by side with a plain PyTorch DQN
and, given its file, MinAtar's own reference script.

Every configuration runs the same workload in this one process, one after another: a fresh
agent, `--prefill` frames of uniform-random play into its replay, then `--frames` frames of
the real act + store + update loop (one update per frame, epsilon at its final 0.1, the regime
of almost all of a 5M-frame run). Rounds repeat the timed block of every configuration in turn
and keep each one's best, so a burst of load on a shared machine hurts no row more than another.

frames/s is measured in CPU time of this process (the rate on a dedicated core; one torch
thread) and in wall time. Peak memory is the peak resident set (VmHWM) while the
configuration is built, prefilled and first timed, minus the resident set before it, with the
kernel's peak counter reset in between (/proc/self/clear_refs): memory the configuration
itself made resident, torch's allocations and the replay's touched pages included.
"""
from __future__ import annotations

import gc
import importlib.util
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from minisparse.config import Config, ConfigError

BASELINE_FILE = Path(__file__).resolve().parent.parent / "benchmarks" / "baseline_dqn.py"
FINAL_EPSILON = 0.1
BASELINE_ROW = "baseline (plain PyTorch)"
MINATAR_SCRIPT_ROW = "MinAtar examples/dqn.py"
MINATAR_SCRIPT_NAMES = ("Environment", "QNetwork", "replay_buffer", "get_state", "world_dynamics", "train", "device",
                        "BATCH_SIZE", "REPLAY_BUFFER_SIZE", "TARGET_NETWORK_UPDATE_FREQ", "STEP_SIZE",
                        "SQUARED_GRAD_MOMENTUM", "MIN_SQUARED_GRAD")


@dataclass
class Row:
    name: str
    structure: str
    weights: str
    sparsity: float | None
    backend: str
    frames_per_s: float = 0.0          # CPU time, best round
    wall_frames_per_s: float = 0.0     # wall time, best round
    update_ms: float = 0.0             # CPU ms per frame of the timed loop
    ratio: float | None = None         # frames_per_s / the baseline row's
    peak_rss_mb: float | None = None
    replay_mb: float | None = None     # the replay's arrays at full capacity, once learning started
    rounds: list[float] = field(default_factory=list)


class Workload:
    """One configuration: `frames(n)` plays n frames of its training loop (of `agent`, if a minisparse one).
    Denormal numbers are flushed while it runs if its training loop flushes them (minisparse's does,
    the plain PyTorch scripts do not)."""

    def __init__(self, frames: Callable[[int], None], agent: Any = None):
        self.agent = agent
        self._frames, self._flushes_denormals = frames, agent is not None and agent.denormals_flushed

    @property
    def replay_mb(self) -> float | None:
        """A minisparse agent's replay arrays, the features it keeps once learning starts included."""
        return self.agent.replay.nbytes / 2**20 if self.agent is not None else None

    def frames(self, n: int) -> None:
        torch.set_flush_denormal(self._flushes_denormals)
        self._frames(n)


def minisparse_workload(config: Config, prefill: int) -> Workload:
    """An Agent past its replay start with epsilon at its final value; frames run its training steps."""
    from minisparse.dqn import Agent

    agent = Agent(config)
    observation = agent.game.observation()

    def frames(n: int) -> None:
        nonlocal observation
        for _ in range(n):
            observation = agent.step(observation)[0]

    frames(prefill)
    return Workload(frames, agent)


def timed_frames(agent: Any, observation: np.ndarray, frames: int) -> tuple[np.ndarray, float]:
    """Train a minisparse Agent `frames` frames from `observation`: the observation to go on from, and
    frames per CPU second (the A/B scripts under benchmarks/ time one agent in alternating rounds)."""
    start = time.process_time()
    for _ in range(frames):
        observation = agent.step(observation)[0]
    return observation, frames / (time.process_time() - start)


def baseline_workload(game: str, seed: int, prefill: int) -> Workload:
    """The plain DQN of benchmarks/baseline_dqn.py (needs a source checkout)."""
    agent = _load(BASELINE_FILE, "minisparse_baseline_dqn").BaselineDQN(game, seed)
    for _ in range(prefill):
        agent.frame(1.0, learn=False)
    return Workload(lambda n: [agent.frame(FINAL_EPSILON, learn=True) for _ in range(n)])


def load_minatar_script(path: Path) -> Any:
    """MinAtar's examples/dqn.py as a module, checked for the names the benchmark drives."""
    try:
        script = _load(path, "minatar_reference_dqn")
    except Exception as error:
        raise ConfigError(f"{path} does not load as a Python script: {error}") from None
    missing = [name for name in MINATAR_SCRIPT_NAMES if not hasattr(script, name)]
    if missing:
        raise ConfigError(f"{path} is not MinAtar's examples/dqn.py: it lacks {', '.join(missing)}")
    return script


def minatar_script_workload(script: Any, game: str, seed: int, prefill: int) -> Workload:
    """MinAtar's reference DQN (`load_minatar_script`) run a frame at a time.

    Each frame is the body of the script's `dqn` loop calling the script's own functions and
    objects (`world_dynamics`, `replay_buffer`, `train`, its network), so what is timed is the
    script's code; the optimizer is its centered RMSprop without momentum (the protocol's; one
    older version of the script added momentum). Learning starts after `prefill` random
    frames, and epsilon sits at its final 0.1 from then on, as in every other row (the script
    anneals it from 1 over its first 100k learning frames, when most frames skip the network).
    """
    script.FIRST_N_FRAMES = 0
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    env = script.Environment(game)
    env.seed(seed)
    channels, actions = env.state_shape()[2], env.num_actions()
    policy = script.QNetwork(channels, actions).to(script.device)
    target = script.QNetwork(channels, actions).to(script.device)
    target.load_state_dict(policy.state_dict())
    replay = script.replay_buffer(script.REPLAY_BUFFER_SIZE)
    optimizer = torch.optim.RMSprop(policy.parameters(), lr=script.STEP_SIZE, alpha=script.SQUARED_GRAD_MOMENTUM,
                                    centered=True, eps=script.MIN_SQUARED_GRAD)
    env.reset()
    t = updates = 0
    state = script.get_state(env.state())

    def frames(n: int) -> None:
        nonlocal t, updates, state
        for _ in range(n):
            next_state, action, reward, terminated = script.world_dynamics(t, prefill, actions, state, env, policy)
            replay.add(state, next_state, action, reward, terminated)
            if t > prefill:
                updates += 1
                script.train(replay.sample(script.BATCH_SIZE), policy, target, optimizer)
                if updates % script.TARGET_NETWORK_UPDATE_FREQ == 0:
                    target.load_state_dict(policy.state_dict())
            reward.item()  # the script adds each reward to the episode's return: a host sync per frame
            t += 1
            if terminated:
                env.reset()
                next_state = script.get_state(env.state())
            state = next_state

    frames(prefill + 1)
    return Workload(frames)


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def configurations(game: str, structures: list[str], weights: list[str], sparsities: list[float | None],
                   backends: list[str], seed: int, prefill: int, optimizer: str = "rmsprop"
                   ) -> Iterator[tuple[Row, Config]]:
    """The grid; a structure that ignores the budget (conv, dense) runs at one sparsity, and one that builds
    its own kind of layer (conv's shared kernel) on one backend, as it has no masked layer."""
    from minisparse.structure import Structure, structure_class

    for structure in structures:
        kind = structure_class(structure)
        masked = kind.build is Structure.build
        for weight in weights:
            for sparsity in (sparsities if kind.uses_budget else [None]):
                for backend in (backends if masked else ["dense"]):
                    config = Config(game=game, structure=structure, weights=weight, sparsity=sparsity,
                                    backend=backend, optimizer=optimizer, seed=seed, replay_start=prefill,
                                    epsilon_frames=0, epsilon_end=FINAL_EPSILON, device="cpu", threads=1).validate()
                    name = f"{structure} {weight}" + (f" s={sparsity:g}" if sparsity is not None else "")
                    name += f" {backend}" if masked else ""
                    yield Row(name, structure, weight, sparsity, backend), config


def run_benchmark(game: str = "breakout", structures: tuple[str, ...] = ("conv",),
                  weights: tuple[str, ...] = ("learned", "fixed"), sparsities: tuple[float | None, ...] = (None,),
                  backends: tuple[str, ...] = ("dense",), prefill: int = 5_000, frames: int = 1_000,
                  warmup: int = 5_000, rounds: int = 3, seed: int = 0, baseline: bool = True,
                  minatar_script: Path | None = None, optimizer: str = "rmsprop",
                  echo: Callable[[str], None] = print) -> list[Row]:
    """Build every configuration (measuring its memory), then time `rounds` rounds of `frames` frames each.

    Rows: MinAtar's own script when given, the plain baseline unless turned off, then the grid;
    ratios are to the first row.
    """
    torch.set_num_threads(1)
    grid: list[tuple[Row, Callable[[int], Workload]]] = []
    if minatar_script is not None:
        script = load_minatar_script(minatar_script)
        grid.append((Row(MINATAR_SCRIPT_ROW, "conv", "learned", None, "-"),
                     lambda fill: minatar_script_workload(script, game, seed, fill)))
    if baseline:
        grid.append((Row(BASELINE_ROW, "conv", "learned", None, "-"),
                     lambda fill: baseline_workload(game, seed, fill)))
    for row, config in configurations(game, list(structures), list(weights), list(sparsities), list(backends),
                                      seed, prefill, optimizer):
        grid.append((row, lambda fill, config=config: minisparse_workload(config, fill)))
    _warm_up(grid, game, min(prefill, 300))
    workloads: list[Workload] = []
    for row, build in grid:
        echo(f"preparing {row.name}")
        with _peak_resident() as peak:
            workload = build(prefill)
            workload.frames(warmup)
            _time(workload, frames)
        row.peak_rss_mb, row.replay_mb = peak(), workload.replay_mb
        workloads.append(workload)
    for round_ in range(rounds):
        for (row, _), workload in zip(grid, workloads):
            cpu, wall = _time(workload, frames)
            row.rounds.append(frames / cpu)
            row.frames_per_s = max(row.frames_per_s, frames / cpu)
            row.wall_frames_per_s = max(row.wall_frames_per_s, frames / wall)
        echo(f"round {round_ + 1}/{rounds} done")
    reference = grid[0][0].frames_per_s
    for row, _ in grid:
        row.update_ms = 1e3 / row.frames_per_s
        row.ratio = row.frames_per_s / reference
    return [row for row, _ in grid]


def _warm_up(grid: list[tuple[Row, Callable[[int], Workload]]], game: str, prefill: int) -> None:
    """Run each kind of workload briefly first, so torch's one-time initialisation (kernels,
    allocator pools, MKL buffers) is not counted in the first configuration's memory."""
    seen = set()
    for row, build in grid:
        kind = row.name if row.backend == "-" else row.backend
        if kind in seen:
            continue
        seen.add(kind)
        if row.backend == "-":
            workload = build(prefill)
        else:
            config = Config(game=game, structure=row.structure, weights=row.weights, sparsity=row.sparsity,
                            backend=row.backend, replay_start=prefill, replay_capacity=prefill + 100, device="cpu",
                            threads=1)
            workload = minisparse_workload(config, prefill)
        workload.frames(50)


def _time(workload: Workload, frames: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    workload.frames(frames)
    return time.process_time() - cpu, time.perf_counter() - wall


class _peak_resident:
    """Context manager giving the peak resident MB reached inside it above the resident MB before it."""

    def __enter__(self) -> Callable[[], float | None]:
        gc.collect()
        self.supported = _reset_peak()
        self.before = _status("VmRSS")
        return lambda: max(0, _status("VmHWM") - self.before) / 1024 if self.supported else None

    def __exit__(self, *exc: object) -> None:
        return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def layer_benchmark(densities: tuple[float, ...], game: str = "breakout", units: int = 1024, trains: bool = True,
                    batch: int = 32, repeats: int = 100, rounds: int = 5) -> list[dict[str, Any]]:
    """The structured layer's own work per DQN step, masked dense vs sparse backend, across densities.

    A trained layer's step as the fast TD update runs it: forward of the next batch through
    the target's copy, forward of the batch, the weight gradient, the engine's mask hooks and a
    centered RMSprop step. A frozen layer's (fixed weights) is its features of one frame: the replay
    keeps them for every stored frame, and acting reads the same ones. Input is the game's own
    frames from uniform-random play, fresh ones each step: the sparse backend skips the inputs that
    are off, so random frames of the right density would overstate its work (and a repeated batch
    makes centered RMSprop's variance 0 - 0 and its sqrt slow NaN arithmetic). The two backends'
    timed blocks alternate, best block counts, so a change in the machine's speed hits both alike.
    """
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    pool = _frame_batches(game, 64, 2 * batch, np.random.default_rng(0))
    inputs = pool.shape[-1]
    results = []
    for density in densities:
        mask = torch.rand(units, inputs, generator=generator) < density
        steps = {backend: _layer_step(mask, backend, pool, batch, trains) for backend in ("dense", "sparse")}
        best = {backend: float("inf") for backend in steps}
        for _ in range(rounds):
            for backend, step in steps.items():
                start = time.process_time()
                for _ in range(repeats):
                    step()
                best[backend] = min(best[backend], (time.process_time() - start) / repeats)
        results.append({"units": units, "inputs": inputs, "trains": trains, "density": density,
                        "connections": int(mask.sum()), "dense_us": best["dense"] * 1e6,
                        "sparse_us": best["sparse"] * 1e6, "speedup": best["dense"] / best["sparse"]})
    return results


def _frame_batches(game: str, batches: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """(batches, size, inputs) float frames drawn from 20,000 frames of uniform-random play."""
    from minisparse.env import NUM_ACTIONS, Game

    play = Game(game, seed=0, sticky_action_prob=0.1, difficulty_ramping=True)
    frames = []
    for _ in range(20_000):
        frames.append(play.observation().reshape(-1))
        if play.act(int(rng.integers(NUM_ACTIONS)))[1]:
            play.reset()
    frames = np.asarray(frames, dtype=np.float32)
    return torch.from_numpy(frames[rng.integers(len(frames), size=(batches, size))])


def _layer_step(mask: torch.Tensor, backend: str, pool: torch.Tensor, batch: int, trains: bool
                ) -> Callable[[], None]:
    """One step of a fresh masked layer on `backend` as the fast TD update runs it (td.py), with the
    sparsity engine's hooks around a trained one (a static random structure), warmed up.

    A trained layer's loss is half the squared outputs summed over units, averaged over the batch.
    """
    from minisparse.layers import MaskedLinear
    from minisparse.optim import RMSprop
    from minisparse.sparsity import SparsityEngine
    from minisparse.structure import LayerSpec, make_structure

    network = nn.Module()
    network.structured = layer = MaskedLinear(mask)
    layer.reset_parameters(torch.Generator().manual_seed(1))
    units, inputs = mask.shape
    spec = LayerSpec("structured", inputs, units, int(mask.sum()) // units, inputs // 100, not trains, 10**9, 0)
    engine = SparsityEngine(network, make_structure("random", {}), {"structured": spec}, seed=0, backend=backend)
    batches = iter(range(10**9))

    if not trains:
        frames = pool.reshape(-1, inputs).numpy()
        return _warmed_up(lambda: layer.frame_features(frames[next(batches) % len(frames)], 0.0))
    target_network = nn.Module()
    target_network.structured = target = MaskedLinear(mask).requires_grad_(False)
    target.load_state_dict(layer.state_dict())
    optimizer = RMSprop(list(layer.parameters()), lr=2.5e-4, alpha=0.95, eps=0.01, centered=True)
    engine.attach(optimizer, target_network)

    @torch.no_grad()
    def update() -> None:
        x = pool[next(batches) % len(pool)]
        engine.before_backward()
        target.feature_major(x[batch:])
        out, inputs = layer.feature_major(x[:batch])
        layer.feature_major_gradients(out.div_(batch), inputs)
        engine.before_step()
        optimizer.step()
        engine.after_step()

    return _warmed_up(update)


def _warmed_up(step: Callable[[], None], steps: int = 20) -> Callable[[], None]:
    for _ in range(steps):
        step()
    return step


def crossover(results: list[dict[str, Any]]) -> float | None:
    """The lowest measured density at which the masked dense update is at least as fast as sparse, among layers
    that are not complete (a complete one has its own products on the sparse backend)."""
    slower = [r["density"] for r in results if r["speedup"] <= 1.0 and r["connections"] < r["units"] * r["inputs"]]
    return min(slower) if slower else None


def format_table(rows: list[Row]) -> str:
    header = (f"{'configuration':<34} {'frames/s':>9} {'wall f/s':>9} {'x base':>7} {'ms/frame':>9} "
              f"{'peak MB':>8} {'replay MB':>9}")
    lines = [header, "-" * len(header)]
    for r in rows:
        peak = f"{r.peak_rss_mb:.1f}" if r.peak_rss_mb is not None else "-"
        replay = f"{r.replay_mb:.1f}" if r.replay_mb is not None else "-"
        lines.append(f"{r.name:<34} {r.frames_per_s:>9.0f} {r.wall_frames_per_s:>9.0f} {r.ratio:>7.2f} "
                     f"{r.update_ms:>9.3f} {peak:>8} {replay:>9}")
    return "\n".join(lines)


def format_layer_table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'density':>8} {'dense us':>9} {'sparse us':>10} {'speedup':>8}"]
    for r in results:
        lines.append(f"{r['density']:>8.3f} {r['dense_us']:>9.0f} {r['sparse_us']:>10.0f} {r['speedup']:>8.2f}")
    return "\n".join(lines)
