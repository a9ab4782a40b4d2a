"""Time MinAtar's own reference DQN script on this machine, for a side-by-side with `minisparse bench`.

    python benchmarks/time_minatar_reference.py PATH/TO/MinAtar/examples/dqn.py --game breakout --frames 3000

MinAtar's script is not on PyPI (the package ships the games only), so pass the file from a
checkout of its repository. This runs the script's own `dqn` loop on one torch thread for the
replay start plus `--frames` frames, and reports CPU frames/s from its first training update
on, the quantity `minisparse bench` reports. Run both back to back: this machine's speed
drifts, so compare figures taken minutes apart, not days.
"""
from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", type=Path, help="MinAtar's examples/dqn.py")
    parser.add_argument("--game", default="breakout")
    parser.add_argument("--frames", type=int, default=3000, help="timed frames after the replay start")
    options = parser.parse_args()
    if not options.script.is_file():
        parser.error(f"{options.script} does not exist (clone https://github.com/kenjyoung/MinAtar for it)")

    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("minatar_reference_dqn", options.script)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.NUM_FRAMES = script.REPLAY_START_SIZE + 1 + options.frames

    started: list[float] = []
    train = script.train

    def timed_train(*args: object) -> None:
        if not started:
            started.append(time.process_time())
        train(*args)

    script.train = timed_train
    with tempfile.TemporaryDirectory() as scratch:
        script.dqn(script.Environment(options.game), False, False, str(Path(scratch) / options.game))
    seconds = time.process_time() - started[0]
    print(f"{options.game}: MinAtar's reference script, {options.frames / seconds:.0f} frames/s "
          f"(CPU time, 1 thread, {options.frames} frames after the replay start)")


if __name__ == "__main__":
    main()
