"""What training and serving cost: wall time, peak memory, latency, scalability.

Memory is measured read-only: a sampler thread reads the resident set size from
``/proc/self/statm`` while the work runs, and the kernel's high-water mark is read
(never reset) before and after. Nothing here trims the allocator or resets the
peak counter; the benchmarks' probe that does (``recompare.bench.common.measure``)
stays in ``recompare/bench/``.
"""
from __future__ import annotations

import contextlib
import gc
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from ..errors import RecompareError
from .results import Latency, ScalingFamily, ScalingPoint, ServingCost

#: peak-memory increases below this are not resolved well enough to fit a slope
MEMORY_RESOLUTION = 16 * 2**20
#: seconds between two readings of the resident set size
SAMPLE_INTERVAL = 0.005

try:
    _PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
    _PAGE_BYTES = 4096


def resident_bytes(statm: int | None = None) -> int:
    """Resident set size now; 0 where ``/proc`` is unavailable. ``statm`` is an open
    descriptor of ``/proc/self/statm`` to read again (cheaper than opening it)."""
    try:
        if statm is None:
            with open("/proc/self/statm", "rb") as handle:
                text = handle.read()
        else:
            text = os.pread(statm, 256, 0)
        return int(text.split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


def high_water_bytes() -> int:
    """The kernel's peak resident set size of this process (read, never reset)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes


class _PeakSampler:
    """Keeps the largest resident set size seen, read every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self.peak = resident_bytes()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recompare-peak-memory",
                                        daemon=True)

    def _run(self) -> None:
        try:
            statm = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            return  # no /proc: the high-water mark and the final reading remain
        try:
            while not self._stop.wait(self._interval):
                self.peak = max(self.peak, resident_bytes(statm))
        finally:
            os.close(statm)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())


@contextlib.contextmanager
def measure_cost(interval: float = SAMPLE_INTERVAL) -> Iterator[dict[str, float]]:
    """Measure the wall time and peak memory increase of the body, read-only.

    Yields a dict filled on exit with ``seconds``, ``peak_rss_bytes`` (the largest
    resident set size during the body) and ``peak_extra_bytes`` (that minus the size
    at its start). When the
    body sets a new high-water mark for the process, that exact kernel figure is the
    peak; otherwise it is the largest of the samples taken every ``interval`` seconds
    (a spike shorter than that may be missed). The sampler thread is stopped and
    joined on exit, also when the body raises.
    """
    result: dict[str, float] = {}
    gc.collect()  # count the body's garbage, not the garbage of earlier work
    base = resident_bytes()
    high_water_before = high_water_bytes()
    start = time.perf_counter()
    try:
        with _PeakSampler(interval) as sampler:
            yield result
    finally:
        result["seconds"] = time.perf_counter() - start
        peak = sampler.peak
        high_water = high_water_bytes()
        if high_water > high_water_before:  # the body's peak is the process's new record
            peak = max(peak, high_water)
        result["peak_rss_bytes"] = peak
        result["peak_extra_bytes"] = max(0, peak - base)


def steps_run(model: Any) -> int | None:
    """Sweeps (WALS ``iterations``) or epochs (DNN ``epochs_run``) the last ``fit`` ran."""
    fit_info = getattr(model, "fit_info_", None) or {}
    for key in ("iterations", "epochs_run"):
        value = fit_info.get(key)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
            return int(value)
    return None


# ------------------------------------------------------------------ serving
def _latencies(call: Callable[[int], object], users: np.ndarray) -> Latency:
    call(users[0])  # warm-up (lazy imports, caches)
    times = []
    for user in users:
        start = time.perf_counter()
        call(user)
        times.append(time.perf_counter() - start)
    arr = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "queries": len(arr)}


def serving_cost(model: Any, dataset: Any, n_queries: int = 200, seed: int = 0,
                 k: int = 10) -> ServingCost:
    """Per-query latency and batch throughput of producing top-k, and serving memory.

    * ``known``: a training user, one at a time, through ``recommend`` (static
      query embeddings where the family has them).
    * ``fresh``: the query embedding computed at query time from the user's
      history and features (``recommend_new``), as a DNN serves every request
      and a matrix factorization serves a user it has not seen (fold-in).
    """
    rng = np.random.default_rng(seed)
    train = dataset.train
    active = np.flatnonzero(np.diff(train.indptr) > 0)
    users = np.sort(rng.choice(active, size=min(n_queries, len(active)), replace=False))
    features = dataset.user_features

    out: dict[str, Any] = {
        "known": _latencies(lambda u: model.recommend(np.array([u]), k, seen=train), users),
    }
    if "strong" in getattr(model, "protocols", ()):
        def fresh(u: int) -> None:
            feats = features.iloc[[u]].reset_index(drop=True) if features is not None else None
            model.recommend_new(train[[u]], feats, k)

        try:
            out["fresh"] = _latencies(fresh, users)
        except RecompareError as exc:
            out["fresh"] = {"unsupported": str(exc)}
    batch = active[: min(len(active), 4096)]
    start = time.perf_counter()
    model.recommend(batch, k, seen=train)
    seconds = time.perf_counter() - start
    out["batch"] = {"queries": len(batch), "seconds": seconds,
                    "queries_per_second": float(len(batch) / seconds) if seconds else None}
    out["memory_bytes"] = int(model.serving_nbytes())
    return out  # type: ignore[return-value]


# ------------------------------------------------------------------ scaling
def _subsample(dataset: Any, train: sp.coo_matrix, keep: np.ndarray) -> tuple[Any, int]:
    """The data set with only the training interactions at positions ``keep``, and
    how many that is."""
    sub = sp.csr_matrix((train.data[keep], (train.row[keep], train.col[keep])),
                        shape=train.shape, dtype=np.float32)
    return dataset.replace(interactions=sub, split=None, timestamps=None), int(sub.nnz)


def _step_params(cls: type, params: dict, steps: int) -> tuple[str, dict]:
    """Parameters that run exactly ``steps`` sweeps/epochs, and the name of a step."""
    steps_param = "iterations" if "iterations" in cls().get_params() else "epochs"
    params = {**params, steps_param: steps}
    patience = params.get("patience", cls().get_params().get("patience"))
    if patience is not None and patience <= steps:
        params["patience"] = None  # time whole steps: no early stopping
    return steps_param[:-1], params


def scaling_family(name: str, cls: type, params: dict, dataset: Any, steps: int,
                   fractions: tuple[float, ...], order: np.ndarray,
                   emit: Callable[[dict], None]) -> ScalingFamily:
    """Train one model on nested subsamples and fit log-log slopes against nnz.

    ``order`` is a permutation of the training interactions: each subsample keeps a
    prefix of it, so the smaller subsamples are contained in the larger ones.
    """
    step, params = _step_params(cls, params, steps)
    train = dataset.train.tocoo()
    points: list[ScalingPoint] = []
    for fraction in fractions:
        keep = np.sort(order[: max(1, int(fraction * train.nnz))])
        subset, nnz = _subsample(dataset, train, keep)
        emit({"stage": "scaling", "message": f"scaling: {name} on {nnz:,} interactions"})
        model = cls(**params)
        with measure_cost() as cost:
            model.fit(subset)
        ran = steps_run(model) or steps
        points.append({"nnz": nnz, "seconds": cost["seconds"],
                       "seconds_per_step": cost["seconds"] / ran,
                       "peak_extra_bytes": int(cost["peak_extra_bytes"])})
    log_nnz = np.log([p["nnz"] for p in points])
    per_step = np.log([p["seconds_per_step"] for p in points])
    time_slope = float(np.polyfit(log_nnz, per_step, 1)[0])
    memory = [p["peak_extra_bytes"] for p in points]
    # below ~16 MiB the allocator's reuse of freed memory swamps the signal
    memory_slope = (float(np.polyfit(log_nnz, np.log(memory), 1)[0])
                    if min(memory) >= MEMORY_RESOLUTION else None)
    return {"model": name, "step": step, "points": points, "time_slope": time_slope,
            "memory_slope": memory_slope}
