"""The capacity table and the matched-capacity check.

Comparing structures is only fair at matched capacity: every sparse structure should have
the same connections per layer (the design's default is the conv's budget). `dense` is the
unmatched reference and is left out of the check.
"""
from __future__ import annotations

import pandas as pd

from .load import CAPACITY_COLUMNS
from .stats import variants

REFERENCE = "dense"


def capacity_table(capacity: pd.DataFrame) -> pd.DataFrame:
    """One row per game, structure, weight mode and layer (from load_capacity), with runs counted.

    Seeds that disagree on a value show up as separate rows rather than being averaged away.
    `matched` says whether the layer's connections equal those of every other sparse
    structure of the game (`reference` for dense).
    """
    frame = capacity.assign(structure=variants(capacity))
    keys = ["game", "structure", "weights", "layer", *CAPACITY_COLUMNS]
    table = frame.groupby(keys, sort=True, dropna=False).size().rename("runs").reset_index()
    counts = ["units", "inputs", "connections", "parameters", "flops"]
    table[counts] = table[counts].astype("Int64")  # `total` has no inputs: keep counts integers
    table = table.rename(columns={"units": "hidden units"})
    sparse = ~table["structure"].map(is_reference)
    distinct = table[sparse].groupby(["game", "layer"])["connections"].transform("nunique")
    table["matched"] = "reference"
    table.loc[sparse, "matched"] = (distinct == 1).map({True: "yes", False: "NO"})
    return table


def is_reference(structure: str) -> bool:
    """Dense, under any settings (`dense (lr=0.001)`), is the unmatched reference."""
    return structure == REFERENCE or structure.startswith(f"{REFERENCE} (")


def capacity_warning(table: pd.DataFrame) -> str | None:
    """A one-line warning naming the layers and structures whose connections differ, or None."""
    problems = []
    unmatched = table[(table["matched"] == "NO") & (table["layer"] != "total")]
    for (game, layer), rows in unmatched.groupby(["game", "layer"], sort=True):
        values = "; ".join(f"{', '.join(sorted(set(group['structure'])))} {connections:,}"
                           for connections, group in rows.groupby("connections"))
        problems.append(f"{game} {layer} layer ({values})")
    if not problems:
        return None
    return ("not at matched capacity: connections differ between sparse structures in "
            + " and ".join(problems))
