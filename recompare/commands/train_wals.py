"""``recompare train-wals``: fit WALS and save it as a model directory.

A thin wrapper over :class:`recompare.models.wals.WALS`; numpy, scipy and
torch are imported only when the command runs.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from ..cli import (
    echo_summary,
    estimator_defaults,
    json_option,
    model_output_options,
    seed_option,
    stderr_console,
)
from ..errors import RecompareError

DEVICES = ("cpu", "cuda", "auto")  # as recompare.models.ddp.DEVICES (which imports numpy)

#: every option default below comes from WALS's signature (read, not imported)
DEFAULTS = estimator_defaults("recompare.models.wals", "WALS")


def _model_options(func):
    """``--dim``, ``--unobserved-weight``, ``--iterations``."""
    func = click.option("--iterations", type=int, default=DEFAULTS["iterations"],
                        show_default=True,
                        help="Alternating sweeps (users, then items).")(func)
    func = click.option("--unobserved-weight", "unobserved_weight", type=float,
                        default=DEFAULTS["unobserved_weight"], show_default=True,
                        help="w0: weight of every unobserved pair (observed pairs weigh about "
                             "1). 0 fits observed pairs only and folds; higher values reduce "
                             "folding.")(func)
    func = click.option("--dim", type=int, default=DEFAULTS["dim"], show_default=True,
                        help="Embedding dimension k.")(func)
    return func


def _regularization_options(func):
    """``--regularization``, ``--reg-scaling``, ``--reg-exponent``."""
    func = click.option("--reg-exponent", type=float, default=DEFAULTS["reg_exponent"],
                        help="nu of the frequency and observed scalings  [default: 0.5 with "
                             "frequency, 1 with observed]")(func)
    func = click.option("--reg-scaling", type=click.Choice(("none", "frequency", "observed")),
                        default=DEFAULTS["reg_scaling"], show_default=True,
                        help="none: lambda for every row; frequency: lambda (n_u + w0 n)^nu "
                             "(Rendle et al.), scaled by each row's entries; observed: "
                             "lambda n_u^nu (Spark's scaling with nu = 1).")(func)
    func = click.option("--regularization", type=float, default=DEFAULTS["regularization"],
                        help="lambda, the L2 penalty on the factors  [default: 0.3 with "
                             "--reg-scaling frequency, 0.01 with none or observed]")(func)
    return func


def _penalty_text(model) -> str:
    """The penalty in effect, as the summary shows it."""
    lam, nu = model.penalty()
    if model.reg_scaling == "none":
        return f"{lam:g} (constant)"
    base = "n_u + w0 n" if model.reg_scaling == "frequency" else "n_u"
    return f"{lam:g} ({model.reg_scaling}: lambda ({base})^{nu:g})"


def _weight_options(func):
    """``--weighting``, ``--alpha``."""
    func = click.option("--alpha", type=float, default=DEFAULTS["alpha"], show_default=True,
                        help="Slope of the linear/log weighting.")(func)
    func = click.option("--weighting", type=click.Choice(("constant", "linear", "log")),
                        default=DEFAULTS["weighting"], show_default=True,
                        help="Observed weight: 1, 1 + alpha r, or 1 + alpha log(1 + r).")(func)
    return func


def _solver_options(func):
    """``--solver``, ``--cg-steps``, ``--threads``."""
    func = click.option("--threads", type=click.IntRange(min=0), default=DEFAULTS["threads"],
                        show_default=True,
                        help="CPU threads to use (0 = torch's default, all cores).")(func)
    func = click.option("--cg-steps", type=int, default=DEFAULTS["cg_steps"], show_default=True,
                        help="Conjugate-gradient steps per half sweep (--solver cg).")(func)
    func = click.option("--solver", type=click.Choice(("cg", "cholesky")),
                        default=DEFAULTS["solver"], show_default=True,
                        help="cg: a few warm-started conjugate-gradient steps (fast); "
                             "cholesky: exact solves.")(func)
    return func


def _log_options(func):
    """``--log``, ``--log-col``."""
    func = click.option("--log-col", "log_cols", multiple=True, metavar="ROLE=NAME",
                        help="With --log: the column of user, item, value or time (e.g. "
                             "user=customer; repeatable); others are recognised by the names "
                             "`data prepare` knows.")(func)
    func = click.option("--log", "log", type=click.Path(), default=None,
                        help="--engine spark only, instead of DATASET: a raw Parquet "
                             "interaction log (file or directory) that Spark reads itself, "
                             "under `data prepare`'s id, duplicate and value rules; the data "
                             "set built is saved in MODEL/dataset.")(func)
    return func


def _log_policy_options(func):
    """``--duplicates``, ``--min-rating`` (with ``--log``, as ``data prepare`` reads them)."""
    func = click.option("--min-rating", type=float, default=None,
                        help="With --log: implicit feedback, keep values >= this, as 1.")(func)
    func = click.option("--duplicates", type=click.Choice(("auto", "sum", "max", "last")),
                        default="auto", show_default=True,
                        help="With --log: repeated (user, item) rows; auto = sum without a "
                             "value column (counts), else last.")(func)
    return func


def _engine_options(func):
    """``--engine``, ``--spark-master``, ``--spark-conf``."""
    func = click.option("--spark-conf", "spark_conf", multiple=True, metavar="KEY=VALUE",
                        help="A Spark setting for --engine spark (repeatable).")(func)
    func = click.option("--spark-master", default="local[*]", show_default=True,
                        help="Spark master URL for --engine spark (spark://host:port, yarn, "
                             "k8s://...).")(func)
    func = click.option("--engine", type=click.Choice(("local", "spark")), default="local",
                        show_default=True,
                        help="local: this process; spark: Spark MLlib's implicit ALS on the "
                             "same objective (extra recompare[spark]; docs/wals.md).")(func)
    return func


def _device_option(func):
    """``--device``."""
    return click.option("--device", type=click.Choice(DEVICES), default="cpu",
                        show_default=True,
                        help="Where to solve: cpu; cuda is refused (the WALS solver runs on "
                             "CPU only); auto = cpu.")(func)


def _check_device(device: str) -> None:
    """One-line errors for ``--device cuda``: no GPU, or a GPU the WALS solver cannot use."""
    from ..models.ddp import resolve_device

    if device == "cuda":
        resolve_device(device)  # no GPU here: say that first
        raise RecompareError("train-wals --device cuda: the WALS solver runs on CPU only (its "
                             "row blocks mix scipy and torch CPU kernels); use --device cpu, "
                             "or train-dnn / evaluate --device cuda")


@contextlib.contextmanager
def _progress(console, total: int) -> Iterator[Callable[[dict], None]]:
    """A rich progress bar on stderr showing the objective per iteration; yields the callback."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(TextColumn("[bold]WALS[/]"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                        console=console)
    task = progress.add_task("fit", total=total, status="setting up")

    def callback(event: dict) -> None:
        if event.get("stage") == "start":
            progress.update(task, status="iterating")
        elif event.get("stage") == "iteration":
            status = f"objective {event['objective']:.6g}  {event['seconds']:.2f} s/it"
            recall = [k for k in event if k.startswith("recall@")]
            if recall:
                status += f"  {recall[0]} {event[recall[0]]:.4f}"
            progress.update(task, completed=event["iteration"], status=status)

    with progress:
        yield callback


@contextlib.contextmanager
def _memory() -> Iterator[dict]:
    """The process's peak RSS and its rise over the RSS at entry, filled in on exit.

    Read-only: nothing is reset and the allocator is left alone (``recompare bench``
    does both for its figures).  ``peak_extra_bytes`` is therefore an upper bound when
    the process peaked higher before the body (loading the data set, say).
    """
    from ..bench.common import current_rss_bytes, peak_rss_bytes

    result: dict = {}
    base = current_rss_bytes()
    try:
        yield result
    finally:
        peak = peak_rss_bytes()
        result["peak_rss_bytes"] = peak
        result["peak_extra_bytes"] = max(0, peak - base)


_LOG_ROLES = ("user", "item", "value", "time")


def _check_input(dataset: str | None, log: str | None, log_cols: tuple[str, ...],
                 engine: str, log_policies: bool) -> None:
    """Exactly one of DATASET and ``--log``; ``--log`` only on Spark; ``--log-col``,
    ``--duplicates`` and ``--min-rating`` (``log_policies``) only with ``--log``."""
    if log is not None and engine != "spark":
        raise RecompareError("--log is read by Spark: add --engine spark (or run `recompare "
                             "data prepare` and pass the data set)")
    if (dataset is None) == (log is None):
        raise RecompareError("give either DATASET or --log PATH (a Parquet log, with "
                             "--engine spark)" if dataset is None else
                             "give DATASET or --log, not both")
    if log_cols and log is None:
        raise RecompareError("--log-col applies to --log only")
    if log_policies and log is None:
        raise RecompareError("--duplicates and --min-rating apply to --log only (a prepared "
                             "data set has them applied already)")


def _parse_log_cols(pairs: tuple[str, ...]) -> dict[str, str]:
    """``("user=customer", ...)`` -> ``{"user_col": "customer", ...}``."""
    out = {}
    for pair in pairs:
        role, sep, name = pair.partition("=")
        if not sep or role.strip() not in _LOG_ROLES or not name.strip():
            raise RecompareError(f"--log-col expects ROLE=NAME with ROLE one of "
                                 f"{', '.join(_LOG_ROLES)}, got {pair!r}")
        out[f"{role.strip()}_col"] = name.strip()
    return out


def _fit_on_spark(model, dataset: str | None, log: str | None, log_options: dict,
                  master: str, spark_conf: tuple[str, ...]):
    """Fit ``model`` with Spark's ALS on a prepared data set or a Parquet log that Spark
    reads; returns the data set and the memory figures."""
    from ..data.dataset import Dataset
    from ..models import wals_spark

    wals_spark.spark_mapping(model)  # an objective Spark cannot express fails first
    conf = wals_spark.parse_conf(spark_conf)
    data = None
    if log is None:
        data = Dataset.load(dataset)
        model.check(data)
    else:
        from ..data.spark_log import parquet_files

        parquet_files(log)  # not Parquet: fail before starting Spark
    with wals_spark.spark_session(master, conf) as session:
        if data is None:
            from ..data.spark_log import read_log

            data = read_log(session, log, **log_options)
            model.check(data)
        with _progress(stderr_console(), model.iterations) as callback, _memory() as memory:
            wals_spark.fit_spark(model, data, session=session, callback=callback)
    return data, memory


def _save_with_dataset(model, data, output: str, overwrite: bool) -> None:
    """The model directory plus, in ``dataset/``, the data set built from the log (its id
    maps serve ``recommend`` and ``export``), written atomically together."""
    from .._atomic import atomic_dir

    with atomic_dir(output, overwrite=overwrite) as tmp:
        staged = model.save(tmp / "model")
        for entry in staged.iterdir():
            entry.rename(tmp / entry.name)
        staged.rmdir()
        data.save(tmp / "dataset")


@click.command("train-wals")
@click.argument("dataset", type=click.Path(), required=False)
@model_output_options
@_model_options
@_regularization_options
@_weight_options
@_solver_options
@_engine_options
@_log_options
@_log_policy_options
@_device_option
@seed_option
@json_option
def train_wals(dataset: str | None, output: str, dim: int, unobserved_weight: float,
               iterations: int, regularization: float | None, reg_scaling: str,
               reg_exponent: float | None, weighting: str,
               alpha: float, solver: str, cg_steps: int, threads: int, engine: str,
               spark_master: str, spark_conf: tuple[str, ...], log: str | None,
               log_cols: tuple[str, ...], duplicates: str, min_rating: float | None,
               device: str, random_state: int,
               overwrite: bool, as_json: bool) -> None:
    """Fit weighted ALS matrix factorization on DATASET and save it to MODEL (-o).

    Minimises sum over observed pairs of w (1 - x_u.y_i)^2, plus w0 times the
    sum over unobserved pairs of (x_u.y_i)^2, plus L2 regularization, by
    alternating least squares; unobserved pairs are never visited (Gram
    trick).  The defaults work well on MovieLens-like data (docs/wals.md says
    how they were chosen).  The objective per iteration goes to stderr, a
    summary to stdout (--json: time, objective per iteration, peak memory).

    \b
    Examples:
      recompare train-wals data/planted -o models/wals
      recompare train-wals data/planted -o models/wals-w0 --unobserved-weight 0   # folds
      recompare train-wals data/planted -o models/wals-exact --solver cholesky --json
      recompare train-wals data/planted -o models/wals-spark --engine spark \
          --reg-scaling observed --spark-master local[2]
      recompare train-wals -o models/wals-log --engine spark --reg-scaling observed \
          --log events.parquet --log-col user=customer
    """
    if Path(output).exists() and not overwrite:
        raise RecompareError(f"output path {output} already exists; choose another or pass "
                             "--overwrite")
    _check_input(dataset, log, log_cols, engine, duplicates != "auto" or min_rating is not None)
    _check_device(device)

    import torch  # noqa: F401  (imported before measuring, so its import is not counted)

    from ..models.wals import WALS

    model = WALS(dim=dim, unobserved_weight=unobserved_weight,
                 regularization=regularization, reg_scaling=reg_scaling,
                 reg_exponent=reg_exponent, weighting=weighting,
                 alpha=alpha, iterations=iterations, solver=solver, cg_steps=cg_steps,
                 random_state=random_state, threads=threads)
    if engine == "spark":
        log_options = {**_parse_log_cols(log_cols), "duplicates": duplicates,
                       "min_rating": min_rating}
        data, memory = _fit_on_spark(model, dataset, log, log_options, spark_master,
                                     spark_conf)
    else:
        from ..data.dataset import Dataset

        data = Dataset.load(dataset)
        model.check(data)  # bad input fails here, before the progress bar appears
        with _progress(stderr_console(), iterations) as callback, _memory() as memory:
            model.fit(data, callback=callback)
    if log is None:
        model.save(output, overwrite=overwrite)
    else:
        _save_with_dataset(model, data, output, overwrite)
    info = model.fit_info_
    summary = {
        "model": str(output), "kind": model.kind, "fingerprint": model.fingerprint_,
        "params": model.get_params(),
        "users": model.n_users_, "items": model.n_items_, "train_nnz": int(data.train.nnz),
        "seconds": info["seconds"], "iterations": info["iterations"],
        "seconds_per_iteration": info["seconds_per_iteration"],
        "objective": info["objective"],
        "peak_rss_bytes": memory["peak_rss_bytes"],
        "peak_extra_bytes": memory["peak_extra_bytes"],
    }
    def rows() -> list[tuple[str, str]]:
        return [
            ("data", (f"{model.n_users_:,} users x {model.n_items_:,} items, "
                      f"{summary['train_nnz']:,} training entries")),
            ("dim", str(dim)),
            ("unobserved weight w0", f"{unobserved_weight:g}"),
            ("regularization", _penalty_text(model)),
            ("weighting", weighting if weighting == "constant" else f"{weighting}, alpha {alpha:g}"),
            ("solver", solver if solver == "cholesky" else f"cg, {cg_steps} steps"),
            ("iterations", str(info["iterations"])),
            ("objective", f"{info['objective'][0]:.6g} -> {info['objective'][-1]:.6g}"),
            ("time", (f"{info['seconds']:.2f} s "
                      f"({info['seconds'] / max(1, info['iterations']):.3f} s/iteration)")),
            ("peak memory", (f"{memory['peak_rss_bytes'] / 2**20:,.0f} MiB "
                             f"(+{memory['peak_extra_bytes'] / 2**20:,.0f} MiB during fit)")),
        ]

    echo_summary(summary, f"WALS -> {output}", rows, as_json)


COMMANDS = [train_wals]
