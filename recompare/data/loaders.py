"""Read interaction logs into a :class:`~recompare.data.dataset.Dataset`.

Sources, auto-detected by content and each selectable explicitly:

* MovieLens as GroupLens distributes it (:mod:`recompare.data.movielens`):
  100K, 1M/10M and the latest/20M/25M layout.
* Generic delimited text (separator and header sniffed) or Parquet logs, with
  column mapping (user, item, value, time) and optional item and user side
  tables (a group column, feature columns).

:func:`prepare` reads the source (delimited logs in chunks, see
:mod:`recompare.data.readers`), then :func:`recompare.data.build.build`
applies the user's policies (duplicates, minimum rating, k-core), indexes ids
(numerically when all ids are integers), and builds the dataset.  Nothing is
dropped unless a policy asks for it, except rows whose value is exactly 0 (not
an interaction in a sparse matrix), which are counted.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RecompareError
from .build import RawData, build
from .dataset import Dataset
from .movielens import NO_GENRE, movielens_folder, read_movielens
from .policies import resolve_duplicates
from .readers import (
    CHUNK_ROWS,
    log_columns,
    read_log_columns,
    read_parquet,
    read_table,
    resolve_column,
)
from .sniff import (
    ITEM_ALIASES,
    TIME_ALIASES,
    USER_ALIASES,
    VALUE_ALIASES,
    is_parquet,
    sniff_layout,
)

Callback = Callable[[dict], None] | None
FORMATS = ("auto", "movielens", "csv", "parquet")
# options that map the columns of a CSV/Parquet log (the keywords of read_log)
LOG_OPTIONS = ("user_col", "item_col", "value_col", "time_col", "sep", "header", "items",
               "users", "user_group_col", "feature_cols", "encoding")

__all__ = ["FORMATS", "RawData", "build", "detect_format", "prepare", "read_log",
           "read_movielens", "read_table"]


def detect_format(source: str | Path) -> str:
    """``movielens``, ``parquet`` or ``csv`` for a path, judged by its content."""
    path = Path(source)
    if not path.exists():
        raise RecompareError(f"no such file or directory: {path}")
    if path.is_dir():
        if movielens_folder(path) is not None:
            return "movielens"
        raise RecompareError(
            f"cannot tell the format of folder {path}: expected a MovieLens folder (u.data, "
            "ratings.dat or ratings.csv); for another log, pass the file itself")
    if path.name in ("u.data", "ratings.dat"):
        return "movielens"
    if is_parquet(path):
        return "parquet"
    if path.suffix.lower() in (".parquet", ".pq"):
        raise RecompareError(f"{path} is named like Parquet but is not a Parquet file")
    return "csv"


# ------------------------------------------------------------------ generic logs
def read_log(
    path: str | Path,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    value_col: str | None = None,
    time_col: str | None = None,
    sep: str | None = None,
    header: bool | None = None,
    items: str | Path | None = None,
    users: str | Path | None = None,
    group_col: str | None = None,
    user_group_col: str | None = None,
    feature_cols: Sequence[str] | None = None,
    encoding: str | None = None,
    chunk_rows: int | None = CHUNK_ROWS,
) -> RawData:
    """Read a CSV/TSV/Parquet interaction log and optional side tables.

    Column options take a name (case-insensitive) or a 0-based position.
    Without them, common names are recognised (``user``/``user_id``/``userId``,
    ``item``/``item_id``/``movieId``, ``rating``/``value``/``count``,
    ``timestamp``/``time``/``date``); a headerless file is read as user,
    item[, value[, time]].  Delimited text is read ``chunk_rows`` rows at a
    time (None: at once); the result is the same either way.
    """
    path = Path(path)
    if not path.is_file():
        raise RecompareError(f"no such file: {path}")
    wanted = [c for c in (user_col, item_col, value_col, time_col) if c]
    # a short preview (all text) settles header and columns; then one typed full read
    preview, first_line = read_table(path, sep=sep, header=header, encoding=encoding,
                                     wanted=wanted, all_text=True, nrows=50)
    columns = _log_columns(preview, path, user_col, item_col, value_col, time_col)
    parquet = is_parquet(path)
    if parquet:
        log, notes = log_columns([(read_parquet(path), 2)], path, columns)
    else:
        layout = sniff_layout(path, sep, first_line == 2, encoding, wanted)
        log, notes = read_log_columns(path, layout, columns, chunk_rows)
    item_table = user_table = None
    kinds: dict[str, str] = {}
    if items is not None:
        item_table = _side_table(Path(items), "item", columns["item"], sep, encoding,
                                 group_col=group_col)
    elif group_col is not None:
        raise RecompareError("--group-col needs an item side table (--items FILE)")
    if users is not None:
        user_table, kinds = _user_table(Path(users), columns["user"], sep, encoding,
                                        feature_cols, user_group_col)
    elif feature_cols:
        raise RecompareError("--feature-cols needs a user side table (--users FILE)")
    return RawData(log=log, source=str(path), format="parquet" if parquet else "csv",
                   item_table=item_table, user_table=user_table, feature_kinds=kinds,
                   notes=notes)


def _log_columns(preview: pd.DataFrame, path: Path, user_col: str | None,
                 item_col: str | None, value_col: str | None,
                 time_col: str | None) -> dict[str, str | None]:
    """The user, item, value and time columns of a log, from options or known names."""
    columns = {
        "user": resolve_column(user_col, preview, USER_ALIASES, "user ids", "--user-col", path,
                               True, 0),
        "item": resolve_column(item_col, preview, ITEM_ALIASES, "item ids", "--item-col", path,
                               True, 1),
        "value": resolve_column(value_col, preview, VALUE_ALIASES, "values", "--value-col",
                                path, False, 2),
        "time": resolve_column(time_col, preview, TIME_ALIASES, "times", "--time-col", path,
                               False, 3),
    }
    if columns["user"] == columns["item"]:
        raise RecompareError(f"user and item columns are the same ({columns['user']!r})")
    return columns


def _side_id_column(frame: pd.DataFrame, log_column: str, aliases: Sequence[str]) -> str:
    lowered = {c.lower(): c for c in frame.columns}
    if log_column.lower() in lowered and not log_column.isdigit():
        return lowered[log_column.lower()]
    for alias in aliases:
        if alias in lowered:
            return lowered[alias]
    return frame.columns[0]


def _side_table(path: Path, what: str, log_column: str, sep: str | None, encoding: str | None,
                group_col: str | None) -> pd.DataFrame:
    wanted = [c for c in (group_col, log_column) if c]
    frame, _ = read_table(path, sep=None if sep in (None, "::") else sep,
                          encoding=encoding, wanted=wanted, all_text=True)
    id_col = _side_id_column(frame, log_column, ITEM_ALIASES if what == "item" else USER_ALIASES)
    ids = frame[id_col].astype(str).str.strip()
    table = frame.drop(columns=id_col)
    table.index = ids.to_numpy()
    table = table[~table.index.duplicated(keep="first")]
    if group_col is not None:
        column = resolve_column(group_col, table, (), "groups", "--group-col", path, True)
        groups = table[column].astype("string").str.split("|").str[0].str.strip()
        groups = groups.where(groups.notna() & (groups != "") & (groups != NO_GENRE), None)
        table = table.drop(columns=column)
        table.insert(0, "group", groups.astype(object).to_numpy())
    return table


def _user_table(path: Path, log_column: str, sep: str | None, encoding: str | None,
                feature_cols: Sequence[str] | None,
                user_group_col: str | None) -> tuple[pd.DataFrame, dict]:
    table = _side_table(path, "user", log_column, sep, encoding, group_col=None)
    out = pd.DataFrame(index=table.index)
    if user_group_col is not None:
        column = resolve_column(user_group_col, table, (), "user groups", "--user-group-col",
                                 path, True)
        out["group"] = table[column].astype(object).to_numpy()
        table = table.drop(columns=column)
    if feature_cols is None:
        feature_cols = list(table.columns)
    kinds = {}
    for name in feature_cols:
        column = resolve_column(name, table, (), "features", "--feature-cols", path, True)
        values = table[column]
        numbers = pd.to_numeric(values, errors="coerce")
        present = values.notna() & (values.astype(str).str.strip() != "")
        if present.any() and numbers[present].notna().all():
            out[column] = numbers.to_numpy(dtype=np.float64)
            kinds[column] = "numeric"
        else:
            out[column] = values.astype(object).to_numpy()
            kinds[column] = "categorical"
    return out, kinds




# ------------------------------------------------------------------ prepare
def prepare(
    source: str | Path,
    format: str = "auto",
    *,
    group_col: str | None = None,
    min_rating: float | None = None,
    duplicates: str = "auto",
    min_user_interactions: int = 1,
    min_item_interactions: int = 1,
    chunk_rows: int | None = CHUNK_ROWS,
    callback: Callback = None,
    **log_options: Any,
) -> Dataset:
    """Load ``source`` and build a :class:`Dataset` (no split; see :func:`split`).

    Parameters
    ----------
    source : path
        A MovieLens folder, or a CSV/TSV/Parquet interaction log.
    format : {"auto", "movielens", "csv", "parquet"}
    group_col : str, optional
        Item group column of ``items`` (``"a|b"`` lists give ``a``); for
        MovieLens ``"genres"`` (default: primary genre) or ``"none"``.
    min_rating : float, optional
        Implicit feedback: keep values >= ``min_rating``, set to 1.
    duplicates : {"auto", "sum", "max", "last"}
        Repeated (user, item) rows; ``auto`` = ``sum`` when there is no value
        column (values count events), else ``last``.
    min_user_interactions, min_item_interactions : int
        k-core filter, applied until both hold (default 1: keep everything).
    chunk_rows : int or None
        Rows read at a time from delimited text (None: the whole file at once).
    callback : callable(dict), optional
        Progress events ``{"stage": "load", "message": ...}``.
    **log_options
        CSV/Parquet logs only, the keywords of :func:`read_log`: ``user_col``,
        ``item_col``, ``value_col``, ``time_col``, ``sep``, ``header``,
        ``encoding`` (column mapping and parsing), ``items``, ``users`` (side
        tables keyed by item / user id), ``user_group_col`` (user group column
        of ``users``), ``feature_cols`` (user feature columns of ``users``;
        default: all but the id).

    Returns
    -------
    Dataset
        Ids sorted (numerically when all are integers); items with no
        interactions are not included; ``meta`` records the source, options
        and how many rows each policy removed.
    """
    emit = callback or (lambda event: None)
    _check_prepare_options(format, min_rating, min_user_interactions, min_item_interactions,
                           chunk_rows, log_options)
    path = Path(source)
    detected = detect_format(path) if format == "auto" else format
    if not path.exists():
        raise RecompareError(f"no such file or directory: {path}")
    given = {k: v for k, v in log_options.items() if v is not None}
    raw = _read_source(path, detected, group_col, given, chunk_rows, emit)
    options = {
        "format": raw.format, "min_rating": min_rating,
        "duplicates": resolve_duplicates(duplicates, "value" in raw.log.columns),
        "min_user_interactions": int(min_user_interactions),
        "min_item_interactions": int(min_item_interactions),
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in given.items()
           if k != "encoding"},
    }
    if group_col is not None:
        options["group_col"] = group_col
    return build(raw, options, emit)


def _check_prepare_options(format: str, min_rating: float | None, min_user: int,
                           min_item: int, chunk_rows: int | None, log_options: dict) -> None:
    unknown = sorted(set(log_options) - set(LOG_OPTIONS))
    if unknown:
        raise TypeError(f"prepare() got unexpected keyword arguments: {', '.join(unknown)}")
    if format not in FORMATS:
        raise RecompareError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if min_user < 1 or min_item < 1:
        raise RecompareError("minimum interactions per user/item must be at least 1")
    if min_rating is not None and not np.isfinite(min_rating):
        raise RecompareError(f"--min-rating must be a number, got {min_rating}")
    if chunk_rows is not None and chunk_rows < 1:
        raise RecompareError(f"--chunk-rows must be a positive integer, got {chunk_rows}")


def _read_source(path: Path, detected: str, group_col: str | None, given: dict,
                 chunk_rows: int | None, emit: Callable[[dict], None]) -> RawData:
    """The raw log of a MovieLens folder or of a CSV/Parquet file."""
    if detected == "movielens":
        mapped = [k for k in given if k != "encoding"]
        if mapped:
            flags = ", ".join("--" + k.replace("_", "-") for k in mapped)
            raise RecompareError(f"{flags} apply to CSV/Parquet logs, not to a MovieLens folder "
                                 "(pass --format csv and the ratings file to map columns)")
        emit({"stage": "load", "message": f"reading MovieLens folder {path}"})
        raw = read_movielens(path, group_col=group_col, chunk_rows=chunk_rows)
        if raw.format == "movielens-100k" and raw.item_table is None:
            emit({"stage": "load", "level": "warning", "message": (
                f"warning: {path} has no u.item, so items get no genre groups and the "
                "folding report will not have them; add u.item from the 100K archive")})
        return raw
    if path.is_dir():
        raise RecompareError(f"{path} is a folder; pass the {detected} file itself")
    if detected == "parquet" and not is_parquet(path):
        raise RecompareError(f"{path} is not a Parquet file (use --format csv)")
    emit({"stage": "load", "message": f"reading {detected} log {path}"})
    return read_log(path, group_col=group_col, chunk_rows=chunk_rows, **given)
