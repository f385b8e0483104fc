"""Paired comparisons of two models on the same queries, with confidence intervals.

Two models evaluated under one protocol answer the same queries, so the fair question is
not whether their two means differ but whether the per-query differences
``d_u = metric_a(u) - metric_b(u)`` average to something other than zero.  Pairing removes
the variation between users (some users are easy for every model), which is most of the
noise in a recommender metric.

Two intervals for the mean difference (definitions in ``docs/methodology.md``):

``bootstrap`` (default)
    Paired percentile bootstrap: resample users with replacement ``resamples`` times
    (seeded), take the mean difference of each resample, and report the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles.  Makes no assumption
    on the shape of the per-user differences (recall values are lumpy).
``t``
    Student's t: ``mean(d) +- t_{n-1} * sd(d) / sqrt(n)``.

Several columns of differences over the same queries share one set of resamples, so a
whole protocol costs one pass.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

from ..errors import RecompareError

#: confidence level of every interval the comparison reports
CONFIDENCE = 0.95
#: bootstrap resamples per interval
RESAMPLES = 2000
METHODS = ("bootstrap", "t")

# bootstrap counts are built this many (resample, query) cells at a time, to bound memory
_CELLS_PER_CHUNK = 1 << 22


class Interval(TypedDict):
    """The mean of per-query differences with its confidence interval.

    Attributes
    ----------
    n : int
        Queries paired.
    difference : float
        Mean of the differences (0.0 with no query).
    low, high : float or None
        The interval's ends; None when it cannot be computed (fewer than two queries).
    """

    n: int
    difference: float
    low: float | None
    high: float | None


def _check(confidence: float, method: str, resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise RecompareError(f"confidence must be in (0, 1), got {confidence}")
    if method not in METHODS:
        raise RecompareError(f"unknown interval method {method!r} (known: {', '.join(METHODS)})")
    if method == "bootstrap" and resamples < 10:
        raise RecompareError(f"the bootstrap needs at least 10 resamples, got {resamples}")


def _bootstrap_means(columns: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Mean of every column over ``resamples`` resamples of the rows (with replacement).

    Parameters
    ----------
    columns : ndarray of shape (n, m)
    resamples : int
    seed : int

    Returns
    -------
    ndarray of shape (resamples, m)
    """
    n = columns.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // n)
    out = np.empty((resamples, columns.shape[1]), dtype=np.float64)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        draws = rng.integers(0, n, size=(size, n))
        # how often each query was drawn in each resample: the means are then one product
        cells = (np.arange(size)[:, None] * n + draws).ravel()
        counts = np.bincount(cells, minlength=size * n).reshape(size, n)
        out[start:start + size] = counts @ columns / n
    return out


def mean_intervals(differences: np.ndarray, confidence: float = CONFIDENCE,
                   method: str = "bootstrap", resamples: int = RESAMPLES, seed: int = 0
                   ) -> list[Interval]:
    """Intervals for the mean of each column of paired differences.

    Parameters
    ----------
    differences : ndarray of shape (n_queries,) or (n_queries, m)
        Per-query differences ``metric_a - metric_b``; all columns over the same queries
        (they share the bootstrap resamples).
    confidence : float in (0, 1)
    method : {"bootstrap", "t"}
    resamples : int
        Bootstrap resamples (ignored by ``t``).
    seed : int
        Seed of the bootstrap: same seed, same interval.

    Returns
    -------
    list of Interval
        One per column.
    """
    _check(confidence, method, resamples)
    columns = np.asarray(differences, dtype=np.float64)
    if columns.ndim == 1:
        columns = columns[:, None]
    if columns.ndim != 2:
        raise RecompareError(f"expected a vector or matrix of differences, got {columns.shape}")
    if not np.all(np.isfinite(columns)):
        raise RecompareError("per-query differences contain NaN or infinite values")
    n, m = columns.shape
    means = columns.mean(axis=0) if n else np.zeros(m)
    if n < 2:
        return [Interval(n=n, difference=float(v), low=None, high=None) for v in means]
    alpha = (1.0 - confidence) / 2.0
    if method == "t":
        from scipy.stats import t as student_t

        half = student_t.ppf(1.0 - alpha, n - 1) * columns.std(axis=0, ddof=1) / np.sqrt(n)
        lows, highs = means - half, means + half
    else:
        boot = _bootstrap_means(columns, resamples, seed)
        lows, highs = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
    return [Interval(n=n, difference=float(v), low=float(lo), high=float(hi))
            for v, lo, hi in zip(means, lows, highs)]


def ratio_interval(values_a: np.ndarray, values_b: np.ndarray,
                   confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
                   ) -> tuple[float, float | None, float | None]:
    """The ratio of two models' means over the same queries, with a paired bootstrap
    interval: ``mean(a) / mean(b)`` and the quantiles of that ratio over ``resamples``
    resamples of the queries (the same queries for both, so the ratio keeps the pairing).

    Parameters
    ----------
    values_a, values_b : ndarray of shape (n,)
        Per-query values of the two models, aligned (:func:`paired`).
    confidence, resamples, seed
        As in :func:`mean_intervals` (bootstrap only).

    Returns
    -------
    (ratio, low, high)
        ``low``/``high`` are None with fewer than two queries; resamples where ``b``'s
        mean is 0 are left out (all of them: None).
    """
    _check(confidence, "bootstrap", resamples)
    a = np.asarray(values_a, dtype=np.float64)
    b = np.asarray(values_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise RecompareError(f"ratio needs two aligned vectors, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise RecompareError("per-query values contain NaN or infinite values")
    ratio = float(a.mean() / b.mean()) if len(b) and b.mean() != 0 else float("nan")
    if len(a) < 2:
        return ratio, None, None
    boot = _bootstrap_means(np.column_stack([a, b]), resamples, seed)
    keep = boot[:, 1] != 0
    if not keep.any():
        return ratio, None, None
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot[keep, 0] / boot[keep, 1], [alpha, 1.0 - alpha])
    return ratio, float(low), float(high)


def paired(values_a: Mapping[str, np.ndarray], users_a: np.ndarray,
           values_b: Mapping[str, np.ndarray], users_b: np.ndarray
           ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Align two models' per-query values on the queries both answered.

    Parameters
    ----------
    values_a, values_b : mapping metric -> ndarray of shape (len(users_x),)
    users_a, users_b : ndarray of int
        The query (user) of each value.

    Returns
    -------
    users : ndarray of int
        The common queries, ascending.
    a, b : dict metric -> ndarray of shape (len(users),)
        The metrics both mappings hold, on ``users``.
    """
    users, ia, ib = np.intersect1d(np.asarray(users_a), np.asarray(users_b),
                                   assume_unique=True, return_indices=True)
    names = [name for name in values_a if name in values_b]
    return (users, {m: np.asarray(values_a[m])[ia] for m in names},
            {m: np.asarray(values_b[m])[ib] for m in names})


class PairedComparison(TypedDict):
    """Model ``a`` against model ``b`` on one metric under one protocol.

    Attributes
    ----------
    protocol, metric : str
    a, b : str
        Model names; ``difference``, ``low`` and ``high`` are ``a - b``.
    n : int
        Queries both models answered.
    mean_a, mean_b : float
        Each model's mean over those queries.
    difference, low, high
        As in :class:`Interval`.
    """

    protocol: str
    metric: str
    a: str
    b: str
    n: int
    mean_a: float
    mean_b: float
    difference: float
    low: float | None
    high: float | None


def compare_pairs(per_query: Mapping[str, Mapping[str, Any]], protocol: str,
                  pairs: Sequence[tuple[str, str]], metrics: Sequence[str],
                  confidence: float = CONFIDENCE, method: str = "bootstrap",
                  resamples: int = RESAMPLES, seed: int = 0) -> list[PairedComparison]:
    """Paired intervals for several model pairs under one protocol.

    Parameters
    ----------
    per_query : mapping model -> ``{"users": ndarray, metric: ndarray, ...}``
        The per-query values of that protocol (``evaluate(..., per_query=...)``).
        A pair with a model missing here is left out.
    protocol : str
        Recorded in the output only.
    pairs : sequence of (a, b) model names
    metrics : sequence of str
    confidence, method, resamples, seed
        As in :func:`mean_intervals`.  Pairs over the same queries share one set of
        resamples drawn with ``seed``.

    Returns
    -------
    list of PairedComparison
        One per pair and metric, in the order given.
    """
    columns: dict[bytes, list[tuple[dict, np.ndarray]]] = {}
    for a, b in pairs:
        if a not in per_query or b not in per_query or a == b:
            continue
        users, va, vb = paired({m: per_query[a][m] for m in metrics if m in per_query[a]},
                               per_query[a]["users"],
                               {m: per_query[b][m] for m in metrics if m in per_query[b]},
                               per_query[b]["users"])
        for metric in va:
            head = {"protocol": protocol, "metric": metric, "a": a, "b": b,
                    "mean_a": float(va[metric].mean()) if len(users) else 0.0,
                    "mean_b": float(vb[metric].mean()) if len(users) else 0.0}
            columns.setdefault(users.tobytes(), []).append((head, va[metric] - vb[metric]))
    out: list[PairedComparison] = []
    for group in columns.values():
        matrix = np.column_stack([diff for _, diff in group])
        intervals = mean_intervals(matrix, confidence, method, resamples, seed)
        out += [PairedComparison(**head, **interval)  # type: ignore[typeddict-item]
                for (head, _), interval in zip(group, intervals)]
    order = {(a, b): i for i, (a, b) in enumerate(pairs)}
    return sorted(out, key=lambda c: (order[(c["a"], c["b"])], list(metrics).index(c["metric"])))
