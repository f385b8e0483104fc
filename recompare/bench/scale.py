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

The DNN's 1-vs-2-process epoch time is not measured here yet: ``train-dnn`` does not
take ``--processes`` (see ``docs/scale.md``).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

SIZES = {
    # users, items, interactions per user, dim, iterations, extra iterations
    "tiny": (600, 300, 30, 8, 4, 2),
    "small": (3000, 1500, 40, 32, 10, 5),
    "full": (20000, 8000, 60, 64, 10, 5),
}
MASTER = "local[2]"


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
    """Spark vs local WALS on one planted matrix; the result dict of ``bench scale``."""
    from ..models.wals import WALS
    from ..models.wals_spark import fit_spark, local_equivalent, relative_gap, spark_session

    emit = callback or (lambda event: None)
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
