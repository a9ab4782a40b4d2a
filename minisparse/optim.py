"""Optimizers: the protocol's centered RMSprop and Adam (for dynamic sparse training), fast on a CPU.

torch's optimizers make several passes over every tensor (for RMSprop: square average,
gradient average, variance, root, ...); for the hidden layer's 131k weights that was a fifth of
a DQN update. Here each step is one compiled pass per parameter that reads and writes each
entry once with torch's float32 arithmetic, so results agree with torch's to rounding, and the
state is torch's: checkpoints load in either optimizer.

A parameter registered in `compact` (a sparse-backend layer's weight, or its scores) is stepped over
its present connections only: its callable returns their flat indices and their values, a contiguous
tensor that the layer keeps (MaskedLinear.present_values) and writes into the dense parameter when
that is read (MaskedLinear.sync). Its gradient is dense or a sparse tensor of exactly those entries in
that order (`Connections.compact`), and its state is kept in that order too: stepping contiguous
vectors instead of dense ones (or scattered entries of them) was most of the sparse backend's
optimizer cost. The engine registers one only where the other entries do not matter: absent
connections with zero gradient, weight and state, which a dense step leaves as they are (so the
results are a dense step's), or scores of connections that never return. When the connections
change, their state follows them (kept ones keep it, new ones start at zero).
`state_dict` holds every state as torch's dense tensors, so checkpoints load on either backend.

The callable may also say at which runs of entries (the connections of inputs that were off in the
whole batch) the gradient is zero. RMSprop does not move a weight whose gradient is zero, only its
moments decay, so it defers that decay until the run is next stepped or the state is read, and then
repeats it step by step: the same arithmetic, on a run held in L1 instead of streamed (`_ColumnStamps`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numba
import numpy as np
import torch

from minisparse.config import Config

# Where a compact gradient is zero: (starts, position), runs [starts[i], starts[i + 1]) with position[i] < 0.
Columns = tuple[np.ndarray, np.ndarray]


def make_optimizer(config: Config, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    on_cpu = all(p.device.type == "cpu" for p in parameters)
    if config.optimizer == "adam":
        if on_cpu:
            return Adam(parameters, lr=config.lr, betas=config.adam_betas, eps=config.adam_eps)
        return torch.optim.Adam(parameters, lr=config.lr, betas=config.adam_betas, eps=config.adam_eps, fused=True)
    if on_cpu:
        return RMSprop(parameters, lr=config.lr, alpha=config.rmsprop_alpha, eps=config.rmsprop_eps,
                       centered=config.rmsprop_centered)
    return torch.optim.RMSprop(parameters, lr=config.lr, alpha=config.rmsprop_alpha, eps=config.rmsprop_eps,
                               centered=config.rmsprop_centered, foreach=True)


class CompactOptimizer(torch.optim.Optimizer):
    """One compiled pass per parameter, and compact steps for registered parameters (see the module).
    A subclass names its state tensors (`moments`) and runs its pass (`update`)."""

    def __init__(self, params: list[torch.nn.Parameter], defaults: dict):
        super().__init__(params, defaults)
        self.compact: dict[torch.Tensor, Callable[[], tuple[torch.Tensor, torch.Tensor, Columns | None]]] = {}
        self._layout: dict[torch.Tensor, torch.Tensor] = {}   # compact state's flat indices, per parameter
        self._views: dict[torch.Tensor, tuple] = {}
        self._step_views: dict[torch.Tensor, tuple] = {}

    def moments(self, group: dict) -> tuple[str, ...]:
        raise NotImplementedError

    def update(self, p: torch.Tensor, value: np.ndarray, grad: np.ndarray, state: tuple[np.ndarray, ...],
               group: dict, zero: Columns | None) -> None:
        """Step `value` by `grad`; `state` holds numpy views of the step count and the moments, `zero` the runs
        of entries where the gradient is zero (a compact step's), or None."""
        raise NotImplementedError

    def catch_up(self, p: torch.Tensor) -> None:
        """Bring p's state up to date, where `update` deferred some of it."""

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    value, grad, zero = self._arrays(p)
                    self.update(p, value, grad, self._state_views(p, group), group, zero)

    # torch wraps an optimizer's step in a profiler range and its step hooks, unless marked as done: that
    # cost 30 us a step (2% of a frame), and nothing here registers step hooks.
    step.hooked = True

    def _arrays(self, p: torch.Tensor) -> tuple[np.ndarray, np.ndarray, Columns | None]:
        """numpy views of what p's step reads and writes: the values stepped (p, or a compact step's present
        values) and the gradient (in the same order), and where a compact gradient is zero. The views are made
        again only when a tensor behind them, or its storage, is replaced (the fast update hands most gradients
        in the same tensors every time, and a compact layer its values until its connections change): making
        them costs microseconds per tensor, and a frame steps a handful."""
        zero = None
        if p in self.compact:
            index, value, zero = self.compact[p]()
            self._arrange(p, index)
            if not p.grad.is_sparse:  # a dense gradient (the engine's connectivity-update steps), gathered afresh
                return _flat(value), _flat(p.grad.reshape(-1).index_select(0, index)), None
            sources, storage = (p.grad, value), (value.data_ptr(), p.grad._values().data_ptr())
        else:
            self._arrange(p, None)
            sources, storage = (p.grad,), (p.data_ptr(), p.grad.data_ptr())
        made = self._step_views.get(p)
        if made is None or made[1] != storage or len(made[0]) != len(sources) \
                or any(kept is not now for kept, now in zip(made[0], sources)):
            made = self._step_views[p] = (sources, storage, _step_views(p, *sources))
        return (*made[2], zero)

    def state_dict(self) -> dict:
        """torch's state: compact state is saved as the dense tensors it stands for."""
        for p in list(self._layout):
            if p in self.compact:
                self._arrange(p, self.compact[p]()[0])  # connections that changed since the last step
            self.catch_up(p)
        saved = super().state_dict()
        order = [p for group in self.param_groups for p in group["params"]]
        for number, state in list(saved["state"].items()):
            index = self._layout.get(order[number])
            if index is not None:
                saved["state"][number] = {name: value if name == "step" else _scatter(value, index, order[number])
                                          for name, value in state.items()}
        return saved

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._layout, self._views = {}, {}

    def _arrange(self, p: torch.Tensor, index: torch.Tensor | None) -> None:
        """Lay p's state out at flat `index` (None: densely), moving it from where it is now."""
        current = self._layout.get(p)
        if current is index:
            return
        self.catch_up(p)
        state = self.state[p]
        for name, value in state.items():
            if name != "step":
                dense = value if current is None else _scatter(value, current, p)
                state[name] = dense if index is None else dense.reshape(-1).index_select(0, index)
        if index is None:
            del self._layout[p]
        else:
            self._layout[p] = index
        self._views.pop(p, None)

    def _state_views(self, p: torch.Tensor, group: dict) -> tuple[np.ndarray, ...]:
        """numpy views of p's step count and moments, made when its state is laid out."""
        if p not in self._views:
            state = self.state[p]
            if not state:
                index = self._layout.get(p)
                state["step"] = torch.tensor(0.0)
                for name in self.moments(group):
                    state[name] = torch.zeros(p.shape if index is None else index.shape)
            self._views[p] = (_flat(state["step"]), *(_flat(state[name]) for name in self.moments(group)))
        return self._views[p]


class RMSprop(CompactOptimizer):
    """torch.optim.RMSprop (no momentum, no weight decay) on CPU tensors."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float, alpha: float, eps: float, centered: bool):
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "centered": centered})
        self._stamps: dict[torch.Tensor, _ColumnStamps] = {}

    def moments(self, group: dict) -> tuple[str, ...]:
        return ("square_avg", "grad_avg") if group["centered"] else ("square_avg",)

    def update(self, p, value, grad, state, group, zero) -> None:
        count, square_avg, *grad_avg = state
        grad_avg = grad_avg[0] if grad_avg else None
        if zero is None:
            self.catch_up(p)
            _rmsprop_step(value, grad, square_avg, grad_avg, count, group["lr"], group["alpha"], group["eps"])
            return
        stamps = self._stamps.get(p)
        if stamps is None or stamps.starts is not zero[0]:
            self.catch_up(p)
            stamps = self._stamps[p] = _ColumnStamps(zero[0], np.full(len(zero[0]) - 1, int(count[0]), np.int64),
                                                     state, group["alpha"])
        _rmsprop_columns(value, grad, square_avg, grad_avg, count, stamps.steps, zero[0], zero[1],
                         group["lr"], group["alpha"], group["eps"])

    def catch_up(self, p: torch.Tensor) -> None:
        stamps = self._stamps.pop(p, None)
        if stamps is not None:
            count, square_avg, *grad_avg = stamps.state
            _rmsprop_catch_up(square_avg, grad_avg[0] if grad_avg else None, count, stamps.steps, stamps.starts,
                              stamps.alpha)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._stamps = {}


class Adam(CompactOptimizer):
    """torch.optim.Adam (no weight decay, no amsgrad) on CPU tensors."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float, betas: tuple[float, float], eps: float):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    def moments(self, group: dict) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def update(self, p, value, grad, state, group, zero) -> None:
        """Every entry, every step: a zero gradient still moves the weight by its first moment."""
        count, exp_avg, exp_avg_sq = state
        count[0] += 1
        beta1, beta2 = group["betas"]
        step_size = group["lr"] / (1 - beta1 ** float(count[0]))
        correction2_root = (1 - beta2 ** float(count[0])) ** 0.5
        _adam_step(value, grad, exp_avg, exp_avg_sq, 1 - beta1, beta2, 1 - beta2, step_size, correction2_root,
                   group["eps"])


@dataclass(frozen=True)
class _ColumnStamps:
    """The step each run of a compact parameter's RMSprop moments is at (`steps`), runs starting at `starts`
    (a layer's columns); `state` and `alpha` are what bringing them up to date reads."""

    starts: np.ndarray
    steps: np.ndarray
    state: tuple[np.ndarray, ...]
    alpha: float


def _flat(tensor: torch.Tensor) -> np.ndarray:
    """A flat numpy view sharing the tensor's memory (parameters and their state are contiguous)."""
    return tensor.detach().view(-1).numpy()


def _step_views(p: torch.Tensor, grad: torch.Tensor, value: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What `_arrays` returns: a dense step's views of p and its gradient, or a compact step's of the values
    and the sparse gradient's values (in the same order)."""
    if value is None:
        return _flat(p), _flat(grad)
    return _flat(value), _flat(grad._values())


def _scatter(values: torch.Tensor, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A dense tensor shaped like `like`, holding `values` at flat `index` and zeros elsewhere."""
    return values.new_zeros(like.numel()).index_copy_(0, index, values).view_as(like)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rmsprop_step(value, grad, square_avg, grad_avg, count, lr, alpha, eps):  # pragma: no cover - compiled
    """torch's RMSprop arithmetic for every entry; grad_avg None: not centered.
    `count` is the step counter torch keeps (a one-element view), advanced here."""
    count[0] += 1
    _rmsprop_entries(value, grad, square_avg, grad_avg, np.float32(lr), np.float32(alpha), np.float32(eps))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rmsprop_entries(value, grad, square_avg, grad_avg, lr, alpha, eps):  # pragma: no cover - compiled
    """One step of every entry of these (float32) arrays.

    The variance is lifted to at least (eps * 2^-30)^2 before the root: the root of anything
    smaller is under half an ulp of eps, so sqrt(.) + eps is unchanged, while a variance that
    rounding made negative gives eps instead of NaN. error_model="numpy" lets the division vectorize
    (and loops over whole arrays, whose indices cannot be negative, let it vectorize at all).
    """
    floor = np.float32((eps * 2.0 ** -30) ** 2)
    for i in range(value.size):
        g = grad[i]
        s = square_avg[i] * alpha + (np.float32(1.0) - alpha) * g * g
        square_avg[i] = s
        if grad_avg is not None:
            a = grad_avg[i] + (np.float32(1.0) - alpha) * (g - grad_avg[i])
            grad_avg[i] = a
            s = s - a * a
        value[i] = value[i] - lr * (g / (np.sqrt(max(s, floor)) + eps))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rmsprop_columns(value, grad, square_avg, grad_avg, count, steps, starts, position, lr, alpha,
                     eps):  # pragma: no cover - compiled
    """An RMSprop step of the runs [starts[i], starts[i + 1]) with position[i] >= 0; the others have a zero
    gradient: their weights stay, and their moments' decay waits (`steps[i]`: the step their moments are at)."""
    lr, alpha, eps = np.float32(lr), np.float32(alpha), np.float32(eps)
    count[0] += 1
    now = np.int64(count[0])
    for i in range(position.size):
        if position[i] < 0:
            continue
        start, end = starts[i], starts[i + 1]
        centered = None if grad_avg is None else grad_avg[start:end]
        _decay(square_avg[start:end], centered, now - 1 - steps[i], alpha)
        steps[i] = now
        _rmsprop_entries(value[start:end], grad[start:end], square_avg[start:end], centered, lr, alpha, eps)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rmsprop_catch_up(square_avg, grad_avg, count, steps, starts, alpha):  # pragma: no cover - compiled
    """Bring every run's deferred moments up to step `count`."""
    alpha, now = np.float32(alpha), np.int64(count[0])
    for i in range(steps.size):
        start, end = starts[i], starts[i + 1]
        _decay(square_avg[start:end], None if grad_avg is None else grad_avg[start:end], now - steps[i], alpha)
        steps[i] = now


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _decay(square_avg, grad_avg, steps, alpha):  # pragma: no cover - compiled
    """`steps` RMSprop steps with a zero gradient, exactly as `_rmsprop_entries` makes them: s * alpha + 0 is
    s * alpha, and a + (1 - alpha) * (0 - a) is a - (1 - alpha) * a, both to the bit (signed zeros included).
    Moments that reached zero stay there (subnormals are flushed), so once a run is all zero the rest is
    skipped; the gradient average is then +0 however it got there, as one more step would leave it."""
    rate = np.float32(1.0) - alpha
    for k in range(steps):
        if k % 64 == 0 and k > 0 and not (square_avg.any() or (grad_avg is not None and grad_avg.any())):
            if grad_avg is not None:
                grad_avg[:] = 0
            return
        for i in range(square_avg.size):
            square_avg[i] = square_avg[i] * alpha
        if grad_avg is not None:
            for i in range(grad_avg.size):
                grad_avg[i] = grad_avg[i] - rate * grad_avg[i]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _adam_step(value, grad, exp_avg, exp_avg_sq, one_minus_beta1, beta2, one_minus_beta2, step_size,
               correction2_root, eps):  # pragma: no cover - compiled
    """torch's Adam arithmetic for every entry: 1 - beta and the bias corrections (folded into `step_size`
    and `correction2_root`) are computed in double, as torch does, and used as float32."""
    one_minus_beta1, beta2, one_minus_beta2 = np.float32(one_minus_beta1), np.float32(beta2), np.float32(one_minus_beta2)
    eps, step_size, correction2_root = np.float32(eps), np.float32(step_size), np.float32(correction2_root)
    for i in range(value.size):
        g = grad[i]
        m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i])
        v = exp_avg_sq[i] * beta2 + one_minus_beta2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        value[i] = value[i] - step_size * (m / (np.sqrt(v) / correction2_root + eps))
