"""DQN on a MinAtar game, as in MinAtar's reference agent, with a pluggable structured layer.

`Agent` holds everything that evolves during a run (and so everything a checkpoint holds);
`train` is the loop. The loop never asks which structure it runs: the sparsity engine's
hooks around the optimizer step are the only place connectivity is handled.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from minisparse import rundir
from minisparse.board import Board
from minisparse.config import Config, ConfigError
from minisparse.diagnostics import COLUMNS as DIAGNOSTIC_COLUMNS
from minisparse.diagnostics import layer_diagnostics, probe_batch
from minisparse.env import NUM_ACTIONS, Game
from minisparse.evaluate import evaluate
from minisparse.network import build_network, layer_specs
from minisparse.optim import make_optimizer
from minisparse.outputs import check_output_root
from minisparse.progress import Progress
from minisparse.replay import Replay
from minisparse.sparsity import SparsityEngine
from minisparse.stops import Interrupted, OutOfSpace
from minisparse.structure import make_structure
from minisparse.td import AutogradTD, autograd_reason, make_td


@dataclass
class Counters:
    frame: int = 0
    updates: int = 0
    episodes: int = 0
    episode_return: float = 0.0
    episode_length: int = 0
    seconds: float = 0.0           # wall time of earlier sessions of this run
    loss_sum: float = 0.0          # since the last train.csv row
    q_sum: float = 0.0
    logged_updates: int = 0
    snapshots: int = 0
    snapshot_topology: int = 0
    episode_rows: list = field(default_factory=list)
    train_rows: list = field(default_factory=list)
    eval_rows: list = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available; valid choices here: auto, cpu")
    return torch.device(name)


def epsilon(config: Config, frame: int) -> float:
    """Uniform-random actions until learning starts, then linear decay to epsilon_end."""
    if frame < config.replay_start:
        return 1.0
    if config.epsilon_frames == 0:
        return config.epsilon_end
    progress = min(1.0, (frame - config.replay_start) / config.epsilon_frames)
    return config.epsilon_start + (config.epsilon_end - config.epsilon_start) * progress


def check_resources(config: Config) -> None:
    """Refuse, before allocating anything, a run this machine cannot hold: more threads than CPUs
    (libgomp fails with a bare line), or more memory than is available (a traceback mid-build)."""
    cpus = os.cpu_count() or 1
    if config.threads > cpus:
        raise ConfigError(f"threads {config.threads} is more than this machine's {cpus} CPUs")
    packed = (config.input_size + 7) // 8
    replay = (config.replay_capacity + 1) * packed + config.replay_capacity * 24
    if config.weights == "fixed":  # a frozen first layer's features per slot (Replay.keep_features; an upper bound)
        replay += (config.replay_capacity + 1) * config.hidden_units * 4
    structured = config.hidden_units * config.input_size
    weights = structured + config.hidden_units + config.dense_units * (config.hidden_units + 1)
    # online, target, gradient, two optimizer states and a score per weight, 4 bytes each; a mask byte. On the
    # sparse backend (an upper bound: not every layer runs there) each connection of the structured layer also
    # has, in the online and the target network, index structures (layers.Connections: five int64 and a float),
    # the mask they were built from and present values; and a compact gradient and two scratch rows (complete layers).
    networks = weights * (6 * 4 + 1) + structured * (2 * (5 * 8 + 4 + 1 + 4) + 4 + 2 * 4)
    available = _available_memory()
    if available is not None and replay + networks > available:
        raise ConfigError(f"this run needs about {(replay + networks) / 2**30:.1f} GiB of memory (replay "
                          f"{replay / 2**30:.1f} GiB, networks {networks / 2**30:.1f} GiB) but the machine has "
                          f"{available / 2**30:.1f} GiB available; lower --replay-capacity, --hidden-units "
                          f"or --dense-units")


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Agent:
    """Networks, optimizer, replay, game and random streams of one run, built from its config."""

    def __init__(self, config: Config):
        self.config = config.validate()
        check_resources(config)
        self.device = resolve_device(config.device)
        torch.set_num_threads(config.threads)
        # Values below 2^-126 (optimizer moments of connections whose gradient stays zero decay through
        # them) take a slow microcode path on x86: flushed to zero, a random/learned agent trained 1.2-1.4x
        # faster (benchmarks/denormals.py). Anything that small is far below eps and rounding.
        self.denormals_flushed = torch.set_flush_denormal(True)
        self.structure = make_structure(config.structure, config.structure_options, config.plugins)
        specs = layer_specs(config)
        self.q = build_network(config, self.structure, torch.Generator().manual_seed(config.seed)).to(self.device)
        self.engine = SparsityEngine(self.q, self.structure, specs, config.seed, config.mask_optimizer_state,
                                     config.backend)
        self.target = copy.deepcopy(self.q).requires_grad_(False)
        self.trainable = self.engine.trainable_parameters()
        self.optimizer = make_optimizer(config, self.trainable)
        self.engine.attach(self.optimizer, self.target)
        self.td = make_td(self.q, self.target, config.gamma, self.engine.plans)
        self.game = Game(config.game, config.seed, config.sticky_action_prob, config.difficulty_ramping)
        self.replay = Replay(config.replay_capacity, (self.game.channels, 10, 10))
        self.rng = np.random.default_rng(config.seed)
        self.counters = Counters()
        self.probe: torch.Tensor | None = None  # the diagnostics' fixed states, drawn when learning starts
        self._statistics = torch.zeros(2, dtype=torch.float64, device=self.device)

    def step(self, observation: np.ndarray, on_learning_start: Callable[[], None] = lambda: None
             ) -> tuple[np.ndarray, float, bool]:
        """One frame: act, store the transition, and update once past the replay start.

        Returns the observation to act on next (after a terminal, the new episode's first),
        the reward and whether the episode ended. `on_learning_start` runs once, when learning
        has begun and before the first update.
        """
        action = self.act(observation)
        reward, done = self.game.act(action)
        next_observation = self.game.observation()
        self.replay.add(observation, action, reward, next_observation, done)
        self.counters.frame += 1
        if self.counters.frame > self.config.replay_start:
            if self.counters.updates == 0:
                self.begin_learning()
                on_learning_start()
            self.update()
        if done:
            self.game.reset()
            next_observation = self.game.observation()
        return next_observation, reward, done

    def act(self, observation: np.ndarray) -> int:
        if self.rng.random() < epsilon(self.config, self.counters.frame):
            return int(self.rng.integers(NUM_ACTIONS))
        return self.td.greedy(observation)

    def update(self) -> None:
        """One TD update on a uniform batch; loss and mean Q accumulate on the device (no host sync)."""
        batch = self.replay.sample_tensors(self.config.batch_size, self.rng, self.device)
        self.engine.before_backward()
        for parameter in self.trainable:
            parameter.grad = None
        loss, mean_q = self.td(batch)
        self.engine.before_step()
        self.optimizer.step()
        if self.engine.after_step() and self.replay.features is None:  # connectivity settled: a layer may have frozen
            self._keep_frozen_features()
        self.counters.updates += 1
        if self.counters.updates % self.config.target_period == 0:
            self.target.load_state_dict(self.q.state_dict())
        self._statistics += torch.stack((loss, mean_q))

    def fold_statistics(self) -> None:
        """Move the device-side sums of loss and mean Q into the counters."""
        loss_sum, q_sum = self._statistics.tolist()
        self.counters.loss_sum += loss_sum
        self.counters.q_sum += q_sum
        self._statistics.zero_()

    def begin_learning(self) -> None:
        observations = self.replay.all_observations()
        self.engine.begin_learning(observations)
        self.target.load_state_dict(self.q.state_dict())
        self.probe = probe_batch(observations, self.config.seed)
        self._keep_frozen_features()

    def _keep_frozen_features(self) -> None:
        """Where the structured layer no longer changes, the replay keeps its features of every frame."""
        encode = self.td.frozen_features()
        if encode is not None:
            self.replay.keep_features(encode, self.q.structured.out_features)

    def state_dict(self) -> dict:
        counters = asdict(self.counters)
        return {"network": self.q.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "replay": self.replay.state_dict(),
                "engine": self.engine.state_dict(),
                "probe": self.probe if self.probe is not None else torch.zeros(0, dtype=torch.bool),
                "meta": json.dumps({"run": self.identity(), "counters": counters,
                                    "rng": self.rng.bit_generator.state, "game": self.game.get_state()})}

    def execution(self) -> dict[str, Any]:
        """How this run computes (config.json keeps it): the TD update's path, the device, what the replay
        keeps, and each wired layer's plan as training starts (auto decides the backend again when a mask
        changes)."""
        reason = self.autograd_reason()
        keeps = reason is None and self.engine.plans["structured"].frozen  # FastTD.frozen_features
        return {"update": f"autograd ({reason})" if reason else "hand-derived", "device": str(self.device),
                "replay": "frames, and the structured layer's features once learning starts" if keeps else "frames",
                "denormals": "flushed to zero" if self.denormals_flushed else "kept (this CPU cannot flush them)",
                "layers": {name: asdict(plan) for name, plan in self.engine.plans.items()}}

    def autograd_reason(self) -> str | None:
        """Why the TD update takes autograd (None: it is derived by hand)."""
        return autograd_reason(self.q)

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed in a run directory: the config's fingerprint and seed."""
        return {"fingerprint": self.config.fingerprint(), "seed": self.config.seed}

    def load_state_dict(self, state: dict) -> None:
        # A fresh update, so that acting does not share features kept for the state replaced.
        self.td = make_td(self.q, self.target, self.config.gamma, self.engine.plans)
        self.q.load_state_dict(state["network"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay.load_state_dict(state["replay"])
        self.engine.load_state_dict(state["engine"])
        probe = state.get("probe")  # checkpoints before diagnostics have none: drawn again from the replay
        if probe is not None and len(probe):
            self.probe = probe
        elif len(self.replay):
            self.probe = probe_batch(self.replay.all_observations(), self.config.seed)
        meta = json.loads(state["meta"])
        self.counters = Counters(**meta["counters"])
        self.rng.bit_generator.state = meta["rng"]
        self.game.set_state(meta["game"])
        if self.counters.updates:
            self._keep_frozen_features()


def start(config: Config, out: Path) -> Path:
    """Create a run directory for `config` under `out` and train to the end."""
    agent, path = create(config, out)
    train(agent, path)
    return path


def create(config: Config, out: Path) -> tuple[Agent, Path]:
    """A fresh agent for `config` and its new run directory under `out` (nothing on disk if `config` fails)."""
    check_output_root(out)
    agent = Agent(config)
    try:
        return agent, rundir.create(config, out, agent.q.capacity(), asdict(agent.structure), agent.execution())
    except rundir.DiskFull:
        raise OutOfSpace(f"no space left on the device for a new run under {out}; nothing was written; "
                         f"free space and run the same command again") from None


def resume(path: Path) -> Path:
    """Continue the run in `path` from its checkpoint (or from scratch if it never wrote one)."""
    config = rundir.read_config(path)
    if rundir.is_complete(path):
        return path
    structure = make_structure(config.structure, config.structure_options, config.plugins)
    rundir.check_identity(path, config, asdict(structure))
    state = rundir.load_checkpoint(path)
    agent = Agent(config)
    if state is not None:
        written_by = _checkpoint_identity(state)
        if written_by != agent.identity():
            raise ConfigError(f"cannot resume {str(path)!r}: {rundir.CHECKPOINT} belongs to another run "
                              f"({written_by or 'no run identity'}; this run is {agent.identity()})")
        try:
            agent.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            reason = str(error).splitlines()[0]
            raise ConfigError(f"cannot resume {str(path)!r}: checkpoint does not match its config ({reason})") from None
    rundir.remove_stale_temporaries(path)
    train(agent, path)
    return path


def _checkpoint_identity(state: dict) -> dict[str, Any] | None:
    try:
        return json.loads(state["meta"]).get("run")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def train(agent: Agent, path: Path) -> None:
    """Train from where `agent` is to the end, writing the run directory `path`."""
    config, c = agent.config, agent.counters
    if isinstance(agent.td, AutogradTD):
        print(f"{path.name}: the TD update takes autograd, slower than the hand-derived one: "
              f"{agent.autograd_reason()}", file=sys.stderr, flush=True)
    progress = Progress(config.frames, c.frame, path.name, config.log_every)
    for row in c.episode_rows[-20:]:
        progress.episode(row[2])
    try:
        _train_to_end(agent, path, progress)
    except rundir.DiskFull as error:
        raise OutOfSpace(f"no space left on the device while writing {error.path.name} at frame {c.frame:,}; "
                         f"the run is intact as of its last checkpoint; free space, then continue with: "
                         f"minisparse run --resume {path}") from None
    finally:
        progress.close()


def _train_to_end(agent: Agent, path: Path, progress: Progress) -> None:
    config, c = agent.config, agent.counters
    board = Board(path, c.frame, (len(c.episode_rows), len(c.train_rows), len(c.eval_rows))) \
        if config.tensorboard else None
    clock = _Clock(c.seconds)
    log_time, log_frame = time.monotonic(), c.frame
    observation = agent.game.observation()

    def write_start_masks() -> None:
        rundir.write_masks(path / "masks" / "start.npz", agent.engine.masks())

    with _stop_on_signals() as stop:
        while c.frame < config.frames:
            observation, reward, done = agent.step(observation, write_start_masks)
            c.episode_return += reward
            c.episode_length += 1
            if done:
                c.episodes += 1
                c.episode_rows.append([c.frame, c.episodes, c.episode_return, c.episode_length,
                                       epsilon(config, c.frame), round(clock.seconds(), 3)])
                progress.episode(c.episode_return)
                c.episode_return, c.episode_length = 0.0, 0
            progress.advance(c.frame, epsilon(config, c.frame))
            if config.eval_interval and c.frame % config.eval_interval == 0:
                c.eval_rows += [[c.frame, *row] for row in evaluate(config, agent.td.greedy)]
            if c.frame % config.log_every == 0 or c.frame == config.frames:
                now = time.monotonic()
                _log(agent, path, (c.frame - log_frame) / max(now - log_time, 1e-9), board)
                log_time, log_frame = now, c.frame
            if c.frame % config.checkpoint_every == 0 or stop.signum is not None:
                c.seconds = clock.seconds()
                _checkpoint(agent, path, board)
                if stop.signum is not None:
                    raise Interrupted(stop.signum, path)
    _finish(agent, path, clock.seconds(), board)


class _Clock:
    """Wall time of a run, summed over the sessions that resumed it."""

    def __init__(self, earlier: float):
        self.earlier, self.started = earlier, time.monotonic()

    def seconds(self) -> float:
        return self.earlier + time.monotonic() - self.started


def _checkpoint(agent: Agent, path: Path, board: Board | None) -> None:
    agent.fold_statistics()
    _write_tables(agent, path, board)
    rundir.save_torch(path / rundir.CHECKPOINT, agent.state_dict())


def _log(agent: Agent, path: Path, frames_per_s: float, board: Board | None) -> None:
    """A train.csv row (once learning started), a bounded mask snapshot, and fresh CSV files."""
    c, engine = agent.counters, agent.engine
    agent.fold_statistics()
    updates = c.updates - c.logged_updates
    if updates > 0:
        changed = engine.take_changed()
        density = engine.density()
        row = [c.frame, c.updates, c.loss_sum / updates, c.q_sum / updates, round(frames_per_s, 1)]
        measured = layer_diagnostics(agent.q, agent.probe, list(engine.specs), engine.survival)
        for name in engine.specs:
            row += [density[name], changed[name], *(measured[name][column] for column in DIAGNOSTIC_COLUMNS)]
        c.train_rows.append(row)
        c.loss_sum = c.q_sum = 0.0
        c.logged_updates = c.updates
        spacing = max(1, agent.config.frames // rundir.MAX_SNAPSHOTS)
        if (engine.topology_changes > c.snapshot_topology and c.snapshots < rundir.MAX_SNAPSHOTS
                and c.frame >= c.snapshots * spacing and c.frame < agent.config.frames):
            rundir.write_masks(path / "masks" / f"frame_{c.frame}.npz", engine.masks())
            c.snapshots += 1
            c.snapshot_topology = engine.topology_changes
    _write_tables(agent, path, board)


def _write_tables(agent: Agent, path: Path, board: Board | None) -> None:
    c = agent.counters
    columns = ["frame", "updates", "loss", "mean_q", "frames_per_s"]
    for name in agent.engine.specs:
        columns += [f"density_{name}", f"changed_{name}", *(f"{column}_{name}" for column in DIAGNOSTIC_COLUMNS)]
    rundir.write_csv(path / rundir.EPISODES, rundir.EPISODE_COLUMNS, c.episode_rows)
    rundir.write_csv(path / rundir.TRAIN, columns, c.train_rows)
    if agent.config.eval_interval:
        rundir.write_csv(path / rundir.EVAL, rundir.EVAL_COLUMNS, c.eval_rows)
    if board is not None:
        board.write(c.episode_rows, columns, c.train_rows, c.eval_rows)


def _finish(agent: Agent, path: Path, seconds: float, board: Board | None) -> None:
    c = agent.counters
    _write_tables(agent, path, board)
    if board is not None:
        board.close()
    rundir.write_masks(path / "masks" / "end.npz", agent.engine.masks())
    rundir.save_torch(path / rundir.MODEL, agent.q.state_dict())
    rundir.write_json(path / rundir.COMPLETE, {"frames": c.frame, "episodes": c.episodes,
                                               "seconds": round(seconds, 3),
                                               "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                               "capacity": agent.q.capacity()})
    (path / rundir.CHECKPOINT).unlink(missing_ok=True)


class _Stop:
    signum: int | None = None


@contextmanager
def _stop_on_signals() -> Iterator[_Stop]:
    """Turn SIGINT/SIGTERM into a flag the loop checks once per frame, so it stops at a clean point."""
    stop = _Stop()

    def request(signum, frame):
        stop.signum = signum

    previous = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
