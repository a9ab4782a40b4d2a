"""Optimizers: the protocol's centered RMSprop, fast on a CPU, and Adam for dynamic sparse training."""
from __future__ import annotations

from typing import Callable

import numba
import numpy as np
import torch

from minisparse.config import Config


def make_optimizer(config: Config, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, betas=config.adam_betas, eps=config.adam_eps, fused=True)
    if any(p.device.type != "cpu" for p in parameters):
        return torch.optim.RMSprop(parameters, lr=config.lr, alpha=config.rmsprop_alpha, eps=config.rmsprop_eps,
                                   centered=config.rmsprop_centered, foreach=True)
    return RMSprop(parameters, lr=config.lr, alpha=config.rmsprop_alpha, eps=config.rmsprop_eps,
                   centered=config.rmsprop_centered)


class RMSprop(torch.optim.Optimizer):
    """torch.optim.RMSprop (no momentum, no weight decay) on CPU tensors, one compiled pass per parameter.

    torch's step makes about eight passes over every tensor (square average, gradient average,
    variance, root, ...); for the hidden layer's 131k weights that was a fifth of a DQN update.
    The compiled loop reads and writes each entry once with the same float32 arithmetic, so
    results agree with torch's to rounding.

    A parameter registered in `compact` (a sparse-backend layer's weight) is stepped over its present
    connections only: its callable returns their flat indices and their values, a contiguous tensor
    that the layer multiplies by (MaskedLinear.present_weights); each value the step moves is also
    written to its place in the parameter, so the dense weight stays current.
    Its gradient is dense or a sparse tensor of exactly those entries in that order
    (`Connections.compact`), and its state is kept in that order too: stepping contiguous vectors
    instead of scattered entries of dense ones was most of the sparse backend's optimizer cost.
    The engine registers one only while absent connections have zero gradient, weight and state,
    which a dense step leaves as they are, so the results are a dense step's. When the connections
    change, their state follows them (kept ones keep it, new ones start at zero). `state_dict` holds
    every state as torch's dense tensors, so checkpoints load in either optimizer and on either backend.
    """

    def __init__(self, params: list[torch.nn.Parameter], lr: float, alpha: float, eps: float, centered: bool):
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "centered": centered})
        self.compact: dict[torch.Tensor, Callable[[], tuple[torch.Tensor, torch.Tensor]]] = {}
        self._layout: dict[torch.Tensor, torch.Tensor] = {}   # compact state's flat indices, per parameter
        self._views: dict[torch.Tensor, tuple] = {}

    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad, value, weight, index = p.grad, p.detach(), None, None
                if p in self.compact:
                    index, value = self.compact[p]()
                    self._arrange(p, index)
                    grad = grad._values() if grad.is_sparse else grad.reshape(-1).index_select(0, index)
                    weight, index = _flat(p), index.numpy()
                else:
                    self._arrange(p, None)
                square_avg, grad_avg, count = self._state_views(p, group)
                _rmsprop_step(_flat(value), _flat(grad), square_avg, grad_avg, count,
                              group["lr"], group["alpha"], group["eps"], weight, index)

    def state_dict(self) -> dict:
        """torch's RMSprop state: compact state is saved as the dense tensors it stands for."""
        for p in list(self._layout):
            if p in self.compact:
                self._arrange(p, self.compact[p]()[0])  # connections that changed since the last step
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

    def _state_views(self, p: torch.Tensor, group: dict) -> tuple:
        """numpy views of p's state (square average, gradient average or None, step), made when it is laid out."""
        if p not in self._views:
            state = self.state[p]
            if not state:
                index = self._layout.get(p)
                shape = p.shape if index is None else index.shape
                state["step"] = torch.tensor(0.0)
                state["square_avg"] = torch.zeros(shape)
                if group["centered"]:
                    state["grad_avg"] = torch.zeros(shape)
            grad_avg = _flat(state["grad_avg"]) if group["centered"] else None
            self._views[p] = (_flat(state["square_avg"]), grad_avg, _flat(state["step"]))
        return self._views[p]


def _flat(tensor: torch.Tensor) -> np.ndarray:
    """A flat numpy view sharing the tensor's memory (parameters and their state are contiguous)."""
    return tensor.detach().view(-1).numpy()


def _scatter(values: torch.Tensor, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A dense tensor shaped like `like`, holding `values` at flat `index` and zeros elsewhere."""
    return values.new_zeros(like.numel()).index_copy_(0, index, values).view_as(like)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rmsprop_step(value, grad, square_avg, grad_avg, count, lr, alpha, eps, weight, index):  # pragma: no cover
    """torch's RMSprop arithmetic for every entry; grad_avg None: not centered.
    `count` is the step counter torch keeps (a one-element view), advanced here. With `index` (a compact
    parameter's present connections), each entry that moves is also written to weight[index[i]]: an entry
    with zero gradient does not move, and most of a sparse layer's inputs are off in a whole batch.

    The variance is lifted to at least (eps * 2^-30)^2 before the root: the root of anything
    smaller is under half an ulp of eps, so sqrt(.) + eps is unchanged, while a variance that
    rounding made negative gives eps instead of NaN. error_model="numpy" lets the division vectorize.
    """
    lr, alpha, eps = np.float32(lr), np.float32(alpha), np.float32(eps)
    floor = np.float32((eps * 2.0 ** -30) ** 2)
    count[0] += 1
    for i in range(value.size):
        g = grad[i]
        s = square_avg[i] * alpha + (np.float32(1.0) - alpha) * g * g
        square_avg[i] = s
        if grad_avg is not None:
            a = grad_avg[i] + (np.float32(1.0) - alpha) * (g - grad_avg[i])
            grad_avg[i] = a
            s = s - a * a
        value[i] = value[i] - lr * (g / (np.sqrt(max(s, floor)) + eps))
        if index is not None and g != 0:
            weight[index[i]] = value[i]
