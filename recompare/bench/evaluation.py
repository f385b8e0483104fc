"""Benchmark: exact top-k for every user, against the bare matrix product in the same run.

The peer is the floor any dot-product top-k must pay: ``queries @ items.T`` computed in
the same chunks into the same reused float32 buffer (torch's BLAS, the same threads),
with nothing else.  recompare's :func:`~recompare.models.topk.topk_dot` adds the
selection, exact tie handling and, in the second measurement, masking of seen items.
Targets (issue 3, full scale: 138,000 x 27,000, 64 dimensions, k = 20): within 1.5x of
the bare product, peak memory under 2 GiB.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from .common import measure

#: scale -> (queries, items, mean seen items per query)
SIZES = {
    "tiny": (2_000, 1_000, 20),
    "small": (20_000, 5_000, 60),
    "full": (138_000, 27_000, 132),  # 18.2M seen interactions, as MovieLens-20M
}
TARGET_RATIO = 1.5
TARGET_PEAK_BYTES = 2 * 1024**3


def _seen_matrix(n_queries: int, n_items: int, mean: int, rng: np.random.Generator
                 ) -> sp.csr_matrix:
    """Power-law seen items: log-normal counts per query, Zipf-like item popularity."""
    counts = np.minimum(n_items // 2,
                        np.maximum(1, rng.lognormal(np.log(mean) - 0.32, 0.8, n_queries))
                        ).astype(np.int64)
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=int(counts.sum()), p=weights / weights.sum())
    rows = np.repeat(np.arange(n_queries), counts)
    seen = sp.csr_matrix((np.ones(len(items), np.float32), (rows, items)),
                         shape=(n_queries, n_items))
    seen.sum_duplicates()
    return seen


def _bare_product(queries, items, chunk: int) -> None:
    import torch

    with torch.inference_mode():
        q = torch.from_numpy(queries)
        items_t = torch.from_numpy(np.ascontiguousarray(items.T))
        buffer = torch.empty((min(chunk, len(queries)), items.shape[0]), dtype=torch.float32)
        for start in range(0, len(queries), chunk):
            stop = min(len(queries), start + chunk)
            torch.mm(q[start:stop], items_t, out=buffer[: stop - start])


def _timed(func) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    func()
    return time.perf_counter() - wall, time.process_time() - cpu


def run(scale: str = "small", callback: Callable[[dict], None] | None = None,
        dim: int = 64, k: int = 20, seed: int = 0, repeat: int = 3) -> dict:
    """Time top-k for all queries against the bare chunked product; see module docstring.

    The three measurements are interleaved in ``repeat`` (>= 3) rounds and each round
    gives its own ratio, top-k over the bare product measured next to it, so that a
    burst of load from other processes weighs on both sides of a ratio; the headline
    is the median of the per-round ratios.

    Returns
    -------
    dict with sizes, ``chunk_size``, ``threads``, median timings in seconds
    (``matmul_seconds``, ``topk_seconds``, ``topk_exclude_seconds``), the median
    per-round ratios (``ratio``, ``ratio_exclude``) and their CPU-time counterparts,
    every round (``all_seconds``, ``all_ratios``), peak memory of the top-k runs
    (``peak_rss_bytes`` absolute, ``peak_extra_bytes`` above the RSS at entry) and
    ``figures`` (the headline, with targets and whether they were met).
    """
    import torch

    from ..models.topk import default_chunk_size, topk_dot

    def say(message: str) -> None:
        if callback is not None:
            callback({"stage": "bench", "message": message})

    if scale not in SIZES:
        raise ValueError(f"unknown scale {scale!r}")
    repeat = max(3, int(repeat))
    n_queries, n_items, mean_seen = SIZES[scale]
    say("generating embeddings and seen items")
    queries, items, seen = _inputs(n_queries, n_items, mean_seen, dim, seed)
    chunk = default_chunk_size(n_items)

    wall: dict[str, list[float]] = {"matmul": [], "topk": [], "topk_exclude": []}
    cpu: dict[str, list[float]] = {"matmul": [], "topk": [], "topk_exclude": []}
    memory: dict[str, Any] = {}

    def masked_run() -> tuple[float, float]:
        # the memory probe's set-up (gc, trimming) stays outside the timed call
        with measure() as mem:
            timed = _timed(lambda: topk_dot(queries, items, k, exclude=seen, chunk_size=chunk))
        if not memory or mem["peak_rss_bytes"] > memory["peak_rss_bytes"]:
            memory.update(mem)
        return timed

    calls = {"matmul": lambda: _timed(lambda: _bare_product(queries, items, chunk)),
             "topk": lambda: _timed(lambda: topk_dot(queries, items, k, chunk_size=chunk)),
             "topk_exclude": masked_run}
    for i in range(repeat):
        for name, call in calls.items():
            say(f"round {i + 1}/{repeat}: {name}")
            seconds, cpu_seconds = call()
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    ratios, cpu_ratios = _per_round_ratios(wall), _per_round_ratios(cpu)
    med = {name: float(np.median(values)) for name, values in wall.items()}
    ratio, ratio_masked = float(np.median(ratios["topk"])), float(np.median(ratios["topk_exclude"]))
    figures = _figures(k, ratio, ratio_masked, ratios, cpu_ratios, memory, med, repeat)
    return {
        "scale": scale,
        "queries": n_queries,
        "items": n_items,
        "dim": dim,
        "k": k,
        "seen_nnz": int(seen.nnz),
        "chunk_size": chunk,
        "threads": torch.get_num_threads(),
        "repeat": repeat,
        "matmul_seconds": med["matmul"],
        "topk_seconds": med["topk"],
        "topk_exclude_seconds": med["topk_exclude"],
        "all_seconds": wall,
        "all_cpu_seconds": cpu,
        "all_ratios": ratios,
        "ratio": ratio,
        "ratio_exclude": ratio_masked,
        "cpu_ratio": float(np.median(cpu_ratios["topk"])),
        "cpu_ratio_exclude": float(np.median(cpu_ratios["topk_exclude"])),
        "peak_rss_bytes": memory["peak_rss_bytes"],
        "peak_extra_bytes": memory["peak_extra_bytes"],
        "figures": figures,
    }


def _inputs(n_queries: int, n_items: int, mean_seen: float, dim: int, seed: int
            ) -> tuple[np.ndarray, np.ndarray, Any]:
    """Seeded query and item embeddings (unit expected norm) and the seen-items matrix."""
    rng = np.random.default_rng(seed)
    scale_factor = np.float32(1.0 / np.sqrt(dim))
    queries = rng.standard_normal((n_queries, dim), dtype=np.float32) * scale_factor
    items = rng.standard_normal((n_items, dim), dtype=np.float32) * scale_factor
    return queries, items, _seen_matrix(n_queries, n_items, mean_seen, rng)


def _per_round_ratios(times: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each round's top-k time over the bare product timed in the same round."""
    return {name: [t / b for t, b in zip(times[name], times["matmul"])]
            for name in ("topk", "topk_exclude")}


def _figures(k: int, ratio: float, ratio_masked: float, ratios: dict, cpu_ratios: dict,
             memory: dict, med: dict, repeat: int) -> list[dict]:
    def spread(values: list[float]) -> str:
        return f"{min(values):.3f}-{max(values):.3f}"

    return [
        {"name": f"top-{k} / bare product (median of {repeat} rounds)", "value": round(ratio, 3),
         "unit": "x", "target": TARGET_RATIO, "met": bool(ratio <= TARGET_RATIO)},
        {"name": f"top-{k} excluding seen / bare product (median of {repeat} rounds)",
         "value": round(ratio_masked, 3), "unit": "x", "target": TARGET_RATIO,
         "met": bool(ratio_masked <= TARGET_RATIO)},
        {"name": f"top-{k} / bare product, range over rounds",
         "value": spread(ratios["topk"]), "unit": "x"},
        {"name": f"top-{k} excluding seen / bare product, range over rounds",
         "value": spread(ratios["topk_exclude"]), "unit": "x"},
        {"name": f"top-{k} / bare product in CPU time (median)",
         "value": round(float(np.median(cpu_ratios["topk"])), 3), "unit": "x"},
        {"name": "peak memory (process RSS)", "value": round(memory["peak_rss_bytes"] / 2**30, 3),
         "unit": "GiB", "target": TARGET_PEAK_BYTES / 2**30,
         "met": bool(memory["peak_rss_bytes"] < TARGET_PEAK_BYTES)},
        {"name": "bare product (median)", "value": round(med["matmul"], 3), "unit": "s"},
        {"name": f"top-{k} (median)", "value": round(med["topk"], 3), "unit": "s"},
        {"name": f"top-{k} excluding seen (median)", "value": round(med["topk_exclude"], 3),
         "unit": "s"},
    ]
