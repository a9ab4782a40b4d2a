"""Uniform experience replay with observations stored as packed bits.

MinAtar observations are booleans, so one observation of C channels takes C*100/8 bytes.
Observations live in a ring one slot longer than the transition ring: transition k reads
its state from slot k and its next state from slot k+1, so a next state is never stored
twice (the following transition's state overwrites it with the same bits, or, after a
terminal, with the new episode's first state, which the done flag masks anyway).
Training batches are unpacked straight to float32 through a byte -> 8 floats lookup table.

A network whose first layer never changes while learning (fixed weights, static connectivity)
would compute the same features of a stored frame each of the ~32 times it is sampled;
`keep_features` stores them once per slot instead, and batches then carry them.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    """A training batch on the network's device. `states` is (2 * batch, C*100) float32 holding the
    observations followed by the next observations, flat in the network's input order; where the
    replay keeps their first-layer features (`Replay.keep_features`) `features` holds those rows
    instead, and `states` is None: the frames themselves are no longer read."""

    states: torch.Tensor | None
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    features: torch.Tensor | None = None


# Row b holds the bits of byte b as float32, most significant first (the order of np.packbits).
_BIT_TABLE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32)


class Replay:
    def __init__(self, capacity: int, observation_shape: tuple[int, ...]):
        self.capacity = capacity
        self.observation_shape = observation_shape
        self._bits = int(np.prod(observation_shape))
        packed = (self._bits + 7) // 8
        self.observations = np.zeros((capacity + 1, packed), dtype=np.uint8)
        self.observation_slot = np.zeros(capacity, dtype=np.int64)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.dones = np.zeros(capacity, dtype=np.float32)
        self.added = 0
        self.features: np.ndarray | None = None
        self._encode: Callable[[np.ndarray], np.ndarray] | None = None

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    @property
    def nbytes(self) -> int:
        arrays = (self.observations, self.observation_slot, self.actions, self.rewards, self.dones, self.features)
        return sum(a.nbytes for a in arrays if a is not None)

    def add(self, observation: np.ndarray, action: int, reward: float,
            next_observation: np.ndarray, done: bool) -> None:
        index = self.added % self.capacity
        slot = self.added % (self.capacity + 1)
        self._store(slot, observation)
        self._store((slot + 1) % (self.capacity + 1), next_observation)
        self.observation_slot[index] = slot
        self.actions[index] = action
        self.rewards[index] = reward
        self.dones[index] = done
        self.added += 1

    def _store(self, slot: int, observation: np.ndarray) -> None:
        packed = np.packbits(observation)
        if self._encode is not None and (slot >= self._written()
                                         or not np.array_equal(self.observations[slot], packed)):
            self.features[slot] = self._encode(observation)
        self.observations[slot] = packed

    def _written(self) -> int:
        """Slots 0 .. this - 1 hold a stored observation (the ring's slots are first written in order)."""
        return min(self.added + 1, self.capacity + 1) if self.added else 0

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(observations, actions, rewards, next_observations, dones) as arrays, observations as uint8 0/1."""
        index = rng.integers(len(self), size=batch_size)
        slot = self.observation_slot[index]
        return (self._unpack(slot), self.actions[index], self.rewards[index],
                self._unpack((slot + 1) % (self.capacity + 1)), self.dones[index])

    def sample_tensors(self, batch_size: int, rng: np.random.Generator, device: torch.device) -> Batch:
        """The batch `sample` draws from the same rng, as tensors on `device` ready for the network."""
        index = rng.integers(len(self), size=batch_size)
        slot = self.observation_slot[index]
        slots = np.concatenate((slot, (slot + 1) % (self.capacity + 1)))
        tensors = [torch.from_numpy(c).to(device, non_blocking=True)
                   for c in (self.actions[index], self.rewards[index], self.dones[index])]
        if self.features is not None:
            return Batch(None, *tensors, torch.from_numpy(self.features[slots]).to(device, non_blocking=True))
        states = _BIT_TABLE.take(self.observations[slots], axis=0).reshape(2 * batch_size, -1)[:, :self._bits]
        return Batch(torch.from_numpy(states).to(device, non_blocking=True), *tensors)

    def keep_features(self, encode: Callable[[np.ndarray], np.ndarray], size: int) -> None:
        """From now on store `encode(observation)` (`size` float32s) with every observation, the stored
        ones included, and hand them out with batches. `encode` must be a fixed function of the frame.
        Every written slot holds the encoding of its bits, each encoded alone, so encoding the replay
        again (after a resume) gives the same features, bit for bit. Slots not yet written stay
        untouched zero pages: a short run does not make the whole array resident."""
        self._encode = encode
        self.features = np.zeros((self.capacity + 1, size), np.float32)
        for slot in range(self._written()):
            self.features[slot] = encode(self._unpack(np.array([slot]))[0])

    def all_observations(self) -> np.ndarray:
        """Every stored state, unpacked: (len, *observation_shape) uint8."""
        return self._unpack(self.observation_slot[:len(self)])

    def _unpack(self, slots: np.ndarray) -> np.ndarray:
        bits = np.unpackbits(self.observations[slots], axis=1, count=self._bits)
        return bits.reshape(len(slots), *self.observation_shape)

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"observations": torch.from_numpy(self.observations),
                "observation_slot": torch.from_numpy(self.observation_slot),
                "actions": torch.from_numpy(self.actions),
                "rewards": torch.from_numpy(self.rewards),
                "dones": torch.from_numpy(self.dones),
                "added": self.added}

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        for name in ("observations", "observation_slot", "actions", "rewards", "dones"):
            target = getattr(self, name)
            source = state[name].numpy()
            if source.shape != target.shape:
                raise ValueError(f"replay {name} has shape {source.shape}, expected {target.shape}")
            target[...] = source
        added = int(state["added"])
        if added < 0:
            raise ValueError(f"replay count {added} is negative")
        self.added = added
        self.features = self._encode = None  # kept for the frames replaced: a keeper asks again (keep_features)
