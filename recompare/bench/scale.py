"""Beyond one machine: Spark MLlib's ALS against the local WALS on the same matrix.

Both engines minimise the same objective (``reg_scaling="observed"``, the mapping of
:mod:`recompare.models.wals_spark`) from the same seed on the same planted data,
Spark on ``local[2]``.  Reported, as ratios in one run:

* seconds per iteration, Spark / local (exact Cholesky solves, as Spark does).
  Spark runs its iterations as one job with a fixed set-up cost, so its
  per-iteration time is the difference of two fits (``iterations`` and
  ``iterations + extra``, after a one-iteration warm-up fit that pays the JVM's
  class loading and compilation) divided by ``extra``.  When load noise makes the
  difference non-positive, the longer fit's mean per iteration (set-up included,
  an upper bound) is reported instead and ``spark.per_iteration_method`` says so.
  The local figure is the median of its per-sweep times;
* recall@20 on the weak-protocol test part, Spark / local, and the relative gap
  of the objective values (targets: within 2% and 1%);
* the per-entry cost of a Spark iteration (seconds per iteration / nnz), the figure
  ``docs/scale.md`` extrapolates to a 10^9-entry log.

and the softmax DNN's epoch time in 1 and in 2 data-parallel CPU processes
(:func:`recompare.models.ddp.launch`, gloo), the machine's cores split evenly
between the processes.  Only epochs are timed, never the processes' start-up:
each process records its epochs' wall time, and the figure is the median over the
epochs after the first (which pays torch's warm-up).  The DNN part needs neither
pyspark nor Java; without them the Spark part is left out with its one-line reason.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import RecompareError

SIZES = {
    # users, items, interactions per user, dim, iterations, extra iterations
    "tiny": (600, 300, 30, 8, 4, 2),
    "small": (3000, 1500, 40, 32, 10, 5),
    "full": (20000, 8000, 60, 64, 10, 5),
}
MASTER = "local[2]"
DNN_SIZES = {
    # users, items, interactions per user, dim, hidden, epochs (the first is warm-up)
    "tiny": (600, 300, 30, 16, (32,), 2),
    "small": (6000, 3000, 40, 64, (256,), 3),
    "full": (20000, 8000, 60, 64, (512, 256), 3),
}
DNN_BATCH = 256  # global batch (users): big enough for the work, not the exchange, to lead


def _data(scale: str):
    from ..data.splits import split
    from ..data.synth import planted

    n_users, n_items, per_user, *_ = SIZES[scale]
    return split(planted(n_users=n_users, n_items=n_items, n_groups=4,
                         interactions_per_user=per_user, seed=0), kind="random", seed=0)


def _recall20(model, dataset) -> float:
    from ..evaluate.metrics import accuracy

    test = dataset.split.test
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    ids, _ = model.recommend(users, k=20)
    return float(accuracy(ids, test[users], [20])["metrics"]["recall@20"])


def run(scale: str = "small", callback: Callable[[dict], None] | None = None) -> dict:
    """Spark vs local WALS on one planted matrix, and the DNN's epoch time in 1 vs 2
    processes; the result dict of ``bench scale``."""
    emit = callback or (lambda event: None)
    try:
        wals = run_spark(scale, emit)
    except RecompareError as exc:  # no pyspark or Java, or Spark would not start
        wals = {"skipped": str(exc),
                "figures": [{"name": "Spark ALS vs local WALS", "value": f"not run: {exc}"}]}
    dnn = run_dnn(scale, emit)
    figures = list(wals.pop("figures", [])) + dnn.pop("figures")
    return {"wals": wals, "dnn": dnn, "figures": figures}


def run_spark(scale: str, emit: Callable[[dict], None]) -> dict:
    """Spark ALS vs the local WALS on the same objective (``local[2]``)."""
    from ..models.wals import WALS
    from ..models.wals_spark import (
        fit_spark,
        local_equivalent,
        relative_gap,
        require_spark,
        spark_session,
    )

    require_spark()
    _, _, _, dim, iterations, extra = SIZES[scale]
    dataset = _data(scale)
    params = {"dim": dim, "unobserved_weight": 0.1, "regularization": 0.05,
              "reg_scaling": "observed", "random_state": 0}
    emit({"message": "local WALS"})
    local = local_equivalent(WALS(**params, iterations=iterations)).fit(dataset)
    local_s = float(np.median(local.fit_info_["seconds_per_iteration"]))
    emit({"message": f"starting Spark ({MASTER})"})
    start = time.perf_counter()
    with spark_session(MASTER) as session:
        startup = time.perf_counter() - start
        emit({"message": "Spark ALS warm-up, 1 iteration"})
        fit_spark(WALS(**params, iterations=1), dataset, session=session)
        fits = {}
        for n in (iterations, iterations + extra):
            emit({"message": f"Spark ALS, {n} iterations"})
            fits[n] = fit_spark(WALS(**params, iterations=n), dataset, session=session)
        spark_version = session.version
    spark = fits[iterations]
    longer = fits[iterations + extra].fit_info_["fit_seconds"]
    spark_s = (longer - spark.fit_info_["fit_seconds"]) / extra
    method = "difference of two fits"
    if spark_s <= 0:
        spark_s, method = longer / (iterations + extra), "mean of the longer fit, set-up included"
    recall_local, recall_spark = _recall20(local, dataset), _recall20(spark, dataset)
    objective_gap = relative_gap(spark.fit_info_["objective"][-1],
                                 local.fit_info_["objective"][-1])
    nnz = int(dataset.train.nnz)
    return {
        "data": {"users": dataset.n_users, "items": dataset.n_items, "train_nnz": nnz,
                 "dim": dim, "iterations": iterations},
        "spark": {"version": spark_version, "master": MASTER, "startup_seconds": startup,
                  "seconds_per_iteration": spark_s, "per_iteration_method": method,
                  "fit_seconds": spark.fit_info_["fit_seconds"],
                  "ns_per_entry_iteration": 1e9 * spark_s / nnz,
                  "recall@20": recall_spark, "objective": spark.fit_info_["objective"][-1]},
        "local": {"solver": "cholesky", "seconds_per_iteration": local_s,
                  "recall@20": recall_local, "objective": local.fit_info_["objective"][-1]},
        "figures": [
            {"name": "Spark / local seconds per iteration", "value": spark_s / local_s,
             "unit": "x"},
            {"name": "Spark / local recall@20", "value": recall_spark / max(recall_local, 1e-12),
             "target": 0.98, "met": relative_gap(recall_spark, recall_local) <= 0.02},
            {"name": "objective gap", "value": objective_gap, "target": 0.01,
             "met": objective_gap <= 0.01},
            {"name": "Spark seconds per entry-iteration", "value": spark_s / nnz, "unit": "s"},
        ],
    }


# ------------------------------------------------------------------ the DNN
def run_dnn(scale: str, emit: Callable[[dict], None]) -> dict:
    """The softmax DNN's seconds per epoch in 1 and in 2 gloo processes, same global batch."""
    from ..data.splits import split
    from ..data.synth import planted
    from ..models import ddp

    n_users, n_items, per_user, dim, hidden, epochs = DNN_SIZES[scale]
    dataset = split(planted(n_users=n_users, n_items=n_items, n_groups=4,
                            interactions_per_user=per_user, seed=0), kind="random", seed=0)
    cores = os.cpu_count() or 1
    half = max(1, cores // 2)
    params = {"dim": dim, "hidden": hidden, "epochs": epochs, "batch_size": DNN_BATCH,
              "validation_fraction": 0.0, "random_state": 0}
    # (processes, threads each): all cores in one process, the same cores split over two,
    # and one process on one half (what each of the two has: the scaling efficiency)
    layouts = {"1 process": (1, cores), "2 processes": (2, half),
               "1 process, half the cores": (1, half)}
    runs = {}
    with tempfile.TemporaryDirectory(prefix="recompare-bench-scale-") as tmp:
        dataset.save(Path(tmp) / "data")
        for name, (processes, threads) in layouts.items():
            emit({"message": f"DNN, {name} ({threads} threads each), {epochs} epochs"})
            out = Path(tmp) / f"epochs-{processes}-{threads}.json"
            ddp.launch(processes, _dnn_process, str(Path(tmp) / "data"),
                       {**params, "threads": threads}, str(out))
            runs[name] = {"processes": processes, "threads_per_process": threads,
                          **json.loads(out.read_text())}
    one, two, one_half = (runs[name]["seconds_per_epoch"] for name in layouts)
    first_loss = runs["1 process"]["losses"][0]
    loss_gap = abs(runs["2 processes"]["losses"][0] - first_loss) / abs(first_loss)
    return {
        "data": {"users": dataset.n_users, "items": dataset.n_items,
                 "train_nnz": int(dataset.train.nnz), "dim": dim, "hidden": list(hidden),
                 "global_batch": DNN_BATCH, "epochs": epochs, "cores": cores},
        "runs": runs,
        "figures": [
            {"name": "DNN seconds per epoch, 2 processes / 1 process (same cores)",
             "value": two / one, "unit": "x"},
            {"name": "DNN seconds per epoch, 1 process", "value": one, "unit": "s"},
            {"name": "DNN seconds per epoch, 2 processes", "value": two, "unit": "s"},
            {"name": "DNN speed-up of 2 processes over 1 with as many threads each",
             "value": one_half / two, "unit": "x"},
            {"name": "DNN first-epoch loss gap, 2 vs 1 processes", "value": loss_gap},
        ],
    }


def _dnn_process(ctx, data_dir: str, params: dict, out: str) -> None:
    """One process of :func:`run_dnn`: fit on this process's shard of every batch; the
    main process writes its epochs' wall seconds and losses to ``out`` (JSON)."""
    from ..data.dataset import Dataset
    from ..models import ddp
    from ..models.softmax import SoftmaxDNN

    model = SoftmaxDNN(**params).fit(Dataset.load(data_dir), ctx=ctx)
    if ddp.is_main(ctx):
        history = model.fit_info_["history"]
        seconds = [record["seconds"] for record in history]
        timed = seconds[1:] or seconds  # the first epoch pays the warm-up
        Path(out).write_text(json.dumps({
            "epoch_seconds": seconds, "seconds_per_epoch": float(np.median(timed)),
            "losses": [record["loss"] for record in history]}))
