"""Cold start for WALS: embeddings of new users from their features alone.

A new user without any interaction gets the mean embedding of the training users that
share the most feature values with them (numeric features cut into quantile bins), or
the mean of all training users when nothing matches or no features are given.
:func:`fit_cold_start` learns the lookup table from the fitted user factors and
:func:`cold_embeddings` answers it; both work on plain arrays (numpy and pandas only), so
the table saves to the model's ``.npz`` as named arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._io import check_keys, refuse

#: numeric user features are cut into this many quantile bins for cold start
NUMERIC_BINS = 5


@dataclass
class ColdStart:
    """The fitted cold-start table.

    Attributes
    ----------
    global_mean : ndarray of shape (k,), float32
        Mean embedding of the training users with interactions.
    columns : list of dict
        One spec per feature used: ``{"name", "kind": "numeric", "edges"}`` or
        ``{"name", "kind": "categorical", "values"}``.
    codes : ndarray of shape (n_tuples, n_columns), int64
        Distinct tuples of feature codes among training users.
    means : ndarray of shape (n_tuples, k), float32
        Mean embedding of the training users with each tuple.
    counts : ndarray of shape (n_tuples,), int64
        Training users per tuple.
    """

    global_mean: np.ndarray
    columns: list[dict]
    codes: np.ndarray
    means: np.ndarray
    counts: np.ndarray


def feature_codes(series: pd.Series, spec: dict) -> np.ndarray:
    """Integer codes of one feature column under a fitted spec; -1 never matches."""
    if spec["kind"] == "numeric":
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
        codes = np.searchsorted(np.asarray(spec["edges"], dtype=np.float64), values,
                                side="right").astype(np.int64)
        codes[~np.isfinite(values)] = -1
        return codes
    lookup = {v: j for j, v in enumerate(spec["values"])}
    return np.fromiter((lookup.get(v, -1) for v in series.astype(str)), dtype=np.int64,
                       count=len(series))


def _column_spec(name, series: pd.Series) -> dict | None:
    """How one feature column is coded: quantile bins or a vocabulary (None: unusable)."""
    numeric = pd.api.types.is_numeric_dtype(series) and not isinstance(
        series.dtype, pd.CategoricalDtype)
    if numeric:
        values = series.to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            return None
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]))
        return {"name": str(name), "kind": "numeric", "edges": edges.tolist()}
    vocab = sorted(set(series.astype(str).tolist()))
    return {"name": str(name), "kind": "categorical", "values": vocab}


def fit_cold_start(features: pd.DataFrame | None, user_factors: np.ndarray,
                   active: np.ndarray) -> ColdStart:
    """Learn the cold-start table.

    Parameters
    ----------
    features : DataFrame with one row per training user, or None
    user_factors : ndarray of shape (n_users, k)
    active : bool ndarray of shape (n_users,)
        Users with training interactions (the others have no learned embedding).
    """
    k = user_factors.shape[1]
    # means through a sparse indicator product: no copy of the factors
    indicator = sp.csr_matrix(active[None, :].astype(np.float32))
    global_mean = np.asarray(indicator @ user_factors).ravel() / max(1, int(active.sum()))
    empty = ColdStart(global_mean.astype(np.float32), [], np.zeros((0, 0), dtype=np.int64),
                      np.zeros((0, k), dtype=np.float32), np.zeros(0, dtype=np.int64))
    if features is None or features.shape[1] == 0 or not active.any():
        return empty
    frame = features.reset_index(drop=True).iloc[np.flatnonzero(active)]
    columns, codes = [], []
    for name in frame.columns:
        spec = _column_spec(name, frame[name])
        if spec is not None:
            columns.append(spec)
            codes.append(feature_codes(frame[name], spec))
    if not columns:
        return empty
    tuples, inverse, counts = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True,
                                        return_counts=True)
    members = sp.csr_matrix(
        (np.ones(len(inverse), dtype=np.float64), (inverse.ravel(), np.flatnonzero(active))),
        shape=(len(tuples), len(active)))
    sums = np.asarray(members @ user_factors)
    return ColdStart(empty.global_mean, columns, tuples.astype(np.int64),
                     (sums / counts[:, None]).astype(np.float32), counts.astype(np.int64))


def cold_embeddings(table: ColdStart, features: pd.DataFrame | None,
                    rows: np.ndarray) -> np.ndarray:
    """Embeddings of the new users ``rows`` of ``features``, ndarray of shape (len(rows), k)."""
    out = np.broadcast_to(table.global_mean, (len(rows), len(table.global_mean))).copy()
    if features is None or not table.columns:
        return out
    features = features.reset_index(drop=True).iloc[rows]
    use = [j for j, spec in enumerate(table.columns) if spec["name"] in features.columns]
    if not use:
        return out
    codes = np.stack([feature_codes(features[table.columns[j]["name"]], table.columns[j])
                      for j in use], axis=1)
    known = table.codes[:, use]
    weights = table.counts.astype(np.float64)
    means = table.means.astype(np.float64)
    chunk = max(1, (1 << 24) // max(1, known.size))
    for start in range(0, len(rows), chunk):
        block = codes[start:start + chunk]
        # matches[q, t]: feature values new user q shares with training tuple t
        matches = (block[:, None, :] == known[None, :, :]).sum(axis=2)
        best = matches.max(axis=1)
        chosen = (matches == best[:, None]) & (best[:, None] > 0)
        weight = chosen * weights[None, :]
        total = weight.sum(axis=1)
        found = total > 0
        if found.any():
            mean = (weight[found] @ means) / total[found, None]
            out[start:start + chunk][found] = mean.astype(np.float32)
    return out


def check_columns(cold_start: dict, file: Path) -> list[dict]:
    """The column specs of a saved ``"cold_start"`` object, checked key by key.

    Raises :class:`RecompareError` naming ``file`` (the model's ``model.json``) for a spec
    that :func:`feature_codes` could not use.
    """
    what = "model description"
    check_keys(cold_start, {"columns": list}, path=file, what=what, where="cold_start")
    columns = cold_start["columns"]
    for j, spec in enumerate(columns):
        where = f"cold_start column {j}"
        check_keys(spec, {"name": str, "kind": str}, {"edges": list, "values": list},
                   path=file, what=what, where=where)
        if spec["kind"] == "numeric":
            ok = "edges" in spec and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                         for v in spec["edges"])
        elif spec["kind"] == "categorical":
            ok = "values" in spec and all(isinstance(v, str) for v in spec["values"])
        else:
            raise refuse(file, what, f"{where}: unknown kind '{spec['kind']}'")
        if not ok:
            raise refuse(file, what, f"{where}: needs numeric 'edges' or text 'values' "
                                     f"for its kind '{spec['kind']}'")
    return columns
