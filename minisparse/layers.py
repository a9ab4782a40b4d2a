"""Layers whose connectivity is explicit: every layer can say which inputs each unit reads.

Masks are buffers, so state_dict, checkpoints, deep copies and target-network syncs carry
them with no extra code. Only the sparsity engine changes a mask or the weights it hides.

A masked layer runs on one of two backends (the engine sets it): masked dense matrices, or torch's
sparse CSR kernels over the present connections only. Both keep the dense `weight` (and `score`) as the
one source of truth, so checkpoints, the engine and the optimizer's state do not depend on it (values
trained on the compact path are brought up to date whenever they are read: `MaskedLinear.sync`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minisparse import kernels

# What `auto` decides by: CPU microseconds of a masked layer's work per DQN step on one thread,
# a * size + b * (units + inputs) + c per backend, size being its weight entries (dense) or
# present connections (sparse); trained layers (forward, target forward, gradient, optimizer
# step) on batches of the games' own frames, and frozen ones (the features of one frame, which the
# replay keeps and acting shares). The sparse backend skips inputs that are off, so its cost
# depends on the game: trained 1024-unit layers run faster there up to 0.6 density on freeway and
# beyond 0.8 on breakout and seaquest; the fit, a compromise, predicts 0.8-1.0. Frozen layers: sparse
# at every density measured. A complete layer (every connection present: the dense structure, pruning
# before it starts) has its own products on the sparse backend (`Connections.complete`), so its own
# line: 1.3-2.4x as fast as masked dense trained, 1.5-2.6x frozen. Fitted by
# benchmarks/fit_auto_backend.py (--repeats 30 --rounds 5).
BACKEND_COSTS = {
    True: {"dense": (0.00222, 0.167, 18.4), "sparse": (0.00209, 0.152, 81.3), "complete": (0.000781, 0.139, 87.5)},
    False: {"dense": (0.0, 0.0145, 12.0), "sparse": (2.29e-05, 0.0, 12.2), "complete": (0.0, 0.000866, 13.8)},
}

# Connections per input from which the optimizer is told where a compact gradient is zero (Connections.zero_columns).
DEFER_FROM = 256

# Density of a batch's active inputs' connections (per active input and unit) below which the weight gradient
# is a dot product per connection (kernels.present_dots) instead of a matrix product of the active inputs with
# every unit gathered at the connections (kernels.gather_present): on breakout's and space_invaders' batches
# the two cost the same at 0.15-0.17; at the budget (random, local) the dot products take 0.64-0.68 of the time.
# Predictive connects the inputs that are often on more densely (0.2-0.3 of the units), where they are slower.
# Measured by benchmarks/gradient_paths.py.
DOT_PRODUCTS_BELOW = 0.15

# torch labels CSR "beta" once per process; the sparse backend is tested against masked dense.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


class MaskedLinear(nn.Module):
    """A linear layer that keeps only the connections in `mask` (out x in, bool).

    Without scores the weight itself is zero off the mask, so the forward pass is a plain
    matrix product and `weight.grad` is the dense gradient (what RigL grows by).
    With scores (connectivity learned through gates) the effective weight is
    weight * mask, and the straight-through term hands the gate gradient to the scores.
    On the sparse backend only the present connections are multiplied; the gradient of what trains
    (the weight, or with fixed weights the scores) is then zero off the mask unless `dense_gradient`
    asks for the dense one, or a sparse tensor holding the present connections only when
    `compact_gradient` asks for that. A scored layer runs there only where its scores off the mask are
    never read again: its structure never regrows a connection (pruning), or it no longer rewires (then
    no score trains).
    """

    def __init__(self, mask: torch.Tensor, scored: bool = False):
        super().__init__()
        out_features, in_features = mask.shape
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.register_buffer("mask", mask.clone().bool())
        self.score = nn.Parameter(torch.empty(out_features, in_features)) if scored else None
        # Execution settings, not state: the engine sets the backend (`backend_for`) and asks for the dense
        # gradient (what RigL grows by) on its connectivity-update steps only, and for a compact one
        # (a sparse tensor of the present connections) when its optimizer takes it.
        self.backend = "dense"
        self.dense_gradient = False
        self.compact_gradient = False
        self._connections: Connections | None = None
        self._connections_mask: torch.Tensor | None = None  # the mask they were built from
        self._connections_key: tuple[int, int] | None = None
        self._present: dict[str, tuple[tuple, torch.Tensor]] = {}  # gathered present values, by parameter
        self._gated: torch.Tensor | None = None
        self._gated_key: tuple | None = None
        self._behind: tuple | None = None  # the present values a parameter lags behind (`sync`)
        self._grads: dict[str, torch.Tensor] = {}
        self.register_state_dict_pre_hook(_sync_before_saving)

    def __getstate__(self) -> dict:
        """Copies and pickles hold the parameters brought up to date and leave the caches behind (they are
        remade on first use; a CSR tensor cannot be deep-copied)."""
        self.sync()
        caches = ("_connections", "_connections_mask", "_connections_key", "_gated", "_gated_key")
        return {**super().__getstate__(), **dict.fromkeys(caches), "_present": {}, "_grads": {}}

    def __getattr__(self, name: str) -> torch.Tensor | nn.Module:
        """Reading `weight` or `score` brings it up to date first (`sync`), so its readers see the trained values."""
        if name in ("weight", "score"):
            self.sync(name)
        return super().__getattr__(name)

    def named_parameters(self, *args, **kwargs) -> Iterator[tuple[str, nn.Parameter]]:
        self.sync()
        return super().named_parameters(*args, **kwargs)

    def sync(self, name: str | None = None) -> None:
        """Write the present values a compact optimizer stepped (`present`) into the dense parameter (only if it
        is `name`, when given), unless it has since changed through torch (a load, the engine), which supersedes
        them. The optimizer steps those values alone: writing each step's moved entries (15-55k of them in a
        0.4-2.4 MB weight, one cache miss each) back into the parameter cost as much as the step, while it is
        read only by target syncs, checkpoints, diagnostics and the engine's connectivity updates. Reading it (as
        `weight` or `score`, through state_dict, named_parameters or parameters of the layer or of a QNetwork, or
        copying the layer) brings it up to date; a reference to the parameter kept from before a step may lag
        behind."""
        behind = self.__dict__.get("_behind")
        if behind is None or name not in (None, behind[0]):
            return
        self._behind = None
        name, flat, values, key = behind
        parameter = self._parameters[name]
        if change_key(parameter) == key:
            kernels.scatter(parameter.detach().view(-1).numpy(), flat.numpy(), values.detach().numpy())

    @property
    def _weight(self) -> nn.Parameter:
        """`weight` as it is: the products of the sparse backend read the present values instead."""
        return self._parameters["weight"]

    @property
    def _scored(self) -> bool:
        """Whether the layer has scores, asked without reading them (reading `score` brings it up to date)."""
        return self._parameters.get("score") is not None

    @property
    def _trained(self) -> str:
        """The parameter whose present values a compact optimizer steps: the scores of a scored layer (it runs
        on the sparse backend with fixed weights only), else the weight."""
        return "score" if self._scored else "weight"

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Uniform(+-1/sqrt(k)) per unit, k its real fan-in (PyTorch's default for dense k)."""
        fan_in = self.mask.sum(1, keepdim=True).clamp(min=1).float().cpu()  # draws are on the CPU
        bound = 1.0 / fan_in.sqrt()
        with torch.no_grad():
            self.weight.copy_(uniform(self.weight.shape, bound, generator))
            self.bias.copy_(uniform(self.bias.shape, bound.squeeze(1), generator))
            if self.score is None:
                self.weight.mul_(self.mask)
            else:
                self.score.copy_(self.weight.abs())

    def effective_weight(self) -> torch.Tensor:
        """The weight the product uses. With scores: weight * mask, whose gradient reaches the scores
        straight through the gate (edge-popup); with fixed weights it is kept until the next
        connectivity update (`gated_weight`)."""
        if self.score is None:
            return self.weight
        return _StraightThroughGate.apply(self.score, self.weight, self.mask, self.gated_weight())

    def gated_weight(self) -> torch.Tensor:
        """The weight the product uses, without autograd: weight * mask with scores, kept until either changes.
        A trained weight is gated afresh: compiled optimizer loops step it in place, unseen by its version counter."""
        if self.score is None:
            return self.weight.detach()
        if self.weight.requires_grad:
            return self.weight.detach() * self.mask
        key = (change_key(self.weight), change_key(self.mask))
        if self._gated_key != key:
            with torch.inference_mode(False), torch.no_grad():  # kept across calls, so never an inference tensor
                self._gated, self._gated_key = self.weight * self.mask, key
        return self._gated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "sparse" and self.score is None:
            return _SparseLinear.apply(x, self._weight, self.bias, self.present_weights(), self.connections(),
                                       self.gradient_mode())
        return F.linear(x, self.effective_weight(), self.bias)

    def feature_major(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | Inputs]:
        """Pre-activations as (units, batch), and the input `feature_major_gradients` reads (x, or on the
        sparse backend its `Inputs`)."""
        if self.backend == "sparse":
            return self.connections().product(self.present_weights(), self.bias, x)
        return torch.addmm(self.bias.unsqueeze(1), self.gated_weight(), x.t()), x

    def feature_major_gradients(self, grad_out: torch.Tensor, inputs: torch.Tensor | Inputs) -> None:
        """.grad of what trains (weight, as `gradient_mode` asks; scores, through the gate as
        `_StraightThroughGate` hands it; bias) from dL/d pre-activations (units, batch). A compact
        gradient on a CPU is the same tensor every update, rewritten in place (`Connections.rewrite_gradient`)."""
        if self.backend == "sparse":
            connections, mode = self.connections(), self.gradient_mode()
            if mode == "compact" and inputs.active is not None:
                grad = connections.rewrite_gradient(grad_out, inputs)
            else:
                grad = connections.weight_gradient(grad_out, inputs, mode)
            if self._scored:  # the gate's gradient to the scores: weight * dL/dW (fixed weights)
                if grad.is_sparse:
                    grad._values().mul_(self.present_weights())
                else:
                    grad.mul_(self._weight.detach())
            self._parameters[self._trained].grad = grad
        elif self.score is None:
            self.weight.grad = torch.mm(grad_out, inputs, out=_reused(self._grads, "weight", self.weight))
        else:
            grad_gated = torch.mm(grad_out, inputs)
            self.score.grad = grad_gated * self.weight
            if self.weight.requires_grad:
                self.weight.grad = grad_gated * self.mask
        if self.bias.requires_grad:
            self.bias.grad = torch.sum(grad_out, 1, out=_reused(self._grads, "bias", self.bias))

    def frame_features(self, frame: np.ndarray, slope: float) -> np.ndarray:
        """Activated features of one frame (acting): the weights of its few nonzero inputs, added up."""
        if self.backend == "sparse":
            return kernels.sparse_features(frame.reshape(-1), *self.connections().input_major,
                                           self.present_weights().numpy(), self.bias.detach().numpy(), slope)
        return kernels.masked_features(frame.reshape(1, -1), self.gated_weight().numpy(),
                                       self.bias.detach().numpy(), slope)

    def present_weights(self) -> torch.Tensor:
        """The weights of the present connections (`Connections.flat` order): what the products multiply by."""
        return self.present_values("weight")

    def present_values(self, name: str) -> torch.Tensor:
        """Parameter `name`'s values at the present connections (`Connections.flat` order), kept until it changes
        through torch (load_state_dict, the engine, an optimizer's torch step advance its version counter) or
        the connections change. Values trained on the compact path are stepped here, in this contiguous copy, by
        the optimizer (optim.CompactOptimizer.compact; `present`); any other trained parameter is stepped in
        place by compiled loops that the version counter does not see, so it is gathered afresh."""
        flat = self.connections().flat
        parameter = self._parameters[name]
        if parameter.requires_grad and not self.compact_gradient:
            self.sync()  # a layer that has just left the compact path
            return parameter.detach().reshape(-1).index_select(0, flat)
        key = (change_key(parameter), self._connections_key)
        kept = self._present.get(name)
        if kept is None or kept[0] != key:
            self.sync()  # the connections changed: gather from the values last stepped
            with torch.inference_mode(False):  # kept across calls, so never an inference tensor
                kept = self._present[name] = (key, parameter.detach().reshape(-1).index_select(0, flat))
        return kept[1]

    def present(self) -> tuple[torch.Tensor, torch.Tensor, tuple[np.ndarray, np.ndarray] | None]:
        """Flat indices (row * in + column) and values of the present connections of what trains (`_trained`):
        what a compact optimizer steps in place. The dense parameter lags behind them until it is read (`sync`).
        Third, where its gradient is zero (`Connections.zero_columns`)."""
        name = self._trained
        connections = self.connections()
        flat, values = connections.flat, self.present_values(name)
        self._behind = (name, flat, values, change_key(self._parameters[name]))
        return flat, values, connections.zero_columns(self._parameters[name].grad)

    def trained_values(self) -> torch.Tensor:
        """What an optimizer step moves of what trains: on the compact path its present values, else the
        parameter itself (the engine's proximal L1 step acts on these)."""
        if self.compact_gradient:
            return self.present()[1]
        return getattr(self, self._trained)

    def gradient_is_masked(self) -> bool:
        """Whether weight.grad is zero off the mask by construction: the sparse backend's own gradients
        (all but the dense one asked for on connectivity updates)."""
        return self.backend == "sparse" and not self._scored and not self.dense_gradient

    def gradient_mode(self) -> str:
        """The weight gradient the sparse backend gives (Connections.weight_gradient)."""
        return "dense" if self.dense_gradient else "compact" if self.compact_gradient else "masked"

    def connections(self) -> Connections:
        """Index structures of the present connections, rebuilt only when the mask changes: it was written in
        place (the engine's copy_, load_state_dict) or moved (tensor version counter, storage) and holds other
        connections. A target network's sync writes the same mask again; rebuilding a complete layer's took
        77 ms, 3% of its updates between two syncs."""
        key = change_key(self.mask)
        if self._connections_key != key:
            if self._connections is None or not torch.equal(self._connections_mask, self.mask):
                self._connections, self._connections_mask = Connections.of(self.mask), self.mask.clone()
            self._connections_key = key
        return self._connections

    def connectivity(self) -> torch.Tensor:
        return self.mask

    def unique_weights(self) -> int:
        return int(self.mask.sum())

    def extra_repr(self) -> str:
        density = self.mask.float().mean().item()
        return f"in={self.in_features}, out={self.out_features}, density={density:.4f}, scored={self.score is not None}"


def sync_masked_layers(module: nn.Module) -> None:
    """Bring the dense parameters of `module`'s masked layers up to date (MaskedLinear.sync)."""
    for layer in module.modules():
        if isinstance(layer, MaskedLinear):
            layer.sync()


def _reused(buffers: dict[str, torch.Tensor], name: str, like: torch.Tensor) -> torch.Tensor:
    """A tensor shaped like `like`, kept in `buffers` across updates, that a gradient is written into: the
    optimizer is then handed the same gradient tensor every step and keeps its views of it
    (optim.CompactOptimizer._arrays); remaking them cost about 14 us a tensor in the training loop."""
    buffer = buffers.get(name)
    if buffer is None or buffer.shape != like.shape:
        buffer = buffers[name] = torch.empty_like(like, requires_grad=False)
    return buffer


def _sync_before_saving(layer: MaskedLinear, prefix: str, keep_vars: bool) -> None:
    layer.sync()


def uniform(shape: torch.Size, bound: float | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform(-bound, bound) drawn on the CPU from `generator`: PyTorch's default initialisation."""
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


class SharedConv(nn.Module):
    """A 3x3 valid convolution over (C, 10, 10) that reads and writes flat vectors.

    Units are ordered filter-major on the output grid (f*64 + y*8 + x for 16 x 8 x 8),
    the order every other structure's hidden units follow. It runs as one matrix product of the
    (filters, C*9) kernel with the unfolded input (C*9, positions * batch), gathered by a fixed
    index: that product's (filter, position, sample) layout is already the transposed output,
    so nothing is permuted and no gradient flows to the input it does not need.
    """

    def __init__(self, channels: int, filters: int = 16, kernel: int = 3, size: int = 10):
        super().__init__()
        self.channels, self.size, self.kernel = channels, size, kernel
        self.conv = nn.Conv2d(channels, filters, kernel)
        self.in_features = channels * size * size
        self.out_features = filters * (size - kernel + 1) ** 2
        self.register_buffer("patches", _patch_index(channels, kernel, size), persistent=False)
        self._grads: dict[str, torch.Tensor] = {}

    def reset_parameters(self, generator: torch.Generator) -> None:
        fan_in = self.channels * self.kernel ** 2
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            for p in (self.conv.weight, self.conv.bias):
                p.copy_(uniform(p.shape, bound, generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_major(x)[0].t()

    def feature_major(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs as (units, batch), and the unfolded input (C*9, positions * batch) whose column
        (position, sample) holds that sample's kernel window there (what the weight gradient reads)."""
        filters = self.conv.out_channels
        x = x.reshape(-1, self.in_features)
        unfolded = x.t().contiguous().index_select(0, self.patches).view(self.conv.weight[0].numel(), -1)
        out = torch.addmm(self.conv.bias.unsqueeze(1), self.conv.weight.view(filters, -1), unfolded)
        return out.view(self.out_features, -1), unfolded

    def feature_major_gradients(self, grad_out: torch.Tensor, unfolded: torch.Tensor) -> None:
        """The kernel's and bias's .grad from dL/d outputs (units, batch) and the unfolded input."""
        weight, bias = self.conv.weight, self.conv.bias
        grad_out = grad_out.reshape(self.conv.out_channels, -1)
        weight.grad = _reused(self._grads, "weight", weight)
        torch.mm(grad_out, unfolded.t(), out=weight.grad.view(self.conv.out_channels, -1))
        bias.grad = torch.sum(grad_out, 1, out=_reused(self._grads, "bias", bias))

    def frame_features(self, frame: np.ndarray, slope: float) -> np.ndarray:
        """Activated features of one (C, 10, 10) frame (acting): each active input adds its kernel entries."""
        return kernels.conv_features(frame, self.conv.weight.detach().numpy(), self.conv.bias.detach().numpy(), slope)

    def connectivity(self) -> torch.Tensor:
        return receptive_field_mask(self.channels, self.conv.out_channels, self.kernel, self.size)

    def unique_weights(self) -> int:
        return self.conv.weight.numel()


def _patch_index(channels: int, kernel: int, size: int) -> torch.Tensor:
    """Input index of kernel entry (c, ky, kx) at output position (y, x), ordered (c, ky, kx, y, x)."""
    out = size - kernel + 1
    c, ky, kx, y, x = torch.meshgrid(torch.arange(channels), torch.arange(kernel), torch.arange(kernel),
                                     torch.arange(out), torch.arange(out), indexing="ij")
    return (c * size * size + (y + ky) * size + (x + kx)).reshape(-1)


def receptive_field_mask(channels: int, filters: int, kernel: int = 3, size: int = 10) -> torch.Tensor:
    """(filters * out^2, channels * size^2) bool: unit (f, y, x) reads the kernel window at (y, x)."""
    out = size - kernel + 1
    mask = torch.zeros(filters, out, out, channels, size, size, dtype=torch.bool)
    for y in range(out):
        for x in range(out):
            mask[:, y, x, :, y:y + kernel, x:x + kernel] = True
    return mask.reshape(filters * out * out, channels * size * size)


def layer_capacity(layer: nn.Module) -> dict[str, float]:
    """Units, inputs, connections, unique parameters (weights and biases, shared ones once, whether
    trained or frozen: fixed mode changes what trains, not the network), density and forward FLOPs."""
    if isinstance(layer, nn.Linear):
        connections = unique = layer.weight.numel()
        units, inputs = layer.out_features, layer.in_features
    else:
        connections = int(layer.connectivity().sum())
        unique = layer.unique_weights()
        units, inputs = layer.out_features, layer.in_features
    biases = sum(p.numel() for name, p in layer.named_parameters() if name.endswith("bias"))
    return {"units": units, "inputs": inputs, "connections": connections,
            "parameters": unique + biases, "density": connections / (units * inputs),
            "flops": 2 * connections}


def change_key(tensor: torch.Tensor) -> tuple[int, int]:
    """What changes when `tensor` changes in place (its version counter: copy_, optimizer steps through
    torch, load_state_dict) or is replaced (its storage): the key of a value cached from it."""
    return tensor._version, tensor.data_ptr()


def backend_for(layer: MaskedLinear, requested: str) -> str:
    """`requested` (dense or sparse), or for auto the backend predicted faster for the layer as it is
    now: on a CPU, sparse below its crossover density (a frozen layer only runs forward, so its
    crossover differs), and for a complete layer by its own line; dense elsewhere, where nothing has been
    measured."""
    if requested != "auto":
        return requested
    if layer.mask.device.type != "cpu":
        return "dense"
    trains = layer.weight.requires_grad or (layer.score is not None and layer.score.requires_grad)
    units, inputs = layer.out_features, layer.in_features
    if bool(layer.mask.all()):
        costs = BACKEND_COSTS[trains]
        complete, dense = (predicted_us(costs[line], units * inputs, units, inputs) for line in ("complete", "dense"))
        return "sparse" if complete < dense else "dense"
    density = float(layer.mask.float().mean())
    return "sparse" if density < crossover_density(units, inputs, trains) else "dense"


def predicted_us(line: tuple[float, float, float], size: int, units: int, inputs: int) -> float:
    """A cost model line's microseconds for a layer of `size` weight entries or connections."""
    return line[0] * size + line[1] * (units + inputs) + line[2]


def crossover_density(units: int, inputs: int, trains: bool,
                      costs: dict[bool, dict[str, tuple[float, float, float]]] = BACKEND_COSTS) -> float:
    """The density below which the sparse backend is predicted faster for a units x inputs layer that is not
    complete."""
    dense, sparse = costs[trains]["dense"], costs[trains]["sparse"]
    entries, edges = units * inputs, units + inputs
    dense_us = predicted_us(dense, entries, units, inputs)
    return min(1.0, max(0.0, (dense_us - sparse[1] * edges - sparse[2]) / (sparse[0] * entries)))


@dataclass(frozen=True, eq=False)
class Inputs:
    """A batch x (samples x inputs) as the sparse backend's products read it: on a CPU, the inputs it has
    on somewhere (`kernels.active_columns`), found once for the forward product and the weight gradient."""

    x: torch.Tensor
    position: np.ndarray | None = None  # each input's row in `active`, -1 where it is off in every sample
    on: np.ndarray | None = None        # the inputs that are on somewhere, ascending
    active: np.ndarray | None = None    # (active inputs, samples): their values

    @classmethod
    def of(cls, x: torch.Tensor) -> "Inputs":
        return cls(x, *kernels.active_columns(x.numpy())) if x.device.type == "cpu" else cls(x)


@dataclass
class CompactGradient:
    """A sparse tensor of the present connections whose values the fast update rewrites at every step, so that
    the optimizer is handed the same gradient tensor each time (it keeps its views of it) and none is built per
    step; and the batch's `Inputs.position` it was last written from (its inputs that are off have zero
    gradient)."""

    tensor: torch.Tensor
    position: np.ndarray | None = None


@dataclass(frozen=True)
class Connections:
    """The mask's present connections, input-major (by column, then row): the order a layer's present
    weights are kept in (`MaskedLinear.present_weights`), which is W's CSC and so the CSR of W^T.
    On a CPU both products skip the inputs a batch leaves at zero: the forward one in compiled loops over
    the connections of the inputs that are on, the weight gradient as a matrix product with those inputs
    gathered at the connections (kernels); torch's CSR kernels (other devices, the autograd path) read W's CSR,
    whose values are the present ones at `csr_order`."""

    shape: tuple[int, int]
    flat: torch.Tensor              # row * in + column of each connection
    indices: torch.Tensor           # (2, connections): rows and columns
    column_starts: torch.Tensor     # input i's connections are [column_starts[i], column_starts[i + 1])
    crow: torch.Tensor              # CSR of W
    col: torch.Tensor
    csr_order: torch.Tensor         # W's CSR values are the present weights at these positions
    pattern: torch.Tensor           # W's CSR with zero values: where a sampled product is wanted

    @classmethod
    def of(cls, mask: torch.Tensor) -> "Connections":
        out_features, in_features = mask.shape
        cols, rows = mask.t().nonzero(as_tuple=True)
        csr_order = torch.argsort(rows, stable=True)
        crow, col = _compressed(rows[csr_order], out_features), cols[csr_order]
        zeros = torch.zeros(len(rows), device=mask.device)  # sampled_addmm scales these by beta=0: no garbage
        return cls(shape=(out_features, in_features), flat=rows * in_features + cols, indices=torch.stack((rows, cols)),
                   column_starts=_compressed(cols, in_features), crow=crow, col=col, csr_order=csr_order,
                   pattern=torch.sparse_csr_tensor(crow, col, zeros, mask.shape, check_invariants=False))

    @cached_property
    def input_major(self) -> tuple[np.ndarray, np.ndarray]:
        """numpy views of column_starts and the rows, the compiled loops' arguments (CPU): made once per
        mask, as making them costs a few microseconds each time and the loops run several times a frame."""
        return self.column_starts.numpy(), self.indices[0].numpy()

    @cached_property
    def complete(self) -> bool:
        """Whether every connection is present (the dense structure, pruning before it starts): then the present
        values are W^T, row by row, and the forward product is one matrix product (MKL) of the active inputs'
        rows instead of the compiled loops, which at this density multiply one weight at a time."""
        return self.flat.shape[0] == self.shape[0] * self.shape[1]

    @cached_property
    def gradient(self) -> CompactGradient:
        return CompactGradient(self._gradient_tensor())

    def rewrite_gradient(self, grad_out: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        """dL/dW at the present connections, written into `gradient`'s tensor (a CPU batch). A tensor emptied
        or grown in place since (zero_grad without set_to_none, autograd accumulating into it) is replaced."""
        gradient = self.gradient
        if gradient.tensor._nnz() != self.flat.shape[0]:
            gradient.tensor, gradient.position = self._gradient_tensor(), None
        self.present_gradient(grad_out, inputs, gradient.tensor._values(), gradient.position)
        gradient.position = inputs.position
        return gradient.tensor

    def zero_columns(self, grad: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray] | None:
        """Where `grad` is zero by construction, if it is the gradient `rewrite_gradient` last wrote: the
        connections of input i, [column_starts[i], column_starts[i + 1]), for each i off in the whole batch
        (position[i] < 0). An optimizer may defer those connections' work (optim.RMSprop). Said only where the
        inputs have many connections each (DEFER_FROM): deferring works a run at a time, and runs of the
        budget's ~90 connections cost about what they saved."""
        gradient = self.__dict__.get("gradient")
        if gradient is None or grad is not gradient.tensor or self.flat.shape[0] < DEFER_FROM * self.shape[1]:
            return None
        return self.input_major[0], gradient.position

    def _gradient_tensor(self) -> torch.Tensor:
        return self.compact(torch.empty(self.flat.shape[0], device=self.flat.device))

    def product(self, values: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, Inputs]:
        """W x^T + b (out x batch) for x (batch x in), W's `values` at the present connections; and what
        `weight_gradient` reads of x (on a CPU its active inputs, found once for both)."""
        inputs = Inputs.of(x)
        if inputs.active is None:
            return torch.addmm(bias.unsqueeze(1), self.matrix(values), x.t()), inputs
        if self.complete:  # W^T's rows of the active inputs, multiplied by MKL
            rows = torch.index_select(values.detach().view(self.shape[1], self.shape[0]), 0,
                                      torch.from_numpy(inputs.on), out=self.scratch("rows", inputs.on.size))
            return torch.addmm(bias.detach().unsqueeze(1), rows.t(), torch.from_numpy(inputs.active)), inputs
        out = torch.empty(self.shape[0], x.shape[0])
        kernels.input_sparse_product(inputs.position, inputs.active, *self.input_major,
                                     values.detach().numpy(), bias.detach().numpy(), out.numpy())
        return out, inputs

    def weight_gradient(self, grad_out: torch.Tensor, inputs: Inputs, mode: str) -> torch.Tensor:
        """dL/dW from the output gradient (out x batch) and the input: the dense product ("dense"), or the
        present connections' entries only, as a sparse tensor ("compact") or scattered into a dense one
        that is zero elsewhere ("masked")."""
        if mode == "dense":
            return torch.mm(grad_out, inputs.x)
        if inputs.active is None:
            sampled = torch.sparse.sampled_addmm(self.pattern, grad_out, inputs.x, beta=0.0).values()
            present = torch.empty_like(sampled).index_copy_(0, self.csr_order, sampled)
        else:
            present = torch.empty(self.flat.shape[0])
            self.present_gradient(grad_out, inputs, present)
        return self.compact(present) if mode == "compact" else self.dense(present)

    def present_gradient(self, grad_out: torch.Tensor, inputs: Inputs, out: torch.Tensor,
                         previous: np.ndarray | None = None) -> None:
        """dL/dW's entries at the present connections, into `out`, on a CPU: where the active inputs have few
        connections (DOT_PRODUCTS_BELOW) a dot product per connection across the batch, else one matrix product
        of the active inputs with dL/d out (a fifth to a third of the inputs are on in breakout's and
        space_invaders' batches) gathered at the connections. `previous`: the `Inputs.position` `out` was last
        written from (its off inputs' entries are still zero)."""
        if self.active_density(inputs) < DOT_PRODUCTS_BELOW:
            kernels.present_dots(grad_out.contiguous().numpy(), inputs.position, inputs.active, previous,
                                 *self.input_major, out.numpy())
            return
        active = torch.from_numpy(inputs.active)
        products = torch.mm(active, grad_out.t(), out=self.scratch("products", active.shape[0]))
        kernels.gather_present(products.numpy(), inputs.position, previous, *self.input_major, out.numpy())

    def active_density(self, inputs: Inputs) -> float:
        """The batch's active inputs' connections per active input and unit (0 for an empty batch): what the
        weight gradient's cost depends on (DOT_PRODUCTS_BELOW)."""
        starts = self.input_major[0]
        return float((starts[inputs.on + 1] - starts[inputs.on]).sum()) / max(1, inputs.on.size * self.shape[0])

    def scratch(self, name: str, inputs: int) -> torch.Tensor:
        """An (inputs, units) tensor kept for the products' intermediate results: a fresh one of a complete
        layer's size (0.4-2.4 MB) is mapped from the system, page by page, at every call."""
        if name not in self._scratch:
            self._scratch[name] = torch.empty(self.shape[1], self.shape[0])
        return self._scratch[name][:inputs]

    @cached_property
    def _scratch(self) -> dict[str, torch.Tensor]:
        return {}

    def dense(self, values: torch.Tensor) -> torch.Tensor:
        """A dense tensor of W's shape holding `values` at the present connections and zeros elsewhere
        (on a CPU a compiled scatter: a third of index_copy_'s time)."""
        if values.device.type != "cpu":
            return values.new_zeros(self.shape).view(-1).index_copy_(0, self.flat, values).view(self.shape)
        out = torch.zeros(self.shape)
        kernels.scatter(out.view(-1).numpy(), self.flat.numpy(), values.numpy())
        return out

    def compact(self, values: torch.Tensor) -> torch.Tensor:
        """A sparse (COO) tensor of W's shape holding `values` at the present connections, in their order."""
        return torch.sparse_coo_tensor(self.indices, values, self.shape, check_invariants=False)

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, values.index_select(0, self.csr_order), self.shape,
                                       check_invariants=False)

    def transposed(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.column_starts, self.indices[0], values, self.shape[::-1],
                                       check_invariants=False)


def _compressed(sorted_rows: torch.Tensor, rows: int) -> torch.Tensor:
    counts = torch.bincount(sorted_rows, minlength=rows)
    return torch.cat((counts.new_zeros(1), counts.cumsum(0)))


class _StraightThroughGate(torch.autograd.Function):
    """weight * (mask + score - score): the value weight * mask (given, precomputed), and the gradient
    weight * dL/dW to the scores and mask * dL/dW to the weight."""

    @staticmethod
    def forward(ctx, score: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                gated: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, mask)
        return gated.view_as(gated)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weight, mask = ctx.saved_tensors
        return (grad * weight if ctx.needs_input_grad[0] else None,
                grad * mask if ctx.needs_input_grad[1] else None, None, None)


class _SparseLinear(torch.autograd.Function):
    """y = x W^T + b with W held over the present connections (`values`, in `Connections` order).

    Backward gives the weight gradient `gradient` asks for (Connections.weight_gradient) and the
    input gradient through W^T's CSR when the input needs one.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, values: torch.Tensor,
                connections: Connections, gradient: str) -> torch.Tensor:
        out, ctx.inputs = connections.product(values, bias, x)
        ctx.save_for_backward(x, values)  # x is read through ctx.inputs; saved so that changing it in place is caught
        ctx.connections, ctx.gradient = connections, gradient
        return out.t()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        _, values = ctx.saved_tensors
        connections = ctx.connections
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(connections.transposed(values), grad_out.t()).t()
        if ctx.needs_input_grad[1]:
            grad_weight = connections.weight_gradient(grad_out.t(), ctx.inputs, ctx.gradient)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(0)
        return grad_x, grad_weight, grad_bias, None, None, None
