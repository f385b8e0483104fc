"""Read interaction logs into a :class:`~recompare.data.dataset.Dataset`.

Sources, auto-detected by content and each selectable explicitly:

* MovieLens as GroupLens distributes it: 100K (``u.data``, ``u.item``,
  ``u.user``; latin-1, pipe/tab separated), 1M and 10M (``ratings.dat``,
  ``movies.dat``, ``users.dat``; ``::`` separated), and the latest/20M/25M
  layout (``ratings.csv``, ``movies.csv``).  Item groups are the primary
  (first listed) genre; user features come from the users file.
* Generic delimited text (separator and header sniffed) or Parquet logs, with
  column mapping (user, item, value, time) and optional item and user side
  tables (a group column, feature columns).

:func:`prepare` then applies the user's policies (duplicates, minimum rating,
k-core), indexes ids (numerically when all ids are integers), and builds the
dataset.  Nothing is dropped unless a policy asks for it, except rows whose
value is exactly 0 (not an interaction in a sparse matrix), which are counted.
"""
from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import RecompareError
from .dataset import Dataset, IdMap, as_csr
from .policies import apply_min_rating, k_core, merge_duplicates, resolve_duplicates

Callback = Callable[[dict], None] | None
FORMATS = ("auto", "movielens", "csv", "parquet")

USER_ALIASES = ("user", "user_id", "userid", "uid", "customer_id", "customer", "visitor_id",
                "member_id", "account_id", "session_id")
ITEM_ALIASES = ("item", "item_id", "itemid", "iid", "movie_id", "movieid", "product_id",
                "productid", "track_id", "song_id", "artist_id", "book_id", "isbn", "asin",
                "article_id", "video_id", "product")
VALUE_ALIASES = ("rating", "value", "score", "count", "weight", "plays", "playcount",
                 "play_count", "clicks", "quantity", "strength", "book_rating")
TIME_ALIASES = ("timestamp", "time", "ts", "datetime", "date", "event_time", "created_at",
                "time_stamp", "unix_time")

ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")
# occupation codes of the MovieLens 1M users.dat (from its README)
ML1M_OCCUPATIONS = ("other", "academic/educator", "artist", "clerical/admin",
                    "college/grad student", "customer service", "doctor/health care",
                    "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
                    "programmer", "retired", "sales/marketing", "scientist", "self-employed",
                    "technician/engineer", "tradesman/craftsman", "unemployed", "writer")
NO_GENRE = "(no genres listed)"


@dataclass
class RawData:
    """A log before policies: one row per event, plus optional side tables.

    Attributes
    ----------
    log : DataFrame
        Columns ``user``, ``item`` (any id values), ``value`` (float, or absent
        for value-less logs), ``time`` (int64 epoch seconds, optional).
    item_table, user_table : DataFrame or None
        Indexed by id (str); item columns ``group`` (primary group name or
        missing) plus metadata; user columns are features (``group`` = a user group).
    feature_kinds : dict
        Feature column -> ``"numeric"`` or ``"categorical"``.
    """

    log: pd.DataFrame
    source: str
    format: str
    item_table: pd.DataFrame | None = None
    user_table: pd.DataFrame | None = None
    feature_kinds: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)


# ------------------------------------------------------------------ detection
def detect_format(source: str | Path) -> str:
    """``movielens``, ``parquet`` or ``csv`` for a path, judged by its content."""
    path = Path(source)
    if not path.exists():
        raise RecompareError(f"no such file or directory: {path}")
    if path.is_dir():
        if _movielens_folder(path) is not None:
            return "movielens"
        raise RecompareError(
            f"cannot tell the format of folder {path}: expected a MovieLens folder (u.data, "
            "ratings.dat or ratings.csv); for another log, pass the file itself")
    if path.name in ("u.data", "ratings.dat"):
        return "movielens"
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == b"PAR1":
        return "parquet"
    if path.suffix.lower() in (".parquet", ".pq"):
        raise RecompareError(f"{path} is named like Parquet but is not a Parquet file")
    return "csv"


def _movielens_folder(path: Path) -> tuple[Path, str] | None:
    """(folder, flavour) for a MovieLens folder, also one level down (an unzipped archive)."""
    candidates = [path] + sorted(p for p in path.iterdir() if p.is_dir())
    for folder in candidates:
        if (folder / "u.data").is_file():
            return folder, "100k"
        if (folder / "ratings.dat").is_file():
            return folder, "1m"
        ratings = folder / "ratings.csv"
        if ratings.is_file():
            with open(ratings, "rb") as handle:
                first = handle.readline().decode("utf-8", "replace").strip().lower()
            if first.startswith("userid,movieid"):
                return folder, "latest"
    return None


# ------------------------------------------------------------------ text helpers
def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise RecompareError(f"no such file: {path}")
    return path.read_bytes()


def _decode(data: bytes, encoding: str | None) -> tuple[str, str]:
    if encoding:
        try:
            return data.decode(encoding), encoding
        except (UnicodeDecodeError, LookupError) as exc:
            raise RecompareError(f"cannot decode as {encoding}: {exc}") from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"  # latin-1 decodes any byte string


def _sniff_sep(lines: list[str], path: Path) -> str:
    for candidate in ("::", "\t", ",", ";", "|"):
        counts = {line.count(candidate) for line in lines}
        if len(counts) == 1 and counts.pop() >= 1:
            return candidate
    for candidate in ("\t", ",", ";", "|"):  # quoted fields can make counts vary
        if all(candidate in line for line in lines):
            return candidate
    raise RecompareError(f"cannot detect the field separator of {path}; pass --sep")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sniff_header(lines: list[str], sep: str, wanted: Sequence[str]) -> bool:
    first = [f.strip().strip('"').strip() for f in lines[0].split(sep)]
    known = {a for a in USER_ALIASES + ITEM_ALIASES + VALUE_ALIASES + TIME_ALIASES}
    if any(f.lower() in known or f in wanted for f in first):
        return True
    if len(lines) > 1:
        second = [f.strip().strip('"') for f in lines[1].split(sep)]
        if any(not _is_number(a) and _is_number(b) for a, b in zip(first, second)):
            return True
    return False


def read_table(path: str | Path, sep: str | None = None, header: bool | None = None,
               encoding: str | None = None, wanted: Sequence[str] = (),
               id_columns: Sequence[str] | None = None, all_text: bool = False,
               nrows: int | None = None) -> tuple[pd.DataFrame, int]:
    """Read a delimited text or Parquet table.

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
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if head[:4] == b"PAR1":
        frame = _read_parquet(path)
        return (frame.head(nrows) if nrows else frame), 2
    cut = head.rfind(b"\n") if len(head) == 1 << 16 else len(head)
    sample, encoding = _decode(head[:cut if cut > 0 else len(head)], encoding)
    lines = [line for line in sample.splitlines()[:50] if line.strip()]
    if not lines:
        raise RecompareError(f"{path} is empty")
    if sep is None:
        sep = _sniff_sep(lines, path)
    elif sep in ("\\t", "tab", "TAB"):
        sep = "\t"
    if header is None:
        header = _sniff_header(lines, sep, wanted)
    source: Any = path
    if len(sep) > 1:
        # pandas' C parser takes one-character separators only; MovieLens '::' files hold
        # no tabs, so translating keeps the fast parser
        data = path.read_bytes()
        if b"\t" in data:
            raise RecompareError(f"{path}: separator {sep!r} with tabs in the data is not "
                                 "supported; convert the file to tab-separated")
        source = io.BytesIO(data.replace(sep.encode(encoding), b"\t"))
        sep = "\t"
    dtype: Any = str if all_text else None
    if id_columns and not all_text:
        # text, not "category": pandas infers numeric categories, which turns 007 into 7
        dtype = {(c if header else int(c)): str for c in id_columns}
    frame = None
    for attempt in (encoding, "latin-1"):
        try:
            if isinstance(source, io.BytesIO):
                source.seek(0)
            frame = pd.read_csv(source, sep=sep, header=0 if header else None, dtype=dtype,
                                keep_default_na=False, na_values=[""], skip_blank_lines=True,
                                encoding=attempt, nrows=nrows, engine="c")
            break
        except UnicodeDecodeError:
            if attempt == "latin-1":
                raise
        except (pd.errors.ParserError, ValueError) as exc:
            message = str(exc).strip().splitlines()[-1]
            raise RecompareError(f"cannot parse {path}: {message}") from None
    assert frame is not None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise RecompareError(f"{path} has no data rows")
    return frame, (2 if header else 1)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise RecompareError(
            "reading Parquet needs pyarrow: pip install 'recompare[parquet]'") from None
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's errors subclass these
        raise RecompareError(f"cannot read Parquet file {path}: {exc}") from None
    frame.columns = [str(c) for c in frame.columns]
    if frame.empty:
        raise RecompareError(f"{path} has no data rows")
    return frame


def _resolve_column(option: str | None, frame: pd.DataFrame, aliases: Sequence[str],
                    what: str, flag: str, path: Path, required: bool,
                    position: int | None = None) -> str | None:
    columns = list(frame.columns)
    if option is not None:
        if option in columns:
            return option
        lowered = {c.lower(): c for c in columns}
        if option.lower() in lowered:
            return lowered[option.lower()]
        if option.isdigit() and int(option) < len(columns):
            return columns[int(option)]
        raise RecompareError(f"column {option!r} ({flag}) not found in {path.name}; its columns "
                             f"are: {', '.join(columns)}")
    lowered = {c.lower(): c for c in columns}
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
        bad = ~np.isfinite(values)
    else:
        text = series.astype("string")
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
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
    if isinstance(series.dtype, pd.CategoricalDtype):
        categories = series.cat.categories.astype(str)
        if not categories.str.strip().equals(categories):
            series = series.astype(str).str.strip().astype("category")
        missing = series.isna() | (series == "")
    elif pd.api.types.is_numeric_dtype(series):
        missing = series.isna()
    else:
        series = series.astype(str).where(series.notna(), None).str.strip()
        missing = series.isna() | (series == "")
    if missing.any():
        line = first_line + int(np.flatnonzero(missing.to_numpy())[0])
        raise RecompareError(f"{path.name}: column {column!r} has {int(missing.sum())} missing "
                             f"{what} ids (first on line {line})")
    if pd.api.types.is_float_dtype(series):
        if not (series == np.floor(series)).all():
            raise RecompareError(f"{path.name}: column {column!r} holds fractional {what} ids")
        series = series.astype(np.int64)
    return series


def _times(series: pd.Series, column: str, path: Path, first_line: int) -> tuple[np.ndarray, str]:
    """Epoch seconds (int64) from numbers (seconds or milliseconds) or date-time text."""
    numbers = pd.to_numeric(series.astype("string") if series.dtype == object else series,
                            errors="coerce")
    if numbers.notna().all():
        values = numbers.to_numpy(dtype=np.float64)
        unit = "s"
        # epoch milliseconds are > 1e11 from 1973 on; seconds stay below until year 5138
        if np.median(values) > 1e11:
            values = values / 1000.0
            unit = "ms"
        return np.floor(values).astype(np.int64), unit
    if series.isna().any() or (series.astype(str).str.strip() == "").any():
        missing = (series.isna() | (series.astype(str).str.strip() == "")).to_numpy()
        line = first_line + int(np.flatnonzero(missing)[0])
        raise RecompareError(f"{path.name}: column {column!r} has {int(missing.sum())} missing "
                             f"times (first on line {line})")
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
    if parsed.isna().any():
        where = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise RecompareError(f"{path.name}: cannot read time {str(series.iloc[where])!r} in "
                             f"column {column!r} on line {first_line + where}")
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.int64), "datetime"


def _log_frame(frame: pd.DataFrame, path: Path, first_line: int, user_col: str, item_col: str,
               value_col: str | None, time_col: str | None) -> tuple[pd.DataFrame, dict]:
    notes: dict[str, Any] = {"columns": {"user": user_col, "item": item_col,
                                         "value": value_col, "time": time_col}}
    log = pd.DataFrame({
        "user": _ids(frame[user_col], user_col, path, first_line, "user"),
        "item": _ids(frame[item_col], item_col, path, first_line, "item"),
    })
    if value_col is not None:
        log["value"] = _numeric(frame[value_col], value_col, path, first_line)
    if time_col is not None:
        log["time"], notes["time_unit"] = _times(frame[time_col], time_col, path, first_line)
    return log.reset_index(drop=True), notes


# ------------------------------------------------------------------ MovieLens
def read_movielens(folder: str | Path, group_col: str | None = None) -> RawData:
    """Read a GroupLens MovieLens folder (100K, 1M/10M, or latest/20M/25M layout).

    ``group_col``: ``None``/``"genres"`` gives each movie its primary (first
    listed) genre as group; ``"none"`` gives no groups.
    """
    path = Path(folder)
    if not path.exists():
        raise RecompareError(f"no such file or directory: {path}")
    if path.is_file():
        path = path.parent
    found = _movielens_folder(path)
    if found is None:
        raise RecompareError(f"{path} is not a MovieLens folder (no u.data, ratings.dat or "
                             "ratings.csv with a userId,movieId header)")
    folder, flavour = found
    if group_col not in (None, "genres", "genre", "none"):
        raise RecompareError(f"--group-col for MovieLens is 'genres' or 'none', not {group_col!r}")
    with_groups = group_col != "none"
    reader = {"100k": _ml100k, "1m": _ml1m, "latest": _mllatest}[flavour]
    raw = reader(folder)
    if raw.item_table is not None and not with_groups:
        raw.item_table = raw.item_table.drop(columns="group")
    return raw


def _ratings(path: Path, sep: str, names: list[str], header: bool) -> pd.DataFrame:
    frame, first_line = read_table(path, sep=sep, header=header)
    if header:
        frame.columns = [c.lower() for c in frame.columns]
        missing = [c for c in names if c.lower() not in frame.columns]
        if missing:
            raise RecompareError(f"{path.name}: missing columns {', '.join(missing)}")
        frame = frame[[c.lower() for c in names]]
    elif frame.shape[1] < len(names):
        raise RecompareError(f"{path.name}: expected {len(names)} fields per line "
                             f"({', '.join(names)}), found {frame.shape[1]}")
    frame = frame.iloc[:, :len(names)]
    frame.columns = ["user", "item", "value", "time"]
    log, _ = _log_frame(frame, path, first_line, "user", "item", "value", "time")
    return log


def _ml100k(folder: Path) -> RawData:
    log = _ratings(folder / "u.data", "\t", ["user", "item", "rating", "timestamp"], False)
    items = None
    if (folder / "u.item").is_file():
        genres = list(ML100K_GENRES)
        if (folder / "u.genre").is_file():
            table, _ = read_table(folder / "u.genre", sep="|", header=False, encoding="latin-1",
                                 all_text=True)
            if table.shape[1] >= 2:
                listed = table.sort_values("1", key=lambda s: pd.to_numeric(s, errors="coerce"))
                genres = listed["0"].astype(str).tolist()
        table, _ = read_table(folder / "u.item", sep="|", header=False, encoding="latin-1",
                                 all_text=True)
        if table.shape[1] < 5 + len(genres):
            raise RecompareError(f"u.item: expected {5 + len(genres)} fields per line "
                                 f"(id, title, dates, URL, {len(genres)} genre flags), found "
                                 f"{table.shape[1]}")
        flags = table.iloc[:, 5:5 + len(genres)].apply(pd.to_numeric, errors="coerce")
        flags = flags.fillna(0).to_numpy() > 0
        names = np.asarray(genres, dtype=object)
        genre_lists = ["|".join(names[row]) for row in flags]
        items = pd.DataFrame({
            "group": [g.split("|")[0] if g else None for g in genre_lists],
            "title": table.iloc[:, 1].fillna("").to_numpy(),
            "genres": genre_lists,
            "release_date": table.iloc[:, 2].fillna("").to_numpy(),
        }, index=table.iloc[:, 0].astype(str).str.strip().to_numpy())
    users, kinds = None, {}
    if (folder / "u.user").is_file():
        table, _ = read_table(folder / "u.user", sep="|", header=False, encoding="latin-1",
                                 all_text=True)
        if table.shape[1] < 4:
            raise RecompareError("u.user: expected id|age|gender|occupation|zip")
        users = pd.DataFrame({
            "age": pd.to_numeric(table.iloc[:, 1], errors="coerce").to_numpy(),
            "gender": table.iloc[:, 2].fillna("unknown").to_numpy(),
            "occupation": table.iloc[:, 3].fillna("unknown").to_numpy(),
        }, index=table.iloc[:, 0].astype(str).str.strip().to_numpy())
        kinds = {"age": "numeric", "gender": "categorical", "occupation": "categorical"}
    return RawData(log=log, source=str(folder), format="movielens-100k", item_table=items,
                   user_table=users, feature_kinds=kinds)


def _genre_items(table: pd.DataFrame) -> pd.DataFrame:
    """Items table from (id, title, 'A|B' genres) columns; group = first genre."""
    genres = table.iloc[:, 2].fillna("").astype(str).str.strip()
    primary = genres.str.split("|").str[0]
    primary = primary.where((primary != "") & (primary != NO_GENRE), None)
    return pd.DataFrame({
        "group": primary.to_numpy(),
        "title": table.iloc[:, 1].fillna("").to_numpy(),
        "genres": genres.to_numpy(),
    }, index=table.iloc[:, 0].astype(str).str.strip().to_numpy())


def _ml1m(folder: Path) -> RawData:
    log = _ratings(folder / "ratings.dat", "::", ["user", "item", "rating", "timestamp"], False)
    items = None
    if (folder / "movies.dat").is_file():
        table, _ = read_table(folder / "movies.dat", sep="::", header=False,
                                 all_text=True)
        if table.shape[1] < 3:
            raise RecompareError("movies.dat: expected MovieID::Title::Genres")
        items = _genre_items(table)
    users, kinds = None, {}
    if (folder / "users.dat").is_file():
        table, _ = read_table(folder / "users.dat", sep="::", header=False,
                                 all_text=True)
        if table.shape[1] < 4:
            raise RecompareError("users.dat: expected UserID::Gender::Age::Occupation::Zip-code")
        codes = pd.to_numeric(table.iloc[:, 3], errors="coerce")
        names = np.asarray(ML1M_OCCUPATIONS, dtype=object)
        occupation = [names[int(c)] if pd.notna(c) and 0 <= c < len(names) else "unknown"
                      for c in codes]
        users = pd.DataFrame({
            "gender": table.iloc[:, 1].fillna("unknown").to_numpy(),
            "age": pd.to_numeric(table.iloc[:, 2], errors="coerce").to_numpy(),
            "occupation": occupation,
        }, index=table.iloc[:, 0].astype(str).str.strip().to_numpy())
        kinds = {"gender": "categorical", "age": "numeric", "occupation": "categorical"}
    flavour = "movielens-1m" if (folder / "users.dat").is_file() else "movielens-10m"
    return RawData(log=log, source=str(folder), format=flavour, item_table=items,
                   user_table=users, feature_kinds=kinds)


def _mllatest(folder: Path) -> RawData:
    log = _ratings(folder / "ratings.csv", ",", ["userId", "movieId", "rating", "timestamp"],
                   True)
    items = None
    if (folder / "movies.csv").is_file():
        table, _ = read_table(folder / "movies.csv", sep=",", header=True,
                                 all_text=True)
        lowered = [c.lower() for c in table.columns]
        if lowered[:3] != ["movieid", "title", "genres"]:
            raise RecompareError("movies.csv: expected columns movieId,title,genres")
        items = _genre_items(table)
    return RawData(log=log, source=str(folder), format="movielens-latest", item_table=items)


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
) -> RawData:
    """Read a CSV/TSV/Parquet interaction log and optional side tables.

    Column options take a name (case-insensitive) or a 0-based position.
    Without them, common names are recognised (``user``/``user_id``/``userId``,
    ``item``/``item_id``/``movieId``, ``rating``/``value``/``count``,
    ``timestamp``/``time``/``date``); a headerless file is read as user,
    item[, value[, time]].
    """
    path = Path(path)
    wanted = [c for c in (user_col, item_col, value_col, time_col) if c]
    # a short preview (all text) settles header and columns; then one typed full read
    frame, first_line = read_table(path, sep=sep, header=header, encoding=encoding,
                                   wanted=wanted, all_text=True, nrows=50)
    columns = {
        "user": _resolve_column(user_col, frame, USER_ALIASES, "user ids", "--user-col", path,
                                True, 0),
        "item": _resolve_column(item_col, frame, ITEM_ALIASES, "item ids", "--item-col", path,
                                True, 1),
        "value": _resolve_column(value_col, frame, VALUE_ALIASES, "values", "--value-col", path,
                                 False, 2),
        "time": _resolve_column(time_col, frame, TIME_ALIASES, "times", "--time-col", path,
                                False, 3),
    }
    if columns["user"] == columns["item"]:
        raise RecompareError(f"user and item columns are the same ({columns['user']!r})")
    header = first_line == 2
    frame, first_line = read_table(path, sep=sep, header=header, encoding=encoding,
                                   id_columns=[columns["user"], columns["item"]])
    log, notes = _log_frame(frame, path, first_line, columns["user"], columns["item"],
                            columns["value"], columns["time"])
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
    fmt = "parquet" if path.read_bytes()[:4] == b"PAR1" else "csv"
    return RawData(log=log, source=str(path), format=fmt, item_table=item_table,
                   user_table=user_table, feature_kinds=kinds, notes=notes)


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
        column = _resolve_column(group_col, table, (), "groups", "--group-col", path, True)
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
        column = _resolve_column(user_group_col, table, (), "user groups", "--user-group-col",
                                 path, True)
        out["group"] = table[column].astype(object).to_numpy()
        table = table.drop(columns=column)
    if feature_cols is None:
        feature_cols = list(table.columns)
    kinds = {}
    for name in feature_cols:
        column = _resolve_column(name, table, (), "features", "--feature-cols", path, True)
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
    min_rating: float | None = None,
    duplicates: str = "auto",
    min_user_interactions: int = 1,
    min_item_interactions: int = 1,
    encoding: str | None = None,
    callback: Callback = None,
) -> Dataset:
    """Load ``source`` and build a :class:`Dataset` (no split; see :func:`split`).

    Parameters
    ----------
    source : path
        A MovieLens folder, or a CSV/TSV/Parquet interaction log.
    format : {"auto", "movielens", "csv", "parquet"}
    user_col, item_col, value_col, time_col, sep, header, encoding
        Generic logs only: column mapping and parsing (see :func:`read_log`).
    items, users : path, optional
        Generic logs only: side tables keyed by item / user id.
    group_col : str, optional
        Item group column of ``items`` (``"a|b"`` lists give ``a``); for
        MovieLens ``"genres"`` (default: primary genre) or ``"none"``.
    user_group_col : str, optional
        User group column of ``users``.
    feature_cols : list of str, optional
        User feature columns of ``users`` (default: all but the id).
    min_rating : float, optional
        Implicit feedback: keep values >= ``min_rating``, set to 1.
    duplicates : {"auto", "sum", "max", "last"}
        Repeated (user, item) rows; ``auto`` = ``sum`` when there is no value
        column (values count events), else ``last``.
    min_user_interactions, min_item_interactions : int
        k-core filter, applied until both hold (default 1: keep everything).
    callback : callable(dict), optional
        Progress events ``{"stage": "load", "message": ...}``.

    Returns
    -------
    Dataset
        Ids sorted (numerically when all are integers); items with no
        interactions are not included; ``meta`` records the source, options
        and how many rows each policy removed.
    """
    emit = callback or (lambda event: None)
    if format not in FORMATS:
        raise RecompareError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if min_user_interactions < 1 or min_item_interactions < 1:
        raise RecompareError("minimum interactions per user/item must be at least 1")
    if min_rating is not None and not np.isfinite(min_rating):
        raise RecompareError(f"--min-rating must be a number, got {min_rating}")
    path = Path(source)
    detected = detect_format(path) if format == "auto" else format
    if not path.exists():
        raise RecompareError(f"no such file or directory: {path}")
    generic_options = {"user_col": user_col, "item_col": item_col, "value_col": value_col,
                       "time_col": time_col, "sep": sep, "header": header, "items": items,
                       "users": users, "user_group_col": user_group_col,
                       "feature_cols": feature_cols}
    if detected == "movielens":
        given = [k for k, v in generic_options.items() if v is not None]
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise RecompareError(f"{flags} apply to CSV/Parquet logs, not to a MovieLens folder "
                                 "(pass --format csv and the ratings file to map columns)")
        emit({"stage": "load", "message": f"reading MovieLens folder {path}"})
        raw = read_movielens(path, group_col=group_col)
    else:
        if path.is_dir():
            raise RecompareError(f"{path} is a folder; pass the {detected} file itself")
        if detected == "parquet" and _read_bytes(path)[:4] != b"PAR1":
            raise RecompareError(f"{path} is not a Parquet file (use --format csv)")
        emit({"stage": "load", "message": f"reading {detected} log {path}"})
        raw = read_log(path, user_col=user_col, item_col=item_col, value_col=value_col,
                       time_col=time_col, sep=sep, header=header, items=items, users=users,
                       group_col=group_col, user_group_col=user_group_col,
                       feature_cols=feature_cols, encoding=encoding)
    options = {
        "format": raw.format, "min_rating": min_rating,
        "duplicates": resolve_duplicates(duplicates, "value" in raw.log.columns),
        "min_user_interactions": int(min_user_interactions),
        "min_item_interactions": int(min_item_interactions),
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in generic_options.items()
           if v is not None},
    }
    if group_col is not None:
        options["group_col"] = group_col
    return build(raw, options, emit)


def build(raw: RawData, options: dict, emit: Callable[[dict], None] | None = None) -> Dataset:
    """Apply policies to a :class:`RawData` and index it into a :class:`Dataset`."""
    emit = emit or (lambda event: None)
    log = raw.log
    stats: dict[str, int] = {"rows_read": len(log)}
    if log.empty:
        raise RecompareError(f"{raw.source} has no interactions")
    has_value = "value" in log.columns
    if not has_value:
        log = log.assign(value=1.0)
    if has_value and (log["value"] < 0).any():
        where = int(np.flatnonzero((log["value"] < 0).to_numpy())[0])
        raise RecompareError(
            f"{Path(raw.source).name}: negative value {log['value'].iloc[where]:g} (row "
            f"{where + 1}); interaction strengths must be >= 0 (use --min-rating for ratings)")
    log, stats["duplicates_merged"] = merge_duplicates(log, options.get("duplicates", "sum"))
    min_rating = options.get("min_rating")
    if min_rating is not None:
        before = len(log)
        log = apply_min_rating(log, float(min_rating))
        stats["below_min_rating"] = before - len(log)
        if log.empty:
            raise RecompareError(f"no interactions left after --min-rating {min_rating:g}")
    zero = log["value"] == 0
    if zero.any():
        # a stored 0 is not an interaction in a sparse matrix; count it instead of hiding it
        stats["zero_values_dropped"] = int(zero.sum())
        log = log.loc[~zero].reset_index(drop=True)
        if log.empty:
            raise RecompareError(f"{raw.source}: every value is 0; nothing to learn from")
    before = len(log)
    log = k_core(log, options.get("min_user_interactions", 1),
                 options.get("min_item_interactions", 1))
    if len(log) < before:
        stats["kcore_removed"] = before - len(log)
    if log.empty:
        raise RecompareError(
            f"no interactions left after the k-core filter (--min-user-interactions "
            f"{options.get('min_user_interactions')}, --min-item-interactions "
            f"{options.get('min_item_interactions')})")
    emit({"stage": "load", "message": f"{len(log):,} interactions after policies"})

    user_codes, user_ids = _index(log["user"])
    item_codes, item_ids = _index(log["item"])
    shape = (len(user_ids), len(item_ids))
    interactions = as_csr(sp.coo_matrix(
        (log["value"].to_numpy(np.float32), (user_codes, item_codes)), shape=shape))
    timestamps = None
    if "time" in log.columns:
        timestamps = sp.csr_matrix(
            (log["time"].to_numpy(np.int64), (user_codes, item_codes)), shape=shape)
        timestamps.sort_indices()

    item_groups, group_names, item_info = None, (), None
    if raw.item_table is not None:
        table = raw.item_table.reindex(item_ids)
        matched = int(raw.item_table.index.isin(item_ids).sum())
        stats["catalogue_items_without_interactions"] = int(len(raw.item_table) - matched)
        stats["items_missing_from_item_table"] = int(len(item_ids) - matched)
        if "group" in table.columns:
            item_groups, group_names = _group_codes(table["group"])
            table = table.drop(columns="group")
        if table.shape[1]:
            item_info = table.reset_index(drop=True)
            for column in item_info.columns:
                if not pd.api.types.is_numeric_dtype(item_info[column]):
                    item_info[column] = item_info[column].astype(object).fillna("")
    user_features, user_groups = None, None
    if raw.user_table is not None:
        table = raw.user_table.reindex(user_ids)
        stats["users_missing_from_user_table"] = int(
            len(user_ids) - raw.user_table.index.isin(user_ids).sum())
        if "group" in table.columns:
            codes, names = _group_codes(table["group"])
            if item_groups is None:
                user_groups, group_names = codes, names
            else:
                # share one name list: user group names must be item group names
                lookup = {n: i for i, n in enumerate(group_names)}
                user_groups = np.array([lookup.get(names[c], -1) if c >= 0 else -1
                                        for c in codes], dtype=np.int64)
            table = table.drop(columns="group")
        features = {}
        for column in table.columns:
            kind = raw.feature_kinds.get(column, "categorical")
            values = table[column]
            if kind == "numeric":
                numbers = pd.to_numeric(values, errors="coerce").astype(np.float64)
                missing = int(numbers.isna().sum())
                if missing:
                    # models need a number for everyone: the median, counted in meta
                    stats[f"feature_{column}_filled_with_median"] = missing
                    numbers = numbers.fillna(numbers.median() if numbers.notna().any() else 0.0)
                features[column] = numbers.to_numpy(np.float32)
            else:
                features[column] = values.astype(object).where(values.notna(), "unknown") \
                    .astype(str).to_numpy(dtype=object)
        if features:
            user_features = pd.DataFrame(features)
    meta = {"source": raw.source, "options": options, "preparation": stats, **raw.notes}
    emit({"stage": "load", "message": f"{shape[0]:,} users x {shape[1]:,} items"})
    return Dataset(
        interactions=interactions,
        users=IdMap(user_ids),
        items=IdMap(item_ids),
        item_groups=item_groups,
        user_groups=user_groups,
        group_names=tuple(group_names),
        user_features=user_features,
        item_info=item_info,
        timestamps=timestamps,
        meta=meta,
    )


_INTEGER = re.compile(r"^-?\d+$")


def _index(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes and sorted unique ids (as strings): numeric order for integer ids."""
    if pd.api.types.is_integer_dtype(ids):
        codes, uniques = pd.factorize(ids, sort=True)
        return codes, np.asarray(uniques).astype(str)
    if isinstance(ids.dtype, pd.CategoricalDtype):
        ids = ids.cat.remove_unused_categories()
        codes = ids.cat.codes.to_numpy().astype(np.int64)
        uniques = np.asarray(ids.cat.categories.astype(str), dtype=object)
    else:
        codes, uniques = pd.factorize(ids.astype(str), sort=False)
        uniques = np.asarray(uniques, dtype=object)
    if all(_INTEGER.match(u) for u in uniques) and all(len(u) < 19 for u in uniques):
        order = np.argsort(uniques.astype(np.int64), kind="stable")
    else:
        order = np.argsort(uniques.astype(str), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], uniques[order].astype(str)


def _group_codes(groups: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes (-1 = none) and names ordered by size (largest first), then name."""
    values = groups.astype(object).where(groups.notna(), None)
    present = [v for v in values if v is not None and str(v) != ""]
    counts = pd.Series(present, dtype=object).astype(str).value_counts()
    names = sorted(counts.index, key=lambda n: (-counts[n], n))
    lookup = {n: i for i, n in enumerate(names)}
    codes = np.array([lookup.get(str(v), -1) if v is not None else -1 for v in values],
                     dtype=np.int64)
    return codes, tuple(names)
