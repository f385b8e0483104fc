"""Reading delimited text and Parquet tables, and checking a log's columns.

:func:`read_table` reads a whole table (side tables, previews);
:func:`read_table_chunks` reads a log in chunks of rows, so that a log larger
than memory is never held as text; :func:`log_columns` turns the chunks into
checked ``user``, ``item``, ``value`` and ``time`` columns.  Separators and
headers are sniffed from the first 64 KiB; the ``::`` separator of MovieLens
1M/10M is translated to a tab while streaming, so pandas' fast C parser reads
it.
"""
from __future__ import annotations

import io
import lzma
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from ..errors import RecompareError
from .sniff import (
    TextLayout,
    compression_of,
    is_parquet,
    open_text_bytes,
    sniff_layout,
)

# rows per chunk when reading a delimited log: ~100 MB of text for a typical log line
CHUNK_ROWS = 2_000_000
# bytes read at a time when translating a multi-character separator
TRANSLATE_BYTES = 1 << 22


# ------------------------------------------------------------------ reading
class _SeparatorStream(io.RawIOBase):
    """A binary file with a multi-character separator replaced by a tab, while reading.

    pandas' C parser takes one-character separators only; MovieLens ``::``
    files hold no tabs, so translating keeps the fast parser without reading
    the whole file into memory.
    """

    def __init__(self, path: Path, sep: bytes) -> None:
        super().__init__()
        self._path = path
        # closed in close(): the stream outlives this call, as any open file handed to pandas
        self._handle: BinaryIO = open_text_bytes(path)
        self._sep = sep
        self._block = TRANSLATE_BYTES
        self._pending = b""
        self._carry = b""

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._handle.close()
        super().close()

    def _refill(self) -> bool:
        block = self._handle.read(self._block)
        if b"\t" in block:
            raise RecompareError(f"{self._path}: separator {self._sep.decode()!r} with tabs in "
                                 "the data is not supported; convert the file to tab-separated")
        data = self._carry + block
        if block:
            # hold back a trailing run of the separator's last byte: a separator may span blocks
            kept = len(data.rstrip(self._sep[-1:]))
            data, self._carry = data[:kept], data[kept:]
        else:
            self._carry = b""
        self._pending += data.replace(self._sep, b"\t")
        return bool(block)

    def readinto(self, buffer: Any) -> int:
        while len(self._pending) < len(buffer) and self._refill():
            pass
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def _csv_source(path: Path, layout: TextLayout) -> tuple[Any, str]:
    """What to hand to ``pandas.read_csv`` and the one-character separator to use."""
    if len(layout.sep) == 1:
        return (path if compression_of(path) is None else open_text_bytes(path)), layout.sep
    return io.BufferedReader(_SeparatorStream(path, layout.sep.encode(layout.encoding))), "\t"


def _csv_options(layout: TextLayout, id_columns: Sequence[str] | None,
                 all_text: bool) -> dict[str, Any]:
    dtype: Any = str if all_text else None
    if id_columns and not all_text:
        # text, not "category": pandas infers numeric categories, which turns 007 into 7
        dtype = {(c if layout.header else int(c)): str for c in id_columns}
    return {"header": 0 if layout.header else None, "dtype": dtype, "keep_default_na": False,
            "na_values": [""], "skip_blank_lines": True, "engine": "c"}


def _parse_error(path: Path, exc: Exception) -> RecompareError:
    message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return RecompareError(f"cannot parse {path}: {message}")


def _named(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def read_table(path: str | Path, sep: str | None = None, header: bool | None = None,
               encoding: str | None = None, wanted: Sequence[str] = (),
               id_columns: Sequence[str] | None = None, all_text: bool = False,
               nrows: int | None = None) -> tuple[pd.DataFrame, int]:
    """Read a whole delimited text or Parquet table.

    Parameters
    ----------
    id_columns : column names (or positions as strings, without a header)
        Read as text (so ids such as ``007`` keep their zeros); other columns
        get pandas' type inference.
    all_text : bool
        Read every column as text (side tables).

    Returns
    -------
    (DataFrame, int)
        Column names are strings (positions ``"0"``, ``"1"``, ... without a
        header), and the file line number of the first data row.
    """
    path = Path(path)
    if not path.is_file():
        raise RecompareError(f"no such file: {path}")
    if is_parquet(path):
        return read_parquet(path, nrows), 2
    layout = sniff_layout(path, sep, header, encoding, wanted)
    frame = None
    for attempt in (layout.encoding, "latin-1"):
        source, one_char = _csv_source(path, layout)
        try:
            frame = pd.read_csv(source, sep=one_char, encoding=attempt, nrows=nrows,
                                **_csv_options(layout, id_columns, all_text))
            break
        except UnicodeDecodeError:
            if attempt == "latin-1":
                raise
        except RecompareError:
            raise
        except (pd.errors.ParserError, ValueError, EOFError, OSError, lzma.LZMAError) as exc:
            raise _parse_error(path, exc) from None
        finally:
            if not isinstance(source, Path):
                source.close()
    assert frame is not None
    if frame.empty:
        raise RecompareError(f"{path} has no data rows")
    return _named(frame, path), (2 if layout.header else 1)


def read_table_chunks(path: Path, layout: TextLayout, id_columns: Sequence[str],
                      chunk_rows: int | None) -> Iterator[tuple[pd.DataFrame, int]]:
    """Chunks of at most ``chunk_rows`` rows of a delimited file (None: all at once).

    Yields ``(frame, first_line)``: the file line number of the chunk's first
    row, for error messages.  Raises ``UnicodeDecodeError`` when the file is
    not in ``layout.encoding`` (the caller retries in latin-1).
    """
    first_line = 2 if layout.header else 1
    source, one_char = _csv_source(path, layout)
    try:
        reader = pd.read_csv(source, sep=one_char, encoding=layout.encoding,
                             chunksize=chunk_rows, **_csv_options(layout, id_columns, False))
        chunks = [reader] if chunk_rows is None else reader
        for chunk in chunks:
            if chunk.empty:
                continue
            yield _named(chunk, path), first_line
            first_line += len(chunk)
    except (pd.errors.ParserError, ValueError, EOFError, OSError, lzma.LZMAError) as exc:
        if isinstance(exc, (UnicodeDecodeError, RecompareError)):
            raise
        raise _parse_error(path, exc) from None
    finally:
        if not isinstance(source, Path):
            source.close()


def read_parquet(path: Path, nrows: int | None = None) -> pd.DataFrame:
    """A Parquet file (needs pyarrow), or its first ``nrows`` rows, with string column names."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RecompareError(
            "reading Parquet needs pyarrow: pip install 'recompare[parquet]'") from None
    try:
        if nrows:
            # a preview reads one batch, not the whole file
            batch = next(pq.ParquetFile(path).iter_batches(batch_size=nrows), None)
            frame = batch.to_pandas() if batch is not None else pd.DataFrame()
        else:
            frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's errors subclass these
        raise RecompareError(f"cannot read Parquet file {path}: {exc}") from None
    frame.columns = [str(c) for c in frame.columns]
    if frame.empty:
        raise RecompareError(f"{path} has no data rows")
    return frame


def resolve_column(option: str | None, frame: pd.DataFrame, aliases: Sequence[str],
                   what: str, flag: str, path: Path, required: bool,
                   position: int | None = None) -> str | None:
    """The column of ``frame`` an option names (name, any case, or 0-based position),
    else the first known alias, else ``position`` for a headerless file."""
    columns = list(frame.columns)
    lowered = {c.lower(): c for c in columns}
    if option is not None:
        if option in columns:
            return option
        if option.lower() in lowered:
            return lowered[option.lower()]
        if option.isdigit() and int(option) < len(columns):
            return columns[int(option)]
        raise RecompareError(f"column {option!r} ({flag}) not found in {path.name}; its columns "
                             f"are: {', '.join(columns)}")
    for alias in aliases:
        if alias in lowered:
            return lowered[alias]
    if position is not None and columns == [str(i) for i in range(len(columns))] \
            and position < len(columns):
        return columns[position]  # headerless file: MovieLens order user, item, value, time
    if required:
        raise RecompareError(f"cannot tell which column of {path.name} holds {what} (columns: "
                             f"{', '.join(columns)}); pass {flag}")
    return None


# ------------------------------------------------------------------ value checks
_MISSING_TEXT = {"", "nan", "na", "n/a", "null", "none"}


def _numeric(series: pd.Series, column: str, path: Path, first_line: int,
             what: str = "value") -> np.ndarray:
    """Float values of a column; one clear error for missing or non-numeric entries."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=np.float64)
    else:
        values = pd.to_numeric(series.astype("string"), errors="coerce").to_numpy(
            dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        where = int(np.flatnonzero(bad)[0])
        raw = series.iloc[where]
        line = first_line + where
        if pd.isna(raw) or str(raw).strip().lower() in _MISSING_TEXT:
            raise RecompareError(f"{path.name}: column {column!r} has {int(bad.sum())} missing "
                                 f"or NaN {what}s (first on line {line})")
        raise RecompareError(f"{path.name}: non-numeric {what} {str(raw)!r} in column "
                             f"{column!r} on line {line}")
    return values


def _ids(series: pd.Series, column: str, path: Path, first_line: int, what: str) -> pd.Series:
    """Checked ids: integers stay integers, text becomes a categorical of stripped strings."""
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        # hashing once into categories makes the strip and the later indexing per unique id
        series = series.astype("category")
    if isinstance(series.dtype, pd.CategoricalDtype):
        categories = series.cat.categories.astype(str)
        if not categories.str.strip().equals(categories):
            series = series.astype(str).str.strip().astype("category")
        missing = series.isna() | (series == "")
    else:
        missing = series.isna()
    if missing.any():
        line = first_line + int(np.flatnonzero(missing.to_numpy())[0])
        raise RecompareError(f"{path.name}: column {column!r} has {int(missing.sum())} missing "
                             f"{what} ids (first on line {line})")
    if pd.api.types.is_float_dtype(series):
        if not (series == np.floor(series)).all():
            raise RecompareError(f"{path.name}: column {column!r} holds fractional {what} ids")
        series = series.astype(np.int64)
    return series


def _raw_times(series: pd.Series, column: str, path: Path,
               first_line: int) -> tuple[np.ndarray, str]:
    """``("number", float64)`` for numeric times, ``("datetime", int64 seconds)`` for text."""
    numbers = pd.to_numeric(series.astype("string") if series.dtype == object else series,
                            errors="coerce")
    if numbers.notna().all():
        return numbers.to_numpy(dtype=np.float64), "number"
    text = series.astype(str).str.strip()
    missing = (series.isna() | (text == "")).to_numpy()
    if missing.any():
        line = first_line + int(np.flatnonzero(missing)[0])
        raise RecompareError(f"{path.name}: column {column!r} has {int(missing.sum())} missing "
                             f"times (first on line {line})")
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
    if parsed.isna().any() and numbers.notna().any():
        # epoch numbers with some text: the fault is the first text, not a number
        where = int(np.flatnonzero(numbers.isna().to_numpy())[0])
        raise RecompareError(f"{path.name}: time {str(series.iloc[where])!r} in column "
                             f"{column!r} on line {first_line + where} is not a number, but "
                             "the column holds epoch numbers; fix or remove that row")
    if parsed.isna().any():
        where = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise RecompareError(f"{path.name}: cannot read time {str(series.iloc[where])!r} in "
                             f"column {column!r} on line {first_line + where}")
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.int64), "datetime"


def _epoch_seconds(values: np.ndarray, kind: str) -> tuple[np.ndarray, str]:
    """Epoch seconds (int64) and the unit read: ``s``, ``ms`` or ``datetime``."""
    if kind == "datetime":
        return values.astype(np.int64), "datetime"
    unit = "s"
    # epoch milliseconds are > 1e11 from 1973 on; seconds stay below until year 5138
    if values.size and np.median(values) > 1e11:
        values = values / 1000.0
        unit = "ms"
    return np.floor(values).astype(np.int64), unit


def _concat_ids(parts: list[pd.Series]) -> pd.Series:
    if len(parts) == 1:
        return parts[0].reset_index(drop=True)
    if all(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
        return pd.Series(union_categoricals(parts, ignore_order=True))
    if not any(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
        return pd.concat(parts, ignore_index=True)
    # integer ids in some chunks, text in others: all text, as one read would give
    return pd.Series(union_categoricals([p.astype(str).astype("category") for p in parts],
                                        ignore_order=True))


def log_columns(chunks: Iterable[tuple[pd.DataFrame, int]], path: Path,
                columns: dict[str, str | None]) -> tuple[pd.DataFrame, dict]:
    """Checked ``user``, ``item``[, ``value``][, ``time``] columns of a log, chunk by chunk.

    Only the compact columns of each chunk are kept (ids as categoricals or
    integers, values float64, times int64), never the text, so reading in
    chunks gives the same log as one read with a fraction of the memory.
    """
    parts: dict[str, list] = {"user": [], "item": [], "value": [], "time": []}
    time_kinds = set()
    for frame, first_line in chunks:
        for role in ("user", "item"):
            name = columns[role]
            parts[role].append(_ids(frame[name], name, path, first_line, role))
        if columns["value"] is not None:
            name = columns["value"]
            parts["value"].append(_numeric(frame[name], name, path, first_line))
        if columns["time"] is not None:
            values, kind = _raw_times(frame[columns["time"]], columns["time"], path, first_line)
            parts["time"].append(values)
            time_kinds.add(kind)
    if not parts["user"]:
        raise RecompareError(f"{path} has no data rows")
    log = pd.DataFrame({"user": _concat_ids(parts["user"]), "item": _concat_ids(parts["item"])})
    notes: dict[str, Any] = {"columns": dict(columns)}
    if parts["value"]:
        log["value"] = np.concatenate(parts["value"])
    if parts["time"]:
        if len(time_kinds) > 1:
            raise RecompareError(f"{path.name}: column {columns['time']!r} mixes numbers and "
                                 "date-time text")
        log["time"], notes["time_unit"] = _epoch_seconds(np.concatenate(parts["time"]),
                                                         time_kinds.pop())
    return log, notes


def read_log_columns(path: Path, layout: TextLayout, columns: dict[str, str | None],
                     chunk_rows: int | None = CHUNK_ROWS,
                     reshape: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
                     ) -> tuple[pd.DataFrame, dict]:
    """:func:`log_columns` over :func:`read_table_chunks`, retried in latin-1 when the file
    is not in the sniffed encoding; ``reshape`` renames or selects each chunk's columns."""
    id_columns = [c for c in (columns["user"], columns["item"]) if c is not None]
    for encoding in dict.fromkeys((layout.encoding, "latin-1")):
        chunks = read_table_chunks(path, replace(layout, encoding=encoding),
                                   [] if reshape else id_columns, chunk_rows)
        if reshape is not None:
            chunks = ((reshape(frame), line) for frame, line in chunks)
        try:
            return log_columns(chunks, path, columns)
        except UnicodeDecodeError:
            if encoding == "latin-1":
                raise
    raise AssertionError("unreachable")  # latin-1 decodes any byte string
