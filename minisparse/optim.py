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
    results agree with torch's to rounding, and the state (step, square_avg, grad_avg) is
    torch's: checkpoints load in either optimizer.
    A parameter registered in `connections` (a sparse-backend layer's weight) is updated only at
    the flat indices its callable returns: the engine registers one only while entries off the
    mask have zero gradient, weight and state, which a dense step would leave as they are, so
    skipping them changes nothing but the cost. Its gradient may be dense or a sparse tensor of
    exactly those entries in that order (`Connections.compact`).
    """

    def __init__(self, params: list[torch.nn.Parameter], lr: float, alpha: float, eps: float, centered: bool):
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "centered": centered})
        self.connections: dict[torch.Tensor, Callable[[], torch.Tensor]] = {}
        self._views: list[tuple] | None = None

    def step(self, closure: None = None) -> None:
        for p, group, value, square_avg, grad_avg, count in self._state_views():
            if p.grad is None:
                continue
            index, grad = None, p.grad
            if p in self.connections:
                index = self.connections[p]()
                grad = grad._values() if grad.is_sparse else grad.reshape(-1).index_select(0, index)
                index = index.numpy()
            _rmsprop_step(value, grad.numpy().reshape(-1), square_avg, grad_avg, index, count,
                          group["lr"], group["alpha"], group["eps"])

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._views = None

    def _state_views(self) -> list[tuple]:
        """Per parameter: numpy views of its value and state, made once (they share the tensors' memory)."""
        if self._views is None:
            self._views = []
            for group in self.param_groups:
                for p in group["params"]:
                    state = self.state[p]
                    if not state:
                        state["step"] = torch.tensor(0.0)
                        state["square_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                        if group["centered"]:
                            state["grad_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                    grad_avg = _flat(state["grad_avg"]) if group["centered"] else None
                    self._views.append((p, group, _flat(p), _flat(state["square_avg"]), grad_avg,
                                        _flat(state["step"])))
        return self._views


def _flat(tensor: torch.Tensor) -> np.ndarray:
    """A flat numpy view sharing the tensor's memory (parameters and their state are contiguous)."""
    return tensor.detach().view(-1).numpy()


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rmsprop_step(value, grad, square_avg, grad_avg, index, count, lr, alpha, eps):  # pragma: no cover - compiled
    """torch's RMSprop arithmetic for every entry (index None), or for the listed ones with `grad` holding
    their gradients in that order; grad_avg None: not centered.
    `count` is the step counter torch keeps (a one-element view), advanced here.

    The variance is lifted to at least (eps * 2^-30)^2 before the root: the root of anything
    smaller is under half an ulp of eps, so sqrt(.) + eps is unchanged, while a variance that
    rounding made negative gives eps instead of NaN. One loop body serves both cases: with
    index None it compiles to vector code (error_model="numpy" lets the division vectorize).
    """
    lr, alpha, eps = np.float32(lr), np.float32(alpha), np.float32(eps)
    floor = np.float32((eps * 2.0 ** -30) ** 2)
    count[0] += 1
    for k in range(value.size if index is None else index.size):
        i = k
        if index is not None:
            i = index[k]
        g = grad[k]
        s = square_avg[i] * alpha + (np.float32(1.0) - alpha) * g * g
        square_avg[i] = s
        if grad_avg is not None:
            a = grad_avg[i] + (np.float32(1.0) - alpha) * (g - grad_avg[i])
            grad_avg[i] = a
            s = s - a * a
        value[i] = value[i] - lr * (g / (np.sqrt(max(s, floor)) + eps))
