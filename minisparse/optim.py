"""Optimizers: the protocol's centered RMSprop, fast, and Adam for dynamic sparse training."""
from __future__ import annotations

from typing import Callable

import torch

from minisparse.config import Config


def make_optimizer(config: Config, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, betas=config.adam_betas, eps=config.adam_eps,
                                foreach=True)
    return RMSprop(parameters, lr=config.lr, alpha=config.rmsprop_alpha, eps=config.rmsprop_eps,
                   centered=config.rmsprop_centered)


class RMSprop(torch.optim.Optimizer):
    """torch.optim.RMSprop (no momentum, no weight decay) in a few multi-tensor operations per step.

    The arithmetic and the state names (step, square_avg, grad_avg) are torch's, so results are
    bit-identical to the stock optimizer (for eps above 1e-10, and wherever torch's is not NaN);
    the denominators go to reused buffers instead of fresh allocations. A parameter registered in `connections` (a sparse-backend layer's weight) is
    updated only at the flat indices its callable returns: entries off the mask have zero
    gradient, weight and (when the engine masks moments) state, which a dense step would leave
    as they are, so skipping them changes nothing but the cost.
    """

    def __init__(self, params: list[torch.nn.Parameter], lr: float, alpha: float, eps: float, centered: bool):
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "centered": centered})
        self.connections: dict[torch.Tensor, Callable[[], torch.Tensor]] = {}
        self._scratch: dict[torch.Tensor, torch.Tensor] = {}

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            centered, alpha = group["centered"], group["alpha"]
            states = [self._state(p, centered) for p in params]
            torch._foreach_add_([s["step"] for s in states], 1)
            names = ("square_avg", "grad_avg") if centered else ("square_avg",)
            compact = [self._compact(p, s, names) for p, s in zip(params, states)]
            values, grads = [c[0] for c in compact], [c[1] for c in compact]
            square_avgs = [c[2] for c in compact]
            torch._foreach_mul_(square_avgs, alpha)
            torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
            denominators = [self._buffer(p, v) for p, v in zip(params, values)]
            if centered:
                grad_avgs = [c[3] for c in compact]
                torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
                for d, sa, ga in zip(denominators, square_avgs, grad_avgs):
                    torch.addcmul(sa, ga, ga, value=-1, out=d)
            else:
                torch._foreach_copy_(denominators, square_avgs)
            # sqrt(0) is several times slower than sqrt of a normal number on common CPUs, and the
            # state of absent or never-active connections is exactly 0. Below (eps * 2^-30)^2 the
            # root is under half an ulp of eps, so lifting those values leaves sqrt(.) + eps
            # bit-identical (a variance that rounding made negative gives eps instead of NaN).
            torch._foreach_clamp_min_(denominators, (group["eps"] * 2.0 ** -30) ** 2)
            torch._foreach_sqrt_(denominators)
            torch._foreach_add_(denominators, group["eps"])
            torch._foreach_addcdiv_(values, grads, denominators, value=-group["lr"])
            for p, s, c in zip(params, states, compact):
                if p in self.connections:
                    index = self.connections[p]()
                    for target, value in zip((p, *(s[n] for n in names)), (c[0], *c[2:])):
                        target.view(-1).index_copy_(0, index, value)

    def _state(self, p: torch.Tensor, centered: bool) -> dict[str, torch.Tensor]:
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if centered:
                state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _compact(self, p: torch.Tensor, state: dict, names: tuple[str, ...]) -> list[torch.Tensor]:
        """[value, grad, *moments]: the tensors themselves, or copies of their present entries."""
        tensors = [p, p.grad, *(state[n] for n in names)]
        if p not in self.connections:
            return tensors
        index = self.connections[p]()
        return [t.reshape(-1).index_select(0, index) for t in tensors]

    def _buffer(self, p: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """`p`'s reused scratch tensor, shaped like `like` (its compact entries change with the mask)."""
        buffer = self._scratch.get(p)
        if buffer is None or buffer.shape != like.shape or buffer.device != like.device:
            buffer = self._scratch[p] = torch.empty_like(like)
        return buffer
