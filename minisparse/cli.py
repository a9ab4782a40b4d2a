"""The `minisparse` command. Options of `run` are generated from Config, the one source of truth."""
from __future__ import annotations

import dataclasses
import os
import sys
import typing
from contextlib import nullcontext
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import click

from minisparse import runner
from minisparse.analysis.command import compare, export
from minisparse.bench_command import bench
from minisparse.outputs import check_output_file, check_output_root
from minisparse.stops import Interrupted, OutOfSpace, interrupts_held
from minisparse.sweep import sweep
from minisparse.config import (ACTIVATIONS, BACKENDS, DEVICES, DISTRIBUTIONS, GAMES, OPTIMIZERS, WEIGHT_MODES, Config,
                               ConfigError)
from minisparse.structure_options import builtin_structures, check_structure

HELP = {
    "game": "MinAtar game.",
    "structure": "Connectivity of the structured layer: " + ", ".join(builtin_structures())
                 + ", or one a plug-in registers (see `minisparse structures`).",
    "weights": "learned: the structured layer trains; fixed: its weights keep their initial values.",
    "seed": "Seed of the network, the game and the agent's random choices.",
    "frames": "Training length in environment frames. The default is the full protocol: hours per run "
              "on one CPU core (the README's quickstart learns visibly in 50,000).",
    "sparsity": "Fraction of the structured layer's connections that are absent "
                "(default: the conv's budget, 9*C inputs per unit).",
    "fan_in": "Inputs per hidden unit of the structured layer (instead of --sparsity).",
    "plugins": "Folder of structure plug-in files (*.py) to load; stored in the run's config.",
    "sparse_hidden": "Make the dense 128-unit layer sparse too, splitting the budget by --distribution.",
    "distribution": "How --sparse-hidden splits the budget across layers: uniform density or ERK.",
    "hidden_units": "Units of the structured layer.",
    "dense_units": "Units of the dense layer after it.",
    "activation": "Nonlinearity after the structured and dense layers.",
    "leaky_slope": "Negative slope of leaky_relu.",
    "sticky_action_prob": "Probability that the game repeats the previous action.",
    "difficulty_ramping": "Let the games speed up over time, as in MinAtar's defaults.",
    "batch_size": "Transitions per TD update.",
    "replay_capacity": "Transitions kept in the replay buffer.",
    "replay_start": "Frames of uniform-random actions before learning starts.",
    "target_period": "Updates between copies of the network into the target network.",
    "epsilon_start": "Exploration rate when learning starts.",
    "epsilon_end": "Exploration rate after the decay.",
    "epsilon_frames": "Frames over which epsilon decays linearly after learning starts.",
    "gamma": "Discount factor.",
    "optimizer": "rmsprop (MinAtar's, centered) or adam (dynamic sparse training's).",
    "lr": "Learning rate.",
    "rmsprop_alpha": "RMSprop smoothing constant.",
    "rmsprop_eps": "RMSprop epsilon.",
    "rmsprop_centered": "Centered RMSprop.",
    "adam_betas": "Adam's two moment decay rates.",
    "adam_eps": "Adam epsilon.",
    "mask_optimizer_state": "Zero the optimizer state of connections that are dropped or grown.",
    "eval_every": "Frames between greedy evaluations on games of their own, written to eval.csv; "
                  "0 turns them off.  [default: a tenth of --frames]",
    "eval_episodes": "Episodes per evaluation; episode k starts from the same seed in every run.",
    "eval_epsilon": "Exploration rate during evaluation.",
    "device": "auto picks CUDA when available.",
    "backend": "How masked layers execute: dense (masked dense matrices), sparse (present connections only: "
               "compiled loops over the inputs that are on, on a CPU; torch's CSR kernels elsewhere), "
               "auto (whichever is faster for the layer's size and density).",
    "threads": "Torch CPU threads.",
    "checkpoint_every": "Frames between checkpoints (one is also written on SIGINT/SIGTERM).",
    "log_every": "Frames between progress lines and train.csv rows.",
    "tensorboard": 'Also log returns, evaluations, train.csv columns and diagnostics as TensorBoard scalars '
                   'under the run directory (pip install "minisparse[tensorboard]").',
}
CHOICES = {"game": GAMES, "weights": WEIGHT_MODES, "activation": ACTIVATIONS, "optimizer": OPTIMIZERS,
           "device": DEVICES, "backend": BACKENDS, "distribution": DISTRIBUTIONS}


BUDGET_FIELDS = ("game", "seed", "sparsity", "fan_in", "sparse_hidden", "distribution", "hidden_units",
                 "plugins")


def config_options(command: Callable, only: tuple[str, ...] | None = None) -> Callable:
    """Decorate a click command with one option per Config field (or per field in `only`)."""
    hints = typing.get_type_hints(Config)
    for field in reversed(dataclasses.fields(Config)):
        if field.name == "structure_options" or (only is not None and field.name not in only):
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        kind = hints[field.name]
        if kind is bool:
            option = click.option(f"{flag}/--no-{flag[2:]}", field.name, default=default, show_default=True,
                                  help=HELP[field.name])
        elif field.name in CHOICES:
            option = click.option(flag, field.name, default=default, show_default=True, metavar="|".join(CHOICES[field.name]),
                                  help=HELP[field.name])
        elif field.name == "adam_betas":
            option = click.option(flag, field.name, type=float, nargs=2, default=default, show_default=True,
                                  help=HELP[field.name])
        else:
            base = next(t for t in (int, float, str) if t is kind or t in typing.get_args(kind))
            option = click.option(flag, field.name, type=base, default=default, show_default=default is not None,
                                  help=HELP[field.name])
        command = option(command)
    return command


def parse_structure_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"structure option {pair!r} is not KEY=VALUE")
        options[key.replace("-", "_")] = value
    return options


# How `minisparse run --help` groups its options, in this order; any option not named lands in the last.
RUN_SECTIONS = {
    "What to train": ("like", "game", "structure", "structure_option", "weights", "seed", "frames", "plugins"),
    "Capacity": ("sparsity", "fan_in", "sparse_hidden", "distribution", "hidden_units", "dense_units"),
    "The game": ("sticky_action_prob", "difficulty_ramping"),
    "DQN hyperparameters": ("activation", "leaky_slope", "batch_size", "replay_capacity", "replay_start",
                            "target_period", "epsilon_start", "epsilon_end", "epsilon_frames", "gamma", "optimizer",
                            "lr", "rmsprop_alpha", "rmsprop_eps", "rmsprop_centered", "adam_betas", "adam_eps",
                            "mask_optimizer_state"),
    "Evaluation": ("eval_every", "eval_episodes", "eval_epsilon"),
    "Execution": ("device", "backend", "threads"),
    "Output": ("out", "resume", "checkpoint_every", "log_every", "tensorboard", "help"),
}


COLUMN_MAX = 30  # click's: longer option names get a line of their own


class SectionedCommand(click.Command):
    """A command whose --help lists its options under the headings of RUN_SECTIONS."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = {param.name: param.get_help_record(ctx) for param in self.get_params(ctx)}
        records = {name: record for name, record in records.items() if record}
        width = min(COLUMN_MAX, max(len(term) for term, _ in records.values()))  # one column edge for all
        titles = list(RUN_SECTIONS)
        for title in titles:
            names = RUN_SECTIONS[title] if title != titles[-1] else [*RUN_SECTIONS[title], *records]
            rows = [records.pop(name) for name in names if name in records]
            if rows:
                with formatter.section(title):
                    formatter.write_dl([(term.ljust(width), text) for term, text in rows], col_max=COLUMN_MAX)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="minisparse")
def cli() -> None:
    """Sparse connectivity in DQN agents on the MinAtar games.

    Train one agent with `minisparse run`, list structures at matched capacity with
    `minisparse structures`, compare runs with `minisparse compare`.
    """


@cli.command(cls=SectionedCommand)
@config_options
@click.option("--option", "-o", "structure_option", multiple=True, metavar="KEY=VALUE",
              help="A structure option, e.g. -o per_unit=false (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Folder that receives the run directory.")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="Continue the run in this run directory from its checkpoint.")
@click.option("--config", "like", type=click.Path(path_type=Path), default=None, metavar="RUN",
              help="Start a new run with the settings of RUN (a run directory, its config.json, or STUDY.zip/RUN "
                   "in an export file); options given here override them, e.g. --seed 3 or --frames 50000.")
@click.pass_context
def run(ctx: click.Context, structure_option: tuple[str, ...], out: Path, resume: Path | None,
        like: Path | None, **fields: Any) -> None:
    """Train a DQN agent and leave a self-describing run directory.

    \b
    Examples:
      minisparse run --game breakout --structure random --weights fixed --frames 200000
      minisparse run --config docs/results/interplay-pilot.zip/breakout-local-fixed-s1-3317e058
    """
    if resume is not None:
        given = ["/".join(param.opts + param.secondary_opts) for param in ctx.command.params
                 if param.name != "resume" and ctx.get_parameter_source(param.name).name == "COMMANDLINE"]
        if given:
            raise ConfigError(f"--resume takes no other options (the run's config.json decides); got {given[0]}")
        dqn = _training_core()
        resume = resume.resolve()
        with runner.exclusive(resume.parent, resume.name) if resume.is_dir() else nullcontext():
            path = dqn.resume(resume)
    else:
        options_before = {}
        if like is not None:
            from minisparse import rundir

            given = {name: fields[name] for name in fields if ctx.get_parameter_source(name).name == "COMMANDLINE"}
            fields, options_before = settings_like(rundir.config_like(like), given)
        config = config_from_options(fields, structure_option, options_before)
        dqn = _training_core()
        agent, path = dqn.create(config, out)
        with runner.exclusive(out, path.name):
            dqn.train(agent, path)
    from minisparse.rundir import summary

    click.echo(f"run complete: {path}\n{summary(path)}")


def _training_core() -> ModuleType:
    """minisparse.dqn, imported (with torch, numba and MinAtar) once the options are known to be sound, and
    with Ctrl-C held meanwhile: some of those imports swallow the KeyboardInterrupt (stops.interrupts_held)."""
    with interrupts_held():
        from minisparse import dqn
    return dqn


def settings_like(before: Config, given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings of a run like `before` with the options `given` on the command line, and the structure
    options it keeps (only those of an unchanged structure). A budget given replaces the one it had
    (--fan-in after a run with --sparsity), and a structure that ignores a budget drops the one it had."""
    fields = {name: value for name, value in before.to_dict().items() if name != "structure_options"}
    if given.keys() & {"sparsity", "fan_in"}:
        fields.update(sparsity=None, fan_in=None)
    fields.update(given)
    if not Config(**fields).takes_budget():
        fields.update(sparsity=None, fan_in=None)
    return fields, before.structure_options if fields["structure"] == before.structure else {}


def budget_options(command: Callable) -> Callable:
    return config_options(command, BUDGET_FIELDS)


def config_from_options(fields: dict[str, Any], option_pairs: tuple[str, ...] = (),
                        options_before: dict[str, Any] | None = None) -> Config:
    """The Config that command-line options describe: plug-in folder made absolute (it is stored
    in the run's config), structure options typed as the structure declares them and added to
    `options_before` (those of the run that --config names)."""
    fields = dict(fields)
    if "adam_betas" in fields:
        fields["adam_betas"] = tuple(fields["adam_betas"])
    if fields.get("plugins") is not None:
        fields["plugins"] = str(Path(fields["plugins"]).resolve())
    Config(**fields).check_settings()
    structure, given = fields.get("structure", Config.structure), parse_structure_options(option_pairs)
    check_structure(structure, given, fields.get("plugins"))
    with interrupts_held():  # torch: only once the settings are sound, and not stopped half-imported
        from minisparse.structure import typed_options
    options = typed_options(structure, {**(options_before or {}), **given}, fields.get("plugins"))
    return Config(**fields, structure_options=options).validate()


@cli.group(invoke_without_command=True)
@budget_options
@click.pass_context
def structures(ctx: click.Context, **fields: Any) -> None:
    """List every registered structure at one budget: units, connections, unique parameters (a
    conv's shared weights once, trained or frozen), density and forward FLOPs per sample of the
    sparse layers."""
    if ctx.invoked_subcommand is not None:
        return
    from minisparse.catalog import capacity_table

    config = config_from_options({**fields, "structure": "random"})  # any structure that takes the budget
    table = capacity_table(config)
    layers = "structured + hidden layers" if config.sparse_hidden else "structured layer"
    click.echo(f"{config.game} ({config.channels} channels), {layers}, connections at the end of training\n")
    formats = {"units": "{:.0f}", "density": "{:.4f}", "connections": "{:,.0f}", "parameters": "{:,.0f}",
               "flops": "{:,.0f}"}
    click.echo(table.drop(columns="note").to_string(
        index=False, na_rep="-", formatters={k: v.format for k, v in formats.items()}))
    for name, note in table.dropna(subset=["note"])[["structure", "note"]].itertuples(index=False):
        click.echo(f"{name}: {note}")


@structures.command()
@click.argument("target")
@budget_options
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Picture file (.png or .pdf); for a run directory, the folder for <run>-masks.png/.pdf.")
def show(target: str, out: Path, **fields: Any) -> None:
    """Draw a structure (TARGET = its name) or a run's start and end masks (TARGET = run directory)
    over the 10x10 input: receptive fields of a few units per channel, and readers per pixel."""
    from minisparse.analysis.pictures import draw_mask, draw_run_masks

    if Path(target).is_dir():
        if not (Path(target) / "masks" / "start.npz").exists():
            raise ConfigError(f"{target!r} has no masks/start.npz (not a run that started learning)")
        if out.suffix in (".png", ".pdf"):
            raise ConfigError(f"for a run directory --out is a folder (for <run>-masks.png/.pdf), got {str(out)!r}")
        check_output_root(out)
        for path in draw_run_masks(target, out):
            click.echo(f"wrote {path}")
        return
    if os.sep in target:
        raise ConfigError(f"{target!r} is not a run directory" if Path(target).exists()
                          else f"run directory {target!r} does not exist")
    if out.suffix not in (".png", ".pdf"):
        raise ConfigError(f"picture file {str(out)!r} must end in .png or .pdf")
    check_output_file(out)
    from minisparse.catalog import connectivity

    config = config_from_options({**fields, "structure": target})
    from minisparse.env import channel_names

    mask = connectivity(config)["structured"]
    fewest, most = mask.sum(1).min(), mask.sum(1).max()
    per_unit = f"{fewest}" if fewest == most else f"{fewest}-{most}"
    title = (f"{target} on {config.game}: {int(mask.sum()):,} connections "
             f"({mask.mean():.1%} dense), {per_unit} inputs per unit")
    out.parent.mkdir(parents=True, exist_ok=True)
    click.echo(f"wrote {draw_mask(mask, config.channels, title, out, channel_names=channel_names(config.game))}")


cli.add_command(compare)
cli.add_command(export)
cli.add_command(sweep)
cli.add_command(bench)


OUT_OF_SPACE = 75  # sysexits' EX_TEMPFAIL: not a mistake in the input; retry once space is freed


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit status 2, a full disk one line
    and status 75 (retry once space is freed); Ctrl-C before a run has started (a started run
    checkpoints and raises Interrupted) exits 130 with one line."""
    try:
        code = cli.main(standalone_mode=False)
    except (click.UsageError, click.BadParameter) as error:
        _fail(error.format_message())
    except ConfigError as error:
        _fail(str(error))
    except (click.exceptions.Abort, KeyboardInterrupt):
        _interrupted()
    except OutOfSpace as error:
        click.echo(f"minisparse: error: {error}", err=True)
        sys.exit(OUT_OF_SPACE)
    except Interrupted as stop:
        click.echo(f"minisparse: {stop}", err=True)
        sys.exit(128 + stop.signum)
    except click.ClickException as error:
        _fail(error.format_message())
    else:
        sys.exit(code if isinstance(code, int) else 0)


def _interrupted() -> None:
    click.echo("minisparse: interrupted", err=True)
    sys.exit(130)


def _fail(message: str) -> None:
    click.echo(f"minisparse: error: {message}", err=True)
    sys.exit(2)
