"""``recompare compare``: the main job, both families on one data set."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..cli import echo_json, json_option, seed_option, stderr_console, threads_option


def _parse_ks(ks: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in ks.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got '{ks}'",
                                 param_hint="--k") from None


def _progress_callback(progress: Any, task: Any, n_variants: int) -> Callable[[dict], None]:
    """Render the comparison's progress events on one rich progress bar: a step per
    trained variant, then evaluation, serving and scaling."""
    stage_done: set[str] = set()

    def callback(event: dict) -> None:
        stage = event.get("stage")
        if stage == "train":
            progress.update(task, completed=event["index"] - 1,
                            description=event["message"], detail="")
        elif stage == "train-progress":
            bits = []
            for key in ("epoch", "iteration"):
                if key in event:
                    total = event.get("total") or event.get("epochs") or ""
                    bits.append(f"{key} {event[key]}{'/' + str(total) if total else ''}")
            for key in ("loss", "objective", "validation_recall"):
                if isinstance(event.get(key), (int, float)):
                    bits.append(f"{key} {event[key]:.4g}")
            progress.update(task, detail=" ".join(bits))
        else:
            if stage in ("evaluate", "serve", "scaling", "mirror") and stage not in stage_done:
                stage_done.add(stage)
                progress.update(task, completed=n_variants + len(stage_done) - 1)
            progress.update(task, description=stage or "", detail=event.get("message", ""))

    return callback


def _write_report(output: str, overwrite: bool, results: dict, models: dict,
                  data: Any) -> int:
    """Write report.md, results.json and the plots into ``output`` at once; return the
    number of plots."""
    from .._atomic import atomic_dir
    from .._jsonutil import dumps
    from ..report.comparison import comparison_plots, markdown

    with atomic_dir(output, overwrite=overwrite) as tmp:
        plots = comparison_plots(results, models, data, tmp)
        (tmp / "report.md").write_text(markdown(results, plots))
        (tmp / "results.json").write_text(dumps(results))
    return len(plots)


@click.command("compare")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", "output", type=click.Path(file_okay=False), default=None,
              help="Report directory: report.md, results.json and the plots.")
@click.option("--quick", is_flag=True,
              help="Fewer epochs and iterations: a faster, rougher answer.")
@click.option("--k", "ks", default="10,20,50", show_default=True,
              help="Cut-offs for the accuracy metrics, comma separated.")
@click.option("--overwrite", is_flag=True, help="Replace the report directory if it exists.")
@click.option("--serving-threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads each serving query runs on, the same for every model.")
@click.option("--folding-mirror", is_flag=True,
              help="Also ask the folding question on coupled copies of DATASET (one group "
                   "per copy), for data whose own groups overlap or that has none.")
@click.option("--mirror-copies", type=click.IntRange(min=2), default=2, show_default=True,
              help="Copies made by --folding-mirror.")
@click.option("--tune", "tune", type=click.IntRange(min=1), default=None,
              help="Tune WALS and the DNN with the same budget of trials on validation "
                   "(recompare tune) before comparing; default: the family defaults.")
@seed_option
@threads_option
@json_option
def compare(dataset: str, output: str | None, quick: bool, ks: str, overwrite: bool,
            serving_threads: int, folding_mirror: bool, mirror_copies: int, tune: int | None,
            random_state: int, threads: int, as_json: bool) -> None:
    """Answer the MF-vs-DNN question on DATASET with measurements.

    Trains WALS and the softmax DNN with their defaults plus their folding
    variants (WALS with w0 = 0 and a small w0; the DNN with no, uniform and
    hard negatives, and with gravity), evaluates every model under every
    protocol the data set supports, with the folding report, measures training
    and serving cost, and prints the source document's comparison table with
    measured numbers and a verdict per row.

    Accuracy verdicts come from paired per-user differences with a 95%
    confidence interval, and say when neither family beats the popularity
    floors. The folding row is only answered where the data's groups are
    separated (true cross-group share at most 0.2); --folding-mirror answers
    it on coupled copies of DATASET instead, and the report says which.

    \b
    Example:
      recompare compare data/planted -o report/
      recompare compare my-data --quick --json > results.json
      recompare compare ml-latest-small --quick --folding-mirror
    """
    from pathlib import Path

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .. import load_dataset
    from ..compare import default_variants, run_comparison
    from ..errors import RecompareError
    from ..evaluate.metrics import check_ks

    k_values = _parse_ks(ks)
    if output and Path(output).exists() and not overwrite:
        raise RecompareError(f"output path {output} already exists; pass --overwrite or "
                             "choose another")
    data = load_dataset(dataset)
    if not data.protocols:  # refuse here, before the progress bar is drawn
        raise RecompareError(
            f"{dataset} has no split to evaluate on; split it first: recompare data split "
            f"{dataset} OUT --split both (or random, temporal, users)")
    check_ks(k_values, data.n_items)
    variants = default_variants(quick, random_state)
    console = stderr_console()
    # trainings, evaluation, serving, scaling (and the mirror)
    steps = len(variants) + 3 + int(folding_mirror)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  TextColumn("{task.fields[detail]}"), console=console,
                  transient=False) as progress:
        task = progress.add_task("compare", total=steps, detail="")
        results, models = run_comparison(
            data, quick=quick, ks=k_values, seed=random_state, threads=threads,
            serving_threads=serving_threads, variants=variants,
            callback=_progress_callback(progress, task, len(variants)),
            return_models=True, folding_mirror=mirror_copies if folding_mirror else None,
            tune=tune)
        progress.update(task, completed=steps, description="done", detail="")
    if output:
        n_plots = _write_report(output, overwrite, results, models, data)
        console.log(f"wrote {output}/report.md, results.json and {n_plots} plots")
    if as_json:
        echo_json(results)
    else:
        from ..cli import stdout_console
        from ..report.comparison import rich_tables

        out = stdout_console()
        for table in rich_tables(results, out.width):
            out.print(table)


COMMANDS = [compare]
