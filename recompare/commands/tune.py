"""``recompare tune``: seeded random search on validation, then the best model refit.

A thin wrapper over :func:`recompare.tune.tune`; numpy, scipy and torch are imported
only when the command runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..cli import echo_json, json_option, seed_option, stderr_console, stdout_console
from ..errors import RecompareError

TRIALS_FILE = "trials.csv"
SUMMARY_FILE = "tuning.json"
MODEL_DIR = "model"


def _read_space(text: str | None) -> dict | None:
    """``--space``: a JSON object, or the path of a file holding one."""
    if text is None:
        return None
    raw = Path(text).read_text() if Path(text).is_file() else text
    try:
        space = json.loads(raw)
    except ValueError as exc:
        raise RecompareError(f"--space is neither a JSON object nor a JSON file: {exc}") from None
    if not isinstance(space, dict):
        raise RecompareError("--space must be a JSON object of parameter -> values or range")
    return space


@click.command("tune")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--family", type=click.Choice(("wals", "dnn")), required=True,
              help="Model family to tune.")
@click.option("--budget", type=int, required=True,
              help="Number of trials (trial 0 is the defaults).")
@click.option("--seconds", type=float, default=None,
              help="Start no new trial after this many seconds.")
@click.option("--space", default=None,
              help="Search space as JSON (or a JSON file) replacing the documented one, "
                   'e.g. \'{"dim": [32, 64], "lr": {"log": [0.001, 0.01]}}\'.')
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Directory for the best model (model/), trials.csv and tuning.json.")
@click.option("--overwrite", is_flag=True, help="Replace the output directory if it exists.")
@seed_option
@json_option
def tune(dataset: str, family: str, budget: int, seconds: float | None, space: str | None,
         output: str, overwrite: bool, random_state: int, as_json: bool) -> None:
    """Tune a model family on a validation carve of DATASET's training part.

    Each trial fits one configuration on the training part less a validation
    share of every user's items, and is scored by weak recall@20 on that share;
    the test split is never read.  The best configuration is refit on the whole
    training part and saved.  Progress goes to stderr; the trials table to stdout.
    The search spaces are documented in docs/tuning.md.

    \b
    Examples:
      recompare tune data/planted --family wals --budget 10 -o tuned/wals
      recompare tune data/planted --family dnn --budget 8 --seconds 600 -o tuned/dnn --json
    """
    from .._atomic import atomic_dir
    from .._jsonutil import json_default
    from ..data.dataset import Dataset
    from ..tune import METRIC, fit_best
    from ..tune import tune as run_tune

    if budget < 1:
        raise RecompareError(f"--budget must be at least 1 trial, got {budget}")
    if Path(output).exists() and not overwrite:
        raise RecompareError(f"output path {output} already exists; choose another or pass "
                             "--overwrite")
    search_space = _read_space(space)
    data = Dataset.load(dataset)
    console = stderr_console()

    def progress(event: dict) -> None:
        console.log(f"trial {event['trial'] + 1}/{event['budget']}: {METRIC} "
                    f"{event['score']:.4f} (best {event['best']:.4f}, "
                    f"{event['seconds']:.1f} s) {_short(event['params'])}")

    result = run_tune(data, family, budget, seconds, random_state, progress, space=search_space)
    console.log("refitting the best configuration on the whole training part")
    model = fit_best(data, family, result, random_state)
    summary = {"family": family, "metric": f"validation {METRIC}", "budget": budget,
               "trials_run": len(result.trials), "best_params": result.params,
               "best_score": model.fit_info_["tuning"]["best_score"],
               "default_score": model.fit_info_["tuning"]["default_score"],
               "model": str(Path(output) / MODEL_DIR), "trials": result.trials}
    with atomic_dir(output, overwrite=overwrite) as tmp:
        model.save(tmp / MODEL_DIR)
        (tmp / TRIALS_FILE).write_text(_trials_csv(result.trials))
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=json_default))
    if as_json:
        echo_json(summary)
        return
    _print_table(summary)


def _short(params: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _trials_csv(trials: list[dict]) -> str:
    names = sorted({k for t in trials for k in t["params"]})
    lines = [",".join(["trial", "score", "seconds", *names])]
    for t in trials:
        cells = [str(t["trial"]), f"{t['score']:.6f}", f"{t['seconds']:.2f}"]
        cells += [_fmt(t["params"].get(n, "")).replace(",", " ") for n in names]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def _print_table(summary: dict) -> None:
    from rich.table import Table

    trials = summary["trials"]
    names = sorted({k for t in trials for k in t["params"]})
    best = max(t["score"] for t in trials)
    table = Table(title=f"tune {summary['family']}: {summary['metric']} "
                        f"({summary['trials_run']} trials; trial 0 = defaults)")
    for col in ("trial", "score", "s", *names):
        table.add_column(col, justify="right")
    for t in trials:
        style = "bold green" if t["score"] == best else None
        table.add_row(str(t["trial"]), f"{t['score']:.4f}", f"{t['seconds']:.1f}",
                      *[_fmt(t["params"].get(n, "")) for n in names], style=style)
    out = stdout_console()
    out.print(table)
    out.print(f"best model (refit on the whole training part): {summary['model']}")


COMMANDS = [tune]
