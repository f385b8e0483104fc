"""Two floors every report is measured against, under the same contract as WALS and the DNN.

* :class:`Popularity` recommends the most-interacted items to everyone (optionally the most
  popular of the user's own group first).  It cannot fold by construction when ``by_group``
  is set, and it ignores taste entirely otherwise.
* :class:`RandomEmbeddings` gives users and items random vectors: the most folded model
  there is, since its neighbourhoods have nothing to do with the groups.

Both are dot-product models, so they embed queries and items and serve every protocol.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._atomic import atomic_dir
from .._io import ArraySpec
from ..errors import RecompareError
from ..evaluate.leakage import majority_groups
from .base import (
    ARRAYS_FILE,
    MODEL_FILE,
    Callback,
    FactorModel,
    Recommender,
    n_new_users,
    read_model_arrays,
    read_saved_model,
)

#: in a group-aware popularity model, how much global popularity counts next to the
#: in-group term; small so that every in-group item outranks every other item
_GLOBAL_WEIGHT = 1e-3


class _SavedArrays(Recommender):
    """Save/load shared by the baselines: ``model.json`` plus one ``.npz`` of named arrays."""

    #: the saved arrays: attribute name -> dtype kind and shape (named dimensions)
    _array_specs: ClassVar[dict[str, ArraySpec]] = {}

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``model.json`` and ``arrays.npz`` to the directory ``path`` atomically."""
        self._check_fitted()
        with atomic_dir(path, overwrite=overwrite) as tmp:
            arrays = {name: getattr(self, name) for name in self._array_specs}
            np.savez(tmp / ARRAYS_FILE, **arrays)
            (tmp / MODEL_FILE).write_text(json.dumps(self._model_json(), indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recommender:
        """Read a directory written by :meth:`save` through the guarded readers."""
        model, _ = read_saved_model(cls, path)
        dims = {"n_users": model.n_users_, "n_items": model.n_items_}
        if "dim" in model.get_params():
            dims["dim"] = model.dim
        arrays = read_model_arrays(path, cls._array_specs, dims)
        for name in cls._array_specs:
            setattr(model, name, arrays[name])
        return model


class Popularity(_SavedArrays):
    """Most popular items first; with ``by_group``, the most popular of the query's group first.

    Parameters
    ----------
    by_group : bool, default False
        Rank the items of the query's group (its label, else the majority group of its
        history) above all others, each part by popularity.  Needs item groups.

    Attributes
    ----------
    item_counts_ : ndarray of shape (n_items,), float32
        Number of training users who interacted with each item (popularity ``c_i``).
    item_groups_ : ndarray of shape (n_items,), int64
        Item group codes (-1 unknown); only used with ``by_group``.
    user_groups_ : ndarray of shape (n_users,), int64
        Query group of every training user (-1 unknown).

    Notes
    -----
    As a dot-product model: without ``by_group`` every query is the 1-vector ``[1]`` and
    item ``i`` is ``[c_i]``.  With it, for ``G`` groups, item ``i`` of group ``g`` is
    ``[e_g * s_i, eps * s_i]`` with ``s_i = c_i / max c`` and query of group ``h`` is
    ``[e_h, 1]``: score ``s_i [g = h] + eps s_i``.  Users of unknown group, and cold
    users, get ``[0, 1]``: plain popularity.
    """

    kind: ClassVar[str] = "popularity"
    protocols: ClassVar[frozenset[str]] = frozenset({"weak", "strong", "cold"})
    _array_specs: ClassVar[dict[str, ArraySpec]] = {
        "item_counts_": ArraySpec("f", ("n_items",)),
        "item_groups_": ArraySpec("iu", ("n_items",)),
        "user_groups_": ArraySpec("iu", ("n_users",)),
    }

    def __init__(self, by_group: bool = False) -> None:
        self.by_group = by_group

    def fit(self, dataset, callback: Callback | None = None) -> Popularity:
        """Count item popularity on ``dataset.train``; returns ``self``."""
        train = dataset.train
        if train.nnz == 0:
            raise RecompareError("the training matrix is empty; nothing to count")
        if self.by_group and not dataset.has_groups:
            raise RecompareError("popularity by group needs item groups; this data set has none")
        binary = train.copy()
        binary.data = (binary.data > 0).astype(np.float32)
        self.item_counts_ = np.asarray(binary.sum(axis=0), dtype=np.float32).ravel()
        if dataset.item_groups is not None:
            self.item_groups_ = np.asarray(dataset.item_groups, dtype=np.int64)
            self.user_groups_ = np.asarray(dataset.query_groups(), dtype=np.int64)
        else:
            self.item_groups_ = np.full(dataset.n_items, -1, dtype=np.int64)
            self.user_groups_ = np.full(dataset.n_users, -1, dtype=np.int64)
        self._remember(dataset)
        self.fit_info_ = {"users_counted": int((np.diff(train.indptr) > 0).sum())}
        if callback is not None:
            callback({"stage": "done", "message": "counted item popularity"})
        return self

    def _n_groups(self) -> int:
        return int(self.item_groups_.max(initial=-1)) + 1

    def item_embeddings(self) -> np.ndarray:
        """Item embeddings, ndarray of shape (n_items, 1) or (n_items, n_groups + 1)."""
        self._check_fitted()
        if not self.by_group:
            return self.item_counts_[:, None].astype(np.float32)
        n_groups = self._n_groups()
        scaled = self.item_counts_ / max(1.0, float(self.item_counts_.max(initial=0)))
        out = np.zeros((len(scaled), n_groups + 1), dtype=np.float32)
        known = self.item_groups_ >= 0
        out[np.flatnonzero(known), self.item_groups_[known]] = scaled[known]
        out[:, -1] = _GLOBAL_WEIGHT * scaled
        return out

    def _queries_of_groups(self, groups: np.ndarray) -> np.ndarray:
        if not self.by_group:
            return np.ones((len(groups), 1), dtype=np.float32)
        out = np.zeros((len(groups), self._n_groups() + 1), dtype=np.float32)
        known = groups >= 0
        out[np.flatnonzero(known), groups[known]] = 1.0
        out[:, -1] = 1.0
        return out

    def query_embeddings(self, users: np.ndarray | None = None) -> np.ndarray:
        """Query embeddings of training users, ndarray of shape (n_users, dim)."""
        self._check_fitted()
        users = np.arange(self.n_users_) if users is None else np.asarray(users, dtype=np.int64)
        return self._queries_of_groups(self.user_groups_[users])

    def embed_new_users(
        self, history: sp.csr_matrix | None, features: pd.DataFrame | None = None
    ) -> np.ndarray:
        """Same embedding for everyone; with ``by_group``, the majority group of the history."""
        self._check_fitted()
        n_new = n_new_users(history, features)
        groups = np.full(n_new, -1, dtype=np.int64)
        if self.by_group and history is not None and history.nnz:
            groups = majority_groups(sp.csr_matrix(history), self.item_groups_)
        return self._queries_of_groups(groups)


class RandomEmbeddings(FactorModel, _SavedArrays):
    """Users and items as independent Gaussian vectors: a deliberately folded floor.

    Parameters
    ----------
    dim : int, default 32
        Embedding dimension.
    random_state : int, default 0
        Seed; the same seed gives the same embeddings, also for new users.

    Attributes
    ----------
    user_factors_ : ndarray of shape (n_users, dim), float32
    item_factors_ : ndarray of shape (n_items, dim), float32
    """

    kind: ClassVar[str] = "random"
    protocols: ClassVar[frozenset[str]] = frozenset({"weak", "strong", "cold"})
    _array_specs: ClassVar[dict[str, ArraySpec]] = {
        "user_factors_": ArraySpec("f", ("n_users", "dim")),
        "item_factors_": ArraySpec("f", ("n_items", "dim")),
    }

    def __init__(self, dim: int = 32, random_state: int = 0) -> None:
        self.dim = dim
        self.random_state = random_state

    def fit(self, dataset, callback: Callback | None = None) -> RandomEmbeddings:
        """Draw the embeddings from ``random_state``; returns ``self``."""
        if not isinstance(self.dim, (int, np.integer)) or self.dim <= 0:
            raise RecompareError(f"dim must be a positive integer, got {self.dim!r}")
        rng = np.random.default_rng(self.random_state)
        scale = 1.0 / np.sqrt(self.dim)
        self.user_factors_ = (rng.standard_normal((dataset.n_users, self.dim)) * scale
                              ).astype(np.float32)
        self.item_factors_ = (rng.standard_normal((dataset.n_items, self.dim)) * scale
                              ).astype(np.float32)
        self._remember(dataset)
        self.fit_info_ = {}
        if callback is not None:
            callback({"stage": "done", "message": "drew random embeddings"})
        return self

    def embed_new_users(
        self, history: sp.csr_matrix | None, features: pd.DataFrame | None = None
    ) -> np.ndarray:
        """Fresh random vectors, drawn from a seed derived from ``random_state``."""
        self._check_fitted()
        n_new = n_new_users(history, features)
        rng = np.random.default_rng([int(self.random_state), 1])
        return (rng.standard_normal((n_new, self.item_factors_.shape[1]))
                / np.sqrt(self.item_factors_.shape[1])).astype(np.float32)


#: names the CLI accepts for baselines fit on the fly -> (class, parameters)
BASELINE_SPECS: dict[str, tuple[type[Recommender], dict[str, Any]]] = {
    "popularity": (Popularity, {}),
    "popularity-by-group": (Popularity, {"by_group": True}),
    "random": (RandomEmbeddings, {}),
}


def make_baseline(name: str, seed: int = 0) -> Recommender:
    """An unfitted baseline by CLI name (see :data:`BASELINE_SPECS`)."""
    if name not in BASELINE_SPECS:
        raise RecompareError(
            f"unknown baseline '{name}' (known: {', '.join(BASELINE_SPECS)})"
        )
    cls, params = BASELINE_SPECS[name]
    params = dict(params)
    if "random_state" in cls.__init__.__code__.co_varnames:
        params["random_state"] = seed
    return cls(**params)
