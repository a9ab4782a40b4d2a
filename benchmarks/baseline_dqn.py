"""The baseline row of `minisparse bench`: DQN on MinAtar written the plain way.

This follows the shape of MinAtar's reference script (examples/dqn.py in the MinAtar
repository): transitions are tuples of tensors in a Python list sampled with
`random.sample`, batches are stacked with `torch.cat`, the network is an `nn.Module`
(3x3 conv with 16 filters -> 128 -> one output per action), and the optimizer is the stock
`torch.optim.RMSprop(centered=True)` without foreach. Its per-frame idioms are the reference
script's too: epsilon drawn with numpy's binomial, actions, rewards and flags as small tensors,
and the bootstrap of non-terminal next states selected by an index list built in Python.
Same hyperparameters as minisparse's defaults, so the benchmark's ratio is the gain from
minisparse's implementation alone.
"""
from __future__ import annotations

import random
from collections import namedtuple

import numpy as np
import torch
import torch.nn.functional as F
from minatar import Environment
from torch import nn

Transition = namedtuple("Transition", "state next_state action reward terminal")


class ConvQNetwork(nn.Module):
    """MinAtar's reference network: conv 3x3 (16 filters) -> relu -> 128 -> relu -> actions."""

    def __init__(self, in_channels: int, num_actions: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1)
        self.fc_hidden = nn.Linear(16 * 8 * 8, 128)
        self.output = nn.Linear(128, num_actions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        x = F.relu(self.fc_hidden(x.view(x.size(0), -1)))
        return self.output(x)


class ListReplay:
    """A ring of Transition tuples, sampled uniformly with random.sample."""

    def __init__(self, capacity: int):
        self.capacity, self.location, self.buffer = capacity, 0, []

    def add(self, *args: torch.Tensor) -> None:
        if len(self.buffer) < self.capacity:
            self.buffer.append(Transition(*args))
        else:
            self.buffer[self.location] = Transition(*args)
        self.location = (self.location + 1) % self.capacity

    def sample(self, batch_size: int) -> list[Transition]:
        return random.sample(self.buffer, batch_size)


class BaselineDQN:
    """One agent; `frame` runs one frame of act + store (+ update once learning has started)."""

    def __init__(self, game: str, seed: int, replay_capacity: int = 100_000, batch_size: int = 32,
                 target_period: int = 1000, gamma: float = 0.99):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.env = Environment(game, sticky_action_prob=0.1, difficulty_ramping=True)
        self.env.seed(seed)
        self.env.reset()
        self.num_actions = 6
        self.policy = ConvQNetwork(self.env.n_channels, self.num_actions)
        self.target = ConvQNetwork(self.env.n_channels, self.num_actions)
        self.target.load_state_dict(self.policy.state_dict())
        self.optimizer = torch.optim.RMSprop(self.policy.parameters(), lr=2.5e-4, alpha=0.95, eps=0.01,
                                             centered=True, foreach=False)
        self.replay = ListReplay(replay_capacity)
        self.batch_size, self.target_period, self.gamma = batch_size, target_period, gamma
        self.updates = 0
        self.state = self._state()

    def _state(self) -> torch.Tensor:
        return torch.tensor(self.env.state()).permute(2, 0, 1).unsqueeze(0).float()

    def frame(self, epsilon: float, learn: bool) -> None:
        if np.random.binomial(1, epsilon) == 1:
            action = torch.tensor([[random.randrange(self.num_actions)]])
        else:
            with torch.no_grad():
                action = self.policy(self.state).max(1)[1].view(1, 1)
        reward, terminal = self.env.act(int(action))
        next_state = self._state()
        self.replay.add(self.state, next_state, action, torch.tensor([[reward]]).float(),
                        torch.tensor([[terminal]]).float())
        if learn:
            self.update()
        if terminal:
            self.env.reset()
            next_state = self._state()
        self.state = next_state

    def update(self) -> None:
        batch = Transition(*zip(*self.replay.sample(self.batch_size)))
        states, next_states = torch.cat(batch.state), torch.cat(batch.next_state)
        actions, rewards, terminals = torch.cat(batch.action), torch.cat(batch.reward), torch.cat(batch.terminal)
        q_taken = self.policy(states).gather(1, actions)
        live = torch.tensor([i for i, terminal in enumerate(terminals) if terminal == 0], dtype=torch.int64)
        next_q = torch.zeros(len(terminals), 1)
        if len(live) != 0:
            next_q[live] = self.target(next_states.index_select(0, live)).detach().max(1)[0].unsqueeze(1)
        target = rewards + self.gamma * next_q
        loss = F.smooth_l1_loss(target, q_taken)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.target_period == 0:
            self.target.load_state_dict(self.policy.state_dict())
