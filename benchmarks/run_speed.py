"""How fast whole runs trained, before, while and after their structure rewired, from their train.csv.

    python benchmarks/run_speed.py runs/space_invaders-l1-fixed-s1-* runs/space_invaders-conv-fixed-s1-*

`minisparse bench` times a few thousand frames just after the replay start, where a schedule such as
pruning's has not begun; a whole run also passes through its rewiring and what follows. Each train.csv
row holds the frames/s of the frames since the previous row, so time is summed over rows (the first
row, which includes the random-policy frames before learning, is left out). Phases: the rows before
the first one whose `changed_structured` is nonzero, up to the last such row, and after it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def phase_speeds(run: Path) -> dict[str, float]:
    """Frames per second over the learning frames, and over each rewiring phase the run went through."""
    rows = pd.read_csv(run / "train.csv")
    rows["frames"] = rows["frame"].diff()
    rows["seconds"] = rows["frames"] / rows["frames_per_s"]
    rows = rows.iloc[1:]
    changed = rows.index[rows["changed_structured"] > 0]
    phases = {"learning": rows}
    if len(changed):
        phases.update(before=rows.loc[:changed[0] - 1], rewiring=rows.loc[changed[0]:changed[-1]],
                      after=rows.loc[changed[-1] + 1:])
    return {name: round(part["frames"].sum() / part["seconds"].sum(), 1)
            for name, part in phases.items() if len(part)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()
    table = []
    for run in args.runs:
        config = json.loads((run / "config.json").read_text())["config"]
        table.append({"run": str(run), "game": config["game"], "structure": config["structure"],
                      "weights": config["weights"], **phase_speeds(run)})
    frame = pd.DataFrame(table).set_index("run")
    print(frame.to_string(na_rep="-"))
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
