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
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from .results import ScalingFamily, ScalingPoint, ServingCost

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
def _summary(latency: dict | None) -> dict:
    """The exact-index figures of one path, as the cost table shows them."""
    keys = ("p50_ms", "p99_ms", "queries", "p50_spread_ms", "p99_spread_ms", "cpu_p50_ms",
            "cpu_p50_spread_ms")
    return {key: latency[key] for key in keys if key in latency} if latency else {}


def serving_costs(models: Mapping[str, Any], dataset: Any, n_queries: int = 200,
                  seed: int = 0, k: int = 10, threads: int = 1, rounds: int = 3,
                  ann: Collection[str] = ()) -> dict[str, ServingCost]:
    """Per-query latency of every model as a server runs it, batch throughput, memory.

    The latency comes from :func:`~recompare.evaluate.latency.measure_latency`: all
    models in interleaved rounds, one query at a time on ``threads`` threads, both
    paths for every model (``known``: static embedding of a training user;
    ``fresh``: embedding computed at query time by fold-in or the tower), top-k from
    the item embeddings laid out once. The models named in ``ann`` are also served
    from an approximate index when faiss is installed; when it is not, ``ann_missing``
    says which extra to install.

    Returns
    -------
    dict of name -> ServingCost
        ``latency`` holds every path and index with its spread across rounds;
        ``known`` and ``fresh`` repeat the exact-index figures.
    """
    from ..evaluate.latency import measure_latency
    from ..models.ann import ann_available, ann_missing_message

    missing = ann_missing_message() if ann and not ann_available() else None
    measured = measure_latency(models, dataset, n_queries=n_queries, rounds=rounds,
                               threads=threads, k=k, seed=seed,
                               ann=() if missing else [n for n in ann if n in models])
    active = np.flatnonzero(np.diff(dataset.train.indptr) > 0)
    batch = active[: min(len(active), 4096)]
    out: dict[str, ServingCost] = {}
    for name, model in models.items():
        latency = measured[name].to_dict()
        exact = latency["paths"].get("exact", {})
        cost: dict[str, Any] = {"known": _summary(exact.get("static")),
                                "threads": threads, "rounds": rounds, "latency": latency}
        if "computed" in exact:
            cost["fresh"] = _summary(exact["computed"])
        elif "computed" in latency["unsupported"]:
            cost["fresh"] = {"unsupported": latency["unsupported"]["computed"]}
        if missing and name in ann:
            cost["ann_missing"] = missing
        start = time.perf_counter()
        model.recommend(batch, k, seen=dataset.train)
        seconds = time.perf_counter() - start
        cost["batch"] = {"queries": len(batch), "seconds": seconds,
                         "queries_per_second": float(len(batch) / seconds) if seconds else None}
        cost["memory_bytes"] = int(model.serving_nbytes())
        out[name] = cost  # type: ignore[assignment]
    return out


def serving_cost(model: Any, dataset: Any, n_queries: int = 200, seed: int = 0,
                 k: int = 10, threads: int = 1) -> ServingCost:
    """:func:`serving_costs` of one model (exact top-k only)."""
    return serving_costs({"model": model}, dataset, n_queries, seed, k, threads)["model"]


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
