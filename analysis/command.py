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
    claims = result.tables.get("claims")
    if claims is not None:
        click.echo("the protocol's claims at this budget (why: claims.md, claim_evidence.md):")
        for claim in claims.itertuples():
            click.echo(f"  {claim.verdict:<12} {claim.claim} ({claim.comparisons} comparisons)")


@click.command("export")
@click.argument("study", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="The export file to write (a zip; .zip is the usual suffix). An existing export is replaced.")
def export(study: Path, out: Path) -> None:
    """Pack the runs under STUDY (a sweep's output folder) into one compact file.

    It holds each run's config (resolved, with capacity), completion record, episodes, train rows, greedy
    evaluations and start and end masks: what `minisparse compare` and `minisparse.analysis.load_runs` read, and
    they read the file exactly as they read the folder. Models and checkpoints stay behind.

    \b
    Example:
      minisparse export runs/interplay --out interplay.zip
      minisparse compare interplay.zip --out report/
    """
    from minisparse.config import ConfigError
    from minisparse.outputs import check_output_file

    from .export import export_study
    from .load import NoRunsError, is_export

    try:
        check_output_file(out)
        if out.exists() and not is_export(out):
            raise UserError(f"{out} exists and is not a minisparse export; choose another --out")
        manifest = export_study(study, out)
    except (NoRunsError, ConfigError) as error:
        raise UserError(str(error)) from None
    size = out.stat().st_size / 2**20
    click.echo(f"exported {manifest['runs']} runs ({manifest['complete']} complete) of {manifest['study']} "
               f"to {out} ({size:.1f} MiB)")
