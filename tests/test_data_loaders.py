"""Loaders: MovieLens layouts, generic logs, side tables, policies, round trips."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recompare.data import Dataset, detect_format, prepare, split
from recompare.errors import RecompareError

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def write_ml100k(root: Path, n_users: int = 30, n_items: int = 40, seed: int = 0) -> int:
    """Small files in the GroupLens 100K layout; returns the number of ratings."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        for i in rng.choice(np.arange(1, n_items + 1), size=rng.integers(3, 12), replace=False):
            rows.append(f"{u}\t{i}\t{rng.integers(1, 6)}\t{874965758 + rng.integers(0, 10**6)}")
    # every item rated at least once, as in the real data set
    rated = {int(r.split("\t")[1]) for r in rows}
    for i in sorted(set(range(1, n_items + 1)) - rated):
        rows.append(f"1\t{i}\t3\t874965758")
    (root / "u.data").write_text("\n".join(rows) + "\n")
    with open(root / "u.item", "wb") as handle:
        for i in range(1, n_items + 1):
            flags = ["0"] * 19
            flags[1 + i % 18] = "1"
            flags[1 + (i * 7) % 18] = "1"
            line = f"{i}|Caf\xe9 {i} (1995)|01-Jan-1995||http://example/{i}|{'|'.join(flags)}\n"
            handle.write(line.encode("latin-1"))  # GroupLens ships latin-1
    with open(root / "u.user", "w") as handle:
        for u in range(1, n_users + 1):
            handle.write(f"{u}|{20 + u}|{'MF'[u % 2]}|{['student', 'other'][u % 2]}|{10000 + u}\n")
    (root / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(ML100K_GENRES)))
    return len(rows)


def test_ml100k_layout(tmp_path):
    n = write_ml100k(tmp_path / "ml-100k")
    assert detect_format(tmp_path / "ml-100k") == "movielens"
    ds = prepare(tmp_path / "ml-100k")
    assert (ds.n_users, ds.n_items, ds.interactions.nnz) == (30, 40, n)
    assert ds.meta["options"]["format"] == "movielens-100k"
    assert ds.users.ids[:3].tolist() == ["1", "2", "3"]  # numeric order, not "1", "10", ...
    assert ds.items.ids[9] == "10"
    raw = pd.read_csv(tmp_path / "ml-100k" / "u.data", sep="\t", header=None)
    first = raw.iloc[0]
    u, i = ds.users.index(str(first[0]))[0], ds.items.index(str(first[1]))[0]
    assert ds.interactions[u, i] == first[2]
    assert ds.timestamps[u, i] == first[3]
    # primary genre = first flagged genre in u.genre order
    item7 = ds.items.index("7")[0]
    flagged = sorted({1 + 7 % 18, 1 + 49 % 18})
    assert ds.group_names[ds.item_groups[item7]] == ML100K_GENRES[flagged[0]]
    assert ds.item_info["title"][0] == "Caf\xe9 1 (1995)"
    assert "|" in ds.item_info["genres"][item7]
    assert list(ds.user_features.columns) == ["age", "gender", "occupation"]
    assert ds.user_features["age"].iloc[0] == 21.0
    assert ds.user_features["gender"].iloc[0] == "F"


def test_ml100k_figures_scale(tmp_path):
    # the issue's figure: nothing is dropped by default (943 users, 1,682 items, 100,000)
    n = write_ml100k(tmp_path / "big", n_users=943, n_items=1682, seed=1)
    ds = prepare(tmp_path / "big")
    assert (ds.n_users, ds.n_items, ds.interactions.nnz) == (943, 1682, n)


def test_ml100k_found_one_level_down_and_through_u_data(tmp_path):
    write_ml100k(tmp_path / "download" / "ml-100k")
    assert prepare(tmp_path / "download").n_users == 30
    assert prepare(tmp_path / "download" / "ml-100k" / "u.data").n_users == 30


def test_ml1m_layout(tmp_path):
    root = tmp_path / "ml-1m"
    root.mkdir()
    (root / "ratings.dat").write_text("1::10::5::978300760\n1::20::3::978302109\n"
                                      "2::10::4::978301968\n2::30::1::978300275\n"
                                      "3::20::2::978824291\n")
    (root / "movies.dat").write_bytes(
        "10::Toy Story (1995)::Animation|Children's|Comedy\n"
        "20::Jumanji (1995)::Adventure|Children's|Fantasy\n"
        "30::Am\xe9lie (2001)::Comedy|Romance\n".encode("latin-1"))
    (root / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n"
                                    "3::M::25::15::55117\n")
    ds = prepare(root)
    assert (ds.n_users, ds.n_items, ds.interactions.nnz) == (3, 3, 5)
    assert ds.meta["options"]["format"] == "movielens-1m"
    groups = dict(zip(ds.items.ids, np.asarray(ds.group_names)[ds.item_groups]))
    assert groups == {"10": "Animation", "20": "Adventure", "30": "Comedy"}
    assert ds.item_info["title"].tolist()[2] == "Am\xe9lie (2001)"
    assert ds.user_features["occupation"].tolist() == ["K-12 student", "self-employed",
                                                       "scientist"]
    assert ds.user_features["age"].tolist() == [1.0, 56.0, 25.0]
    assert ds.interactions[ds.users.index("2")[0], ds.items.index("30")[0]] == 1.0
    no_groups = prepare(root, group_col="none")
    assert no_groups.item_groups is None and no_groups.item_info is not None


def test_ml_latest_layout(tmp_path):
    root = tmp_path / "ml-latest-small"
    root.mkdir()
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"
                                      "1,3,4.5,964981247\n2,1,0.5,964982224\n3,2,5.0,964983815\n")
    (root / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        "3,Heat (1995),(no genres listed)\n4,Never Rated (2000),Drama\n")
    ds = prepare(root)
    assert (ds.n_users, ds.n_items, ds.interactions.nnz) == (3, 3, 4)
    assert ds.meta["options"]["format"] == "movielens-latest"
    assert ds.meta["preparation"]["catalogue_items_without_interactions"] == 1
    assert ds.item_info["title"].tolist()[1] == "American President, The (1995)"
    heat = ds.items.index("3")[0]
    assert ds.item_groups[heat] == -1  # "(no genres listed)" has no group
    assert ds.interactions[ds.users.index("1")[0], heat] == 4.5
    implicit = prepare(root, min_rating=4)
    assert implicit.interactions.nnz == 3 and np.all(implicit.interactions.data == 1)
    assert implicit.meta["preparation"]["below_min_rating"] == 1


def test_movielens_rejects_generic_column_options(tmp_path):
    write_ml100k(tmp_path / "ml")
    with pytest.raises(RecompareError, match="--user-col"):
        prepare(tmp_path / "ml", user_col="x")


# ------------------------------------------------------------------ generic logs
def test_csv_with_recognised_column_names(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,product_id,count,event_time\n"
                    "alice,p1,2,2021-01-01T10:00:00Z\nbob,p1,1,2021-01-02\n"
                    "alice,p2,5,2021-01-03 12:00\n")
    ds = prepare(path)
    assert ds.users.ids.tolist() == ["alice", "bob"]
    assert ds.interactions[0, ds.items.index("p2")[0]] == 5
    assert ds.timestamps[0, 0] == pd.Timestamp("2021-01-01T10:00:00Z").timestamp()
    assert ds.meta["columns"] == {"user": "user_id", "item": "product_id", "value": "count",
                                  "time": "event_time"}


def test_headerless_tsv_and_positions(tmp_path):
    path = tmp_path / "plays.tsv"
    path.write_text("007\tx\t3\n7\ty\t1\n007\ty\t2\n")
    ds = prepare(path)
    assert ds.users.ids.tolist() == ["007", "7"]  # ids stay text: 007 is not 7
    swapped = prepare(path, user_col="1", item_col="0", value_col="2")
    assert sorted(swapped.users.ids.tolist()) == ["x", "y"]
    assert swapped.interactions.sum() == 6


def test_explicit_columns_sep_and_no_value(tmp_path):
    path = tmp_path / "clicks.txt"
    path.write_text("who;what;when\na;1;100\na;1;200\nb;2;150\na;2;300\n")
    ds = prepare(path, user_col="who", item_col="what", time_col="when", sep=";")
    # no value column: duplicates sum by default, so values count events
    assert ds.interactions[ds.users.index("a")[0], ds.items.index("1")[0]] == 2
    assert ds.timestamps[ds.users.index("a")[0], ds.items.index("1")[0]] == 200
    assert ds.meta["options"]["duplicates"] == "sum"


@pytest.mark.parametrize("policy,expected", [("sum", 9.0), ("max", 5.0), ("last", 1.0)])
def test_duplicate_policies(tmp_path, policy, expected):
    path = tmp_path / "r.csv"
    # rows for (u, i) in file order 3, 5, 1 but times 10, 30, 40: "last" is the latest time
    path.write_text("user,item,rating,timestamp\nu,i,3,10\nu,i,5,30\nv,i,2,5\nu,i,1,40\n")
    ds = prepare(path, duplicates=policy)
    assert ds.interactions[ds.users.index("u")[0], 0] == expected
    assert ds.meta["preparation"]["duplicates_merged"] == 2


def test_last_without_time_is_file_order(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\nu,i,3\nu,i,5\nu,i,1\nu,j,2\n")
    assert prepare(path).interactions[0, 0] == 1.0  # auto = last when there are values


def test_k_core_is_iterated(tmp_path):
    path = tmp_path / "r.csv"
    # user c has 2 items; item z only c; with 2-core on items, z goes, then c has 1 and goes
    rows = ["a,x", "a,y", "b,x", "b,y", "c,x", "c,z"]
    path.write_text("user,item\n" + "\n".join(rows) + "\n")
    ds = prepare(path, min_user_interactions=2, min_item_interactions=2)
    assert ds.users.ids.tolist() == ["a", "b"] and ds.items.ids.tolist() == ["x", "y"]
    assert ds.meta["preparation"]["kcore_removed"] == 2
    with pytest.raises(RecompareError, match="k-core"):
        prepare(path, min_user_interactions=5)


def test_parquet_log(tmp_path):
    frame = pd.DataFrame({"uid": [1, 2, 2], "iid": ["a", "b", "a"], "rating": [1.0, 2.0, 3.0]})
    frame.to_parquet(tmp_path / "log.parquet")
    assert detect_format(tmp_path / "log.parquet") == "parquet"
    ds = prepare(tmp_path / "log.parquet")
    assert ds.interactions.nnz == 3 and ds.interactions.sum() == 6
    assert ds.meta["options"]["format"] == "parquet"


def test_side_tables_give_groups_features_and_info(tmp_path):
    log = tmp_path / "plays.csv"
    log.write_text("user,song,plays\nu1,s1,3\nu1,s2,1\nu2,s3,4\nu3,s1,2\n")
    songs = tmp_path / "songs.csv"
    songs.write_text("song,title,language\ns1,Hello,en|fr\ns2,Hola,es\ns3,Salut,fr\n"
                     "s9,Unplayed,de\n")
    people = tmp_path / "people.tsv"
    people.write_text("user\tage\tcountry\nu1\t31\tFR\nu2\t\tES\n")
    ds = prepare(log, item_col="song", value_col="plays", items=songs, group_col="language",
                 users=people)
    names = np.asarray(ds.group_names)
    assert dict(zip(ds.items.ids, names[ds.item_groups])) == {"s1": "en", "s2": "es",
                                                             "s3": "fr"}
    assert ds.item_info["title"].tolist() == ["Hello", "Hola", "Salut"]
    assert ds.user_features["country"].tolist() == ["FR", "ES", "unknown"]
    # missing numbers are filled with the median and counted
    assert ds.user_features["age"].tolist() == [31.0, 31.0, 31.0]
    assert ds.meta["preparation"]["feature_age_filled_with_median"] == 2
    assert ds.meta["preparation"]["users_missing_from_user_table"] == 1
    only_country = prepare(log, item_col="song", users=people, feature_cols=["country"])
    assert list(only_country.user_features.columns) == ["country"]


def test_user_group_column(tmp_path):
    log = tmp_path / "l.csv"
    log.write_text("user,item\na,x\nb,y\n")
    users = tmp_path / "u.csv"
    users.write_text("user,lang,age\na,en,3\nb,fr,4\n")
    ds = prepare(log, users=users, user_group_col="lang")
    assert ds.group_names == ("en", "fr") and ds.user_groups.tolist() == [0, 1]
    assert list(ds.user_features.columns) == ["age"]


@pytest.mark.parametrize("content,match", [
    ("user,item,rating\na,x,1\nb,y,abc\n", "non-numeric value 'abc'.*line 3"),
    ("user,item,rating\na,x,1\nb,y,NaN\n", "missing or NaN"),
    ("user,item,rating\na,x,1\nb,y,\n", "missing or NaN"),
    ("user,item,rating\na,x,1\n,y,2\n", "missing user ids"),
    ("user,item,rating\na,x,-1\n", "negative"),
    ("user,item,rating\n", "no data rows"),
    ("", "empty"),
    ("user,item,rating\na,x,0\n", "every value is 0"),
    ("user,item,timestamp\na,x,yesterday-ish\n", "cannot read time"),
])
def test_bad_values_raise_one_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(RecompareError, match=match):
        prepare(path)


def test_bad_columns_and_paths(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("person,thing,stars\na,x,1\n")
    with pytest.raises(RecompareError, match="pass --user-col"):
        prepare(path)
    with pytest.raises(RecompareError, match="column 'rating' .*person, thing, stars"):
        prepare(path, user_col="person", item_col="thing", value_col="rating")
    with pytest.raises(RecompareError, match="no such file"):
        prepare(tmp_path / "missing.csv")
    with pytest.raises(RecompareError, match="unknown format"):
        prepare(path, format="xml")
    with pytest.raises(RecompareError, match="cannot tell the format"):
        prepare(tmp_path)
    (tmp_path / "fake.parquet").write_text("a,b\n1,2\n")
    with pytest.raises(RecompareError, match="not a Parquet file"):
        prepare(tmp_path / "fake.parquet")


# ------------------------------------------------------------------ round trip
@st.composite
def logs(draw):
    n = draw(st.integers(1, 40))
    users = draw(st.lists(st.sampled_from(["1", "2", "10", "u", "v", "007"]), min_size=n,
                          max_size=n))
    items = draw(st.lists(st.sampled_from(["a", "b", "c", "d", "5"]), min_size=n, max_size=n))
    values = draw(st.lists(st.integers(1, 9), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(0, 10**9), min_size=n, max_size=n))
    return pd.DataFrame({"user": users, "item": items, "rating": values, "timestamp": times})


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frame=logs(), policy=st.sampled_from(["sum", "max", "last"]),
       kind=st.sampled_from(["none", "random", "both"]))
def test_log_round_trips_through_the_saved_layout(tmp_path_factory, frame, policy, kind):
    root = tmp_path_factory.mktemp("rt")
    frame.to_csv(root / "log.csv", index=False)
    ds = prepare(root / "log.csv", duplicates=policy)
    ordered = frame.assign(row=np.arange(len(frame))).sort_values(["timestamp", "row"],
                                                                   kind="stable")
    grouped = ordered.groupby(["user", "item"])["rating"]
    expected = {"sum": grouped.sum(), "max": grouped.max(), "last": grouped.last()}[policy]
    got = {(ds.users.ids[u], ds.items.ids[i]): v
           for u, i, v in zip(*ds.interactions.nonzero(), ds.interactions.data)}
    assert got == {k: float(v) for k, v in expected.items()}
    if kind != "none":
        try:
            ds = split(ds, kind, seed=0)
        except RecompareError:
            pass  # tiny logs may leave nothing to evaluate; the refusal is tested elsewhere
    ds.save(root / "saved")
    loaded = Dataset.load(root / "saved")
    assert loaded.fingerprint == ds.fingerprint
    assert loaded.users.ids.tolist() == ds.users.ids.tolist()
    assert loaded.items.ids.tolist() == ds.items.ids.tolist()
    assert (loaded.interactions != ds.interactions).nnz == 0
    assert (loaded.timestamps != ds.timestamps).nnz == 0
    assert loaded.meta["options"] == ds.meta["options"]


def same_data(a: Dataset, b: Dataset) -> None:
    assert a.fingerprint == b.fingerprint
    assert a.users.ids.tolist() == b.users.ids.tolist()
    assert (a.timestamps is None) == (b.timestamps is None)
    if a.timestamps is not None:
        assert (a.timestamps != b.timestamps).nnz == 0
    assert a.meta["preparation"] == b.meta["preparation"]


@pytest.mark.parametrize("policy", ["sum", "max", "last"])
def test_tiny_chunks_give_the_in_memory_result(tmp_path, policy):
    rng = np.random.default_rng(4)
    n = 400
    users = [f"{u:03d}" if u % 4 else f" u{u} " for u in rng.integers(0, 40, n)]  # 007, " u8 "
    frame = pd.DataFrame({"user_id": users, "item": rng.integers(0, 25, n),
                          "rating": rng.integers(0, 6, n) / 1.0,
                          "date": pd.to_datetime(1.4e9 + rng.integers(0, 10**7, n),
                                                 unit="s").strftime("%Y-%m-%d %H:%M:%S")})
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    options = {"duplicates": policy, "min_rating": 2, "min_user_interactions": 3,
               "min_item_interactions": 2}
    whole = prepare(path, chunk_rows=None, **options)
    for chunk_rows in (1, 7, 64):
        same_data(whole, prepare(path, chunk_rows=chunk_rows, **options))
    assert "007" in whole.users.ids.tolist() or "006" in whole.users.ids.tolist()
    assert whole.meta["preparation"]["duplicates_merged"] > 0


def test_double_colon_logs_stream_in_chunks(tmp_path, monkeypatch):
    from recompare.data import readers

    rng = np.random.default_rng(5)
    lines = [f"{u}::{i}::{rng.integers(1, 6)}::{978300000 + k}"
             for k, (u, i) in enumerate(zip(rng.integers(1, 30, 300), rng.integers(1, 50, 300)))]
    root = tmp_path / "ml-10m"
    root.mkdir()
    (root / "ratings.dat").write_text("\n".join(lines) + "\n")
    whole = prepare(root, chunk_rows=None)
    # tiny translation blocks put a "::" across block boundaries again and again
    for block in (1, 2, 3, 5):
        monkeypatch.setattr(readers, "TRANSLATE_BYTES", block)
        same_data(whole, prepare(root, chunk_rows=11))
    assert whole.meta["options"]["format"] == "movielens-10m"
    assert whole.interactions.nnz == len({(ln.split("::")[0], ln.split("::")[1]) for ln in lines})


def test_chunked_errors_name_the_file_line(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,rating\n" + "".join(f"u{k},i{k},1\n" for k in range(20))
                    + "u9,i9,lots\n")
    with pytest.raises(RecompareError, match="line 22"):
        prepare(path, chunk_rows=4)
    with pytest.raises(RecompareError, match="--chunk-rows"):
        prepare(path, chunk_rows=0)


def test_old_and_future_format_versions(tmp_path):
    import json

    write_ml100k(tmp_path / "ml")
    ds = prepare(tmp_path / "ml")
    ds.save(tmp_path / "d")
    meta_path = tmp_path / "d" / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta["version"] == 2
    # version 1 (zlib-compressed matrices) still loads, to the same data
    import scipy.sparse as sp

    for name in ("interactions", "timestamps"):
        matrix = sp.load_npz(tmp_path / "d" / f"{name}.npz")
        sp.save_npz(tmp_path / "d" / f"{name}.npz", matrix, compressed=True)
    meta_path.write_text(json.dumps({**meta, "version": 1}))
    assert Dataset.load(tmp_path / "d").fingerprint == ds.fingerprint
    meta_path.write_text(json.dumps({**meta, "version": 3}))
    with pytest.raises(RecompareError, match="newer than this recompare reads"):
        Dataset.load(tmp_path / "d")
    meta_path.write_text(json.dumps({**meta, "version": 0}))
    with pytest.raises(RecompareError, match="prepare it again"):
        Dataset.load(tmp_path / "d")


def test_double_colon_with_tabs_is_one_clear_error(tmp_path):
    root = tmp_path / "ml-10m"
    root.mkdir()
    (root / "ratings.dat").write_text("1::10::5::978300760\n2::10::\t4::978301968\n")
    with pytest.raises(RecompareError, match=r"^\S*ratings.dat: separator '::' with tabs"):
        prepare(root)
