"""WALS against ``implicit``'s conjugate-gradient ALS, side by side in one run.

Four figures (issue 4):

* speed: seconds per iteration on a power-law matrix (138,000 x 27,000, about
  18M entries at ``full``), 64 factors, 2 threads, 3 CG steps, both libraries
  in the same process, interleaved round by round so that a noisy neighbour
  hurts both alike; the ratio of medians is the headline (target <= 0.8);
  CPU seconds per iteration are reported too, since they are less sensitive
  to other processes on a shared machine;
* quality: recall@20 of both, at matched settings, on the same random
  holdout of planted-group data (implicit's confidence ``alpha`` on observed
  pairs and weight 1 elsewhere is our ``w0 = 1 / alpha`` with the objective
  divided by ``alpha``; see :mod:`recompare.models.wals`);
* memory: peak RSS increase during our fit against 2 x (input matrix + factors);
* cost against size: the fitted log-log slope of seconds per iteration
  against the number of entries (1M..20M at ``full``; should be close to 1).

Our timed fits run with one glibc malloc arena (:func:`one_malloc_arena`): each thread
of the solver's pool would otherwise get its own arena, which keeps the temporaries
freed there.  That is allocator tuning for the measurement, done here and undone after;
the library itself never touches the allocator, so an application that wants the same
peak sets ``MALLOC_ARENA_MAX=1`` in its environment.

``implicit`` is imported lazily; without it our own figures are still reported.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import statistics
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import numpy as np
import scipy.sparse as sp

from .common import measure

PEER_MISSING = "peer not installed: pip install implicit==0.7.3 (make bench installs it)"
TARGET_RATIO = 0.8
TARGET_MEMORY = 2.0

#: users, items, entries of the speed matrix; rounds; iterations per round;
#: planted data for quality (users, items); entries of the scaling points
SCALES: dict[str, dict[str, Any]] = {
    "tiny": {"users": 3_000, "items": 1_000, "nnz": 60_000, "rounds": 1, "iterations": 2,
             "quality": (600, 300), "quality_iterations": 5,
             "slope": (15_000, 30_000, 60_000)},
    "small": {"users": 40_000, "items": 8_000, "nnz": 2_000_000, "rounds": 2, "iterations": 3,
              "quality": (8_000, 3_000), "quality_iterations": 15,
              "slope": (250_000, 500_000, 1_000_000, 2_000_000)},
    "full": {"users": 138_000, "items": 27_000, "nnz": 18_000_000, "rounds": 3, "iterations": 3,
             "quality": (40_000, 10_000), "quality_iterations": 15,
             "slope": (1_000_000, 2_000_000, 5_000_000, 10_000_000, 20_000_000)},
}
#: implicit's settings for the comparison; ours are mapped from them
ALPHA = 20.0
REGULARIZATION = 0.05
FACTORS = 64
THREADS = 2
CG_STEPS = 3


def powerlaw_matrix(n_users: int, n_items: int, nnz: int, seed: int = 0,
                    item_exponent: float = 0.9, user_shape: float = 1.5) -> sp.csr_matrix:
    """A binary users x items matrix with power-law activity and Zipf item popularity.

    User activity is Pareto distributed (``user_shape``), item popularity is
    ``rank ** -item_exponent`` over a random item order; duplicate draws are
    dropped and topped up until the matrix holds about ``nnz`` entries.

    Returns
    -------
    csr_matrix of shape (n_users, n_items), float32 ones, sorted indices
    """
    rng = np.random.default_rng(seed)
    nnz = int(min(nnz, n_users * n_items // 2))
    activity = rng.pareto(user_shape, n_users) + 1.0
    popularity = 1.0 / np.arange(1, n_items + 1) ** item_exponent
    cdf = np.cumsum(popularity)
    cdf /= cdf[-1]
    relabel = rng.permutation(n_items).astype(np.int32)
    cap = max(1, n_items // 2)
    rows_parts, cols_parts = [], []
    have = 0
    target = nnz
    matrix = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    for _ in range(6):  # duplicates of popular items: draw again for the shortfall
        counts = np.minimum(cap, np.maximum(1, np.round(activity / activity.sum() * target)))
        counts = counts.astype(np.int64)
        rows_parts.append(np.repeat(np.arange(n_users, dtype=np.int32), counts))
        draws = np.searchsorted(cdf, rng.random(int(counts.sum())))
        cols_parts.append(relabel[np.minimum(draws, n_items - 1)])
        rows, cols = np.concatenate(rows_parts), np.concatenate(cols_parts)
        matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                               shape=(n_users, n_items))
        matrix.sum_duplicates()
        have = matrix.nnz
        if have >= 0.97 * nnz:
            break
        target = (nnz - have) * (len(rows) / max(have, 1))
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix


def _dataset(matrix: sp.csr_matrix):
    from ..data.dataset import Dataset, IdMap

    return Dataset(interactions=matrix, users=IdMap(np.arange(matrix.shape[0])),
                   items=IdMap(np.arange(matrix.shape[1])))


def _ours(iterations: int, **overrides: Any):
    from ..models.wals import WALS

    params = {"dim": FACTORS, "unobserved_weight": 1.0 / ALPHA,
              "regularization": REGULARIZATION / ALPHA, "reg_scaling": "none",
              "weighting": "constant", "iterations": iterations, "solver": "cg",
              "cg_steps": CG_STEPS, "threads": THREADS, "random_state": 0}
    params.update(overrides)
    return WALS(**params)


def _peer(iterations: int):
    """implicit's CPU ALS at the benchmark settings, or None when not installed."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError:
        return None
    return AlternatingLeastSquares(factors=FACTORS, regularization=REGULARIZATION, alpha=ALPHA,
                                   iterations=iterations, num_threads=THREADS,
                                   use_cg=True, random_state=0,
                                   calculate_training_loss=False)


def _blas_single_thread():
    """implicit asks for single-threaded BLAS (it parallelises itself)."""
    import contextlib

    try:  # load implicit's libraries first, so that the limit covers them too
        import implicit.cpu.als  # noqa: F401
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, "blas")


def _diffs(stamps: list[float]) -> list[float]:
    return [b - a for a, b in pairwise(stamps)]


_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def _mallopt_arena_max(limit: int) -> bool:
    """Best-effort ``mallopt(M_ARENA_MAX, limit)``; False outside glibc."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, int(limit)))
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def one_malloc_arena() -> Iterator[None]:
    """Benchmark-only: one glibc malloc arena for the threads started in the body.

    glibc offers no way to read the limit back, so on exit it is set to glibc's own
    default (8 arenas per CPU) unless ``MALLOC_ARENA_MAX`` in the environment set it.
    """
    _mallopt_arena_max(1)
    try:
        yield
    finally:
        configured = os.environ.get("MALLOC_ARENA_MAX", "")
        _mallopt_arena_max(int(configured) if configured.isdigit() else
                           8 * (os.cpu_count() or 1))


def _time_ours(dataset, iterations: int) -> dict:
    model = _ours(iterations)
    cpu: list[float] = []
    with one_malloc_arena(), measure() as memory:
        model.fit(dataset, callback=lambda event: cpu.append(time.process_time()))
    # the first event marks the end of the set-up, then one per iteration
    return {"per_iteration": model.fit_info_["seconds_per_iteration"],
            "cpu_per_iteration": statistics.median(_diffs(cpu)),
            "peak_extra_bytes": memory["peak_extra_bytes"], "fit_seconds": memory["seconds"]}


def _time_peer(matrix: sp.csr_matrix, iterations: int) -> dict | None:
    wall: list[float] = []
    cpu: list[float] = []

    def tick(iteration, elapsed, loss) -> None:  # implicit's fit callback
        wall.append(time.perf_counter())
        cpu.append(time.process_time())

    with _blas_single_thread():
        model = _peer(iterations)
        if model is None:
            return None
        with measure() as memory:
            wall.append(time.perf_counter())
            cpu.append(time.process_time())
            model.fit(matrix, show_progress=False, callback=tick)
    # implicit's first iteration includes its set-up (transpose, initial factors);
    # the medians over all iterations keep that out of the headline
    return {"per_iteration": _diffs(wall), "cpu_per_iteration": statistics.median(_diffs(cpu)),
            "peak_extra_bytes": memory["peak_extra_bytes"], "fit_seconds": memory["seconds"]}


def _recall(user_factors: np.ndarray, item_factors: np.ndarray, train: sp.csr_matrix,
            test: sp.csr_matrix, k: int = 20) -> dict:
    from ..evaluate.metrics import accuracy
    from ..models.topk import topk_dot

    users = np.flatnonzero(np.diff(test.indptr) > 0)
    ids, scores = topk_dot(user_factors[users], item_factors, k, exclude=train[users])
    result = accuracy(ids, test[users], [k], valid=np.isfinite(scores))
    return {name: result["metrics"][f"{name}@{k}"] for name in ("recall", "recall_norm", "ndcg")}


def _quality(cfg: dict, say: Callable[[str], None]) -> dict:
    from ..data.splits import split
    from ..data.synth import planted

    n_users, n_items = cfg["quality"]
    iterations = cfg["quality_iterations"]
    data = split(planted(n_users=n_users, n_items=n_items, seed=0), kind="random", seed=0)
    train, test = data.split.train, data.split.test
    say(f"quality: planted {n_users} x {n_items}, {train.nnz:,} training entries")
    out: dict[str, Any] = {"users": n_users, "items": n_items, "train_nnz": int(train.nnz),
                           "iterations": iterations, "k": 20,
                           "implicit_settings": {"alpha": ALPHA,
                                                 "regularization": REGULARIZATION},
                           "our_settings": {"unobserved_weight": 1.0 / ALPHA,
                                            "regularization": REGULARIZATION / ALPHA}}
    ours = _ours(iterations).fit(data)
    out["ours"] = _recall(ours.user_factors_, ours.item_factors_, train, test)
    defaults = _ours(iterations, **_default_params()).fit(data)
    out["ours_defaults"] = _recall(defaults.user_factors_, defaults.item_factors_, train, test)
    with _blas_single_thread():
        peer = _peer(iterations)
        if peer is not None:
            peer.fit(train, show_progress=False)
    if peer is None:
        out["implicit"] = PEER_MISSING
    else:
        out["implicit"] = _recall(np.asarray(peer.user_factors), np.asarray(peer.item_factors),
                                  train, test)
    return out


def _default_params() -> dict:
    """The library defaults (the model the CLI trains when given no flags)."""
    import inspect

    from ..models.wals import WALS

    sig = inspect.signature(WALS.__init__)
    keep = ("unobserved_weight", "regularization", "reg_scaling", "reg_exponent", "weighting",
            "alpha")
    return {name: sig.parameters[name].default for name in keep}


def _slope(cfg: dict, say: Callable[[str], None]) -> dict:
    points = []
    for nnz in cfg["slope"]:
        matrix = powerlaw_matrix(cfg["users"], cfg["items"], nnz, seed=1)
        say(f"scaling: {matrix.nnz:,} entries")
        timing = _time_ours(_dataset(matrix), 2)
        points.append({"nnz": int(matrix.nnz),
                       "seconds_per_iteration": min(timing["per_iteration"]),
                       "cpu_per_iteration": timing["cpu_per_iteration"]})
    x = np.log([p["nnz"] for p in points])
    slope = float(np.polyfit(x, np.log([p["seconds_per_iteration"] for p in points]), 1)[0])
    cpu_slope = float(np.polyfit(x, np.log([p["cpu_per_iteration"] for p in points]), 1)[0])
    return {"points": points, "slope": slope, "cpu_slope": cpu_slope}


def _speed(cfg: dict, say: Callable[[str], None]) -> tuple[sp.csr_matrix, bool, dict]:
    """Seconds per iteration of both libraries, interleaved round by round."""
    say("generating the power-law matrix")
    matrix = powerlaw_matrix(cfg["users"], cfg["items"], cfg["nnz"], seed=0)
    dataset = _dataset(matrix)
    with _blas_single_thread():
        peer_installed = _peer(1) is not None
    # warm up (imports, thread pools, allocator) so that round 1 is not penalised
    _time_ours(_dataset(powerlaw_matrix(500, 200, 5_000, seed=2)), 1)
    ours_runs, peer_runs = [], []
    for r in range(cfg["rounds"]):
        say(f"speed round {r + 1}/{cfg['rounds']}: recompare WALS")
        ours_runs.append(_time_ours(dataset, cfg["iterations"]))
        if peer_installed:
            say(f"speed round {r + 1}/{cfg['rounds']}: implicit ALS")
            peer_runs.append(_time_peer(matrix, cfg["iterations"]))

    def summary(runs: list[dict]) -> dict:
        per_it = [t for run in runs for t in run["per_iteration"]]
        return {"seconds_per_iteration": statistics.median(per_it),
                "best_seconds_per_iteration": min(per_it),
                "cpu_seconds_per_iteration": statistics.median(
                    [run["cpu_per_iteration"] for run in runs]),
                "all_seconds_per_iteration": per_it,
                "peak_extra_bytes": max(run["peak_extra_bytes"] for run in runs)}

    ours = summary(ours_runs)
    speed: dict[str, Any] = {"users": cfg["users"], "items": cfg["items"], "nnz": int(matrix.nnz),
                             "dim": FACTORS, "threads": THREADS, "cg_steps": CG_STEPS,
                             "rounds": cfg["rounds"], "iterations": cfg["iterations"],
                             "ours": ours}
    if peer_installed:
        peer = summary(peer_runs)
        speed["implicit"] = peer
        speed["ratio"] = ours["seconds_per_iteration"] / peer["seconds_per_iteration"]
        speed["best_ratio"] = ours["best_seconds_per_iteration"] / \
            peer["best_seconds_per_iteration"]
        speed["cpu_ratio"] = ours["cpu_seconds_per_iteration"] / \
            peer["cpu_seconds_per_iteration"]
    else:
        speed["implicit"] = PEER_MISSING
    return matrix, peer_installed, speed


def _memory(matrix: sp.csr_matrix, speed: dict, peer_installed: bool) -> dict:
    """Our peak extra RSS against the input matrix plus the factors."""
    ours = speed["ours"]
    input_bytes = matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes
    factor_bytes = 4 * FACTORS * (matrix.shape[0] + matrix.shape[1])
    budget = TARGET_MEMORY * (input_bytes + factor_bytes)
    memory = {"input_bytes": int(input_bytes), "factor_bytes": int(factor_bytes),
              "peak_extra_bytes": int(ours["peak_extra_bytes"]), "budget_bytes": int(budget),
              "ratio_to_input_plus_factors": ours["peak_extra_bytes"] / (input_bytes
                                                                         + factor_bytes)}
    if peer_installed:
        memory["implicit_peak_extra_bytes"] = int(speed["implicit"]["peak_extra_bytes"])

    return memory


def _figures(speed: dict, memory: dict, quality: dict, scaling: dict, peer_installed: bool,
             at_full: bool) -> list[dict[str, Any]]:
    """The headline figures; targets only at full scale (smaller scales exercise the script)."""
    ours = speed["ours"]

    def target(value: float, limit: float) -> dict:
        return {"target": limit, "met": bool(value <= limit)} if at_full else {}

    figures: list[dict[str, Any]] = []
    if peer_installed:
        figures.append({"name": "seconds/iteration, WALS / implicit (median)",
                        "value": round(speed["ratio"], 3), "unit": "x",
                        **target(speed["ratio"], TARGET_RATIO)})
        figures.append({"name": "CPU seconds/iteration, WALS / implicit",
                        "value": round(speed["cpu_ratio"], 3), "unit": "x"})
    else:
        figures.append({"name": "implicit", "value": PEER_MISSING})
    figures.append({"name": "WALS seconds/iteration", "value": round(
        ours["seconds_per_iteration"], 3), "unit": "s"})
    if peer_installed:
        figures.append({"name": "implicit seconds/iteration", "value": round(
            speed["implicit"]["seconds_per_iteration"], 3), "unit": "s"})
    figures.append({"name": "peak extra RSS / (input + factors)",
                    "value": round(memory["ratio_to_input_plus_factors"], 3), "unit": "x",
                    **target(memory["ratio_to_input_plus_factors"], TARGET_MEMORY)})
    recall_ours = quality["ours"]["recall"]
    if isinstance(quality["implicit"], dict):
        recall_peer = quality["implicit"]["recall"]
        # "met": at least implicit's recall, up to 0.005 of sampling noise
        figures.append({"name": "recall@20, WALS (matched settings) vs implicit",
                        "value": round(recall_ours, 4), "peer_value": round(recall_peer, 4),
                        "met": bool(recall_ours >= recall_peer - 0.005)})
    else:
        figures.append({"name": "recall@20, WALS (matched settings)",
                        "value": round(recall_ours, 4)})
    figures.append({"name": "recall@20, WALS (defaults)",
                    "value": round(quality["ours_defaults"]["recall"], 4)})
    figures.append({"name": "log-log slope of seconds/iteration vs entries",
                    "value": round(scaling["slope"], 3), "target": 1.0})
    return figures


def run(scale: str = "small", callback: Callable[[dict], None] | None = None) -> dict:
    """Run the WALS benchmark at ``scale`` ("tiny", "small" or "full").

    Returns
    -------
    dict with ``speed`` (per-iteration seconds of both, medians, ratios),
    ``memory``, ``quality`` (recall@20 of both), ``scaling`` (log-log slope)
    and ``figures`` (the headline, with targets and whether they were met).
    """
    def say(message: str) -> None:
        if callback is not None:
            callback({"stage": "bench", "message": message})

    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}")
    cfg = SCALES[scale]
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}")
    cfg = SCALES[scale]
    matrix, peer_installed, speed = _speed(cfg, say)
    memory = _memory(matrix, speed, peer_installed)
    say("quality on planted data")
    quality = _quality(cfg, say)
    say("scaling with the number of entries")
    scaling = _slope(cfg, say)
    # the targets are defined at full scale; smaller scales only exercise the script
    figures = _figures(speed, memory, quality, scaling, peer_installed, scale == "full")
    return {"scale": scale, "speed": speed, "memory": memory, "quality": quality,
            "scaling": scaling, "peer_installed": peer_installed, "figures": figures}
