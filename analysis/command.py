"""The `minisparse compare` command: a thin layer over analysis.compare."""
from __future__ import annotations

from pathlib import Path

import click

from minisparse.numbers import FiniteFloatRange


class UserError(click.ClickException):
    """A mistake in the command line: one line on stderr, exit status 2."""

    exit_code = 2


@click.command("compare")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Folder for the figures (PNG, PDF) and tables (CSV, Markdown, LaTeX).")
@click.option("--bins", default=40, show_default=True, type=click.IntRange(min=1),
              help="Frame bins of the learning curves.")
@click.option("--last-fraction", default=0.1, show_default=True,
              type=FiniteFloatRange(0, 1, min_open=True),
              help="Part of each run's frames whose episodes make its final score.")
@click.option("--reps", default=2000, show_default=True, type=click.IntRange(min=100),
              help="Bootstrap resamples for every confidence interval.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the bootstrap.")
def compare(paths: tuple[Path, ...], out: Path, bins: int, last_fraction: float, reps: int,
            seed: int) -> None:
    """Compare runs: learning curves, final performance, probability of improvement,
    fixed-vs-learned ranks and capacity of every structure found under PATHS (runs, folders
    of runs or study folders)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    from .comparison import compare as run_compare  # imported here: pandas, scipy, seaborn are slow
    from .load import NoRunsError

    try:
        result = run_compare(paths, out, bins=bins, last_fraction=last_fraction, reps=reps, seed=seed)
    except (NoRunsError, NotADirectoryError) as error:
        raise UserError(str(error)) from None
    for warning in result.warnings:
        click.secho(f"warning: {warning}", err=True, fg="yellow")
    runs = result.tables["run_scores"]
    click.echo(f"compared {len(runs)} runs of {runs['structure'].nunique()} structures; "
               f"wrote {len(result.files)} files to {out}")
