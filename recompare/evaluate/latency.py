"""Per-query serving latency measured as a server runs it, and a noise-aware verdict.

A server answers one request at a time per worker, on a fixed number of threads,
while its other cores are busy with other requests.  Multi-threaded kernels on a
single query make the figure measure the scheduler instead (threads waiting for
each other when the cores are taken), so every model here runs on the same fixed
thread count (default 1), set through :func:`~recompare._threads.torch_threads` and
restored afterwards.

Two paths per model, each timed end to end for one query (embedding + top-k):

* ``static``: a known user's query embedding is looked up (``query_embeddings``);
* ``computed``: the query embedding is computed at query time from the user's
  history and features (``embed_new_users``): a fold-in solve for WALS, the query
  tower for the DNN.

Top-k runs against the item embeddings laid out once per model
(:func:`~recompare.models.topk.prepare_items`), as a server keeps its index in
memory; with ``ann=True`` each path is also served from an approximate IVF index
(the optional faiss extra).  Models are measured in interleaved rounds, and inside a
round in short blocks of queries whose order rotates, so that a burst of load hits
every model alike; each round
gives a p50 and a p99, and the spread of those across rounds is the noise that a
verdict must exceed (:func:`latency_verdict`).

Two clocks time every query.  Wall-clock latency is what a client waits; on a machine
whose cores are taken by other work it also holds the time the query spent waiting
for a core, which the scheduler decides and which is the same for every model.  On one
thread every instruction of a query runs on the calling thread, so that thread's CPU
time (``time.thread_time``) is the query's *service time*: the work it costs, which
other load barely moves.  Verdicts use the service time when it is measured (one
thread) and the wall clock otherwise; both are reported.
"""
from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._gc import frozen_heap
from .._threads import torch_threads
from ..errors import RecompareError

PATHS = ("static", "computed")

#: a verdict needs the slower model at least this many times slower in every round:
#: smaller gaps change with the machine
MIN_RATIO = 1.2


@dataclass
class PathLatency:
    """Latency of one serving path of one model, in milliseconds per query.

    Attributes
    ----------
    p50_ms, p99_ms : float
        Medians across rounds of each round's p50 and p99.
    p50_spread_ms, p99_spread_ms : float
        Max minus min across rounds of each round's p50 and p99 (the noise).
    rounds_p50_ms, rounds_p99_ms : list of float
        The per-round figures.
    queries : int
        Timed queries per round.
    threads : int
        Thread count the queries ran on.
    recall : float or None
        Recall@k against exact top-k (approximate index only).
    cpu_p50_ms, cpu_p99_ms, cpu_p50_spread_ms : float or None
        The same from the calling thread's CPU time (the service time); None with
        more than one thread, where work on other threads would be missed.
    rounds_cpu_p50_ms : list of float or None
        Per-round CPU-time p50.
    """

    p50_ms: float
    p99_ms: float
    p50_spread_ms: float
    p99_spread_ms: float
    rounds_p50_ms: list[float]
    rounds_p99_ms: list[float]
    queries: int
    threads: int
    recall: float | None = None
    cpu_p50_ms: float | None = None
    cpu_p99_ms: float | None = None
    cpu_p50_spread_ms: float | None = None
    rounds_cpu_p50_ms: list[float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def clock(self) -> str:
        """``"cpu"`` when the service time was measured, else ``"wall"``."""
        return "cpu" if self.cpu_p50_ms is not None else "wall"


@dataclass
class ModelLatency:
    """Both paths of one model: ``paths[index][path]`` with index "exact" or "ann".

    ``unsupported[path]`` says why a path could not be served (e.g. a family that
    cannot embed unseen users).
    """

    paths: dict[str, dict[str, PathLatency]] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    ann: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        return {"paths": {index: {path: lat.to_dict() for path, lat in paths.items()}
                          for index, paths in self.paths.items()},
                "unsupported": dict(self.unsupported), "ann": self.ann}


def measure_latency(
    models: Mapping[str, Any],
    dataset,
    n_queries: int = 200,
    rounds: int = 3,
    threads: int = 1,
    k: int = 10,
    seed: int = 0,
    ann: bool | Collection[str] = False,
) -> dict[str, ModelLatency]:
    """Per-query latency of both serving paths of every model, in interleaved rounds.

    Parameters
    ----------
    models : mapping of name -> fitted model
        Each exposes ``query_embeddings``, ``item_embeddings`` and, for the computed
        path, ``embed_new_users``.
    dataset : Dataset
        The data the models were fitted on (``train``, ``user_features``).
    n_queries : int
        Training users timed per path per round (the same users for every model).
    rounds : int
        At least 3; the spread across rounds is the noise a verdict must exceed.
    threads : int
        Threads every query runs on (torch, and faiss with ``ann``); restored after.
    k : int
        List length; the user's training items are excluded.
    seed : int
        Picks the timed users, and separate users that tune the ANN index.
    ann : bool or collection of str
        Also serve from an IVF index: True for every model, or the names of the models
        to serve so (needs the ``recompare[ann]`` extra).

    Returns
    -------
    dict of name -> ModelLatency
    """
    if rounds < 3:
        raise RecompareError(f"latency needs at least 3 rounds to estimate noise, got {rounds}")
    if threads < 1:
        raise RecompareError(f"threads must be >= 1, got {threads}")
    users, tuning = _pick_users(dataset.train, n_queries, seed)
    results = {name: ModelLatency() for name in models}
    with_ann = set(models) if ann is True else set(ann or ())
    with (torch_threads(threads), _ann_threads(bool(with_ann), threads),
          _model_threads(models, threads), frozen_heap()):
        servers = {name: _Server(model, dataset, k, name in with_ann, tuning, seed, threads)
                   for name, model in models.items()}
        calls = {(name, path, index): call for name, server in servers.items()
                 for path in PATHS for index in server.indexes
                 if (call := server.call(path, index)) is not None}
        timings: dict[tuple[str, str, str], list[np.ndarray]] = {key: [] for key in calls}
        for round_number in range(rounds):
            per_key = _time_round(calls, round_number, users, threads == 1)
            for key, times in per_key.items():
                timings[key].append(times)
    for name, server in servers.items():
        results[name].unsupported = dict(server.unsupported)
        results[name].ann = server.ann_info
        for (model, path, index), per_round in timings.items():
            if model == name:
                recall = server.recall.get(path) if index == "ann" else None
                results[name].paths.setdefault(index, {})[path] = _summarise(
                    per_round, threads, recall)
    return results


def latency_verdict(label_a: str, a: PathLatency | None, label_b: str, b: PathLatency | None,
                    stat: str = "p50", min_ratio: float = MIN_RATIO,
                    clock: str = "auto") -> dict:
    """Which of two latencies is lower, only where the gap exceeds the noise.

    The two were timed in the same interleaved rounds, so each round is a paired
    comparison: load that slows one round down slows both models alike.  A winner
    must be at least ``min_ratio`` times faster *in every round*; otherwise the
    verdict is "on par (within noise)".  ``clock`` "auto" compares service times (CPU
    time, one thread) when both have them, else wall clock; "wall" and "cpu" force
    one (only p50 has a CPU-time figure).

    Returns
    -------
    dict with ``verdict`` (one line), ``winner`` (a label or None), ``ratio``
    (slower / faster median, or None), ``round_ratios`` (b / a per round, or None)
    and ``clock`` ("cpu" or "wall").
    """
    if a is None or b is None:
        return {"verdict": "not measured for both", "winner": None, "ratio": None,
                "round_ratios": None, "clock": None}
    if clock == "auto":
        clock = "cpu" if stat == "p50" and a.clock == b.clock == "cpu" else "wall"
    if clock not in ("cpu", "wall"):
        raise RecompareError(f"clock must be 'auto', 'cpu' or 'wall', got {clock!r}")
    if clock == "cpu" and (stat != "p50" or "wall" in (a.clock, b.clock)):
        raise RecompareError("CPU-time verdicts need p50 measured on one thread for both")
    key = f"cpu_{stat}" if clock == "cpu" else stat
    va, vb = getattr(a, f"{key}_ms"), getattr(b, f"{key}_ms")
    label = f"{stat} {'service time' if clock == 'cpu' else 'wall'}"
    fast, slow = (label_a, label_b) if va <= vb else (label_b, label_a)
    low, high = min(va, vb), max(va, vb)
    ratio = high / low if low > 0 else float("inf")
    rounds_a, rounds_b = getattr(a, f"rounds_{key}_ms"), getattr(b, f"rounds_{key}_ms")
    if len(rounds_a) != len(rounds_b):
        raise RecompareError("latency verdicts compare figures timed in the same rounds")
    per_round = [rb / ra if ra > 0 else float("inf") for ra, rb in zip(rounds_a, rounds_b)]
    steady = (all(r >= min_ratio for r in per_round)
              or all(r <= 1 / min_ratio for r in per_round))
    noise = f"per-round {label_b}/{label_a} {min(per_round):.2f}-{max(per_round):.2f}x"
    out = {"ratio": ratio, "round_ratios": per_round, "clock": clock}
    if not steady:
        return {"verdict": f"on par (within noise): {label} {va:.3g} vs {vb:.3g} ms, {noise}",
                "winner": None, **out}
    return {"verdict": f"{fast} better: {label} {ratio:.1f}x lower than {slow} "
                       f"({low:.3g} vs {high:.3g} ms, {noise})",
            "winner": fast, **out}


# ------------------------------------------------------------------ helpers
class _Server:
    """One model as a server holds it: item index laid out once, both query paths."""

    def __init__(self, model, dataset, k: int, ann: bool, tuning: np.ndarray, seed: int,
                 threads: int) -> None:
        from ..models.topk import prepare_items

        self.model, self.k = model, k
        self.train, self.features = dataset.train, dataset.user_features
        items = np.asarray(model.item_embeddings(), dtype=np.float32)
        self.prepared = prepare_items(items)
        self.indexes = ["exact"]
        self.unsupported: dict[str, str] = {}
        self.recall: dict[str, float] = {}
        self.ann_info: dict[str, Any] | None = None
        self.ann = None
        if ann:
            from ..models.ann import build_ann_index

            validation = np.asarray(model.query_embeddings(tuning), dtype=np.float32)
            self.ann = build_ann_index(items, validation, k, seed=seed, threads=threads)
            self.indexes.append("ann")
            self.ann_info = {"lists": self.ann.n_lists, "probe": self.ann.n_probe,
                             "validation_recall": self.ann.validation_recall,
                             "bytes": self.ann.nbytes}
        self._check_computed()

    def _check_computed(self) -> None:
        try:
            self._embed("computed", int(np.flatnonzero(np.diff(self.train.indptr))[0]))
        except RecompareError as exc:
            self.unsupported["computed"] = str(exc)

    def _embed(self, path: str, user: int) -> np.ndarray:
        if path == "static":
            return self.model.query_embeddings(np.array([user]))
        feats = None
        if self.features is not None:
            feats = self.features.iloc[[user]].reset_index(drop=True)
        return self.model.embed_new_users(self.train[[user]], feats)

    def call(self, path: str, index: str) -> Callable[[int], Any] | None:
        """One query, end to end, for ``user``; None where the path is unsupported."""
        from ..models.ann import ann_search
        from ..models.topk import topk_prepared

        if path in self.unsupported:
            return None
        if index == "exact":
            return lambda user: topk_prepared(self._embed(path, user), self.prepared, self.k,
                                              exclude=self.train[[user]])
        if path not in self.recall:
            self.recall[path] = self._ann_recall(path)
        return lambda user: ann_search(self.ann, self._embed(path, user), self.k,
                                       exclude=self.train[[user]])

    def _ann_recall(self, path: str, n: int = 100) -> float:
        """Recall@k of the ANN lists against exact ones, on the first ``n`` active users."""
        from ..models.ann import ann_search, recall_against
        from ..models.topk import topk_prepared

        users = np.flatnonzero(np.diff(self.train.indptr))[:n]
        found, exact = [], []
        for user in users:
            q = self._embed(path, int(user))
            seen = self.train[[int(user)]]
            found.append(ann_search(self.ann, q, self.k, exclude=seen)[0])
            exact.append(topk_prepared(q, self.prepared, self.k, exclude=seen)[0])
        return recall_against(np.vstack(found), np.vstack(exact))


def _pick_users(train, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Timed users and disjoint tuning users (for the ANN index), both active in training."""
    active = np.flatnonzero(np.diff(train.indptr) > 0)
    if not len(active):
        raise RecompareError("no user has training interactions to time queries on")
    rng = np.random.default_rng(seed)
    order = rng.permutation(active)
    n = max(1, min(int(n_queries), len(order) // 2 or 1))
    tuning = order[n:] if len(order) > n else order
    return np.sort(order[:n]), np.sort(tuning[:1000])


#: queries timed back to back for one model and path before the next one's turn
BLOCK_QUERIES = 20


def _time_round(calls: Mapping[tuple[str, str, str], Callable[[int], Any]], round_number: int,
                users: np.ndarray, cpu: bool, block: int = BLOCK_QUERIES
                ) -> dict[tuple[str, str, str], np.ndarray]:
    """One round: every (model, path, index) times every user, in short interleaved blocks.

    The users are cut into blocks of ``block``; each block is timed for every key in
    turn, the order rotating from block to block, so that a burst of load from other
    processes lands on every model alike instead of on whichever model was being timed
    then.  Each block starts with one untimed call (caches warm, as on a server that
    answers a stream of queries).  Returns per key an array as :func:`_time_queries`.
    """
    keys = list(calls)
    parts: dict[tuple[str, str, str], list[np.ndarray]] = {key: [] for key in keys}
    starts = range(0, len(users), block)
    # one full collection per round: with torch loaded a full collection takes about
    # 0.25 s, so collecting before every model's block cost more than the timing itself
    gc.collect()
    for b, start in enumerate(starts):
        shift = (round_number * len(starts) + b) % len(keys) if keys else 0
        for key in keys[shift:] + keys[:shift]:
            parts[key].append(_time_queries(calls[key], users[start: start + block],
                                            warmup=1, cpu=cpu))
    return {key: np.concatenate(chunks, axis=1) for key, chunks in parts.items()}


def _time_queries(call: Callable[[int], Any], users: np.ndarray, warmup: int = 5,
                  cpu: bool = True) -> np.ndarray:
    """Milliseconds of each call, one user at a time, after a few untimed calls: row 0
    wall clock, row 1 the calling thread's CPU time (NaN when ``cpu`` is False).
    The collector is paused while the calls are timed (as :mod:`timeit` does), so that no
    query pays for a collection of garbage that others made, and resumed after (when it
    was on); :func:`_time_round` collects once before its blocks."""
    for user in users[:warmup]:
        call(int(user))
    times = np.full((2, len(users)), np.nan)
    wall, thread = time.perf_counter_ns, time.thread_time_ns
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i, user in enumerate(users):
            start = wall()  # the CPU interval is nested inside the wall one
            start_cpu = thread() if cpu else 0
            call(int(user))
            if cpu:
                times[1, i] = thread() - start_cpu
            times[0, i] = wall() - start
    finally:
        if was_enabled:
            gc.enable()
    return times / 1e6


def _summarise(per_round: list[np.ndarray], threads: int, recall: float | None
               ) -> PathLatency:
    p50 = [float(np.percentile(t[0], 50)) for t in per_round]
    p99 = [float(np.percentile(t[0], 99)) for t in per_round]
    cpu: dict[str, Any] = {}
    if not np.isnan(per_round[0][1]).any():
        c50 = [float(np.percentile(t[1], 50)) for t in per_round]
        cpu = {"cpu_p50_ms": float(np.median(c50)),
               "cpu_p99_ms": float(np.median([np.percentile(t[1], 99) for t in per_round])),
               "cpu_p50_spread_ms": max(c50) - min(c50), "rounds_cpu_p50_ms": c50}
    return PathLatency(
        p50_ms=float(np.median(p50)), p99_ms=float(np.median(p99)),
        p50_spread_ms=max(p50) - min(p50), p99_spread_ms=max(p99) - min(p99),
        rounds_p50_ms=p50, rounds_p99_ms=p99, queries=len(per_round[0][0]), threads=threads,
        recall=recall, **cpu)


@contextlib.contextmanager
def _model_threads(models: Mapping[str, Any], threads: int) -> Iterator[None]:
    """Families with their own ``threads`` hyperparameter (WALS's fold-in pool) run on
    ``threads`` during the measurement; the hyperparameter is put back afterwards."""
    saved = {name: m.threads for name, m in models.items() if hasattr(m, "threads")}
    try:
        for name in saved:
            models[name].threads = threads
        yield
    finally:
        for name, value in saved.items():
            models[name].threads = value


@contextlib.contextmanager
def _ann_threads(ann: bool, threads: int) -> Iterator[None]:
    if not ann:
        yield
        return
    from ..models.ann import faiss_threads

    with faiss_threads(threads):
        yield
