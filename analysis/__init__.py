"""Reading runs, statistics, figures and tables for comparing sparse structures.

Everything `minisparse compare` does is callable from a notebook:

    from minisparse.analysis import load_runs, final_performance, probability_of_improvement
    episodes = load_runs("runs/study")
    final_performance(episodes)

Names are imported on first use, so that `minisparse --help` (which registers the compare
command) does not pay for importing pandas, scipy and seaborn.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    ".comparison": ("Comparison", "compare"),
    ".export": ("export_study",),
    ".load": ("BrokenRunWarning", "NoRunsError", "find_runs", "load_capacity", "load_eval", "load_runs", "load_train"),
    ".pictures": ("draw_mask", "draw_run_masks"),
    ".stats": ("binned", "binned_returns", "eval_curves", "eval_scores", "final_performance", "improvement_table",
               "iqm", "paired_differences", "performance_table", "probability_of_improvement", "rank_table",
               "run_scores", "sensitivity", "varied_settings"),
    ".capacity": ("capacity_table", "capacity_warning"),
    ".claims": ("claim_evidence", "claim_verdicts"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)

if TYPE_CHECKING:
    from .capacity import capacity_table, capacity_warning
    from .claims import claim_evidence, claim_verdicts
    from .comparison import Comparison, compare
    from .export import export_study
    from .load import BrokenRunWarning, NoRunsError, find_runs, load_capacity, load_eval, load_runs, load_train
    from .pictures import draw_mask, draw_run_masks
    from .stats import (binned, binned_returns, eval_curves, eval_scores, final_performance, improvement_table, iqm,
                        paired_differences, performance_table, probability_of_improvement, rank_table, run_scores,
                        sensitivity, varied_settings)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    globals()[name] = value
    return value
