"""The TD update's loss and gradients, and the greedy action: plainly, or by hand for speed.

`td_loss` is the update as written everywhere (cleanrl's dqn.py): Huber loss of Q(s, a)
against r + gamma * max_a' Q_target(s', a'). `make_td` returns what the DQN loop calls: the
hand-derived `FastTD` where the network allows it, else `AutogradTD` (modules and autograd).

On a CPU, MinAtar's DQN update is a few matrix products and many tiny tensor operations that
cost 5-10 us each; through modules and autograd there are about 80 of them, as much time as
the products. Here the forward pass runs feature-major (units x batch, the layout whose
products are fastest), the Huber loss gradient is written in closed form, and the backward pass
is a dozen operations. A frozen structured layer (fixed weights, static connectivity) is the
same function in the online and target networks, so its features for the states and the next
states come from one product, and no gradient flows into it. Acting's greedy action of one
binary frame is a compiled loop that adds up the weights of the frame's few active inputs.

It covers a structured layer that is a shared conv or a masked matrix (either backend; on the
sparse one the products run over the present connections), the dense hidden layer and head,
and relu or leaky relu, on a CPU. Other networks (scored layers, a sparse hidden layer, plug-in
layer types, other devices) take autograd; tests/test_td.py checks that both give the same
loss, gradients and actions.
"""
from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minisparse.layers import MaskedLinear, SharedConv
from minisparse.network import QNetwork


def td_loss(q: QNetwork, target: QNetwork, batch: tuple[torch.Tensor, ...], gamma: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Huber loss of Q(s, a) against r + gamma * max_a' Q_target(s', a'); also mean Q(s, a).

    `batch` is (states, actions, rewards, dones) with the observations and then the next
    observations stacked in `states` (Replay.sample_tensors).
    """
    states, actions, rewards, dones = batch
    observations, next_observations = states.chunk(2)
    with torch.no_grad():
        next_q = target(next_observations).max(1).values
        td_target = rewards + gamma * (1.0 - dones) * next_q
    q_taken = q(observations).gather(1, actions.unsqueeze(1)).squeeze(1)
    return F.smooth_l1_loss(q_taken, td_target), q_taken.detach().mean()


def make_td(q: QNetwork, target: QNetwork, gamma: float, frozen_structured: bool) -> AutogradTD | FastTD:
    """The fast update where the network allows it, else autograd."""
    return FastTD(q, target, gamma, frozen_structured) if supports(q) else AutogradTD(q, target, gamma)


class AutogradTD:
    """`td_loss` and its backward pass through the modules: any network.

    Calling it with a batch gives the loss and mean Q(s, a) and leaves the trainable parameters'
    .grad (which must start at None); `greedy` is the action acting takes.
    """

    def __init__(self, q: QNetwork, target: QNetwork, gamma: float):
        self.q, self.target, self.gamma = q, target, gamma

    def __call__(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        loss, mean_q = td_loss(self.q, self.target, batch, self.gamma)
        loss.backward()
        return loss.detach(), mean_q

    @torch.inference_mode()
    def greedy(self, observation: np.ndarray) -> int:
        """argmax_a Q(observation, a) for one (C, 10, 10) frame."""
        device = next(self.q.parameters()).device
        return int(self.q(torch.from_numpy(observation).to(device).unsqueeze(0)).argmax(1).item())


def supports(q: QNetwork) -> bool:
    """Whether FastTD covers `q`: its layer types, on a CPU (the loss gradient is a CPU loop)."""
    structured = q.structured
    unscored = isinstance(structured, MaskedLinear) and structured.score is None
    return ((isinstance(structured, SharedConv) or unscored)
            and type(q.hidden) is nn.Linear and type(q.head) is nn.Linear
            and q.head.weight.device.type == "cpu")


class FastTD:
    """What AutogradTD gives (loss, mean Q(s, a), the trainable parameters' .grad, greedy actions),
    computed by hand for the networks `supports` accepts."""

    def __init__(self, q: QNetwork, target: QNetwork, gamma: float, frozen_structured: bool):
        self.q, self.target, self.gamma = q, target, gamma
        self.frozen_structured = frozen_structured
        self.trains_structured = any(p.requires_grad for p in q.structured.parameters())
        self.slope = q.leaky_slope if q.activation == "leaky_relu" else 0.0

    @torch.no_grad()
    def __call__(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        states, actions, rewards, dones = batch
        q, target = self.q, self.target
        size = actions.shape[0]
        if self.frozen_structured:
            features, inputs = structured_forward(q.structured, states)
            online_features, next_features = features[:, :size], features[:, size:]
        else:
            online_features, inputs = structured_forward(q.structured, states[:size])
            next_features, _ = structured_forward(target.structured, states[size:])
        next_q = _linear(target.head, self._act(_linear(target.hidden, self._act(next_features)))).amax(0)

        structured_out = self._act(online_features)
        hidden_pre = _linear(q.hidden, structured_out)
        hidden_out = self._act(hidden_pre)
        q_values = _linear(q.head, hidden_out)
        grad_q = torch.empty_like(q_values)
        statistics = torch.empty(2, dtype=torch.float64)
        _huber_td(q_values.numpy(), next_q.numpy(), actions.numpy(), rewards.numpy(), dones.numpy(), self.gamma,
                  grad_q.numpy(), statistics.numpy())
        _set_grads(q.head, grad_q, hidden_out)
        grad_hidden = self._act_backward(torch.mm(q.head.weight.t(), grad_q), hidden_pre)
        _set_grads(q.hidden, grad_hidden, structured_out)
        if self.trains_structured:
            grad_structured = self._act_backward(torch.mm(grad_hidden.t(), q.hidden.weight).t(), online_features)
            structured_gradients(q.structured, grad_structured, inputs)
        return statistics[0], statistics[1]

    def greedy(self, observation: np.ndarray) -> int:
        """argmax_a Q(observation, a) in compiled loops: MinAtar frames are binary and sparse, so the
        structured layer adds up the weights of the few active inputs instead of multiplying."""
        q, structured = self.q, self.q.structured
        if isinstance(structured, SharedConv):
            features = _conv_features(observation, _array(structured.conv.weight), _array(structured.conv.bias),
                                      self.slope)
        else:
            features = _masked_features(observation, _array(structured.weight), _array(structured.bias), self.slope)
        return int(_greedy_head(features, _array(q.hidden.weight), _array(q.hidden.bias), _array(q.head.weight),
                                _array(q.head.bias), self.slope))

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.slope) if self.slope else F.relu(x)

    def _act_backward(self, grad: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        if self.slope:
            return torch.ops.aten.leaky_relu_backward(grad, pre, self.slope, False)
        return torch.ops.aten.threshold_backward(grad, pre, 0.0)


@numba.njit(cache=True, nogil=True)
def _huber_td(q_values, next_q, actions, rewards, dones, gamma, grad_q, statistics):  # pragma: no cover - compiled
    """For Q (actions x batch): the TD error against r + gamma * (1 - done) * max Q_target(s'), the Huber
    loss's mean and mean Q(s, a) into `statistics`, and d loss / d Q (clipped error / batch) into grad_q."""
    size = actions.size
    grad_q[:] = 0
    loss = taken = 0.0
    for b in range(size):
        q = q_values[actions[b], b]
        error = q - (rewards[b] + np.float32(gamma) * (np.float32(1.0) - dones[b]) * next_q[b])
        loss += 0.5 * error * error if abs(error) < 1.0 else abs(error) - 0.5
        taken += q
        grad_q[actions[b], b] = min(max(error, np.float32(-1.0)), np.float32(1.0)) / np.float32(size)
    statistics[0] = loss / size
    statistics[1] = taken / size


@numba.njit(cache=True, nogil=True)
def _activate(x, slope):  # pragma: no cover - compiled
    return x if x > 0 else slope * x


@numba.njit(cache=True, nogil=True)
def _conv_features(observation, weight, bias, slope):  # pragma: no cover - compiled
    """Activated 3x3 valid-conv features (filter-major) of one binary (C, H, W) frame: each active
    input adds its kernel entries to the outputs whose window holds it."""
    filters, channels, kernel = weight.shape[0], weight.shape[1], weight.shape[2]
    out = observation.shape[1] - kernel + 1
    sums = np.empty((filters, out, out), np.float32)
    for f in range(filters):
        sums[f] = bias[f]
    for c in range(channels):
        for row in range(observation.shape[1]):
            for column in range(observation.shape[2]):
                if observation[c, row, column]:
                    for dy in range(max(0, row - out + 1), min(kernel, row + 1)):
                        for dx in range(max(0, column - out + 1), min(kernel, column + 1)):
                            for f in range(filters):
                                sums[f, row - dy, column - dx] += weight[f, c, dy, dx]
    features = sums.reshape(-1)
    for i in range(features.size):
        features[i] = _activate(features[i], slope)
    return features


@numba.njit(cache=True, nogil=True)
def _masked_features(observation, weight, bias, slope):  # pragma: no cover - compiled
    """Activated features of a masked layer (absent weights are zero) for one binary frame, flat (C, H, W)."""
    features = bias.copy()
    flat = observation.shape[1] * observation.shape[2]
    for c in range(observation.shape[0]):
        for row in range(observation.shape[1]):
            for column in range(observation.shape[2]):
                if observation[c, row, column]:
                    features += weight[:, c * flat + row * observation.shape[2] + column]
    for i in range(features.size):
        features[i] = _activate(features[i], slope)
    return features


@numba.njit(cache=True, nogil=True)
def _greedy_head(features, hidden_weight, hidden_bias, head_weight, head_bias, slope):  # pragma: no cover
    hidden = hidden_weight @ features + hidden_bias
    for i in range(hidden.size):
        hidden[i] = _activate(hidden[i], slope)
    return np.argmax(head_weight @ hidden + head_bias)


def _array(parameter: torch.Tensor) -> np.ndarray:
    return parameter.detach().numpy()


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """layer(x) feature-major: (out, batch) from (in, batch)."""
    return torch.addmm(layer.bias.unsqueeze(1), layer.weight, x)


def _set_grads(layer: nn.Module, grad_out: torch.Tensor, x: torch.Tensor) -> None:
    layer.weight.grad = torch.mm(grad_out, x.t())
    layer.bias.grad = grad_out.sum(1)


def structured_forward(layer: nn.Module, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-activations (units, batch) of the structured layer and the input its weight gradient needs."""
    if isinstance(layer, SharedConv):
        return layer.feature_major(states)
    if layer.backend == "sparse":
        return layer.connections().product(layer.present_weights(), layer.bias, states), states
    return torch.addmm(layer.bias.unsqueeze(1), layer.weight, states.t()), states


def structured_gradients(layer: nn.Module, grad_out: torch.Tensor, inputs: torch.Tensor) -> None:
    if isinstance(layer, SharedConv):
        grad_out = grad_out.reshape(layer.conv.out_channels, -1)
        layer.conv.weight.grad = torch.mm(grad_out, inputs.t()).view_as(layer.conv.weight)
        layer.conv.bias.grad = grad_out.sum(1)
    elif layer.backend == "sparse":
        layer.weight.grad = layer.connections().weight_gradient(grad_out, inputs, layer.gradient_mode())
        layer.bias.grad = grad_out.sum(1)
    else:
        _set_grads(layer, grad_out, inputs.t())
