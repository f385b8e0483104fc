"""The dataset object both model families share, and its on-disk layout.

A :class:`Dataset` is frozen: users x items interactions as float32 CSR, the
id maps that translate external ids to dense indices, optional item groups,
user features and item metadata, and an optional :class:`Split` over the same
id maps.  Its ``fingerprint`` identifies the exact data a model was fit on.

On disk (see ``docs/data-layout.md``) a dataset is a directory::

    meta.json            counts, source, options, split, fingerprint, schema, version
    interactions.npz     all interactions (scipy.sparse.save_npz, uncompressed, CSR float32)
    timestamps.npz       optional, same sparsity pattern, int64 seconds
    train.npz test.npz foldin.npz heldout.npz   split parts, when split
    users.csv            index,id[,group][,heldout][,<feature columns>]
    items.csv            index,id[,group][,<metadata columns>]
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import RecompareError

SPLIT_KINDS = ("random", "temporal", "temporal-global", "users", "both")


def as_csr(matrix: sp.spmatrix, shape: tuple[int, int] | None = None) -> sp.csr_matrix:
    """Canonical float32 CSR: sorted indices, duplicates summed, int32 indices when they fit."""
    csr = sp.csr_matrix(matrix, dtype=np.float32, shape=shape)
    csr.sum_duplicates()
    csr.sort_indices()
    return csr


@dataclass(frozen=True, eq=False)
class IdMap:
    """Two-way map between external ids (kept as strings) and dense indices 0..n-1."""

    ids: np.ndarray

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids)
        # text ids (as read from users.csv) are kept as they are; others become text
        if ids.dtype != object or pd.api.types.infer_dtype(ids, skipna=False) != "string":
            ids = ids.astype(str).astype(object)
        object.__setattr__(self, "ids", ids)
        # a hash index, not a dict: built in C, so loading 100k+ ids costs milliseconds
        lookup = pd.Index(ids)
        if not lookup.is_unique:
            raise RecompareError("id map has duplicate ids")
        object.__setattr__(self, "_lookup", lookup)

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, external: Iterable[Any] | Any) -> np.ndarray:
        """Dense indices of external ids; raises naming the first unknown ids."""
        values = np.atleast_1d(np.asarray(external).astype(str))
        lookup: pd.Index = self._lookup  # type: ignore[attr-defined]
        out = lookup.get_indexer(values.astype(object)).astype(np.int64)
        if (out < 0).any():
            unknown = values[out < 0][:5].tolist()
            raise RecompareError(f"unknown ids: {', '.join(unknown)}")
        return out

    def external(self, index: np.ndarray | Sequence[int]) -> np.ndarray:
        """External ids (strings) of dense indices."""
        return self.ids[np.asarray(index, dtype=np.int64)]


@dataclass(frozen=True, eq=False)
class Split:
    """Train/evaluation parts over the dataset's id maps (never re-indexed).

    Attributes
    ----------
    kind : {"random", "temporal", "users", "both"}
    train : csr_matrix of shape (n_users, n_items)
        What models are fit on.  Rows of held-out users are empty.
    test : csr_matrix or None
        Held-out interactions of training users (the ``weak`` protocol).
    foldin, heldout : csr_matrix or None
        For held-out users (``strong``/``cold``): the part a model may fold in,
        and the part it is judged on.
    heldout_users : ndarray of int
        Dense indices of users excluded from training.
    options : dict
        How the split was made (fraction, seed, ...).
    """

    kind: str
    train: sp.csr_matrix
    test: sp.csr_matrix | None = None
    foldin: sp.csr_matrix | None = None
    heldout: sp.csr_matrix | None = None
    heldout_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    options: dict = field(default_factory=dict)

    @property
    def protocols(self) -> tuple[str, ...]:
        """Evaluation protocols this split supports (``cold`` also needs user features)."""
        out = []
        if self.test is not None and self.test.nnz:
            out.append("weak")
        if self.heldout is not None and self.heldout.nnz:
            out += ["strong", "cold"]
        return tuple(out)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Users x items interactions plus everything both model families need.

    Attributes
    ----------
    interactions : csr_matrix of shape (n_users, n_items), float32
        Interaction strength (rating, count or 1).
    users, items : IdMap
    item_groups : ndarray of shape (n_items,), int, or None
        Group code per item, -1 for unknown; names in ``group_names``.
    user_groups : ndarray of shape (n_users,), int, or None
        Group code per user where the data set has one (planted data, mirrors).
    group_names : tuple of str
    user_features : DataFrame with n_users rows (positional), or None
        Categorical columns have object/category dtype, numeric ones a number dtype.
    item_info : DataFrame with n_items rows (positional), or None
        Metadata such as ``title``.
    timestamps : csr_matrix (int64 seconds, same pattern as ``interactions``) or None
    split : Split or None
    meta : dict
        Source and options, saved in ``meta.json``.
    """

    interactions: sp.csr_matrix
    users: IdMap
    items: IdMap
    item_groups: np.ndarray | None = None
    user_groups: np.ndarray | None = None
    group_names: tuple[str, ...] = ()
    user_features: pd.DataFrame | None = None
    item_info: pd.DataFrame | None = None
    timestamps: sp.csr_matrix | None = None
    split: Split | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_users, n_items = len(self.users), len(self.items)
        if self.interactions.shape != (n_users, n_items):
            raise RecompareError(
                f"interaction matrix shape {self.interactions.shape} does not match "
                f"{n_users} users x {n_items} items"
            )
        for name, arr, n in (("item_groups", self.item_groups, n_items),
                             ("user_groups", self.user_groups, n_users)):
            if arr is not None and len(arr) != n:
                raise RecompareError(f"{name} has {len(arr)} entries, expected {n}")
        for name, frame, n in (("user_features", self.user_features, n_users),
                               ("item_info", self.item_info, n_items)):
            if frame is not None and len(frame) != n:
                raise RecompareError(f"{name} has {len(frame)} rows, expected {n}")
        if self.interactions.nnz and not np.isfinite(self.interactions.data).all():
            raise RecompareError("interaction values contain NaN or infinity")

    # ------------------------------------------------------------------ shape
    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    @property
    def has_groups(self) -> bool:
        return self.item_groups is not None and bool((self.item_groups >= 0).any())

    @property
    def train(self) -> sp.csr_matrix:
        """The matrix models are fit on: the split's train part, else all interactions."""
        return self.split.train if self.split is not None else self.interactions

    @property
    def protocols(self) -> tuple[str, ...]:
        """Protocols this data set supports: ``weak``, ``strong``, ``cold`` (cold needs features)."""
        if self.split is None:
            return ()
        out = list(self.split.protocols)
        if "cold" in out and (self.user_features is None or self.user_features.shape[1] == 0):
            out.remove("cold")
        return tuple(out)

    def query_groups(self, matrix: sp.csr_matrix | None = None) -> np.ndarray:
        """Group of each user: its label when the data set has one, else the majority
        group of its items in ``matrix`` (default: ``train``); -1 when unknown."""
        if self.user_groups is not None:
            return np.asarray(self.user_groups, dtype=np.int64)
        if self.item_groups is None:
            return np.full(self.n_users, -1, dtype=np.int64)
        matrix = self.train if matrix is None else matrix
        groups = np.asarray(self.item_groups, dtype=np.int64)
        known = groups >= 0
        n_g = max(self.n_groups, int(groups.max(initial=-1)) + 1)
        if n_g == 0:
            return np.full(self.n_users, -1, dtype=np.int64)
        binary = matrix.copy()
        binary.data = np.ones_like(binary.data)
        onehot = sp.csr_matrix(
            (np.ones(known.sum(), dtype=np.float32), (np.flatnonzero(known), groups[known])),
            shape=(self.n_items, n_g),
        )
        counts = np.asarray((binary @ onehot).todense())
        out = counts.argmax(axis=1).astype(np.int64)  # ties -> lowest group code
        out[counts.sum(axis=1) == 0] = -1
        return out

    # ------------------------------------------------------------ fingerprint
    @property
    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) of ids, training matrix and split.

        A model records the fingerprint of the data it was fit on, so it cannot
        be silently evaluated on other data.
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is not None:
            return cached
        digest = hashlib.sha256()
        split = self.split
        for chunk in _fingerprint_head(self.users, self.items, split.kind if split else None):
            digest.update(chunk)
        mats = [self.interactions]
        if split is not None:
            mats += [split.train, split.test, split.foldin, split.heldout]
        for matrix in mats:
            for chunk in _matrix_chunks(matrix):
                digest.update(chunk)
        value = digest.hexdigest()[:16]
        self.__dict__["_fingerprint"] = value
        return value

    def replace(self, **changes: Any) -> Dataset:
        """A copy with some fields replaced (the dataset itself stays frozen)."""
        return dataclasses.replace(self, **changes)

    # --------------------------------------------------------------- summary
    def info(self) -> dict:
        """Counts and group statistics, as plain JSON-able values."""
        m = self.interactions
        out: dict[str, Any] = {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": int(m.nnz),
            "density": float(m.nnz / max(1, self.n_users * self.n_items)),
            "fingerprint": self.fingerprint,
            "source": self.meta.get("source"),
            "user_features": [] if self.user_features is None else list(self.user_features.columns),
        }
        if self.has_groups:
            groups = np.asarray(self.item_groups)
            qg = self.query_groups(self.interactions)
            rows = np.repeat(np.arange(self.n_users), np.diff(m.indptr))
            ig = groups[m.indices]
            valid = (qg[rows] >= 0) & (ig >= 0)
            cross = float((qg[rows][valid] != ig[valid]).mean()) if valid.any() else 0.0
            out["groups"] = {
                name: {
                    "items": int((groups == g).sum()),
                    "users": int((qg == g).sum()),
                }
                for g, name in enumerate(self.group_names)
            }
            out["cross_group_share"] = cross
        if self.split is not None:
            s = self.split
            out["split"] = {
                "kind": s.kind,
                "train": int(s.train.nnz),
                "test": int(s.test.nnz) if s.test is not None else 0,
                "foldin": int(s.foldin.nnz) if s.foldin is not None else 0,
                "heldout": int(s.heldout.nnz) if s.heldout is not None else 0,
                "heldout_users": len(s.heldout_users),
                "protocols": list(self.protocols),
                **{k: v for k, v in s.options.items() if k != "kind"},
            }
        return out

    # ------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the documented directory layout atomically; returns the path."""
        from .storage import save_dataset

        return save_dataset(self, path, overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Dataset:
        """Read a directory written by :meth:`save` (never unpickles).

        The fingerprint is recomputed while the files are read and must match
        ``meta.json``; see :mod:`recompare.data.storage`.
        """
        from .storage import load_dataset

        return load_dataset(cls, path)


def _fingerprint_head(users: IdMap, items: IdMap, split_kind: str | None) -> list[bytes]:
    """The first bytes the fingerprint hashes: the ids, then the split kind."""
    head = []
    for idmap in (users, items):
        head += ["\x1f".join(idmap.ids.tolist()).encode(), b"\x1e"]
    if split_kind is not None:
        head.append(split_kind.encode())
    return head


def _matrix_chunks(matrix: sp.csr_matrix | None) -> list:
    """A matrix's bytes as the fingerprint hashes them (in place: no copy of big arrays)."""
    if matrix is None:
        return [b"none"]
    chunks = []
    for arr in (matrix.indptr, matrix.indices, matrix.data):
        flat = np.ascontiguousarray(arr)
        if flat.dtype.byteorder == ">":
            flat = flat.astype(flat.dtype.newbyteorder("<"))
        chunks.append(memoryview(flat).cast("B"))
    return chunks


def from_interactions(
    users: Sequence[Any],
    items: Sequence[Any],
    values: Sequence[float] | None = None,
    **fields: Any,
) -> Dataset:
    """Build a :class:`Dataset` from parallel arrays of external user and item ids.

    Ids are indexed in order of first appearance. Duplicate pairs are summed
    (loaders apply the user's duplicate policy before calling this).
    """
    u = pd.factorize(pd.Series(np.asarray(users).astype(str)))
    i = pd.factorize(pd.Series(np.asarray(items).astype(str)))
    vals = np.ones(len(u[0]), np.float32) if values is None else np.asarray(values, np.float32)
    mat = as_csr(sp.coo_matrix((vals, (u[0], i[0])), shape=(len(u[1]), len(i[1]))))
    return Dataset(interactions=mat, users=IdMap(np.asarray(u[1])), items=IdMap(np.asarray(i[1])),
                   **fields)
