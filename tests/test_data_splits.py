"""Splits: disjoint, complete, deterministic, and each kind's own promise."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from recompare.data import Dataset, IdMap, from_interactions, planted, split
from recompare.data.dataset import as_csr
from recompare.errors import RecompareError

KINDS = ["random", "temporal", "users", "both"]


def parts(ds: Dataset) -> dict:
    s = ds.split
    return {name: getattr(s, name) for name in ("train", "test", "foldin", "heldout")
            if getattr(s, name) is not None}


@st.composite
def datasets(draw):
    n_users = draw(st.integers(2, 25))
    n_items = draw(st.integers(2, 20))
    dense = draw(st.lists(st.lists(st.integers(0, 3), min_size=n_items, max_size=n_items),
                          min_size=n_users, max_size=n_users))
    values = np.asarray(dense, dtype=np.float32)
    assume(values.sum() > 0)
    matrix = as_csr(sp.csr_matrix(values))
    stamps = sp.csr_matrix(matrix, dtype=np.int64)
    stamps.data = np.asarray(draw(st.lists(st.integers(0, 5), min_size=matrix.nnz,
                                           max_size=matrix.nnz)), dtype=np.int64)
    return Dataset(interactions=matrix, users=IdMap(np.arange(n_users)),
                   items=IdMap(np.arange(n_items)), timestamps=stamps)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ds=datasets(), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16),
       test_fraction=st.floats(0.05, 0.95), heldout_fraction=st.floats(0.05, 0.9),
       foldin_fraction=st.floats(0.0, 0.95), last_n=st.none() | st.integers(1, 4))
def test_split_is_disjoint_complete_and_deterministic(ds, kind, seed, test_fraction,
                                                      heldout_fraction, foldin_fraction, last_n):
    kwargs = {"test_fraction": test_fraction, "heldout_fraction": heldout_fraction,
                  "foldin_fraction": foldin_fraction, "seed": seed,
                  "last_n": last_n if kind == "temporal" else None}
    try:
        out = split(ds, kind, **kwargs)
    except RecompareError as exc:
        assert "leaves" in str(exc)  # nothing to train on / evaluate: refused, not broken
        assume(False)
    pieces = parts(out)
    total = sum(pieces.values())
    # complete: the parts add up to the original, value for value
    assert (total != ds.interactions).nnz == 0
    # disjoint: no (user, item) pair in two parts
    pattern = sum((p != 0).astype(np.int32) for p in pieces.values())
    assert pattern.nnz == 0 or pattern.data.max() == 1
    for p in pieces.values():
        assert p.shape == ds.interactions.shape and p.dtype == np.float32
    degree = np.diff(ds.interactions.indptr)
    train_degree = np.diff(pieces["train"].indptr)
    held = np.zeros(ds.n_users, dtype=bool)
    held[out.split.heldout_users] = True
    # every user with data keeps something to train on, unless held out
    assert np.all(train_degree[~held & (degree > 0)] >= 1)
    if kind in ("users", "both"):
        assert held.any() and not np.any(train_degree[held])
        assert np.all(np.diff(pieces["heldout"].indptr)[held] >= 1)
        if foldin_fraction > 0:
            assert np.all(np.diff(pieces["foldin"].indptr)[held] >= 1)
    # deterministic under the seed
    again = split(ds, kind, **kwargs)
    assert again.fingerprint == out.fingerprint
    assert np.array_equal(again.split.heldout_users, out.split.heldout_users)


def test_different_seeds_give_different_splits():
    ds = planted(n_users=200, n_items=100, seed=0)
    assert split(ds, "both", seed=1).fingerprint != split(ds, "both", seed=2).fingerprint


def test_random_split_holds_out_the_requested_share():
    ds = planted(n_users=500, n_items=200, seed=0)
    out = split(ds, "random", test_fraction=0.25, seed=0)
    share = out.split.test.nnz / ds.interactions.nnz
    assert share == pytest.approx(0.25, abs=0.02)
    assert out.protocols == ("weak",)
    assert out.split.options == {"kind": "random", "seed": 0, "test_fraction": 0.25}


def test_single_interaction_users_stay_in_train():
    ds = from_interactions(["a", "b", "b", "b", "c"], ["x", "x", "y", "z", "y"])
    out = split(ds, "random", test_fraction=0.5, seed=0)
    a, c = ds.users.index(["a", "c"])
    assert out.split.train[a].nnz == 1 and out.split.train[c].nnz == 1


def test_temporal_split_takes_the_latest():
    users = ["a"] * 5 + ["b"] * 4
    items = ["1", "2", "3", "4", "5", "1", "2", "3", "4"]
    ds = from_interactions(users, items)
    times = [50, 10, 40, 20, 30, 5, 6, 8, 7]
    u, i = ds.users.index(users), ds.items.index(items)
    stamps = sp.csr_matrix((np.asarray(times, np.int64), (u, i)), shape=ds.interactions.shape)
    ds = ds.replace(timestamps=stamps)
    last2 = split(ds, "temporal", last_n=2)
    a, b = ds.users.index(["a", "b"])
    assert sorted(ds.items.external(last2.split.test[a].indices)) == ["1", "3"]
    assert sorted(ds.items.external(last2.split.test[b].indices)) == ["3", "4"]
    # last_n larger than a user's history: it keeps one to train on
    big = split(ds, "temporal", last_n=10)
    assert ds.items.external(big.split.train[a].indices).tolist() == ["2"]
    frac = split(ds, "temporal", test_fraction=0.4, seed=0)
    test_times = stamps.multiply(frac.split.test != 0).data
    train_times = stamps.multiply(frac.split.train != 0)
    for row in (a, b):
        held = stamps[row].multiply(frac.split.test[row] != 0).data
        kept = train_times[row].data
        if len(held):
            assert held.min() >= kept.max()
    assert len(test_times) >= 2


def test_users_split_holds_out_whole_users():
    ds = planted(n_users=400, n_items=200, seed=0)
    out = split(ds, "users", heldout_fraction=0.2, foldin_fraction=0.5, seed=0)
    s = out.split
    assert len(s.heldout_users) == round(0.2 * 400)
    assert s.test is None and out.protocols == ("strong", "cold")
    assert s.train[s.heldout_users].nnz == 0
    foldin_share = s.foldin.nnz / (s.foldin.nnz + s.heldout.nnz)
    assert foldin_share == pytest.approx(0.5, abs=0.05)
    cold = split(ds, "users", foldin_fraction=0.0, seed=0)
    assert cold.split.foldin.nnz == 0 and cold.split.heldout.nnz > 0


def test_both_split_has_every_protocol():
    ds = planted(n_users=300, n_items=150, seed=0)
    out = split(ds, "both", seed=0)
    assert out.protocols == ("weak", "strong", "cold")
    held = out.split.heldout_users
    assert out.split.test[held].nnz == 0


def test_split_errors():
    ds = planted(n_users=60, n_items=30, seed=0)
    no_time = ds.replace(timestamps=None)
    single = from_interactions(["a", "b", "c"], ["x", "y", "x"])
    cases = [
        (ds, {"kind": "diagonal"}),
        (ds, {"kind": "random", "test_fraction": 0.0}),
        (ds, {"kind": "random", "test_fraction": 1.0}),
        (ds, {"kind": "users", "heldout_fraction": 1.0}),
        (ds, {"kind": "users", "foldin_fraction": 1.0}),
        (ds, {"kind": "random", "last_n": 2}),
        (ds, {"kind": "temporal", "last_n": 0}),
        (no_time, {"kind": "temporal"}),
        (single, {"kind": "random"}),
        (single, {"kind": "users"}),
        (from_interactions([], []), {"kind": "random"}),
    ]
    for data, kwargs in cases:
        with pytest.raises(RecompareError):
            split(data, **kwargs)


def test_split_replaces_an_existing_split_and_round_trips(tmp_path):
    ds = split(planted(n_users=100, n_items=50, seed=0), "random", seed=0)
    out = split(ds, "both", seed=1)
    assert (sum(parts(out).values()) != ds.interactions).nnz == 0
    out.save(tmp_path / "d")
    loaded = Dataset.load(tmp_path / "d")
    assert loaded.fingerprint == out.fingerprint
    assert np.array_equal(loaded.split.heldout_users, out.split.heldout_users)
    assert loaded.protocols == out.protocols


def timed(n_users: int = 120, n_items: int = 60, seed: int = 0) -> Dataset:
    """Planted data with spread-out timestamps (users join over time)."""
    ds = planted(n_users=n_users, n_items=n_items, seed=seed)
    stamps = sp.csr_matrix(ds.interactions, dtype=np.int64)
    rng = np.random.default_rng(seed)
    joined = rng.integers(0, 1000, ds.n_users)
    rows = np.repeat(np.arange(ds.n_users), np.diff(stamps.indptr))
    stamps.data = 1_500_000_000 + 3600 * (joined[rows] + rng.integers(0, 400, stamps.nnz))
    return ds.replace(timestamps=stamps)


@pytest.mark.parametrize("cutoff", [0.7, "2017-08-12", 0.3])
def test_temporal_global_keeps_the_future_out_of_training(cutoff):
    ds = timed()
    out = split(ds, "temporal-global", cutoff=cutoff, seed=3)
    s = out.split
    when = s.options["cutoff_time"]
    stamps = ds.timestamps
    train_times = stamps.multiply(s.train != 0).data
    assert train_times.size and train_times.max() < when  # no interaction after the cutoff
    for part in (s.test, s.foldin, s.heldout):
        assert stamps.multiply(part != 0).data.min(initial=when) >= when
    assert (sum(parts(out).values()) != ds.interactions).nnz == 0
    # test users trained before the cutoff; held-out users have no training row at all
    test_users = np.unique(s.test.nonzero()[0])
    assert (np.diff(s.train.indptr)[test_users] > 0).all()
    assert s.train[s.heldout_users].nnz == 0 and len(s.heldout_users) > 0
    assert set(out.protocols) == {"weak", "strong", "cold"}
    # a new user folds in its earliest interactions and is judged on the later ones
    for user in s.heldout_users[:10]:
        foldin = stamps[user].multiply(s.foldin[user] != 0).data
        heldout = stamps[user].multiply(s.heldout[user] != 0).data
        assert heldout.size and (not foldin.size or foldin.max() <= heldout.min())
    if not isinstance(cutoff, str):
        share = (stamps.data < when).mean()
        assert share == pytest.approx(cutoff, abs=0.02)
    assert split(ds, "temporal-global", cutoff=cutoff, seed=3).fingerprint == out.fingerprint


def test_temporal_global_errors():
    ds = timed()
    for kwargs in ({"cutoff": None}, {"cutoff": 1.5}, {"cutoff": "not a date"},
                   {"cutoff": "1990-01-01"}, {"cutoff": "2100-01-01"}):
        with pytest.raises(RecompareError):
            split(ds, "temporal-global", **kwargs)
    with pytest.raises(RecompareError, match="needs timestamps"):
        split(ds.replace(timestamps=None), "temporal-global", cutoff=0.5)
    with pytest.raises(RecompareError, match="--cutoff"):
        split(ds, "random", cutoff=0.5)


def test_temporal_global_round_trips(tmp_path):
    out = split(timed(), "temporal-global", cutoff=0.8)
    out.save(tmp_path / "d")
    loaded = Dataset.load(tmp_path / "d")
    assert loaded.fingerprint == out.fingerprint
    assert loaded.split.kind == "temporal-global"
    assert loaded.split.options["cutoff"] == out.split.options["cutoff"]
