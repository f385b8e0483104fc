"""WALS on Spark MLlib's implicit ALS (the optional extra ``recompare[spark]``).

Spark's implicit ALS (``pyspark.ml.recommendation.ALS(implicitPrefs=True)``)
minimises, over *all* user-item pairs::

    S = sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + lambda_S (sum_u n_u |x_u|^2 + sum_i n_i |y_i|^2)

with ``c_ui = 1 + alpha_S |r_ui|`` and ``p_ui = 1`` on pairs given with a rating
``r_ui > 0``, ``c_ui = 1`` and ``p_ui = 0`` elsewhere, and ``n_u``, ``n_i`` the
number of positive ratings of the row.  The local objective (see
:mod:`recompare.models.wals`) with binary targets is::

    L = sum_obs w_ui (1 - x_u . y_i)^2 + w0 sum_unobs (x_u . y_i)^2
      + sum_u lambda_u |x_u|^2 + sum_i lambda_i |y_i|^2

Dividing ``L`` by ``w0 > 0`` does not move its minimiser and gives ``S`` term by
term when Spark is fed, for every observed pair, the rating
``r_ui = w_ui / w0 - 1`` with ``alpha_S = 1`` (so ``c_ui = w_ui / w0``), and
``lambda_S = lambda / w0`` with the local ``reg_scaling="observed"``
(``lambda_u = lambda n_u``).  So ``L = w0 S`` at every point, and every
weighting (constant, linear, log, item weights) is reachable through the
ratings.  Not reachable, each refused with a one-line :class:`RecompareError`:

* ``w0 = 0`` (Spark always weighs unobserved pairs with 1);
* an observed weight ``w_ui <= w0`` (Spark would treat the pair as unobserved);
* ``targets="values"`` (Spark's preference is always 1 on observed pairs);
* any ``lambda > 0`` penalty other than ``lambda n_u`` (``reg_scaling`` "none"
  or "frequency", or ``reg_exponent != 1``).

Spark solves every row exactly (Cholesky), like the local ``solver="cholesky"``;
``solver``, ``cg_steps``, ``threads``, ``dtype`` and ``block_nnz`` have no
effect here.  Its factors are float32 and start from its own random draw, so
the two engines reach nearby optima, not identical numbers (``docs/wals.md``
gives the measured agreement).
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import RecompareError
from .base import Callback
from .wals_cold import fit_cold_start

#: what to install for this engine (pyproject's optional extra)
SPARK_EXTRA = "recompare[spark]"
DEFAULT_MASTER = "local[*]"
#: seconds to wait for a standalone master's port before giving up
CONNECT_TIMEOUT_S = 5.0
#: Spark's own default number of ALS blocks; fixed, so that a seed gives the same
#: factors whatever the number of cores (the blocks decide the random start)
DEFAULT_BLOCKS = 10
_QUIET_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
}


@dataclass(frozen=True)
class SparkMapping:
    """Spark ALS settings that minimise the same objective as a local WALS.

    Attributes
    ----------
    rank : int
        ``k``.
    reg_param : float
        ``lambda_S = lambda / w0``.
    alpha : float
        ``alpha_S``, always 1: the confidences travel in the ratings.
    max_iter : int
    seed : int
    scale : float
        ``w0``: the local objective equals ``scale`` times Spark's.
    """

    rank: int
    reg_param: float
    alpha: float
    max_iter: int
    seed: int
    scale: float


def spark_mapping(model) -> SparkMapping:
    """Map a local :class:`~recompare.models.wals.WALS` onto Spark's implicit ALS.

    Raises
    ------
    RecompareError
        When the model's objective has no exact Spark equivalent (see the module docstring).
    """
    from .wals_params import validate

    validate(model)
    w0 = float(model.unobserved_weight)
    if w0 <= 0:
        raise RecompareError(
            "unobserved_weight (w0) must be > 0 with --engine spark: Spark's implicit ALS always "
            "weighs unobserved pairs, so w0 = 0 cannot be expressed; use --engine local")
    if model.targets != "binary":
        raise RecompareError(
            "targets='values' cannot run on Spark (its implicit ALS fits 1 on every observed "
            "pair); use targets='binary' or --engine local")
    lam, nu = model.penalty()
    if lam > 0 and not (model.reg_scaling == "observed" and nu == 1.0):
        raise RecompareError(
            "Spark scales the penalty by each row's number of ratings: use --reg-scaling "
            f"observed with reg_exponent 1 (got {model.reg_scaling!r}, exponent "
            f"{nu:g}) or --regularization 0, or --engine local")
    if getattr(model, "patience", None) is not None:
        raise RecompareError("early stopping (patience) is not available with --engine spark")
    return SparkMapping(rank=int(model.dim), reg_param=lam / w0, alpha=1.0,
                        max_iter=int(model.iterations), seed=int(model.random_state), scale=w0)


def spark_ratings(model, train: sp.csr_matrix) -> np.ndarray:
    """Spark's rating per observed entry, ``w_ui / w0 - 1``, in ``train``'s storage order.

    ``model.check`` must have run (it sets the item weights).

    Returns
    -------
    ndarray of shape (train.nnz,), float64, every value > 0
    """
    w0 = float(model.unobserved_weight)
    weights = np.broadcast_to(np.asarray(model._observed_weights(train), dtype=np.float64),
                              (train.nnz,))
    ratings = weights / w0 - 1.0
    if train.nnz and not (ratings > 0).all():
        low = float(weights.min())
        raise RecompareError(
            f"an observed weight ({low:.4g}) is not above unobserved_weight ({w0:g}): Spark would "
            "treat that pair as unobserved; lower --unobserved-weight or use --engine local")
    return ratings


# ------------------------------------------------------------------ session
def require_spark() -> None:
    """Fail in one line when pyspark or a Java runtime is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise RecompareError(
            f"--engine spark needs pyspark: pip install '{SPARK_EXTRA}' (and a Java 17 "
            "runtime)") from None
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise RecompareError(
            f"--engine spark needs a Java 17 runtime (pyspark from '{SPARK_EXTRA}' runs on it): "
            "install one, e.g. apt-get install openjdk-17-jre-headless, or set JAVA_HOME")


def check_master(master: str) -> None:
    """Refuse a master URL Spark cannot use, in one line, before starting a JVM.

    ``local``, ``local[N]``, ``local[*]``, ``local[N,F]``, ``yarn`` and
    ``k8s://...`` pass as they are; for ``spark://host:port[,host:port]`` at
    least one master must accept a connection within :data:`CONNECT_TIMEOUT_S`.
    """
    import re

    if re.fullmatch(r"local(\[(\*|[1-9]\d*)(,[1-9]\d*)?\])?", master) or master == "yarn" \
            or master.startswith("k8s://"):
        return
    if not master.startswith("spark://"):
        raise RecompareError(
            f"cannot use Spark master {master!r}: expected local[N], local[*], spark://host:port, "
            "yarn or k8s://...")
    errors = []
    for address in master[len("spark://"):].split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise RecompareError(f"cannot use Spark master {master!r}: expected spark://host:port")
        try:
            with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
                return
        except OSError as exc:
            errors.append(f"{address}: {exc.strerror or exc}")
    raise RecompareError(f"Spark master {master} is unreachable ({'; '.join(errors)})")


@contextlib.contextmanager
def spark_session(master: str = DEFAULT_MASTER,
                  conf: Mapping[str, str] | None = None) -> Iterator[Any]:
    """A SparkSession for the body, stopped afterwards; one-line errors if it cannot start.

    Parameters
    ----------
    master : str
        Spark master URL (``local[*]`` runs Spark inside this machine).
    conf : mapping of str to str, optional
        Extra Spark settings (``--spark-conf KEY=VALUE``); they override ours.
    """
    require_spark()
    check_master(master)
    from pyspark.sql import SparkSession

    settings = dict(_QUIET_CONF)
    settings.update(conf or {})
    builder = SparkSession.builder.master(master).appName("recompare")
    for key, value in settings.items():
        builder = builder.config(key, str(value))
    # pyspark installs its own SIGINT handler (to cancel jobs); it is put back afterwards
    previous_sigint = signal.getsignal(signal.SIGINT)
    try:
        session = builder.getOrCreate()
    except _spark_errors() as exc:
        _restore_sigint(previous_sigint)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RecompareError(f"cannot start Spark on {master}: {first}") from None
    context = session.sparkContext
    context.setLogLevel("ERROR")
    with tempfile.TemporaryDirectory(prefix="recompare-spark-") as tmp:
        try:
            # ALS cuts its lineage every 10 iterations where a checkpoint directory is set;
            # a cluster brings its own (spark.checkpoint.dir), a local run gets a temporary one
            if context.getCheckpointDir() is None and master.startswith("local"):
                context.setCheckpointDir(tmp)
            yield session
        finally:
            session.stop()
            _restore_sigint(previous_sigint)


def _restore_sigint(handler) -> None:
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)


def _spark_errors() -> tuple[type[BaseException], ...]:
    """What pyspark raises when the JVM side fails (py4j's and pyspark's own errors)."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return (Py4JError, PySparkException, OSError, RuntimeError)


def parse_conf(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` -> dict, with a one-line error for a malformed pair."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RecompareError(f"--spark-conf expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


# ---------------------------------------------------------------------- fit
def fit_spark(model, dataset, session=None, master: str = DEFAULT_MASTER,
              conf: Mapping[str, str] | None = None, blocks: int = DEFAULT_BLOCKS,
              callback: Callback | None = None):
    """Fit ``model`` (a local :class:`~recompare.models.wals.WALS`) with Spark's ALS.

    The fitted model is an ordinary fitted WALS: ``save`` writes the same model
    directory as a local fit, and ``objective`` evaluates the local objective
    (``w0`` times Spark's).

    Parameters
    ----------
    model : WALS
        Hyperparameters to map (:func:`spark_mapping`); fitted in place.
    dataset : Dataset
    session : SparkSession, optional
        Use this session (left running); else one is started on ``master``
        with ``conf`` and stopped at the end.
    blocks : int
        ALS user and item blocks (the unit of Spark's parallelism).
    callback : callable, optional
        ``{"stage": "start"}``, then one ``{"stage": "iteration", ...}`` event
        once Spark has run all its iterations.

    Returns
    -------
    model
    """
    mapping = spark_mapping(model)
    model.check(dataset)
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks <= 0:
        raise RecompareError(f"blocks must be a positive integer, got {blocks!r}")
    train = sp.csr_matrix(dataset.train)
    if not train.has_canonical_format:
        train = train.copy()
        train.sum_duplicates()
    ratings = spark_ratings(model, train)
    if session is None:
        with spark_session(master, conf) as own:
            return fit_spark(model, dataset, session=own, blocks=blocks, callback=callback)
    start = time.perf_counter()
    if callback is not None:
        callback({"stage": "start", "total": mapping.max_iter})
    users, items, seconds = _run_als(session, train, ratings, mapping, blocks)
    model.user_factors_, model.item_factors_ = users, items
    model._remember(dataset)
    model._set_cold_start(fit_cold_start(dataset.user_features, users,
                                         np.diff(train.indptr) > 0))
    model.fit_info_ = {"engine": "spark", "spark": _spark_info(session, blocks),
                       "mapping": asdict(mapping), "fit_seconds": seconds}
    objective = model.objective(dataset)
    model.fit_info_.update({
        "objective": [objective], "spark_objective": objective / mapping.scale,
        "iterations": mapping.max_iter, "solver": "spark-cholesky",
        # Spark runs its iterations as one job: the mean per iteration, set-up included
        "seconds_per_iteration": [seconds / mapping.max_iter] * mapping.max_iter,
        "seconds": time.perf_counter() - start})
    if callback is not None:
        callback({"stage": "iteration", "iteration": mapping.max_iter,
                  "total": mapping.max_iter, "objective": objective,
                  "seconds": seconds / mapping.max_iter})
    return model


def _run_als(session, train: sp.csr_matrix, ratings: np.ndarray, mapping: SparkMapping,
             blocks: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Train Spark's ALS; the factors as (n_users, k), (n_items, k) float32 arrays."""
    import pyarrow as pa
    from pyspark.ml.recommendation import ALS

    n_users, n_items = train.shape
    rows = np.repeat(np.arange(n_users, dtype=np.int32), np.diff(train.indptr))
    table = pa.table({"user": pa.array(rows), "item": pa.array(train.indices.astype(np.int32)),
                      "rating": pa.array(ratings.astype(np.float32))})
    frame = session.createDataFrame(table)
    als = ALS(rank=mapping.rank, maxIter=mapping.max_iter, regParam=mapping.reg_param,
              alpha=mapping.alpha, implicitPrefs=True, seed=mapping.seed, userCol="user",
              itemCol="item", ratingCol="rating", numUserBlocks=blocks, numItemBlocks=blocks,
              nonnegative=False, intermediateStorageLevel="MEMORY_ONLY",
              finalStorageLevel="MEMORY_ONLY")
    start = time.perf_counter()
    try:
        fitted = als.fit(frame)
        users = _collect_factors(fitted.userFactors, n_users, mapping.rank)
        items = _collect_factors(fitted.itemFactors, n_items, mapping.rank)
    except _spark_errors() as exc:  # a JVM error arrives as a py4j exception: one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RecompareError(f"Spark ALS failed: {first}") from None
    return users, items, time.perf_counter() - start


def _collect_factors(frame, n_rows: int, k: int) -> np.ndarray:
    """Spark's (id, features) rows -> a dense float32 array; rows it never saw stay zero."""
    table = frame.toArrow()
    ids = table.column("id").to_numpy()
    values = table.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    out = np.zeros((n_rows, k), dtype=np.float32)
    out[ids] = values.reshape(len(ids), k)
    return out


def _spark_info(session, blocks: int) -> dict:
    context = session.sparkContext
    return {"version": session.version, "master": context.master,
            "default_parallelism": context.defaultParallelism, "blocks": blocks}


def local_equivalent(model, **changes: Any):
    """The local WALS that minimises the same objective exactly (Cholesky solves)."""
    params = model.get_params()
    params.update(solver="cholesky", **changes)
    return type(model)(**params)


def relative_gap(a: float, b: float) -> float:
    """``|a - b| / max(|a|, |b|)``, 0 when both are 0."""
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 or not math.isfinite(scale) else abs(a - b) / scale
