"""The guarded reads of a saved data set's files (docs/data-layout.md).

Every file is read under its fixed name through :mod:`recompare._io`, and checked against
``meta.json``: the keys and their types, the counts (rows of the tables, shape and entries of
the matrices), the columns the description implies (``id``, ``heldout`` with a split, one
``feature:<name>`` per user feature). Damage gives one :class:`RecompareError` line naming the
file. The caller checks the format version and the fingerprint.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import scipy.sparse as sp

from .._io import check_keys, own_file, read_csv_table, read_json, read_sparse_npz, refuse
from ..errors import RecompareError

#: meta.json: the keys every version writes, and the provenance keys of the loaders
META_REQUIRED = {"format": str, "version": int, "counts": dict, "groups": list,
                 "user_features": dict, "split": (dict, type(None))}
META_OPTIONAL = {"fingerprint": str, "source": (str, type(None)), "options": dict,
                 "preparation": dict, "columns": dict, "time_unit": (str, type(None))}
_WHAT = "data set description"


def read_meta(root: Path) -> dict:
    """``meta.json`` of the data set ``root``: known keys of the right types, and counts,
    groups, features and split that the rest of the load can rely on."""
    if not root.is_dir():
        raise RecompareError(f"{root} is not a prepared data set directory")
    meta_path = own_file(root, "meta.json")
    if not meta_path.exists():
        raise RecompareError(
            f"{root} is not a prepared data set (no meta.json); "
            "run `recompare data prepare` or `recompare data synth` first")
    meta = read_json(meta_path, META_REQUIRED, META_OPTIONAL, what=_WHAT)
    if meta["format"] != "recompare-dataset":
        raise RecompareError(f"{meta_path} does not describe a recompare data set")
    counts = check_keys(meta["counts"], {"users": int, "items": int, "interactions": int},
                        path=meta_path, what=_WHAT, where="counts")
    if min(counts.values()) < 0:
        raise refuse(meta_path, _WHAT, "counts: negative count")
    if not all(isinstance(name, str) for name in meta["groups"]):
        raise refuse(meta_path, _WHAT, "'groups' must be a list of names")
    if not set(meta["user_features"].values()) <= {"numeric", "categorical"}:
        raise refuse(meta_path, _WHAT, "user_features: each kind must be 'numeric' or "
                                       "'categorical'")
    if meta["split"] is not None:
        check_keys(meta["split"], {"kind": str}, {"options": dict}, path=meta_path,
                   what=_WHAT, where="split")
    return meta


def read_tables(root: Path, meta: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``users.csv`` and ``items.csv``: the columns meta.json implies, one row per id."""
    counts = meta["counts"]
    user_columns = ["id", *(f"feature:{name}" for name in meta["user_features"])]
    if meta["split"]:
        user_columns.append("heldout")
    users = read_csv_table(own_file(root, "users.csv"), user_columns, what="data set table",
                           n_rows=counts["users"])
    items = read_csv_table(own_file(root, "items.csv"), ["id"], what="data set table",
                           n_rows=counts["items"])
    for name, table in (("users.csv", users), ("items.csv", items)):
        repeated = table["id"][table["id"].duplicated()]
        if len(repeated):
            raise refuse(root / name, "data set table", f"id '{repeated.iloc[0]}' appears twice")
    return users, items


def has_matrix(root: Path, name: str) -> bool:
    """Whether the optional matrix ``name``.npz is there (checked to be the set's own)."""
    return own_file(root, f"{name}.npz").exists()


def read_matrix(root: Path, name: str, meta: dict, kinds: str = "f") -> sp.csr_matrix:
    """``name``.npz of the data set ``root``: a users x items CSR matrix (counts of meta.json);
    ``interactions`` must also hold as many entries as meta.json counts."""
    counts = meta["counts"]
    file = own_file(root, f"{name}.npz")
    matrix = read_sparse_npz(file, what="data set matrix",
                             shape=(counts["users"], counts["items"]), kinds=kinds)
    if name == "interactions" and matrix.nnz != counts["interactions"]:
        raise refuse(file, "data set matrix", f"has {matrix.nnz} entries, meta.json counts "
                                              f"{counts['interactions']}")
    return matrix
