"""Benchmark: serving one query at a time as the catalogue grows, exact and approximate.

For each catalogue size (synthetic item embeddings at the trained models' dimension)
the benchmark measures, on a fixed number of threads (default 1, as a server worker):

* exact top-k per-query latency (p50, p99) through the kernel every model serves
  with (:func:`~recompare.models.topk.topk_prepared`), and its memory;
* the memory-bandwidth bound of that query: the bytes of item embeddings a query
  must read, divided by this machine's read bandwidth measured in the same run on the
  same threads (a reduction over the very same item matrix), and the ratio to it;
* with the optional faiss extra, an IVF-Flat inner-product index built from the
  item embeddings: recall@k against exact top-k on test queries (its probe count is
  chosen on separate validation queries) and its per-query latency.

Then it fits the log-log slope of exact latency against catalogue size.  Exact and
approximate queries are timed in interleaved rounds, so load bursts hit both alike.

Synthetic embeddings: trained item embeddings are far from isotropic noise (items
cluster by taste, norms follow popularity), and approximate indexes depend on
that structure, so items here are drawn around topic centres with log-normal
norms, and queries around one to three topics; the generator is seeded.
"""
from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .common import measure

#: scale -> catalogue sizes, timed queries per round
SIZES = {
    "tiny": ((2_000, 10_000), 50),
    "small": ((10_000, 100_000, 300_000), 200),
    "full": ((10_000, 30_000, 100_000, 300_000, 1_000_000), 300),
}
ROUNDS = 3
TARGET_BOUND_RATIO = 2.0
TARGET_RECALL = 0.95
TARGET_SPEEDUP = 10.0
#: the probe count is chosen on validation queries to reach this recall, a margin
#: above the target that the separate test queries must meet
VALIDATION_RECALL = 0.97


def model_dim() -> int:
    """The embedding dimension the trained models use by default (``dim`` of both
    families; the larger where they differ)."""
    from ..models import model_class

    dims = []
    for kind in ("wals", "softmax"):
        dims.append(int(inspect.signature(model_class(kind)).parameters["dim"].default))
    return max(dims)


def synthetic_embeddings(n_items: int, n_queries: int, dim: int, seed: int,
                         n_topics: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Clustered item embeddings with popularity-like norms, and queries near topics.

    Returns
    -------
    items : ndarray of shape (n_items, dim), float32
    queries : ndarray of shape (n_queries, dim), float32
    """
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((n_topics, dim))
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    item_topic = rng.integers(0, n_topics, n_items)
    items = topics[item_topic] + 0.6 * rng.standard_normal((n_items, dim)) / np.sqrt(dim)
    items *= rng.lognormal(0.0, 0.4, n_items)[:, None]
    mix = rng.dirichlet(np.ones(3) * 0.5, n_queries)
    picks = rng.integers(0, n_topics, (n_queries, 3))
    queries = np.einsum("qt,qtd->qd", mix, topics[picks])
    queries += 0.3 * rng.standard_normal((n_queries, dim)) / np.sqrt(dim)
    return items.astype(np.float32), queries.astype(np.float32)


def read_bandwidth(matrix, repeat: int = 5) -> float:
    """Bytes per second of the fastest full read of ``matrix`` (a torch tensor) by a
    reduction (sum or max) on the current threads."""
    import torch

    nbytes = matrix.numel() * matrix.element_size()
    best = float("inf")
    with torch.inference_mode():
        for kernel in (torch.sum, torch.amax):
            kernel(matrix)  # warm: page in, and the kernel's first-call set-up
            for _ in range(repeat):
                start = time.perf_counter()
                kernel(matrix)
                best = min(best, time.perf_counter() - start)
    return nbytes / best


def run(scale: str = "small", callback: Callable[[dict], None] | None = None,
        k: int = 10, threads: int = 1, seed: int = 0) -> dict:
    """Catalogue sweep of exact (and, with faiss, approximate) per-query serving.

    Returns
    -------
    dict with ``dim``, ``k``, ``threads``, ``points`` (one dict per catalogue size:
    latencies, memory, bandwidth bound and ratio, ANN figures), ``slope`` (log-log,
    exact p50 vs items), ``ann`` (``"measured"`` or why not) and ``figures``.
    """
    from .._threads import torch_threads
    from ..models.ann import ANN_EXTRA, ann_available

    if scale not in SIZES:
        raise ValueError(f"unknown scale {scale!r}")
    say = callback or (lambda event: None)
    sizes, n_queries = SIZES[scale]
    dim = model_dim()
    ann = ann_available()
    points = []
    with torch_threads(threads):
        for n_items in sizes:
            say({"stage": "serving", "message": f"{n_items:,} items"})
            points.append(_measure_size(n_items, n_queries, dim, k, threads, seed, ann))
    exact_p50 = [p["exact"]["p50_ms"] for p in points]
    slope = float(np.polyfit(np.log(sizes), np.log(exact_p50), 1)[0])
    return {
        "scale": scale, "dim": dim, "k": k, "threads": threads, "rounds": ROUNDS,
        "queries_per_round": n_queries, "points": points, "slope": slope,
        "ann": "measured" if ann else f"not measured: faiss missing, pip install '{ANN_EXTRA}'",
        "figures": _figures(points, slope, k, ann, ANN_EXTRA),
    }


def _measure_size(n_items: int, n_queries: int, dim: int, k: int, threads: int, seed: int,
                  ann: bool) -> dict:
    """Every figure of one catalogue size (see :func:`run`)."""
    from ..models.topk import prepare_items, topk_prepared

    items, queries = synthetic_embeddings(n_items, 2 * n_queries, dim, seed + n_items)
    validation, test = queries[:n_queries], queries[n_queries:]
    with measure() as mem:
        prepared = prepare_items(items)
        calls = {"exact": lambda q: topk_prepared(q[None], prepared, k)}
        point: dict[str, Any] = {"items": n_items}
        if ann:
            index = _build_ann(items, validation, k, seed)
            calls["ann"] = lambda q: _ann_query(index, q, k)
            point["ann_index"] = {"lists": index.n_lists, "probe": index.n_probe,
                                  "validation_recall": index.validation_recall,
                                  "bytes": index.nbytes}
        timings = _interleaved(calls, test)
    bandwidth = read_bandwidth(prepared.matrix)
    bound_ms = 1e3 * items.nbytes / bandwidth
    point["exact"] = _percentiles(timings["exact"])
    point["bandwidth_gb_s"] = bandwidth / 1e9
    point["bound_ms"] = bound_ms
    point["bound_ratio"] = point["exact"]["p50_ms"] / bound_ms
    point["item_bytes"] = int(items.nbytes)
    point["index_bytes"] = int(prepared.nbytes)
    point["peak_extra_bytes"] = int(mem["peak_extra_bytes"])
    if ann:
        from ..models.ann import ann_search, recall_against

        exact_ids = topk_prepared(test, prepared, k)[0]
        found = ann_search(index, test, k)[0]
        point["ann"] = {**_percentiles(timings["ann"]), "recall": recall_against(found, exact_ids)}
        point["ann"]["speedup"] = point["exact"]["p50_ms"] / point["ann"]["p50_ms"]
    return point


def _build_ann(items: np.ndarray, validation: np.ndarray, k: int, seed: int):
    from ..models.ann import build_ann_index

    # built on every core (an offline job); queried on the benchmark's threads
    return build_ann_index(items, validation, k, target_recall=VALIDATION_RECALL, seed=seed,
                           threads=None)


def _ann_query(index, query: np.ndarray, k: int):
    from ..models.ann import ann_search

    return ann_search(index, query[None], k)


def _interleaved(calls: dict[str, Callable], queries: np.ndarray) -> dict[str, list]:
    """Per-query milliseconds of each call over ``ROUNDS`` rounds, callers alternating."""
    import gc

    from ..models.ann import faiss_threads

    out: dict[str, list] = {name: [] for name in calls}
    for name, call in calls.items():
        for q in queries[:3]:
            call(q)  # untimed: first-call set-up
    for _ in range(ROUNDS):
        for name, call in calls.items():
            gc.collect()
            times = np.empty(len(queries))
            # faiss searches on the same single worker thread as torch
            guard = faiss_threads(1) if name == "ann" else contextlib.nullcontext()
            with guard:
                for i, q in enumerate(queries):
                    start = time.perf_counter()
                    call(q)
                    times[i] = time.perf_counter() - start
            out[name].append(times * 1e3)
    return out


def _percentiles(per_round: list[np.ndarray]) -> dict:
    p50 = [float(np.percentile(t, 50)) for t in per_round]
    p99 = [float(np.percentile(t, 99)) for t in per_round]
    return {"p50_ms": float(np.median(p50)), "p99_ms": float(np.median(p99)),
            "p50_spread_ms": max(p50) - min(p50), "rounds_p50_ms": p50}


def _figures(points: list[dict], slope: float, k: int, ann: bool, extra: str) -> list[dict]:
    top = points[-1]
    n = f"{top['items']:,} items"
    figures = [
        {"name": "exact top-k p50 slope vs items (log-log)", "value": round(slope, 3)},
        {"name": f"exact p50 / memory-bandwidth bound, {n}", "value": round(top["bound_ratio"], 3),
         "unit": "x", "target": TARGET_BOUND_RATIO,
         "met": bool(top["bound_ratio"] <= TARGET_BOUND_RATIO)},
    ]
    for p in points:
        figures.append({"name": f"exact p50 / p99, {p['items']:,} items",
                        "value": f"{p['exact']['p50_ms']:.3g} / {p['exact']['p99_ms']:.3g}",
                        "unit": "ms"})
    figures.append({"name": f"read bandwidth (same run), {n}",
                    "value": round(top["bandwidth_gb_s"], 2), "unit": "GB/s"})
    figures.append({"name": f"item embeddings + exact index, {n}",
                    "value": round((top["item_bytes"] + top["index_bytes"]) / 2**20, 1),
                    "unit": "MiB"})
    if not ann:
        figures.append({"name": "ANN (IVF, faiss)",
                        "value": f"not measured: pip install '{extra}'"})
        return figures
    for p in points:
        figures.append({"name": f"ANN recall@{k} / p50, {p['items']:,} items",
                        "value": f"{p['ann']['recall']:.3f} / {p['ann']['p50_ms']:.3g} ms"})
    figures.append({"name": f"ANN recall@{k}, {n}", "value": round(top["ann"]["recall"], 4),
                    "target": TARGET_RECALL, "met": bool(top["ann"]["recall"] >= TARGET_RECALL)})
    figures.append({"name": f"exact p50 / ANN p50, {n}", "value": round(top["ann"]["speedup"], 1),
                    "unit": "x", "target": TARGET_SPEEDUP,
                    "met": bool(top["ann"]["speedup"] >= TARGET_SPEEDUP)})
    return figures
