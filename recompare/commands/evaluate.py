"""``recompare evaluate``: accuracy and folding of saved models and baselines, side by side."""
from __future__ import annotations

from pathlib import Path

import click

from ..cli import echo_json, json_option, seed_option, stderr_console, stdout_console
from ..errors import RecompareError


def parse_ks(text: str) -> tuple[int, ...]:
    """``"10,20,50"`` -> ``(10, 20, 50)``; one clear error for anything else."""
    values = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(int(part))
        except ValueError:
            raise RecompareError(f"--k takes comma-separated integers, got '{text}'") from None
    if not values:
        raise RecompareError("--k needs at least one cut-off, e.g. --k 10,20,50")
    for k in values:
        if k <= 0:
            raise RecompareError(f"k must be a positive integer, got {k}")
    return tuple(sorted(set(values)))


def load_models(specs: tuple[str, ...], dataset, random_state: int, callback=None) -> dict:
    """Saved model directories (checked against ``dataset``) or baseline names, fitted.

    Names are the directory names (or baseline names), made unique with a suffix.
    """
    from ..models import load_model
    from ..models.baselines import BASELINE_SPECS, make_baseline

    models: dict = {}
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            model = load_model(path, dataset)
            name = path.resolve().name
        elif spec in BASELINE_SPECS:
            if callback is not None:
                callback({"stage": "fit", "message": f"fitting baseline {spec}"})
            model = make_baseline(spec, random_state).fit(dataset)
            name = spec
        else:
            raise RecompareError(
                f"MODEL '{spec}' is neither a saved model directory nor a baseline "
                f"({', '.join(BASELINE_SPECS)})"
            )
        unique, n = name, 2
        while unique in models:
            unique, n = f"{name}-{n}", n + 1
        models[unique] = model
    return models


@click.command("evaluate")
@click.argument("dataset_path", metavar="DATASET", type=click.Path(exists=True, file_okay=False))
@click.argument("model_specs", metavar="MODEL...", nargs=-1, required=True)
@click.option("--k", "k_text", default="10,20,50", show_default=True,
              help="Cut-offs, comma-separated; one top-max(k) list serves them all.")
@click.option("--protocol", type=click.Choice(("weak", "strong", "cold", "all")), default="all",
              show_default=True,
              help="weak: held-out items of training users; strong: held-out users with a "
                   "fold-in history; cold: held-out users with features only; all: every "
                   "protocol the data set's split supports.")
@click.option("--folding-report", is_flag=True,
              help="Add the leakage section (needs item groups): leakage@k against the "
                   "held-out truth, group confusion, the most spurious recommendations.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), default=None,
              help="Write PNG plots here (folding map, leakage@k, recall vs leakage).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Write a Markdown report embedding the plots (in REPORT-plots/ unless "
                   "--plots is given).")
@click.option("--overwrite", is_flag=True, help="Replace an existing report or plot files.")
@click.option("--device", type=click.Choice(("cpu", "cuda", "auto")), default="cpu",
              show_default=True,
              help="Where the top-k lists are computed: cpu, cuda (an error without a GPU) "
                   "or auto (cuda when available).")
@seed_option
@json_option
def evaluate_command(dataset_path: str, model_specs: tuple[str, ...], k_text: str,
                     protocol: str, folding_report: bool, plots_dir: str | None,
                     report_path: str | None, overwrite: bool, device: str,
                     random_state: int, as_json: bool) -> None:
    """Evaluate models side by side: accuracy per protocol and k, and folding.

    MODEL is a saved model directory (trained on DATASET: its fingerprint must
    match) or a baseline fitted on the fly: popularity, popularity-by-group or
    random (seeded by --seed).  Seen items are excluded; users without held-out
    items are skipped and counted.  Metric names and definitions are those of
    docs/methodology.md.  With --plots or --report on data with item groups the
    folding measures are computed too.

    \b
    Examples:
      recompare evaluate data/planted popularity random
      recompare evaluate data/planted models/wals models/dnn popularity --folding-report
      recompare evaluate data/planted models/wals --k 20 --protocol strong --json
      recompare evaluate data/planted models/wals random --plots plots/ --report eval.md
    """
    from ..data.dataset import Dataset
    from ..evaluate.metrics import check_ks
    from ..evaluate.protocols import check_folding, evaluate_models, resolve_protocols
    from ..models.ddp import resolve_device

    resolve_device(device)  # a GPU asked for and missing fails before any work
    ks = parse_ks(k_text)
    report, plots = _output_paths(report_path, plots_dir, overwrite)
    console = stderr_console()
    dataset = Dataset.load(dataset_path)
    check_ks(ks, dataset.n_items)
    protocols = resolve_protocols(dataset, protocol)
    if folding_report:
        check_folding(dataset)
    folding = folding_report or ((plots is not None or report is not None) and dataset.has_groups)
    if (plots is not None or report is not None) and not folding:
        console.log("no item groups in this data set: only accuracy plots (see --folding-report)")

    with console.status("[bold]evaluate[/]") as status:
        def callback(event: dict) -> None:
            status.update(f"[bold]evaluate[/] {event.get('message', '')}")

        models = load_models(model_specs, dataset, random_state, callback)
        for name, model in models.items():
            if getattr(model, "fit_info_", {}).get("selected_on") == "test":
                console.log(f"[yellow]warning:[/] {name} was selected on the test split "
                            "(early stopping); its test figures are optimistic")
        results = evaluate_models(models, dataset, protocols, ks, folding=folding, seed=random_state,
                                  callback=callback, device=device)
        written: dict = {}
        if plots is not None:
            from ..report.plots import write_plots

            status.update("[bold]evaluate[/] drawing plots")
            written = write_plots(results, models, dataset, plots, overwrite=overwrite,
                                  seed=random_state)
        if report is not None:
            from .._atomic import atomic_file
            from ..report.markdown import markdown_report

            text = markdown_report(results, written, report)
            with atomic_file(report, overwrite=overwrite) as handle:
                handle.write(text)
    if plots is not None:
        console.log(f"wrote {len(written)} plots to {plots}/")
    if report is not None:
        console.log(f"wrote {report}")

    if as_json:
        echo_json(results)
    else:
        _print_tables(results, folding_report, dataset)


def _output_paths(report_path: str | None, plots_dir: str | None, overwrite: bool
                  ) -> tuple[Path | None, Path | None]:
    """The report file and plot folder to write (the plots go next to the report unless
    --plots says where); refuses existing ones without ``overwrite``, before any work, so
    that nothing is computed only to be thrown away."""
    report = Path(report_path) if report_path else None
    plots = Path(plots_dir) if plots_dir else None
    if report is not None and plots is None:
        plots = report.with_name(f"{report.stem}-plots")
    for path in (report, plots):
        if path is not None and path.exists() and not overwrite:
            raise RecompareError(f"{path} already exists; pass --overwrite or choose another")
    if plots is not None and plots.exists() and not plots.is_dir():
        raise RecompareError(f"{plots} is a file; --plots needs a directory")
    return report, plots


def _print_tables(results, folding_report: bool, dataset=None) -> None:
    """The human-readable tables on stdout, fitted to the console (``$COLUMNS`` when piped)."""
    from ..report.tables import counts_table, evaluation_tables, folding_tables

    out = stdout_console()
    for table in evaluation_tables(results, out.width):
        out.print(table)
    out.print(counts_table(results))
    if folding_report:
        sizes = None
        if dataset is not None and dataset.item_groups is not None:
            import numpy as np

            groups = np.asarray(dataset.item_groups)
            sizes = np.bincount(groups[groups >= 0], minlength=dataset.n_groups).tolist()
        for table in folding_tables(results, width=out.width, group_sizes=sizes):
            out.print(table)


COMMANDS = [evaluate_command]
