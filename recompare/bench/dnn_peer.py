"""Part 4 of ``bench dnn``: the DNN and WALS against an implicit ALS peer tuned on
validation, as ratios from one run (see :mod:`recompare.bench.dnn`)."""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from .dnn import BUNDLED

#: the implicit ALS peer's grid, searched on validation (never test): factors x
#: regularisation x alpha (15 iterations)
ALS_GRID = {"factors": (64, 128), "regularization": (10.0, 50.0, 150.0),
            "alpha": (1.0, 5.0, 20.0)}
#: a small grid for the tiny scale (CI)
ALS_GRID_TINY = {"factors": (32,), "regularization": (10.0, 50.0), "alpha": (1.0, 5.0)}
PEER_TARGETS = {"default DNN": 0.92, "tuned DNN": 0.97, "default WALS": 1.0}


def _peer_data(dataset: str | os.PathLike | None, scale: str, seed: int):
    """The data set of the accuracy-vs-peer part: ``dataset`` (a prepared, split data
    set such as ml-latest-small), else the bundled planted data (a small planted split
    at the tiny scale), so that nothing here needs real data."""
    from ..data.dataset import Dataset
    from ..data.splits import split
    from ..data.synth import planted

    if dataset is not None:
        return Dataset.load(dataset), str(dataset)
    if scale != "tiny" and (BUNDLED / "meta.json").is_file():
        return Dataset.load(BUNDLED), "data/planted (bundled)"
    ds = split(planted(n_users=400, n_items=200, seed=seed), "random", seed=seed)
    return ds, f"planted {ds.n_users} x {ds.n_items}"


def _als_recall(als_cls, ds, params: dict, seed: int, threads: int
                ) -> tuple[float, dict[str, np.ndarray]]:
    """Weak recall@20 of implicit ALS fit on ``ds.train``, scored on ``ds.split.test``
    (the validation items when ``ds`` is a validation carve), and the per-user values
    (``{"users", "recall@20"}``, as ``evaluate``'s ``per_query``)."""
    from ..evaluate.metrics import per_query
    from ..models.topk import topk_dot

    als = als_cls(iterations=15, random_state=seed, num_threads=threads, **params)
    als.fit(sp.csr_matrix(ds.train), show_progress=False)
    test = ds.split.test
    has = np.flatnonzero(np.diff(test.indptr) > 0)
    ids, _ = topk_dot(als.user_factors[has], als.item_factors, 20, exclude=ds.train[has])
    values, evaluated = per_query(ids, test[has], (20,))
    recall = values["recall@20"]
    mean = float(recall.mean()) if len(recall) else 0.0
    return mean, {"users": has[evaluated], "recall@20": recall}


def grid_points(grid: dict, budget: int | None, seed: int) -> list[dict]:
    """The peer's configurations: every point of ``grid``, or a seeded sample of
    ``budget`` of them when the budget is smaller (the DNN gets as many trials)."""
    import itertools

    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if budget is not None and budget < len(points):
        keep = np.random.default_rng([seed, 11]).choice(len(points), budget, replace=False)
        points = [points[i] for i in sorted(keep)]
    return points


def _tuned_implicit(ds, points: list[dict], threads: int, seed: int
                    ) -> tuple[dict, dict[str, np.ndarray]] | None:
    """implicit ALS tuned over ``points`` on a validation carve of ``ds``'s training
    part, then refit on the whole training part and scored on test: its summary and
    its per-user test recall; None without implicit."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError:
        return None
    from ..data.validation import validation_split
    from ..tune import FRACTION

    val = validation_split(ds, FRACTION, seed, heldout_users=False)
    try:  # implicit asks for a single-threaded BLAS (it parallelises itself)
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(1, "blas")
    except ImportError:  # pragma: no cover
        limits = None
    start = time.perf_counter()
    try:
        trials = []
        for params in points:
            trials.append({**params, "validation_recall@20": _als_recall(
                AlternatingLeastSquares, val, params, seed, threads)[0]})
        best = max(trials, key=lambda t: t["validation_recall@20"])
        params = {k: best[k] for k in points[0]}
        test, per_user = _als_recall(AlternatingLeastSquares, ds, params, seed, threads)
    finally:
        if limits is not None:
            limits.restore_original_limits()
    return {"best": params, "recall@20": test, "grid": trials,
            "seconds": time.perf_counter() - start}, per_user


def accuracy_vs_peer(dataset, scale: str, threads: int, seed: int, tune_budget: int | None,
                      seeds: int, say) -> dict:
    """Default DNN, tuned DNN and default WALS against a tuned implicit ALS, weak
    recall@20 on test; every selection (the peer's grid, the DNN's tuning) on a
    validation carve of the training part.

    Equal budget: the DNN's random search gets as many trials as the peer gets grid
    points (all of the grid, or a seeded sample of ``tune_budget`` points when that is
    smaller; a larger ``tune_budget`` is capped at the grid's size).
    """
    from ..evaluate.protocols import evaluate
    from ..models.softmax import SoftmaxDNN
    from ..models.wals import WALS
    from ..tune import fit_best, tune

    ds, source = _peer_data(dataset, scale, seed)
    grid = ALS_GRID_TINY if scale == "tiny" and dataset is None else ALS_GRID
    points = grid_points(grid, tune_budget, seed)
    say(f"accuracy vs implicit ALS on {source}: tuning the peer on validation "
        f"({len(points)} grid points)")
    tuned_peer = _tuned_implicit(ds, points, threads, seed)
    if tuned_peer is None:
        return {"skipped": "implicit is not installed (pip install -e '.[bench]')"}
    peer, peer_values = tuned_peer

    per_user: dict[str, dict] = {}

    def recall(model, name: str | None = None) -> float:
        result = evaluate(model, ds, "weak", ks=(20,), folding=False,
                          per_query_metrics=("recall@20",) if name else ())
        if name:
            per_user[name] = result["per_query"]
        return float(result["metrics"]["recall@20"])

    out: dict[str, Any] = {"data": source, "implicit": peer, "models": {}}
    say("default DNN")
    per_seed = []
    for s in range(seed, seed + seeds):
        start = time.perf_counter()
        model = SoftmaxDNN(threads=threads, random_state=s).fit(ds)
        per_seed.append({"seed": s, "recall@20": recall(model, "default DNN" if s == seed
                                                        else None),
                         "seconds": time.perf_counter() - start})
    values = np.array([r["recall@20"] for r in per_seed])
    out["models"]["default DNN"] = {"recall@20": float(values[0]), "seeds": per_seed,
                                    "spread_of_mean": float(np.ptp(values) / values.mean())}
    say("default WALS")
    out["models"]["default WALS"] = {"recall@20": recall(WALS(random_state=seed).fit(ds),
                                                            "default WALS")}
    say(f"tuned DNN ({len(points)} trials on validation, as many as the peer's)")
    start = time.perf_counter()
    result = tune(ds, "dnn", len(points), random_state=seed)
    tuned = fit_best(ds, "dnn", result, seed)
    out["models"]["tuned DNN"] = {"recall@20": recall(tuned, "tuned DNN"), "params": result.params,
                                  "trials": result.trials,
                                  "seconds": time.perf_counter() - start}
    for name, row in out["models"].items():
        row["ratio"] = row["recall@20"] / max(peer["recall@20"], 1e-12)
        row["ratio_interval"] = _ratio_interval(per_user[name], peer_values, seed)
    return out


def _ratio_interval(model: dict, peer: dict, seed: int) -> list[float | None]:
    """95% paired bootstrap interval of a model's recall@20 over the peer's, on the test
    users both answered (the model's test users are the peer's: the same split)."""
    from ..evaluate.stats import paired, ratio_interval

    _, a, b = paired({"r": model["recall@20"]}, model["users"],
                     {"r": peer["recall@20"]}, peer["users"])
    _, low, high = ratio_interval(a["r"], b["r"], seed=seed)
    return [low, high]
