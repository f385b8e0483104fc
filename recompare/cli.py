"""The ``recompare`` command line: one click group, thin commands.

Commands live in :mod:`recompare.commands` (one module per area) and only
translate options into library calls.  Results go to stdout (a rich table, or
JSON with ``--json``); progress and logs go to stderr.  Library errors
(:class:`~recompare.errors.RecompareError`) become one line and exit code 1.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import __version__
from .errors import RecompareError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    """Turns expected errors into one clean line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RecompareError as exc:
            # one line even when the message quotes a multi-line error of numpy or torch
            raise click.ClickException(" ".join(str(exc).split())) from None
        except FileNotFoundError as exc:
            raise click.ClickException(f"file not found: {exc.filename or exc}") from None
        except PermissionError as exc:
            raise click.ClickException(f"permission denied: {exc.filename or exc}") from None
        except OSError as exc:  # disk full, a file where a directory is expected, ...
            where = f"{exc.filename}: " if exc.filename else ""
            text = " ".join(f"{where}{exc.strerror or exc}".split())  # always one line
            raise click.ClickException(text) from None
        except MemoryError:
            raise click.ClickException(
                "out of memory; try a smaller --scale, fewer factors or a smaller batch"
            ) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        # keep the order in which commands were registered (the tour order)
        return list(self.commands)


@click.group(cls=_Group, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="recompare")
def main() -> None:
    """Compare WALS matrix factorization and a softmax DNN on the same data.

    \b
    A typical session:
      recompare data synth planted                   # or: data prepare ml-100k/ my-data
      recompare train-wals planted -o models/wals
      recompare train-dnn planted -o models/dnn
      recompare evaluate planted models/wals models/dnn popularity --folding-report
      recompare compare planted -o report/             # all of it, with a report
    """


# ------------------------------------------------------------------ helpers
def stderr_console():
    """A rich console on stderr for progress and logs (stdout stays pipeable).

    Log lines carry the time but not the source location (``data.py:83`` means nothing
    to a user)."""
    from rich.console import Console

    return Console(stderr=True, log_path=False)


def stdout_console():
    """Results console: the terminal's width, or ``$COLUMNS`` when set (also when piped);
    piped output without ``$COLUMNS`` gets 120 columns."""
    import os

    from rich.console import Console

    if sys.stdout.isatty() or os.environ.get("COLUMNS", "").strip().isdigit():
        return Console()  # rich reads $COLUMNS itself
    return Console(width=120)


def echo_json(payload: Any) -> None:
    """Print machine-readable output on stdout."""
    click.echo(json.dumps(payload, indent=2, default=_default))


def echo_summary(summary: Any, title: str, rows, as_json: bool) -> None:
    """A command's result: ``summary`` as JSON with ``--json``, else a two-column rich
    table of ``rows`` (a callable returning (name, text) pairs, built only when shown)."""
    if as_json:
        echo_json(summary)
        return
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for name, value in rows():
        table.add_row(name, value)
    stdout_console().print(table)


def _default(value: Any) -> Any:
    from ._jsonutil import json_default

    try:
        return json_default(value)
    except TypeError:
        return str(value)


def json_option(func):
    """``--json``: machine-readable output on stdout."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print machine-readable JSON on stdout.")(func)


def seed_option(func):
    """``--random-state`` (alias ``--seed``): the seed of every random choice."""
    return click.option("--random-state", "--seed", "random_state", type=int, default=0,
                        show_default=True,
                        help="Random seed; the same seed gives the same numbers.")(func)


def estimator_defaults(module: str, class_name: str) -> dict[str, Any]:
    """The keyword defaults of ``class_name.__init__`` in ``module``, read from its source.

    Commands take their option defaults from here, so the estimator's signature is the one
    source of every default. The module is parsed, not imported, so ``--help`` stays free of
    numpy, torch and pandas. Defaults that are expressions rather than literals are left out.
    """
    import ast
    from pathlib import Path

    # located by path, not importlib: finding a submodule would import its package
    package, _, rest = module.partition(".")
    source = Path(__file__).resolve().parent.joinpath(*rest.split(".")).with_suffix(".py")
    if package != __package__ or not source.is_file():
        raise RecompareError(f"cannot find module {module}")
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    args = item.args.args[len(item.args.args) - len(item.args.defaults):]
                    pairs = list(zip(args, item.args.defaults))
                    pairs += [(a, d) for a, d in zip(item.args.kwonlyargs, item.args.kw_defaults)
                              if d is not None]
                    defaults = {}
                    for arg, default in pairs:
                        try:
                            defaults[arg.arg] = ast.literal_eval(default)
                        except ValueError:  # an expression: not offered as a CLI default
                            continue
                    return defaults
    raise RecompareError(f"{module} has no class {class_name} with an __init__")


def model_output_options(func):
    """``-o/--output`` (the model directory to write, required) and ``--overwrite``."""
    func = click.option("--overwrite", is_flag=True,
                        help="Replace the model directory if it exists.")(func)
    return click.option("-o", "--output", "output", required=True, type=click.Path(),
                        help="Model directory to write.")(func)


def threads_option(func):
    return click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                        help="CPU threads to use (0 = all cores).")(func)


def _register() -> None:
    import importlib

    for name in ("data", "train_wals", "train_dnn", "tune", "evaluate", "recommend", "export",
                 "compare", "bench"):
        try:
            module = importlib.import_module(f"recompare.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"recompare.commands.{name}":
                continue  # area not built yet
            raise
        for command in getattr(module, "COMMANDS", ()):
            main.add_command(command)


_register()


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
