"""A raw Parquet interaction log read by Spark itself, under ``data prepare``'s rules.

For logs that do not fit one machine, ``train-wals --engine spark --log PATH``
never reads the log into this process: Spark reads the Parquet file (or
directory of files), checks and merges the events, and maps the ids to dense
codes with joins.  The rules are the ones :func:`recompare.data.loaders.prepare`
applies at its defaults, through the same definitions:

* columns: named by ``--user-col`` etc. or recognised by the same aliases
  (:func:`recompare.data.loaders._log_columns`);
* ids: a missing or empty id is an error; text ids are stripped; fractional
  numeric ids are an error; the ids are ordered as
  :func:`recompare.data.build._sorted_order` orders them (numerically when all are
  integers), only ids some event is left for;
* values: missing, NaN or negative values are errors; a log without a value column
  counts events (value 1);
* duplicates: :func:`recompare.data.policies.resolve_duplicates` (``auto`` = sum
  without values, last with them); ``last`` keeps the latest event by time, then by
  position in the log (files in name order); events of value 0 are dropped after
  merging; ``min_rating`` keeps values >= it, as 1.

Only the distinct ids (a small fraction of the log) and the merged, coded entries
come to the driver, which needs them for the model directory anyway (its
``seen`` matrix and the data set that ``recommend`` and ``export`` read).
Time stamps order duplicates only; the data set built here carries none.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import RecompareError
from .build import _sorted_order
from .dataset import Dataset, IdMap
from .policies import resolve_duplicates
from .sniff import is_parquet

#: Spark's numeric column types (``DataType.typeName()``)
_INTEGER_TYPES = ("byte", "short", "integer", "long")
_NUMERIC_TYPES = _INTEGER_TYPES + ("float", "double", "decimal")


def parquet_files(path: str | Path) -> str:
    """``path`` if it is a Parquet file or a directory of them, else a one-line error.

    A URL (``hdfs://``, ``s3a://``, ``file://`` ...) is passed to Spark unchecked.
    """
    if re.match(r"[A-Za-z][\w+.-]*://", str(path)):
        return str(path)
    path = Path(path)
    if path.is_file():
        if not is_parquet(path):
            raise RecompareError(f"--log {path} is not a Parquet file (convert it, or run "
                                 "`recompare data prepare` and pass the data set)")
        return str(path)
    if path.is_dir():
        files = [f for f in sorted(path.rglob("*")) if f.is_file()
                 and not f.name.startswith((".", "_"))]
        if not files or not all(is_parquet(f) for f in files):
            raise RecompareError(f"--log {path} is not a directory of Parquet files")
        return str(path)
    raise RecompareError(f"--log {path}: no such file or directory")


def read_log(session, path: str | Path, *, user_col: str | None = None,
             item_col: str | None = None, value_col: str | None = None,
             time_col: str | None = None, duplicates: str = "auto",
             min_rating: float | None = None) -> Dataset:
    """The data set of a Parquet log, read, merged and indexed by Spark (no split).

    Parameters
    ----------
    session : SparkSession
    path : path
        A Parquet file, or a directory of Parquet files.
    user_col, item_col, value_col, time_col : str, optional
        Column names (any case); recognised by their usual names when not given.
    duplicates : {"auto", "sum", "max", "last"}
    min_rating : float, optional

    Returns
    -------
    Dataset
        Its fingerprint equals that of ``data prepare`` on the same log.
    """
    from ..models.wals_spark import _spark_errors as spark_errors

    resolve_duplicates(duplicates, True)  # an unknown policy fails before Spark reads
    if min_rating is not None and not np.isfinite(min_rating):
        raise RecompareError(f"--min-rating must be a number, got {min_rating}")
    location = parquet_files(path)
    label = Path(location)  # names the file or folder in messages (a URL keeps its own text)
    try:
        frame = session.read.parquet(location)
        events, columns, policy = _checked_events(frame, label, user_col, item_col,
                                                  value_col, time_col, duplicates)
        merged = _merged(events, policy, min_rating, columns["time"] is not None)
        dataset = _indexed(session, merged, label, columns, policy, min_rating)
    except spark_errors() as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RecompareError(f"Spark cannot read the log {location}: {first}") from None
    dataset.meta["source"] = location
    return dataset


def _checked_events(frame, path: Path, user_col, item_col, value_col, time_col,
                    duplicates: str):
    """Columns ``user``, ``item`` (ids), ``value``, ``order`` (time, position) of the
    log, every row checked; the resolved columns and duplicates policy."""
    from pyspark.sql import functions as F

    from .loaders import _log_columns

    columns = _log_columns(pd.DataFrame(columns=list(frame.columns)), path, user_col,
                           item_col, value_col, time_col)
    policy = resolve_duplicates(duplicates, columns["value"] is not None)
    types = {field.name: field.dataType.typeName() for field in frame.schema.fields}
    ids = {role: _id_column(frame, types, columns[role], role, path)
           for role in ("user", "item")}
    value = F.lit(1.0)
    if columns["value"] is not None:
        value = _value_column(frame, types, columns["value"], path)
    time = F.lit(0).cast("long")
    if columns["time"] is not None:
        time = _time_column(types, columns["time"], path)
    # position in the log: files in name order, rows in file order
    position = F.struct(F.input_file_name(), F.monotonically_increasing_id())
    events = frame.select(ids["user"].alias("user"), ids["item"].alias("item"),
                          value.alias("value"), F.struct(time, position).alias("order"))
    _check_rows(events, path, columns)
    return events, columns, policy


def _id_column(frame, types: dict, name: str, role: str, path: Path):
    from pyspark.sql import functions as F

    kind = types[name]
    column = F.col(f"`{name}`")
    if kind in _INTEGER_TYPES:
        return column.cast("long")
    if kind in ("float", "double", "decimal"):
        fractional = frame.filter(column.isNotNull() & (column != F.floor(column))).limit(1)
        if fractional.count():
            raise RecompareError(f"{path.name}: column {name!r} holds fractional {role} ids")
        return column.cast("long")
    return F.trim(column.cast("string"))


def _value_column(frame, types: dict, name: str, path: Path):
    from pyspark.sql import functions as F

    column = F.col(f"`{name}`")
    if types[name] not in _NUMERIC_TYPES:
        text = F.trim(column.cast("string"))
        bad = frame.filter(text.isNotNull() & (text != "")
                           & text.cast("double").isNull()).limit(1).collect()
        if bad:
            raise RecompareError(f"{path.name}: non-numeric value {bad[0][name]!r} in column "
                                 f"{name!r}")
        column = F.when(text != "", text)
    return column.cast("double")


def _time_column(types: dict, name: str, path: Path):
    from pyspark.sql import functions as F

    kind = types[name]
    if kind in _NUMERIC_TYPES:
        return F.col(f"`{name}`").cast("double")
    if kind in ("timestamp", "timestamp_ntz", "date"):
        return F.unix_timestamp(F.col(f"`{name}`").cast("timestamp")).cast("double")
    raise RecompareError(f"{path.name}: time column {name!r} is {kind}; --log reads numeric "
                         "or timestamp times (run `recompare data prepare` for text dates)")


def _check_rows(events, path: Path, columns: dict) -> None:
    """One pass over the log: missing ids, missing or negative values, no rows."""
    from pyspark.sql import functions as F

    missing_id = {role: (F.col(role).isNull() | (F.col(role).cast("string") == ""))
                  for role in ("user", "item")}
    counts = events.agg(
        F.count(F.lit(1)).alias("rows"),
        *[F.sum(F.when(test, 1).otherwise(0)).alias(role) for role, test in missing_id.items()],
        F.sum(F.when(F.col("value").isNull() | F.isnan("value"), 1).otherwise(0)).alias("nan"),
        F.min("value").alias("lowest"),
    ).collect()[0]
    if not counts["rows"]:
        raise RecompareError(f"{path} has no interactions")
    for role in ("user", "item"):
        if counts[role]:
            raise RecompareError(f"{path.name}: column {columns[role]!r} has {counts[role]} "
                                 f"missing {role} ids")
    if counts["nan"]:
        raise RecompareError(f"{path.name}: column {columns['value']!r} has {counts['nan']} "
                             "missing or NaN values")
    if counts["lowest"] < 0:
        raise RecompareError(f"{path.name}: negative value {counts['lowest']:g}; interaction "
                             "strengths must be >= 0 (use --min-rating for ratings)")


def _merged(events, policy: str, min_rating: float | None, has_time: bool):
    """One row per (user, item) under ``policy``, then the minimum rating and the zeros."""
    from pyspark.sql import functions as F

    pair = events.groupBy("user", "item")
    if policy == "sum":
        merged = pair.agg(F.sum("value").alias("value"))
    elif policy == "max":
        merged = pair.agg(F.max("value").alias("value"))
    else:  # last: the latest time, then the latest position in the log
        merged = pair.agg(F.max_by("value", "order").alias("value"))
    if min_rating is not None:
        merged = merged.filter(F.col("value") >= float(min_rating)) \
            .withColumn("value", F.lit(1.0))
    return merged.filter(F.col("value") != 0)


def _indexed(session, merged, path: Path, columns: dict, policy: str,
             min_rating: float | None) -> Dataset:
    """Dense codes for the ids left, ordered as ``data prepare`` orders them, joined in
    Spark; the coded entries collected into the data set's matrix."""
    from pyspark.sql import functions as F

    merged = merged.cache()
    try:
        n_rows = merged.count()
        if not n_rows:
            raise RecompareError(f"{path}: no interactions left (every value is 0 or below "
                                 "--min-rating)")
        maps = {role: _id_map(merged.select(role).distinct().toPandas()[role])
                for role in ("user", "item")}
        coded = merged
        for role, ids in maps.items():
            table = pd.DataFrame({role: ids[1], f"{role}_code": np.arange(len(ids[1]))})
            coded = coded.join(F.broadcast(session.createDataFrame(table)), role)
        arrow = coded.select("user_code", "item_code", "value").toArrow()
    finally:
        merged.unpersist()
    shape = (len(maps["user"][0]), len(maps["item"][0]))
    matrix = sp.csr_matrix((arrow.column("value").to_numpy().astype(np.float32),
                            (arrow.column("user_code").to_numpy(),
                             arrow.column("item_code").to_numpy())), shape=shape)
    matrix.sum_duplicates()
    matrix.sort_indices()
    options = {"format": "parquet", "min_rating": min_rating, "duplicates": policy,
               "min_user_interactions": 1, "min_item_interactions": 1, "reader": "spark"}
    meta = {"source": str(path), "options": options, "columns": columns}
    return Dataset(interactions=matrix, users=IdMap(maps["user"][0]),
                   items=IdMap(maps["item"][0]), meta=meta)


def _id_map(values: pd.Series) -> tuple[np.ndarray, Any]:
    """(ids as text in ``data prepare``'s order, the same ids as Spark holds them)."""
    if pd.api.types.is_integer_dtype(values):
        raw = np.sort(values.to_numpy(np.int64))  # integer ids: numeric order
        return raw.astype(str), raw
    text = np.asarray(values.astype(str), dtype=object)
    order = _sorted_order(text)
    return text[order].astype(str), list(text[order])
