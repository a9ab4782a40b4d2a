"""What subnormal numbers cost real training, and what flushing them to zero gives back.

    python benchmarks/denormals.py --game space_invaders --structure random --weights learned --train 100000

Trains one agent for --train frames the way runs did before they flushed (optimizer moments of
connections whose gradient stays zero decay through numbers below 2^-126, which x86 handles on a
slow path), reports how many of its moments are subnormal, then times rounds of --frames training
frames from that same state with subnormals kept and flushed, alternately, in this one process.
"""
from __future__ import annotations

import argparse
import copy

import torch

from minisparse.bench import timed_frames
from minisparse.config import Config
from minisparse.dqn import Agent


def subnormal_share(agent: Agent) -> float:
    moments = [value for state in agent.optimizer.state.values() for name, value in state.items() if name != "step"]
    values = torch.cat([m.reshape(-1) for m in moments])
    return float(((values != 0) & (values.abs() < torch.finfo(torch.float32).tiny)).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="space_invaders")
    parser.add_argument("--structure", default="random")
    parser.add_argument("--weights", default="learned")
    parser.add_argument("--train", type=int, default=100_000, help="frames trained before timing")
    parser.add_argument("--frames", type=int, default=3_000, help="frames per timed round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    config = Config(game=args.game, structure=args.structure, weights=args.weights, frames=10**8,
                    device="cpu", threads=1).validate()
    agent = Agent(config)
    torch.set_flush_denormal(False)
    observation = timed_frames(agent, agent.game.observation(), args.train)[0]
    print(f"{args.structure} {args.weights} on {args.game} after {args.train} frames: "
          f"{subnormal_share(agent):.2%} of the optimizer's moments are subnormal")
    state = agent.state_dict()
    best = {False: 0.0, True: 0.0}
    for _ in range(args.rounds):
        for flush in (False, True):
            agent.load_state_dict(copy.deepcopy(state))
            torch.set_flush_denormal(flush)
            best[flush] = max(best[flush], timed_frames(agent, observation, args.frames)[1])
    print(f"kept:    {best[False]:6.0f} frames/s\nflushed: {best[True]:6.0f} frames/s "
          f"({best[True] / best[False]:.2f}x, best of {args.rounds} rounds of {args.frames} frames)")


if __name__ == "__main__":
    main()
