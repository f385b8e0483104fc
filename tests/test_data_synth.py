"""Planted-group synthetic data and mirrored copies."""
import numpy as np
import pytest
import scipy.sparse as sp

from recompare.data import Dataset, from_interactions, mirror, planted, split
from recompare.errors import RecompareError


@pytest.fixture(scope="module")
def small():
    return planted(n_users=600, n_items=300, n_groups=3, interactions_per_user=25,
                   cross_group_rate=0.05, seed=1)


def cross_share(ds: Dataset) -> float:
    m = ds.interactions.tocoo()
    return float((ds.user_groups[m.row] != ds.item_groups[m.col]).mean())


def test_planted_shapes_and_fields(small):
    assert small.interactions.shape == (600, 300)
    assert small.interactions.dtype == np.float32
    assert np.all(small.interactions.data == 1)
    assert small.group_names == ("en", "es", "fr")
    assert set(np.unique(small.user_groups)) == {0, 1, 2}
    assert set(np.unique(small.item_groups)) == {0, 1, 2}
    assert list(small.user_features.columns) == ["group_hint", "age", "region", "device"]
    assert small.user_features["age"].dtype.kind == "f"
    assert {"title", "taste", "popularity_rank"} <= set(small.item_info.columns)
    # timestamps share the interactions' sparsity pattern
    assert np.array_equal(small.timestamps.indptr, small.interactions.indptr)
    assert np.array_equal(small.timestamps.indices, small.interactions.indices)
    degree = np.diff(small.interactions.indptr)
    assert degree.min() >= 3
    assert 20 < degree.mean() < 30


def test_planted_is_deterministic_under_seed(small):
    again = planted(n_users=600, n_items=300, n_groups=3, interactions_per_user=25,
                    cross_group_rate=0.05, seed=1)
    other = planted(n_users=600, n_items=300, n_groups=3, interactions_per_user=25,
                    cross_group_rate=0.05, seed=2)
    assert again.fingerprint == small.fingerprint
    assert again.user_features.equals(small.user_features)
    assert other.fingerprint != small.fingerprint


@pytest.mark.parametrize("rate", [0.0, 0.02, 0.2])
def test_cross_group_rate_is_the_share_of_interactions(rate):
    ds = planted(n_users=1500, n_items=600, n_groups=4, interactions_per_user=30,
                 cross_group_rate=rate, seed=0)
    share = cross_share(ds)
    if rate == 0:
        assert share == 0.0
    else:
        assert abs(share - rate) < 0.25 * rate + 0.003
    assert ds.info()["cross_group_share"] == pytest.approx(share, abs=0.01)


def test_group_hint_is_strong_and_other_features_weak(small):
    names = np.asarray(small.group_names, dtype=object)
    hint_right = (small.user_features["group_hint"].to_numpy() == names[small.user_groups]).mean()
    assert 0.85 < hint_right < 0.95  # feature_noise=0.1
    noiseless = planted(n_users=200, n_items=100, feature_noise=0.0, seed=0)
    names = np.asarray(noiseless.group_names, dtype=object)
    assert (noiseless.user_features["group_hint"].to_numpy()
            == names[noiseless.user_groups]).all()


def test_popularity_is_skewed_inside_groups(small):
    counts = np.asarray(small.interactions.sum(axis=0)).ravel()
    for g in range(small.n_groups):
        group_counts = np.sort(counts[small.item_groups == g])[::-1]
        top = group_counts[: len(group_counts) // 10].mean()
        bottom = group_counts[len(group_counts) // 2:].mean()
        assert top > 3 * bottom
    # and the planted rank orders popularity
    rank = small.item_info["popularity_rank"].to_numpy()
    assert np.corrcoef(np.argsort(np.argsort(rank)), np.argsort(np.argsort(-counts)))[0, 1] > 0.7


def _recall_at(scores: np.ndarray, train: sp.csr_matrix, test: sp.csr_matrix, k: int) -> float:
    scores = scores.astype(np.float64).copy()
    scores[train.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :k]
    truth = test.toarray() > 0
    hits = np.take_along_axis(truth, top, axis=1).sum(axis=1)
    n = truth.sum(axis=1)
    ok = n > 0
    return float((hits[ok] / np.minimum(n[ok], k)).mean())


def test_taste_structure_makes_personalisation_beat_popularity():
    # the generator's promise: knowing a user's tastes recalls far more than popularity,
    # even popularity restricted to the user's own group
    ds = split(planted(n_users=800, n_items=400, n_groups=2, seed=3), "random", seed=0)
    train, test = ds.split.train, ds.split.test
    popularity = np.asarray(train.sum(axis=0)).ravel()
    same_group = ds.user_groups[:, None] == ds.item_groups[None, :]
    group_pop = same_group * popularity[None, :]
    tastes = ds.item_info["taste"].to_numpy()
    taste_codes = np.unique(tastes, return_inverse=True)[1]
    onehot = sp.csr_matrix((np.ones(ds.n_items), (np.arange(ds.n_items), taste_codes)))
    profile = np.asarray((train @ onehot).todense())  # (n_users, n_tastes)
    taste_pop = group_pop * (profile[:, taste_codes] + 0.1)
    pop_recall = _recall_at(group_pop, train, test, 20)
    taste_recall = _recall_at(taste_pop, train, test, 20)
    assert taste_recall > 1.3 * pop_recall


def test_planted_sizes_from_tiny_to_large():
    tiny = planted(n_users=12, n_items=8, n_groups=2, interactions_per_user=3, seed=0)
    assert 12 <= tiny.interactions.nnz <= 60
    single = planted(n_users=50, n_items=40, n_groups=1, cross_group_rate=0.3, seed=0)
    assert single.n_groups == 1 and cross_share(single) == 0.0
    larger = planted(n_users=20_000, n_items=2_000, n_groups=8, interactions_per_user=50, seed=0)
    assert 0.9e6 < larger.interactions.nnz < 1.1e6


@pytest.mark.parametrize("kwargs", [
    {"n_groups": 0}, {"n_users": 2, "n_groups": 3}, {"n_items": 1, "n_groups": 2},
    {"cross_group_rate": 1.5}, {"interactions_per_user": 0}, {"feature_noise": -0.1},
    {"zipf_exponent": -1}, {"n_tastes": 0},
])
def test_planted_rejects_impossible_settings(kwargs):
    with pytest.raises(RecompareError):
        planted(**kwargs)


def test_default_planted_data_is_the_bundled_data_set(bundled_path):
    """The generator's defaults, split as documented, give data/planted bit for bit."""
    from recompare.data.splits import split

    bundled = Dataset.load(bundled_path)
    made = split(planted(), "both", seed=0)
    assert made.fingerprint == bundled.fingerprint
    assert made.user_features.equals(bundled.user_features)
    assert (made.timestamps != bundled.timestamps).nnz == 0


def test_planted_round_trips_through_the_saved_layout(small, out_dir):
    small.save(out_dir)
    loaded = Dataset.load(out_dir)
    assert loaded.fingerprint == small.fingerprint
    assert np.array_equal(loaded.user_groups, small.user_groups)
    assert np.array_equal(loaded.item_groups, small.item_groups)
    assert (loaded.timestamps != small.timestamps).nnz == 0
    assert list(loaded.user_features["group_hint"]) == list(small.user_features["group_hint"])
    assert np.allclose(loaded.user_features["age"], small.user_features["age"])


# ---------------------------------------------------------------------- mirror
@pytest.fixture(scope="module")
def base():
    users = ["a", "a", "b", "b", "c", "d", "d", "d"]
    items = ["x", "y", "x", "z", "y", "x", "y", "z"]
    import pandas as pd

    return from_interactions(users, items, [1, 2, 3, 4, 5, 1, 1, 2],
                             user_features=pd.DataFrame({"age": [1.0, 2.0, 3.0, 4.0]}))


def test_mirror_disjoint_copies(base):
    m = mirror(base, copies=3, cross_rate=0.0)
    assert m.interactions.shape == (12, 9)
    assert m.interactions.nnz == 3 * base.interactions.nnz
    assert cross_share(m) == 0.0
    assert m.group_names == ("c0", "c1", "c2")
    assert list(m.users.ids[:4]) == ["c0:a", "c0:b", "c0:c", "c0:d"]
    assert list(m.items.ids[3:6]) == ["c1:x", "c1:y", "c1:z"]
    for k in range(3):
        block = m.interactions[k * 4:(k + 1) * 4, k * 3:(k + 1) * 3]
        assert (block != base.interactions).nnz == 0
    assert list(m.user_features.columns) == ["group_hint", "age"]
    assert list(m.user_features["group_hint"][:5]) == ["c0"] * 4 + ["c1"]
    assert list(m.user_features["age"]) == [1.0, 2.0, 3.0, 4.0] * 3


@pytest.mark.parametrize("rewire", ["same", "random"])
def test_mirror_cross_rate_rewires_that_share(rewire):
    ds = planted(n_users=400, n_items=200, n_groups=2, cross_group_rate=0.0, seed=0)
    m = mirror(ds, copies=2, cross_rate=0.05, seed=1, rewire=rewire)
    assert cross_share(m) == pytest.approx(0.05, abs=0.005)
    assert m.meta["options"]["rewired_interactions"] == round(0.05 * ds.interactions.nnz) * 2
    assert m.meta["source"] == "mirror:synthetic:planted"
    # the original groups survive as a feature and as item metadata
    assert "source_group" in m.user_features.columns and "source_group" in m.item_info.columns
    again = mirror(ds, copies=2, cross_rate=0.05, seed=1, rewire=rewire)
    assert again.fingerprint == m.fingerprint
    assert m.timestamps is not None and m.timestamps.nnz == m.interactions.nnz


def test_mirror_same_rewire_goes_to_the_same_item():
    ds = planted(n_users=100, n_items=60, n_groups=1, seed=0)
    m = mirror(ds, copies=2, cross_rate=0.1, seed=0, rewire="same")
    coo = m.interactions.tocoo()
    crossed = m.user_groups[coo.row] != m.item_groups[coo.col]
    original_user = coo.row[crossed] % ds.n_users
    original_item = coo.col[crossed] % ds.n_items
    assert np.asarray(ds.interactions[original_user, original_item]).ravel().all()


@pytest.mark.parametrize("kwargs", [{"copies": 0}, {"copies": 1, "cross_rate": 0.1},
                                    {"cross_rate": 2.0}, {"rewire": "sideways"}])
def test_mirror_rejects_bad_settings(base, kwargs):
    with pytest.raises(RecompareError):
        mirror(base, **kwargs)
