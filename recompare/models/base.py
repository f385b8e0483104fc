"""The small contract every model family keeps (scikit-learn's, adapted).

* The constructor stores hyperparameters verbatim; no work, no validation.
* ``fit(dataset, callback=None)`` validates, re-initialises from ``random_state``
  and returns ``self``.  Learned state ends in ``_``.
* A fitted model embeds queries and items; scores are dot products
  ``query_embedding . item_embedding`` and ``recommend`` returns the top k.
* Users unseen in training are served by :meth:`embed_new_users` (fold-in
  history and/or features) where the family supports it.
* ``save(path)`` writes a directory with ``model.json`` (kind, params,
  fingerprint of the training data) plus open-format arrays; ``load`` reads it
  back without unpickling (:func:`read_saved_model` does the part every family
  shares).
* ``get_params``/``set_params`` read and change the hyperparameters (the
  constructor's arguments); :func:`clone` gives an unfitted copy.
"""
from __future__ import annotations

import copy
import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._io import ArraySpec, TypeSpec, own_file, read_json, read_npz, refuse
from ..errors import RecompareError

#: Progress callback: receives one dict per event, e.g.
#: ``{"stage": "iteration", "iteration": 3, "total": 15, "objective": 1.2e5}``.
Callback = Callable[[dict], None]

MODEL_FILE = "model.json"
#: The arrays of a saved model; like every file name of the format, fixed (never read
#: from ``model.json``).
ARRAYS_FILE = "arrays.npz"


class Recommender(ABC):
    """Base class: a dot-product retrieval model over the dataset's items."""

    kind: ClassVar[str] = "base"
    #: protocols the family can serve: "weak" (known users), "strong" (fold-in
    #: history of unseen users), "cold" (features of unseen users only)
    protocols: ClassVar[frozenset[str]] = frozenset({"weak"})

    # fitted state common to every family
    fingerprint_: str | None = None
    n_users_: int
    n_items_: int
    seen_: sp.csr_matrix | None = None
    fit_info_: dict

    # ---------------------------------------------------------- hyperparams
    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters: the constructor's arguments, as stored (sklearn's contract).

        Returns
        -------
        dict
            Parameter name -> value, in the constructor's order.
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Recommender:
        """Change hyperparameters; learned state is untouched until the next ``fit``.

        Values are stored verbatim, as the constructor stores them (``fit`` validates).

        Returns
        -------
        self

        Raises
        ------
        RecompareError
            For a name that is not a constructor argument.
        """
        names = self._param_names()
        for name in params:
            if name not in names:
                raise RecompareError(
                    f"{type(self).__name__} has no parameter '{name}' "
                    f"(parameters: {', '.join(names)})")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -------------------------------------------------------------- fitting
    @abstractmethod
    def fit(self, dataset, callback: Callback | None = None) -> Recommender:
        """Fit on ``dataset.train``, re-initialised from the seed; return ``self``."""

    def _check_fitted(self) -> None:
        if getattr(self, "fingerprint_", None) is None:
            raise RecompareError(f"{type(self).__name__} is not fitted; call fit() first")

    def _remember(self, dataset) -> None:
        """Record what every fitted model must know about its training data."""
        self.fingerprint_ = dataset.fingerprint
        self.n_users_ = dataset.n_users
        self.n_items_ = dataset.n_items
        self.seen_ = dataset.train

    # ------------------------------------------------------------ embedding
    @abstractmethod
    def query_embeddings(self, users: np.ndarray | None = None) -> np.ndarray:
        """Query embeddings of training users, ndarray of shape (n_users, dim)."""

    @abstractmethod
    def item_embeddings(self) -> np.ndarray:
        """Item embeddings, ndarray of shape (n_items, dim)."""

    def embed_new_users(
        self, history: sp.csr_matrix | None, features: pd.DataFrame | None = None
    ) -> np.ndarray:
        """Query embeddings for users unseen in training.

        Parameters
        ----------
        history : csr_matrix of shape (n_new, n_items) or None
            Fold-in interactions (``strong``); None or empty rows for ``cold``.
        features : DataFrame with n_new rows, or None
            User side features, same columns as the training data set.
        """
        raise RecompareError(f"model kind '{self.kind}' cannot embed users unseen in training")

    def serving_nbytes(self) -> int:
        """Bytes that must be kept in memory to serve: by default the static query
        and item embeddings.  Families that compute queries at request time
        override this (item embeddings plus the query tower's parameters)."""
        self._check_fitted()
        return int(self.item_embeddings().nbytes + self.query_embeddings().nbytes)

    # -------------------------------------------------------------- serving
    def recommend(
        self,
        users: np.ndarray | None = None,
        k: int = 10,
        exclude_seen: bool = True,
        seen: sp.csr_matrix | None = None,
        device: str = "cpu",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for training users.

        ``device`` ("cpu", "cuda" or "auto") is where the scores are computed and
        selected (:func:`~recompare.models.topk.topk_dot`); the lists are the same.

        Returns
        -------
        item_ids : ndarray of shape (n_users, k), int64 dense item indices
        scores : ndarray of shape (n_users, k), float32, descending per row
        """
        from .topk import topk_dot

        self._check_fitted()
        users = np.arange(self.n_users_) if users is None else np.asarray(users, dtype=np.int64)
        _check_k(k, self.n_items_)
        exclude = None
        if exclude_seen:
            seen = self.seen_ if seen is None else seen
            if seen is None:
                # a saved model does not keep its training data; load_model(path) has none
                raise RecompareError(
                    "exclude_seen needs the training interactions, which a saved model does "
                    "not keep: load it with load_model(path, dataset=...), or pass seen= "
                    "(or exclude_seen=False)")
            exclude = seen[users]
        return topk_dot(self.query_embeddings(users), self.item_embeddings(), k, exclude=exclude,
                        device=device)

    def recommend_new(
        self,
        history: sp.csr_matrix | None,
        features: pd.DataFrame | None = None,
        k: int = 10,
        exclude_seen: bool = True,
        device: str = "cpu",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for users unseen in training (fold-in history excluded); top-k on
        ``device`` as in :meth:`recommend`."""
        from .topk import topk_dot

        self._check_fitted()
        _check_k(k, self.n_items_)
        q = self.embed_new_users(history, features)
        exclude = history if (exclude_seen and history is not None) else None
        return topk_dot(q, self.item_embeddings(), k, exclude=exclude, device=device)

    def export_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays for ``recompare export``: query embeddings of the training
        users, shape (n_users, dim), and item embeddings, shape (n_items, dim)."""
        self._check_fitted()
        return {"query_embeddings": self.query_embeddings(),
                "item_embeddings": self.item_embeddings()}

    # ------------------------------------------------------------------ I/O
    @abstractmethod
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the model directory (``model.json`` plus open-format arrays)."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | os.PathLike) -> Recommender:
        """Read a directory written by :meth:`save`, never unpickling."""

    def _model_json(self, **extra: Any) -> dict:
        return {
            "kind": self.kind,
            "params": self.get_params(),
            "fingerprint": self.fingerprint_,
            "n_users": self.n_users_,
            "n_items": self.n_items_,
            "fit_info": getattr(self, "fit_info_", {}),
            **extra,
        }


class FactorModel(Recommender):
    """A family whose learned state is two static factor matrices,
    ``user_factors_`` (n_users, k) and ``item_factors_`` (n_items, k):
    the query embedding of a training user is its row of user factors."""

    user_factors_: np.ndarray
    item_factors_: np.ndarray

    def query_embeddings(self, users: np.ndarray | None = None) -> np.ndarray:
        """User factors, ndarray of shape (n_users, k), or (len(users), k)."""
        self._check_fitted()
        return rows_of(self.user_factors_, users)

    def item_embeddings(self) -> np.ndarray:
        """Item factors, ndarray of shape (n_items, k)."""
        self._check_fitted()
        return self.item_factors_


def rows_of(embeddings: np.ndarray, users: np.ndarray | None) -> np.ndarray:
    """``embeddings`` itself for ``users`` None, else the rows of those user indices."""
    if users is None:
        return embeddings
    return embeddings[np.asarray(users, dtype=np.int64)]


def clone(model: Recommender) -> Recommender:
    """An unfitted model of the same class with (deep copies of) the same hyperparameters.

    Parameters
    ----------
    model : Recommender
        Fitted or not; it is left as it is.

    Returns
    -------
    Recommender
        ``type(model)(**model.get_params())``, sharing no mutable parameter with ``model``.
    """
    params = {name: copy.deepcopy(value) for name, value in model.get_params().items()}
    return type(model)(**params)


def n_new_users(history: sp.spmatrix | None, features: pd.DataFrame | None) -> int:
    """How many users ``embed_new_users(history, features)`` is asked to embed.

    Raises
    ------
    RecompareError
        When both are None, or when their row counts differ.
    """
    if history is not None and features is not None and history.shape[0] != len(features):
        raise RecompareError(
            f"fold-in history has {history.shape[0]} rows but features have {len(features)}"
        )
    if history is not None:
        return int(history.shape[0])
    if features is not None:
        return len(features)
    raise RecompareError("new users need a fold-in history or features")


def read_saved_model(cls: type[Recommender], path: str | os.PathLike,
                     tuples: Sequence[str] = (), *,
                     keys: Mapping[str, TypeSpec] | None = None,
                     required: Mapping[str, TypeSpec] | None = None,
                     renamed: Mapping[str, str] | None = None,
                     retired: Sequence[str] = ()) -> tuple[Recommender, dict]:
    """The start of every family's ``load``: an instance of ``cls`` with the saved
    hyperparameters and the fitted state common to all families, and the parsed
    ``model.json``, from which the caller reads its own arrays.

    Parameters
    ----------
    cls : type
        The family's class; the saved ``kind`` must be ``cls.kind``.
    path : path of the saved model directory
    tuples : sequence of str
        Parameters that JSON stores as lists but the family keeps as tuples.
    keys : mapping of str to type, optional
        The family's own optional keys of ``model.json`` (beyond :data:`MODEL_KEYS`);
        any other key is refused.
    required : mapping of str to type, optional
        The family's own required keys of ``model.json``.
    renamed : mapping of str to str, optional
        Parameters saved under an older name: old name -> current name.
    retired : sequence of str
        Parameters older versions saved that no longer exist; they are dropped (the
        returned ``meta`` still holds them).

    Returns
    -------
    model : Recommender
        With ``fingerprint_``, ``n_users_``, ``n_items_``, ``fit_info_`` set from
        ``model.json`` and ``seen_`` None (the training matrix is not saved).
    meta : dict
        The parsed ``model.json``.

    Raises
    ------
    RecompareError
        One line naming ``model.json`` for a missing or damaged file, another kind, a
        missing, unknown or mistyped key, an unknown parameter or non-positive counts.
    """
    file = own_file(path, MODEL_FILE)
    meta = read_model_json(path, keys=keys or {}, required=required)
    if meta["kind"] != cls.kind:
        raise refuse(file, _WHAT, f"holds a '{meta['kind']}' model, not '{cls.kind}'")
    for key in ("n_users", "n_items"):
        if meta[key] < 1:
            raise refuse(file, _WHAT, f"'{key}' must be positive, found {meta[key]}")
    params = dict(meta["params"])
    for old, new in (renamed or {}).items():
        if old in params and new not in params:
            params[new] = params.pop(old)
    for name in retired:  # parameters older versions wrote; still readable in meta
        params.pop(name, None)
    names = cls._param_names()
    unknown = [name for name in params if name not in names]
    if unknown:
        raise refuse(file, _WHAT, f"unknown parameter '{unknown[0]}' for a '{cls.kind}' "
                                  f"model (parameters: {', '.join(names)})")
    for name in tuples:
        if isinstance(params.get(name), list):
            params[name] = tuple(params[name])
    model = cls(**params)
    model.fingerprint_ = meta["fingerprint"]
    model.n_users_ = int(meta["n_users"])
    model.n_items_ = int(meta["n_items"])
    model.fit_info_ = meta.get("fit_info", {})
    model.seen_ = None
    return model, meta


def read_model_arrays(path: str | os.PathLike, specs: Mapping[str, ArraySpec],
                      dims: dict[str, int]) -> dict[str, np.ndarray]:
    """Read ``arrays.npz`` of a saved model directory through the guarded reader.

    ``specs`` gives each array's dtype kind and shape in named dimensions (``n_users``,
    ``n_items``, ``dim``, ...); ``dims`` holds the sizes already known from ``model.json``.
    Missing, unknown, object, mistyped, misshapen or non-finite arrays are refused in one
    line naming the file.
    """
    return read_npz(own_file(path, ARRAYS_FILE), specs, what="model arrays", dims=dims)


def _check_k(k: int, n_items: int) -> None:
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise RecompareError(f"k must be a positive integer, got {k}")
    if k > n_items:
        raise RecompareError(f"k={k} is larger than the catalogue ({n_items} items)")


#: Keys of every ``model.json``; families add their own through ``read_saved_model(keys=)``.
MODEL_KEYS: dict[str, TypeSpec] = {"kind": str, "params": dict, "fingerprint": str,
                                   "n_users": int, "n_items": int}
_OPTIONAL_KEYS: dict[str, TypeSpec] = {"fit_info": dict}
_WHAT = "model description"


def read_model_json(path: str | os.PathLike, keys: Mapping[str, TypeSpec] | None = None,
                    required: Mapping[str, TypeSpec] | None = None) -> dict:
    """Parse ``model.json`` of a saved model directory through the guarded reader.

    Parameters
    ----------
    path : path of the saved model directory (``model.json`` is the fixed name inside it)
    keys : mapping of str to type, optional
        The family's optional keys: with it, every key that is neither common
        (:data:`MODEL_KEYS`, ``fit_info``) nor in ``keys`` is refused; without it (to find
        out the kind before the family is known) other keys are let through.
    required : mapping of str to type, optional
        The family's required keys, beyond :data:`MODEL_KEYS`.

    Raises
    ------
    RecompareError
        One line naming the file: missing, not JSON, a missing, unknown or mistyped key.
    """
    if not Path(path).is_dir():
        raise RecompareError(f"{path} is not a saved model directory")
    file = own_file(path, MODEL_FILE)
    if not file.exists():
        raise RecompareError(f"{path} is not a saved model (no {MODEL_FILE})")
    return read_json(file, {**MODEL_KEYS, **(required or {})},
                     {**_OPTIONAL_KEYS, **(keys or {})}, what=_WHAT,
                     allow_unknown=keys is None)
