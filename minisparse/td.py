"""The TD update's loss and gradients, and the greedy action: plainly, or by hand for speed.

`td_loss` is the update as written everywhere (cleanrl's dqn.py): Huber loss of Q(s, a)
against r + gamma * max_a' Q_target(s', a'). `make_td` returns what the DQN loop calls: the
hand-derived `FastTD` where the network allows it, else `AutogradTD` (modules and autograd).

On a CPU, MinAtar's DQN update is a few matrix products and many tiny tensor operations that
cost 5-10 us each; through modules and autograd there are about 80 of them, as much time as
the products. Here the products run feature-major (units x batch, the layout whose products
are fastest) and everything between them is a few compiled loops (kernels.py): the target's
max, the head (Q(s, a) of the taken action only), the Huber loss and the activations'
gradients in closed form. A frozen structured layer (fixed weights, static connectivity, or
connectivity whose rewiring has ended: the engine's plan says so) is the same function in the
online and target networks and no gradient flows into it: once learning starts (or it froze) the
replay keeps its features of every stored frame (`frozen_features`) and updates read those
(before, or without them, one product gives the states' and next states' features). Acting's
greedy action of one binary frame is a compiled loop that adds up the weights of its few active inputs.

It covers a structured layer that is a shared conv or a masked matrix (either backend; on the
sparse one the products run over the present connections in compiled loops that skip the
inputs a batch leaves at zero; with scores, the gated product and the scores' straight-through
gradient, over the present connections alone where pruning scores them), the dense hidden
layer and head, and relu or leaky relu, on a CPU. Other networks (a sparse hidden layer,
plug-in layer types, other devices) take autograd; tests/test_td.py checks that both give the
same loss, gradients and actions.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minisparse import kernels
from minisparse.layers import MaskedLinear, SharedConv
from minisparse.network import QNetwork
from minisparse.replay import Batch
from minisparse.sparsity import LayerPlan


def td_loss(q: QNetwork, target: QNetwork, batch: Batch, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Huber loss of Q(s, a) against r + gamma * max_a' Q_target(s', a'); also mean Q(s, a)."""
    observations, next_observations = batch.states.chunk(2)
    with torch.no_grad():
        next_q = target(next_observations).max(1).values
        td_target = batch.rewards + gamma * (1.0 - batch.dones) * next_q
    q_taken = q(observations).gather(1, batch.actions.unsqueeze(1)).squeeze(1)
    return F.smooth_l1_loss(q_taken, td_target), q_taken.detach().mean()


def make_td(q: QNetwork, target: QNetwork, gamma: float, plans: dict[str, LayerPlan]) -> AutogradTD | FastTD:
    """The fast update where the network allows it (it follows the structured layer's plan, which the engine
    resolves again as training goes on: `plans` is the engine's), else autograd."""
    return AutogradTD(q, target, gamma) if autograd_reason(q) else FastTD(q, target, gamma, plans)


class AutogradTD:
    """`td_loss` and its backward pass through the modules: any network.

    Calling it with a batch gives the loss and mean Q(s, a) and leaves the trainable parameters'
    .grad (which must start at None); `greedy` is the action acting takes.
    """

    def __init__(self, q: QNetwork, target: QNetwork, gamma: float):
        self.q, self.target, self.gamma = q, target, gamma

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        loss, mean_q = td_loss(self.q, self.target, batch, self.gamma)
        loss.backward()
        return loss.detach(), mean_q

    def frozen_features(self) -> None:
        """Autograd computes every layer's features from the frames: nothing for the replay to keep."""
        return None

    @torch.inference_mode()
    def greedy(self, observation: np.ndarray) -> int:
        """argmax_a Q(observation, a) for one (C, 10, 10) frame."""
        device = next(self.q.parameters()).device
        return int(self.q(torch.from_numpy(observation).to(device).unsqueeze(0)).argmax(1).item())


def autograd_reason(q: QNetwork) -> str | None:
    """Why FastTD does not cover `q` (layer types, a CPU: the loss gradient is a CPU loop), or None."""
    structured = q.structured
    if q.head.weight.device.type != "cpu":
        return f"the hand-derived update runs on a CPU, this network is on {q.head.weight.device.type}"
    if not isinstance(structured, (MaskedLinear, SharedConv)):
        return f"the structured layer is a {type(structured).__name__}"
    if type(q.hidden) is not nn.Linear or type(q.head) is not nn.Linear:
        return "the hidden layer is sparse"
    return None


class FastTD:
    """What AutogradTD gives (loss, mean Q(s, a), the trainable parameters' .grad, greedy actions),
    computed by hand for the networks `autograd_reason` passes.

    The structured layer does its own products (`feature_major` and `feature_major_gradients`: a
    shared conv's unfolded matrix product, a masked layer's product over the present connections of
    the inputs that are on somewhere in the batch), and torch does the hidden layer's for the online
    and the target network, its weight gradient and, when the structured layer trains, its input
    gradient. Between them, the head, the loss and the activations' gradients are compiled loops
    (kernels.py). The hidden and head gradients live in buffers kept between updates. The loops read the
    parameters through numpy views made once: every change to a parameter (optimizer steps,
    target syncs, checkpoint loads, the engine) is in place, so the views stay current.
    """

    def __init__(self, q: QNetwork, target: QNetwork, gamma: float, plans: dict[str, LayerPlan]):
        self.q, self.target, self.gamma, self.plans = q, target, gamma, plans
        self.q_arrays, self.target_arrays = _arrays(q), _arrays(target)
        self.slope = q.leaky_slope if q.activation == "leaky_relu" else 0.0
        self._size = 0
        self._frame_features = lambda frame: self.q.structured.frame_features(frame, self.slope)

    @torch.no_grad()
    def __call__(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        states, actions, rewards, dones = batch.states, batch.actions, batch.rewards, batch.dones
        q, target, size = self.q, self.target, actions.shape[0]
        if size != self._size:
            self._allocate(size)
        frozen = self.plans["structured"].frozen
        if frozen:
            if batch.features is not None:
                out = batch.features.t()
            else:
                out = self._structured_forward(q.structured, states)[1]
            online_out, next_out = out[:, :size], out[:, size:]
        else:
            online_pre, online_out, inputs = self._structured_forward(q.structured, states[:size])
            next_out = self._structured_forward(target.structured, states[size:])[1]
        torch.mm(target.hidden.weight, next_out, out=self.hidden_pre)
        online, offline = self.q_arrays, self.target_arrays
        kernels.target_values(self.hidden_pre.numpy(), offline["hidden.bias"], offline["head.weight"],
                              offline["head.bias"], self.slope, self.next_q)
        torch.mm(q.hidden.weight, online_out, out=self.hidden_pre)
        grads, statistics = self.grad_arrays, torch.empty(2, dtype=torch.float64)
        kernels.head_step(self.hidden_pre.numpy(), online["hidden.bias"], online["head.weight"], online["head.bias"],
                          self.slope, actions.numpy(), rewards.numpy(), dones.numpy(), self.next_q, self.gamma,
                          self.grad_hidden_pre.numpy(), grads["hidden.bias"], grads["head.weight"], grads["head.bias"],
                          statistics.numpy())
        torch.mm(self.grad_hidden_pre, online_out.t(), out=self.grads["hidden.weight"])
        for parameter, grad in self.grad_slots:
            parameter.grad = grad
        if not frozen:
            grad_pre = torch.mm(q.hidden.weight.t(), self.grad_hidden_pre)
            kernels.activation_backward(grad_pre.numpy(), online_pre.numpy(), self.slope)
            q.structured.feature_major_gradients(grad_pre, inputs)
        return statistics[0], statistics[1]

    def frozen_features(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The structured layer's activated features of one frame where they never change while learning
        (the replay can keep them: `Replay.keep_features`, and batches then skip the layer), else None.
        From then on acting shares them: each frame's features are computed once."""
        if not self.plans["structured"].frozen:
            return None
        self._frame_features = _LastFrame(partial(self.q.structured.frame_features, slope=self.slope))
        return self._frame_features

    def _allocate(self, size: int) -> None:
        units = self.q.hidden.out_features
        self._size = size
        self.hidden_pre, self.grad_hidden_pre = torch.empty(units, size), torch.empty(units, size)
        self.next_q = np.empty(size, np.float32)
        parameters = {name: p for name, p in self.q.named_parameters() if name.startswith(("hidden.", "head."))}
        self.grads = {name: torch.empty_like(p) for name, p in parameters.items()}
        self.grad_arrays = {name: grad.numpy() for name, grad in self.grads.items()}
        self.grad_slots = [(p, self.grads[name]) for name, p in parameters.items()]

    def _structured_forward(self, layer: nn.Module, states: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pre-activations and activations (units, samples) of a structured layer, and the input
        its weight gradient reads."""
        pre, inputs = layer.feature_major(states)
        return pre, self._act(pre), inputs

    def greedy(self, observation: np.ndarray) -> int:
        """argmax_a Q(observation, a) in compiled loops: MinAtar frames are binary and sparse, so the
        structured layer adds up the weights of the few active inputs instead of multiplying."""
        online = self.q_arrays
        features = self._frame_features(observation)
        return int(kernels.greedy_action(features, online["hidden.weight"], online["hidden.bias"],
                                         online["head.weight"], online["head.bias"], self.slope))

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.slope) if self.slope else F.relu(x)


class _LastFrame:
    """`encode` remembering its last frame. Each frame is both acted on and stored in the replay (a next
    state is stored, then acted on), so a frozen layer's features of it are computed once."""

    def __init__(self, encode: Callable[[np.ndarray], np.ndarray]):
        self.encode, self.key, self.features = encode, None, None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        key = (frame.shape, frame.dtype.str, frame.tobytes())
        if key != self.key:
            self.key, self.features = key, self.encode(frame)
        return self.features


def _arrays(network: nn.Module) -> dict[str, np.ndarray]:
    """numpy views sharing the parameters' memory, by name."""
    return {name: p.detach().numpy() for name, p in network.named_parameters()}
