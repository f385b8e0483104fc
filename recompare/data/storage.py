"""The on-disk layout of a :class:`~recompare.data.dataset.Dataset` (docs/data-layout.md).

:func:`save_dataset` writes the directory all-or-nothing; :func:`load_dataset`
reads it back without unpickling, checks the format version, and recomputes
the fingerprint on a worker thread while it reads (hashlib releases the GIL),
so that verifying costs little more than reading.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._atomic import atomic_dir
from .._jsonutil import json_default
from ..errors import RecompareError
from .dataset import Dataset, IdMap, Split, _fingerprint_head, _matrix_chunks, as_csr

# 2: matrices stored uncompressed (loading no longer pays for zlib); the temporal-global
# split.  Version 1 data sets (zlib-compressed matrices) read unchanged.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


def save_dataset(dataset: Dataset, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``dataset`` in the documented directory layout, atomically; returns the path."""
    with atomic_dir(path, overwrite=overwrite) as tmp:
        # uncompressed: zlib took ~20x longer than the write and slowed every load
        sp.save_npz(tmp / "interactions.npz", dataset.interactions, compressed=False)
        if dataset.timestamps is not None:
            sp.save_npz(tmp / "timestamps.npz", dataset.timestamps, compressed=False)
        users = pd.DataFrame({"index": np.arange(dataset.n_users), "id": dataset.users.ids})
        items = pd.DataFrame({"index": np.arange(dataset.n_items), "id": dataset.items.ids})
        names = np.asarray(list(dataset.group_names) + [""], dtype=object)
        if dataset.item_groups is not None:
            items["group"] = names[np.asarray(dataset.item_groups)]
        if dataset.user_groups is not None:
            users["group"] = names[np.asarray(dataset.user_groups)]
        feature_schema: dict[str, str] = {}
        if dataset.user_features is not None:
            for col in dataset.user_features.columns:
                values = dataset.user_features[col].reset_index(drop=True)
                numeric = pd.api.types.is_numeric_dtype(values) and not isinstance(
                    values.dtype, pd.CategoricalDtype)
                feature_schema[str(col)] = "numeric" if numeric else "categorical"
                users[f"feature:{col}"] = values.values
        if dataset.item_info is not None:
            for col in dataset.item_info.columns:
                items[f"info:{col}"] = dataset.item_info[col].reset_index(drop=True).values
        split_meta = None
        if dataset.split is not None:
            s = dataset.split
            for name in ("train", "test", "foldin", "heldout"):
                mat = getattr(s, name)
                if mat is not None:
                    sp.save_npz(tmp / f"{name}.npz", mat, compressed=False)
            heldout = np.zeros(dataset.n_users, dtype=bool)
            heldout[s.heldout_users] = True
            users["heldout"] = heldout
            split_meta = {"kind": s.kind, "options": s.options}
        users.to_csv(tmp / "users.csv", index=False)
        items.to_csv(tmp / "items.csv", index=False)
        meta = {
            "format": "recompare-dataset",
            "version": FORMAT_VERSION,
            "fingerprint": dataset.fingerprint,
            "counts": {
                "users": dataset.n_users,
                "items": dataset.n_items,
                "interactions": int(dataset.interactions.nnz),
            },
            "groups": list(dataset.group_names),
            "user_features": feature_schema,
            "split": split_meta,
            **{k: v for k, v in dataset.meta.items() if k not in {"split", "counts", "groups"}},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=json_default) + "\n")
    return Path(path)


def load_dataset(cls: type[Dataset], path: str | os.PathLike) -> Dataset:
    """Read a directory written by :func:`save_dataset` as a ``cls`` (never unpickles)."""
    root = Path(path)
    meta = _read_meta(root)
    try:
        users = pd.read_csv(root / "users.csv", dtype={"id": str}, keep_default_na=False)
        items = pd.read_csv(root / "items.csv", dtype={"id": str}, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise RecompareError(f"cannot read data set {root}: {exc}") from None
    user_map, item_map = IdMap(users["id"].to_numpy()), IdMap(items["id"].to_numpy())
    split_meta = meta.get("split") or None
    names = tuple(meta.get("groups") or ())
    hasher = _BackgroundHash()
    try:
        hasher.feed(_fingerprint_head(user_map, item_map,
                                      split_meta["kind"] if split_meta else None))
        interactions, split = _read_matrices(root, split_meta, users, hasher,
                                             verified=bool(meta.get("fingerprint")))
        # read while the worker hashes
        timestamps = None
        if (root / "timestamps.npz").is_file():
            timestamps = sp.csr_matrix(_load_npz(root / "timestamps.npz"))
        side = _side_data(users, items, names, meta.get("user_features") or {})
        fingerprint = hasher.hexdigest()[:16]
    finally:
        hasher.close()
    if meta.get("fingerprint") and meta["fingerprint"] != fingerprint:
        raise RecompareError(
            f"data set {root} is corrupt or was edited: fingerprint {fingerprint} "
            f"does not match meta.json ({meta['fingerprint']})"
        )
    ds = cls(interactions=interactions, users=user_map, items=item_map,
             group_names=names, timestamps=timestamps, split=split,
             meta={k: v for k, v in meta.items() if k not in _META_KEYS}, **side)
    ds.__dict__["_fingerprint"] = fingerprint
    return ds


_META_KEYS = {"format", "version", "fingerprint", "counts", "groups", "user_features", "split"}


def _read_matrices(root: Path, split_meta: dict | None, users: pd.DataFrame,
                   hasher: _BackgroundHash, verified: bool,
                   ) -> tuple[sp.csr_matrix, Split | None]:
    """Interactions and split parts, each handed to ``hasher`` as soon as it is read.

    With a fingerprint to verify (``verified``), the matrices are used as
    saved: any change, canonical form included, fails the check; without
    one they are brought to canonical form.
    """
    def read(name: str) -> sp.csr_matrix | None:
        path = root / f"{name}.npz"
        if name != "interactions" and not path.is_file():
            matrix = None
        else:
            try:
                matrix = _load_npz(path)
            except (OSError, ValueError, KeyError) as exc:
                raise RecompareError(f"cannot read data set {root}: {exc}") from None
            matrix = sp.csr_matrix(matrix) if verified else as_csr(matrix)
        hasher.feed(_matrix_chunks(matrix))
        return matrix

    interactions = read("interactions")
    if not split_meta:
        return interactions, None
    parts = {name: read(name) for name in ("train", "test", "foldin", "heldout")}
    heldout_users = (
        np.flatnonzero(users["heldout"].astype(str).str.lower() == "true")
        if "heldout" in users else np.zeros(0, dtype=np.int64)
    )
    return interactions, Split(kind=split_meta["kind"], heldout_users=heldout_users,
                               options=split_meta.get("options", {}), **parts)


def _side_data(users: pd.DataFrame, items: pd.DataFrame, names: tuple[str, ...],
               schema: dict) -> dict[str, Any]:
    """Groups, user features and item metadata from ``users.csv`` / ``items.csv``."""
    code = {n: i for i, n in enumerate(names)}

    def codes(col: pd.Series) -> np.ndarray:
        return np.array([code.get(v, -1) for v in col.astype(str)], dtype=np.int64)

    user_features = None
    if schema:
        cols = {}
        for name, kind in schema.items():
            series = users[f"feature:{name}"]
            if kind == "numeric":
                cols[name] = pd.to_numeric(series, errors="coerce").astype(np.float32)
            else:
                cols[name] = series.astype(str)
        user_features = pd.DataFrame(cols)
    info_cols = [c for c in items.columns if c.startswith("info:")]
    item_info = (items[info_cols].rename(columns=lambda c: c[5:]).reset_index(drop=True)
                 if info_cols else None)
    return {"item_groups": codes(items["group"]) if "group" in items else None,
            "user_groups": codes(users["group"]) if "group" in users else None,
            "user_features": user_features, "item_info": item_info}


class _BackgroundHash:
    """SHA-256 of the chunks fed to it, in order, on a worker thread.

    hashlib releases the GIL on large buffers, so the hash of one file runs
    while the next is read; :meth:`close` ends the thread (always call it).
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="recompare-fingerprint",
                                        daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (chunks := self._queue.get()) is not None:
            for chunk in chunks:
                self._digest.update(chunk)

    def feed(self, chunks: list) -> None:
        self._queue.put(chunks)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return self._digest.hexdigest()


def _read_meta(root: Path) -> dict:
    """``meta.json`` of a saved data set, checked for a format version this code reads."""
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise RecompareError(
            f"{root} is not a prepared data set (no meta.json); "
            "run `recompare data prepare` or `recompare data synth` first"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise RecompareError(f"cannot read data set {root}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != "recompare-dataset":
        raise RecompareError(f"{meta_path} does not describe a recompare data set")
    version = meta.get("version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise RecompareError(
            f"data set {root} has format version {version}, newer than this recompare reads "
            f"(up to {FORMAT_VERSION}); upgrade recompare")
    if version not in READABLE_VERSIONS:
        raise RecompareError(
            f"data set {root} has format version {version!r}, which this recompare no longer "
            "reads; prepare it again with `recompare data prepare` (or `data synth`)")
    return meta


def _load_npz(path: Path) -> sp.spmatrix:
    if not path.is_file():
        raise RecompareError(f"missing file {path}")
    # scipy.sparse.load_npz calls np.load(allow_pickle=False)
    return sp.load_npz(path)


