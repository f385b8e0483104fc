"""Preparing and loading data at real size, side by side with pandas and numpy.

A synthetic log shaped like MovieLens 20M (``full``: 18 million rows, 138,000
users x 27,000 items, ratings and timestamps, one row per pair) is written as
Parquet, then:

* the peer: ``pandas.read_parquet`` of the file, then a CSR matrix built from
  its columns (ids factorized, ``scipy.sparse.csr_matrix``);
* recompare: what ``recompare data prepare LOG OUT --split random`` does
  (:func:`~recompare.data.loaders.prepare`, :func:`~recompare.data.splits.split`,
  :meth:`~recompare.data.dataset.Dataset.save`);
* loading: :meth:`Dataset.load` of the saved set (which also verifies its
  fingerprint) against reading it raw, as docs/data-layout.md shows without
  recompare: ``numpy.load`` of the arrays of its ``.npz`` files and
  ``pandas.read_csv`` of ``users.csv`` and ``items.csv``.

Figures: prepare time over the peer's (target 3x), prepare peak memory over
the pandas read's (target 2x), load time over the raw read (target 2x; the
ratio to the ``.npz`` arrays alone is reported too).
"""
from __future__ import annotations

import gc
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .common import best_of, measure

SIZES = {
    "tiny": {"rows": 200_000, "users": 1_500, "items": 2_000},
    "small": {"rows": 2_000_000, "users": 15_000, "items": 10_000},
    "full": {"rows": 18_000_000, "users": 138_000, "items": 27_000},
}
TARGETS = {"prepare": 3.0, "memory": 2.0, "load": 2.0}


def synthetic_log(rows: int, users: int, items: int, seed: int = 0):
    """A DataFrame ``user_id, item_id, rating, timestamp`` with one row per (user, item),
    popularity skewed towards low item ids, in random order."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    cells = users * items
    if rows > cells // 2:
        raise ValueError(f"{rows} rows do not fit sparsely in {users} x {items}")
    keys = np.zeros(0, dtype=np.int64)
    while len(keys) < rows:
        draw = int((rows - len(keys)) * 1.3) + 1000
        user = rng.integers(0, users, draw)
        item = np.minimum((items * rng.random(draw) ** 2).astype(np.int64), items - 1)
        keys = np.unique(np.concatenate([keys, user * items + item]))
    keys = rng.permutation(keys)[:rows]
    return pd.DataFrame({
        "user_id": keys // items + 1,
        "item_id": keys % items + 1,
        "rating": rng.integers(1, 11, rows).astype(np.float64) / 2,
        "timestamp": rng.integers(1_000_000_000, 1_600_000_000, rows),
    })


def _peer_read(path: Path) -> Any:
    import pandas as pd

    return pd.read_parquet(path)


def _peer_csr(frame) -> Any:
    import pandas as pd
    import scipy.sparse as sp

    user, users = pd.factorize(frame["user_id"], sort=True)
    item, items = pd.factorize(frame["item_id"], sort=True)
    return sp.csr_matrix((frame["rating"].to_numpy(np.float32), (user, item)),
                         shape=(len(users), len(items)))


def _prepare(path: Path, out: Path) -> None:
    from ..data.loaders import prepare
    from ..data.splits import split

    split(prepare(path), "random", seed=0).save(out, overwrite=True)


def _raw_arrays(out: Path) -> list:
    """Every array of every ``.npz`` of a saved data set, read into memory and kept (as a
    load keeps them), with no checks and no objects around them."""
    kept = []
    for npz in sorted(out.glob("*.npz")):
        with np.load(npz, allow_pickle=False) as arrays:
            kept += [arrays[name] for name in arrays.files]
    return kept


def _raw_read(out: Path) -> list:
    """What reading a saved data set without recompare takes (docs/data-layout.md): the
    arrays of its ``.npz`` files and its user and item tables."""
    import pandas as pd

    tables = [pd.read_csv(out / name, dtype={"id": str}, keep_default_na=False)
              for name in ("users.csv", "items.csv")]
    return _raw_arrays(out) + tables


def _load(out: Path) -> None:
    from ..data.dataset import Dataset

    Dataset.load(out)


def _figure(name: str, value: float, target: float | None = None, unit: str = "x") -> dict:
    out: dict[str, Any] = {"name": name, "value": round(value, 3), "unit": unit}
    if target is not None:
        out.update(target=target, met=bool(value <= target))
    return out


def run(scale: str = "small", callback: Callable[[dict], None] | None = None) -> dict:
    """Write the synthetic log, time and measure the peer and recompare; returns figures."""
    emit = callback or (lambda event: None)
    size = SIZES[scale]
    repeat = 1 if scale == "full" else 2
    workdir = Path(tempfile.mkdtemp(prefix="recompare-bench-data-"))
    try:
        emit({"message": f"writing a {size['rows']:,}-row Parquet log"})
        log_path = workdir / "log.parquet"
        synthetic_log(size["rows"], size["users"], size["items"]).to_parquet(log_path)
        gc.collect()
        out = workdir / "prepared"
        emit({"message": "pandas read + CSR"})
        with measure() as read_cost:
            frame = _peer_read(log_path)
        start = time.perf_counter()
        _peer_csr(frame)
        csr_seconds = time.perf_counter() - start
        del frame
        read_seconds = min([read_cost["seconds"]]
                           + [best_of(lambda: _peer_read(log_path), 1) for _ in range(repeat - 1)])
        emit({"message": "recompare prepare --split random"})
        with measure() as prepare_cost:
            _prepare(log_path, out)
        prepare_seconds = min([prepare_cost["seconds"]]
                              + [best_of(lambda: _prepare(log_path, out), 1)
                                 for _ in range(repeat - 1)])
        emit({"message": "loading the prepared set"})
        raw_seconds = best_of(lambda: _raw_read(out), repeat + 1)
        arrays_seconds = best_of(lambda: _raw_arrays(out), repeat + 1)
        load_seconds = best_of(lambda: _load(out), repeat + 1)
        disk_bytes = sum(p.stat().st_size for p in out.iterdir())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    peer_seconds = read_seconds + csr_seconds
    ratios = {
        "prepare": prepare_seconds / peer_seconds,
        "memory": prepare_cost["peak_extra_bytes"] / max(1, read_cost["peak_extra_bytes"]),
        "load": load_seconds / raw_seconds,
    }
    figures = [
        _figure("prepare / (pandas read + CSR)", ratios["prepare"], TARGETS["prepare"]),
        _figure("prepare peak memory / pandas read", ratios["memory"], TARGETS["memory"]),
        _figure("load / raw read", ratios["load"], TARGETS["load"]),
        _figure("load / npz arrays alone", load_seconds / arrays_seconds),
        _figure("prepare --split random", prepare_seconds, unit="s"),
        _figure("pandas read + CSR", peer_seconds, unit="s"),
        _figure("load", load_seconds, unit="s"),
    ]
    return {
        "scale": scale, "rows": size["rows"], "users": size["users"], "items": size["items"],
        "repeat": repeat,
        "read_seconds": read_seconds, "csr_seconds": csr_seconds,
        "prepare_seconds": prepare_seconds, "load_seconds": load_seconds,
        "raw_read_seconds": raw_seconds, "npz_arrays_seconds": arrays_seconds,
        "read_peak_extra_bytes": read_cost["peak_extra_bytes"],
        "prepare_peak_extra_bytes": prepare_cost["peak_extra_bytes"],
        "prepared_bytes_on_disk": disk_bytes,
        "ratios": ratios, "figures": figures,
    }
