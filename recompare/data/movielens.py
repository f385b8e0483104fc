"""GroupLens MovieLens folders: 100K, 1M/10M and the latest/20M/25M layout.

Item groups are the primary (first listed) genre; user features come from the
users file where the layout has one (100K, 1M).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import RecompareError
from .build import RawData
from .readers import CHUNK_ROWS, read_log_columns, read_table
from .sniff import sniff_layout

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


def movielens_folder(path: Path) -> tuple[Path, str] | None:
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


def read_movielens(folder: str | Path, group_col: str | None = None,
                   chunk_rows: int | None = CHUNK_ROWS) -> RawData:
    """Read a GroupLens MovieLens folder (100K, 1M/10M, or latest/20M/25M layout).

    ``group_col``: ``None``/``"genres"`` gives each movie its primary (first
    listed) genre as group; ``"none"`` gives no groups.  The ratings file is
    read in chunks of ``chunk_rows`` rows (None: at once).
    """
    path = Path(folder)
    if not path.exists():
        raise RecompareError(f"no such file or directory: {path}")
    if path.is_file():
        path = path.parent
    found = movielens_folder(path)
    if found is None:
        raise RecompareError(f"{path} is not a MovieLens folder (no u.data, ratings.dat or "
                             "ratings.csv with a userId,movieId header)")
    folder, flavour = found
    if group_col not in (None, "genres", "genre", "none"):
        raise RecompareError(f"--group-col for MovieLens is 'genres' or 'none', not {group_col!r}")
    reader = {"100k": _ml100k, "1m": _ml1m, "latest": _mllatest}[flavour]
    raw = reader(folder, chunk_rows)
    if raw.item_table is not None and group_col == "none":
        raw.item_table = raw.item_table.drop(columns="group")
    return raw


def _ratings(path: Path, sep: str, names: list[str], header: bool,
             chunk_rows: int | None) -> pd.DataFrame:
    """The ratings file as a log, read in chunks of ``chunk_rows`` rows."""
    if not path.is_file():
        raise RecompareError(f"no such file: {path}")

    def reshape(frame: pd.DataFrame) -> pd.DataFrame:
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
        return frame

    layout = sniff_layout(path, sep, header)
    log, _ = read_log_columns(path, layout, {"user": "user", "item": "item", "value": "value",
                                             "time": "time"}, chunk_rows, reshape)
    return log


def _side_text(path: Path, sep: str, header: bool, **options) -> pd.DataFrame:
    table, _ = read_table(path, sep=sep, header=header, all_text=True, **options)
    return table


def _id_index(table: pd.DataFrame) -> np.ndarray:
    return table.iloc[:, 0].astype(str).str.strip().to_numpy()


def _ml100k_genres(folder: Path) -> list[str]:
    genres = list(ML100K_GENRES)
    if (folder / "u.genre").is_file():
        table = _side_text(folder / "u.genre", "|", False, encoding="latin-1")
        if table.shape[1] >= 2:
            listed = table.sort_values("1", key=lambda s: pd.to_numeric(s, errors="coerce"))
            genres = listed["0"].astype(str).tolist()
    return genres


def _ml100k_items(folder: Path) -> pd.DataFrame:
    genres = _ml100k_genres(folder)
    table = _side_text(folder / "u.item", "|", False, encoding="latin-1")
    if table.shape[1] < 5 + len(genres):
        raise RecompareError(f"u.item: expected {5 + len(genres)} fields per line "
                             f"(id, title, dates, URL, {len(genres)} genre flags), found "
                             f"{table.shape[1]}")
    flags = table.iloc[:, 5:5 + len(genres)].apply(pd.to_numeric, errors="coerce")
    flags = flags.fillna(0).to_numpy() > 0
    names = np.asarray(genres, dtype=object)
    genre_lists = ["|".join(names[row]) for row in flags]
    return pd.DataFrame({
        "group": [g.split("|")[0] if g else None for g in genre_lists],
        "title": table.iloc[:, 1].fillna("").to_numpy(),
        "genres": genre_lists,
        "release_date": table.iloc[:, 2].fillna("").to_numpy(),
    }, index=_id_index(table))


def _ml100k(folder: Path, chunk_rows: int | None) -> RawData:
    log = _ratings(folder / "u.data", "\t", ["user", "item", "rating", "timestamp"], False,
                   chunk_rows)
    items = _ml100k_items(folder) if (folder / "u.item").is_file() else None
    users, kinds = None, {}
    if (folder / "u.user").is_file():
        table = _side_text(folder / "u.user", "|", False, encoding="latin-1")
        if table.shape[1] < 4:
            raise RecompareError("u.user: expected id|age|gender|occupation|zip")
        users = pd.DataFrame({
            "age": pd.to_numeric(table.iloc[:, 1], errors="coerce").to_numpy(),
            "gender": table.iloc[:, 2].fillna("unknown").to_numpy(),
            "occupation": table.iloc[:, 3].fillna("unknown").to_numpy(),
        }, index=_id_index(table))
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
    }, index=_id_index(table))


def _ml1m_users(path: Path) -> pd.DataFrame:
    table = _side_text(path, "::", False)
    if table.shape[1] < 4:
        raise RecompareError("users.dat: expected UserID::Gender::Age::Occupation::Zip-code")
    codes = pd.to_numeric(table.iloc[:, 3], errors="coerce")
    names = np.asarray(ML1M_OCCUPATIONS, dtype=object)
    occupation = [names[int(c)] if pd.notna(c) and 0 <= c < len(names) else "unknown"
                  for c in codes]
    return pd.DataFrame({
        "gender": table.iloc[:, 1].fillna("unknown").to_numpy(),
        "age": pd.to_numeric(table.iloc[:, 2], errors="coerce").to_numpy(),
        "occupation": occupation,
    }, index=_id_index(table))


def _ml1m(folder: Path, chunk_rows: int | None) -> RawData:
    log = _ratings(folder / "ratings.dat", "::", ["user", "item", "rating", "timestamp"], False,
                   chunk_rows)
    items = None
    if (folder / "movies.dat").is_file():
        table = _side_text(folder / "movies.dat", "::", False)
        if table.shape[1] < 3:
            raise RecompareError("movies.dat: expected MovieID::Title::Genres")
        items = _genre_items(table)
    users, kinds = None, {}
    if (folder / "users.dat").is_file():
        users = _ml1m_users(folder / "users.dat")
        kinds = {"gender": "categorical", "age": "numeric", "occupation": "categorical"}
    flavour = "movielens-1m" if (folder / "users.dat").is_file() else "movielens-10m"
    return RawData(log=log, source=str(folder), format=flavour, item_table=items,
                   user_table=users, feature_kinds=kinds)


def _mllatest(folder: Path, chunk_rows: int | None) -> RawData:
    log = _ratings(folder / "ratings.csv", ",", ["userId", "movieId", "rating", "timestamp"],
                   True, chunk_rows)
    items = None
    if (folder / "movies.csv").is_file():
        table = _side_text(folder / "movies.csv", ",", True)
        lowered = [c.lower() for c in table.columns]
        if lowered[:3] != ["movieid", "title", "genres"]:
            raise RecompareError("movies.csv: expected columns movieId,title,genres")
        items = _genre_items(table)
    return RawData(log=log, source=str(folder), format="movielens-latest", item_table=items)
