"""What the hand-derived TD update gives over autograd for one configuration, side by side.

    python benchmarks/fast_update.py --game breakout --structure l1 --weights fixed

Trains one agent past its replay start at epsilon 0.1 (a run's steady state, as `minisparse bench`
has it), then times rounds of --frames training frames with its
TD update derived by hand (td.FastTD) and through autograd (td.AutogradTD), alternately, on the
same agent in this one process, so the machine's drift falls on both alike. Both compute the
same update (tests/test_td.py), so the agent simply trains on. Both read the frames: the replay
does not keep a frozen layer's features here, which only the hand-derived update could read.
"""
from __future__ import annotations

import argparse

from minisparse.bench import FINAL_EPSILON, timed_frames
from minisparse.config import Config
from minisparse.dqn import Agent
from minisparse.td import AutogradTD, FastTD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="breakout")
    parser.add_argument("--structure", default="l1")
    parser.add_argument("--weights", default="fixed")
    parser.add_argument("--train", type=int, default=2_000, help="frames trained before timing (the replay start)")
    parser.add_argument("--frames", type=int, default=600, help="frames per timed round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    config = Config(game=args.game, structure=args.structure, weights=args.weights, replay_start=args.train,
                    epsilon_frames=0, epsilon_end=FINAL_EPSILON, device="cpu", threads=1).validate()
    agent = Agent(config)
    if not isinstance(agent.td, FastTD):
        raise SystemExit(f"{args.structure} {args.weights} takes autograd anyway: {agent.autograd_reason()}")
    agent.td.frozen_features = lambda: None
    updates = {"hand-derived": agent.td, "autograd": AutogradTD(agent.q, agent.target, config.gamma)}
    observation = timed_frames(agent, agent.game.observation(), args.train)[0]
    best = dict.fromkeys(updates, 0.0)
    for _ in range(args.rounds):
        for name, update in updates.items():
            agent.td = update
            observation, speed = timed_frames(agent, observation, args.frames)
            best[name] = max(best[name], speed)
    for name, speed in best.items():
        print(f"{name:12s} {speed:6.0f} frames/s")
    print(f"ratio {best['hand-derived'] / best['autograd']:.2f}x (best of {args.rounds} rounds of {args.frames} frames, "
          f"{args.structure} {args.weights} on {args.game})")


if __name__ == "__main__":
    main()
