"""The sparsity engine: the one place that touches masks, absent connections' gradients,
frozen weights, optimizer state and the backend a masked layer runs on. The DQN loop calls its
hooks around each optimizer step and never asks which structure it is running.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from minisparse import kernels
from minisparse.layers import MaskedLinear, backend_for, change_key
from minisparse.network import layer_structures
from minisparse.structure import LayerSpec, Signals, Structure


@dataclass(frozen=True)
class LayerPlan:
    """What a wired layer is and how it runs, resolved in one place (the engine) from its structure, the
    weight mode, the backend setting and the optimizer. The TD update and the run's record read it;
    the engine sets a masked layer's execution flags from it, and resolves it again when a mask changes
    (`--backend auto` moves a layer that pruning thins to the sparse backend)."""

    structure: str
    learns_weights: bool       # its weight values train (learned weights)
    learns_connectivity: bool  # its structure rewires it while learning
    scored: bool               # it learns connectivity through per-connection scores (gates)
    backend: str               # "dense" or "sparse" (a shared conv is dense)
    compact: bool              # its optimizer steps the present connections only

    @property
    def frozen(self) -> bool:
        """Never changes while learning: no gradient, and its output for a batch is computed once."""
        return not (self.learns_weights or self.learns_connectivity)


class SparsityEngine:
    def __init__(self, network: nn.Module, structure: Structure, specs: dict[str, LayerSpec],
                 seed: int, mask_optimizer_state: bool = True, backend: str = "dense"):
        self.network, self.specs, self.backend = network, specs, backend
        self.structures = layer_structures(structure, specs)
        self.mask_optimizer_state = mask_optimizer_state
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.step = 0
        self.topology_changes = 0
        self.changed = {name: 0 for name in specs}
        self.grown: dict[str, torch.Tensor] = {}      # connections the latest topology update grew
        self.survival: dict[str, float] = {}          # share of the previous update's growth it kept
        self.optimizer: torch.optim.Optimizer | None = None
        self.target: nn.Module | None = None
        self._signals: dict[str, Signals] = {}
        self._float_masks: dict[int, tuple[tuple[int, int], torch.Tensor]] = {}
        found = {name: getattr(network, name) for name in specs}
        self._layers = {name: layer for name, layer in found.items() if isinstance(layer, MaskedLinear)}
        if specs["structured"].fixed:
            for name, parameter in network.structured.named_parameters():
                if name != "score":
                    parameter.requires_grad_(False)
        self._last_updates = {name: self.structures[name].last_update(spec) for name, spec in specs.items()}
        self.plans: dict[str, LayerPlan] = {}
        self._hooked: dict[str, MaskedLinear] = {}
        self._settling: list[str] = []
        self._plan()

    def layers(self) -> dict[str, MaskedLinear]:
        """The masked layers this engine manages (a shared conv has no mask to manage)."""
        return self._layers

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.network.parameters() if p.requires_grad]

    def attach(self, optimizer: torch.optim.Optimizer, target: nn.Module | None = None) -> None:
        """Manage `optimizer` from now on (the state of connections that change is zeroed, sparse-backend
        layers step their present connections only), and keep the layers of `target` (a copy of the
        network, such as the DQN's target network) on the backends of the network's layers."""
        self.optimizer, self.target = optimizer, target
        self._plan()

    def _plan(self) -> None:
        """Resolve every layer's plan and set masked layers (and the target's) to run by it: the requested
        backend (auto: the one predicted faster at the layer's current density), and compact optimizer steps
        (optim.RMSprop, optim.Adam) for sparse-backend layers whose weights train, when absent connections'
        state is kept at zero (a dense step would decay the stale state the ablation keeps). A scored layer
        trains its scores on the sparse backend only if its structure never regrows a connection (the scores
        off the mask are never read again, so only the present ones train, compactly); other scored layers
        keep the dense gated product until their connectivity settles (`_settled`), when with fixed weights
        they freeze: the scores stop training and the layer runs as a fixed masked one."""
        compact = getattr(self.optimizer, "compact", None)
        for name, spec in self.specs.items():
            layer, structure = getattr(self.network, name), self.structures[name]
            masked = isinstance(layer, MaskedLinear)
            scored = masked and layer.score is not None
            learns_connectivity = structure.learns_connectivity and not self._settled(name)
            frozen = spec.fixed and not learns_connectivity
            if scored:
                layer.score.requires_grad_(not frozen)
                if frozen:
                    layer.score.grad = None
            sparse_able = masked and (not scored or frozen or (spec.fixed and not structure.regrows))
            backend = backend_for(layer, self.backend) if sparse_able else "dense"
            plan = LayerPlan(structure=structure.name, learns_weights=not spec.fixed,
                             learns_connectivity=learns_connectivity, scored=scored, backend=backend,
                             compact=compact is not None and backend == "sparse"
                             and ((scored and not frozen) or (not spec.fixed and self.mask_optimizer_state)))
            self.plans[name] = plan
            if not masked:
                continue
            layer.backend, layer.compact_gradient = plan.backend, plan.compact
            layer.dense_gradient = layer.dense_gradient and learns_connectivity
            if self.target is not None:
                getattr(self.target, name).backend = plan.backend
            trained = layer.score if scored else layer.weight
            if plan.compact:
                compact[trained] = layer.present
            elif compact is not None:
                compact.pop(trained, None)
        self._hooked = {name: layer for name, layer in self._layers.items() if self._hooks_act_on(name, layer)}
        self._settling = [name for name, plan in self.plans.items()
                          if plan.learns_connectivity and self._last_updates[name] is not None]

    def _settled(self, name: str) -> bool:
        """Whether the layer's connections can no longer change: its structure's last update is past, and the
        target network holds the same connections (it would otherwise still compute with the older ones)."""
        last = self._last_updates[name]
        if last is None or self.step <= last:
            return False
        target = None if self.target is None else getattr(self.target, name)
        return target is None or torch.equal(target.connectivity(), getattr(self.network, name).connectivity())

    def _hooks_act_on(self, name: str, layer: MaskedLinear) -> bool:
        """Whether the per-update hooks can do anything to the layer: change its connections, penalize it, or
        mask its gradient or weights. A frozen layer needs none of them, nor does a static layer whose gradient
        is masked by construction and whose optimizer state is masked (they cost 2-3% of its frame)."""
        plan = self.plans[name]
        penalized = type(self.structures[name]).l1_strength is not Structure.l1_strength
        return not plan.frozen and (plan.learns_connectivity or penalized
                                    or not layer.gradient_is_masked() or not self.mask_optimizer_state)

    def begin_learning(self, observations: np.ndarray) -> None:
        """Let structures pick connections from the frames gathered before learning."""
        for name, layer in self.layers().items():
            mask = self.structures[name].begin_learning(self.specs[name], observations, self.generator)
            if mask is not None:
                with torch.no_grad():
                    layer.mask.copy_(mask)
                layer.reset_parameters(self.generator)
                self.topology_changes += 1
        self._plan()

    def wants_dense_gradient(self, name: str) -> bool:
        """Whether this update may change the layer's connections: its step then records the signals a
        structure decides by, the dense gradient among them (what RigL grows by)."""
        structure = self.structures[name]
        return structure.learns_connectivity and structure.is_update_step(self.step, self.specs[name])

    def before_backward(self) -> None:
        """Ask sparse-backend layers for the dense gradient on the steps that read it. These hooks skip
        the layers they cannot act on (`_hooks_act_on`)."""
        for name, layer in self._hooked.items():
            layer.dense_gradient = self.wants_dense_gradient(name)

    def before_step(self) -> None:
        """Record what connectivity updates need, then keep absent connections' gradients at zero."""
        for name, layer in self._hooked.items():
            if self.wants_dense_gradient(name):
                self._signals[name] = _signals(layer)
            mask = self._float_mask(layer)
            if mask is not None and not layer.gradient_is_masked() and layer.weight.grad is not None:
                layer.weight.grad.mul_(mask)

    @torch.no_grad()
    def after_step(self) -> bool:
        """Apply L1 penalties, re-impose masks after the optimizer moved weights, then apply
        connectivity updates. A scored layer's gate already hides the weights off its mask; they
        keep their values so that their scores still get a gradient (edge-popup). With the optimizer's
        state masked, a step cannot move an absent weight (its gradient and state are zero, and no
        optimizer here decays weights), so re-masking would change nothing and is skipped.
        Returns whether a layer's connectivity settled with this step (its plan changed: `_settled`)."""
        for name, layer in self._hooked.items():
            strength = self.structures[name].l1_strength(self.step, self.specs[name])
            if strength > 0:
                _soft_threshold(layer.trained_values(), strength * self.optimizer.param_groups[0]["lr"])
            mask = self._float_mask(layer)
            if not self.mask_optimizer_state and mask is not None and layer.weight.requires_grad and layer.score is None:
                layer.weight.mul_(mask)
            signals = self._signals.pop(name, None)
            if signals is not None:
                new_mask = self.structures[name].update_mask(layer.mask.cpu(), signals, self.step,
                                                             self.specs[name], self.generator)
                self._set_mask(name, layer, new_mask.to(layer.mask.device))
        self.step += 1
        if any(self._settled(name) for name in self._settling):
            self._plan()
            return True
        return False

    def _float_mask(self, layer: MaskedLinear) -> torch.Tensor | None:
        """The mask as 0/1 floats, cached until the mask changes: multiplying by it is several
        times faster than by the boolean mask, and it happens twice per update. None for a mask
        with every connection present (dense, prune before it starts): multiplying by ones
        changes nothing and cost the dense structure a tenth of its update."""
        key = change_key(layer.mask)
        cached = self._float_masks.get(id(layer))
        if cached is None or cached[0] != key:
            cached = (key, None if bool(layer.mask.all()) else layer.mask.to(layer.weight.dtype))
            self._float_masks[id(layer)] = cached
        return cached[1]

    def _set_mask(self, name: str, layer: MaskedLinear, new_mask: torch.Tensor) -> None:
        changed = layer.mask ^ new_mask
        count = int(changed.sum())
        if count == 0:
            return
        grown = new_mask & ~layer.mask
        if name in self.grown and self.grown[name].any():
            previous = self.grown[name]
            self.survival[name] = float((previous & new_mask).sum() / previous.sum())
        self.grown[name] = grown.cpu()
        layer.mask.copy_(new_mask)
        if layer.weight.requires_grad:
            if layer.score is None:  # dropped go to zero; grown were zero, so they start at zero
                layer.weight.mul_(new_mask)
            if self.mask_optimizer_state and self.optimizer is not None:
                for state in self.optimizer.state.get(layer.weight, {}).values():
                    if torch.is_tensor(state) and state.shape == changed.shape:
                        state[changed] = 0
        self.changed[name] += count
        self.topology_changes += 1
        self._plan()

    def masks(self) -> dict[str, np.ndarray]:
        """Connectivity of every wired layer, as booleans (a shared conv's is its receptive fields)."""
        return {name: getattr(self.network, name).connectivity().cpu().numpy() for name in self.specs}

    def density(self) -> dict[str, float]:
        return {name: float(mask.mean()) for name, mask in self.masks().items()}

    def take_changed(self) -> dict[str, int]:
        """Connections changed per layer since the last call."""
        changed, self.changed = self.changed, {name: 0 for name in self.specs}
        return changed

    def state_dict(self) -> dict:
        return {"step": self.step, "topology_changes": self.topology_changes, "changed": dict(self.changed),
                "generator": self.generator.get_state(), "grown": dict(self.grown), "survival": dict(self.survival)}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.topology_changes = int(state["topology_changes"])
        self.changed = {name: int(v) for name, v in state["changed"].items()}
        self.generator.set_state(state["generator"])
        self.grown = dict(state.get("grown", {}))  # checkpoints before diagnostics hold neither
        self.survival = {name: float(v) for name, v in state.get("survival", {}).items()}
        self._plan()


def _soft_threshold(values: torch.Tensor, threshold: float) -> None:
    """The proximal step of an L1 penalty: shrink every value towards zero by `threshold` (softshrink's
    arithmetic; on a CPU one compiled pass in place, where softshrink and copying back took 470 us a step
    for space_invaders' 614k scores, an eighth of an l1/fixed frame; the version counter is advanced as
    torch's in-place operations do, so values cached from the tensor are remade).

    Unlike an L1 term in the loss, it reaches exact zeros and never feeds a constant gradient
    to centered RMSprop, whose sqrt(E[g^2] - E[g]^2) turns NaN when the gradient is constant
    (as it is for inputs that are never active).
    """
    if values.device.type == "cpu" and values.is_contiguous():
        kernels.soft_threshold(values.detach().view(-1).numpy(), threshold)
        torch.autograd.graph.increment_version(values)
    else:
        values.copy_(torch.nn.functional.softshrink(values, threshold))


def _signals(layer: MaskedLinear) -> Signals:
    """On the CPU, where structures draw their random numbers."""
    if layer.score is None:
        return Signals(importance=layer.weight.detach().abs().cpu(), growth=layer.weight.grad.detach().abs().cpu())
    return Signals(importance=layer.score.detach().cpu().clone(), growth=layer.score.grad.detach().abs().cpu())
