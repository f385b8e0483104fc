"""The popularity and random baselines keep the shared model contract."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from recompare.data.dataset import from_interactions
from recompare.data.splits import split
from recompare.data.synth import planted
from recompare.errors import RecompareError
from recompare.models import load_model, model_class
from recompare.models.baselines import Popularity, RandomEmbeddings, make_baseline

BASELINES = [Popularity(), Popularity(by_group=True), RandomEmbeddings(dim=8)]


@pytest.mark.parametrize("model", BASELINES, ids=["pop", "pop-group", "random"])
def test_contract(model, tiny_split, tmp_path):
    fitted = model.fit(tiny_split)
    assert fitted is model
    ids, scores = model.recommend(np.arange(20), 10)
    assert ids.shape == (20, 10) and scores.shape == (20, 10)
    seen = tiny_split.train[:20].toarray() != 0
    assert not np.take_along_axis(seen, ids, 1).any()
    # save / load round trip gives identical recommendations, through the registry too
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["kind"] == model.kind and meta["fingerprint"] == tiny_split.fingerprint
    loaded = load_model(tmp_path / "m", tiny_split)
    assert isinstance(loaded, model_class(model.kind))
    np.testing.assert_array_equal(loaded.recommend(np.arange(20), 10)[0], ids)
    with pytest.raises(RecompareError, match="already exists"):
        model.save(tmp_path / "m")
    # new users: shapes, and the same input gives the same output
    hist = tiny_split.split.foldin[tiny_split.split.heldout_users[:5]]
    q1 = model.embed_new_users(hist, tiny_split.user_features.iloc[:5])
    q2 = model.embed_new_users(hist, tiny_split.user_features.iloc[:5])
    assert q1.shape == (5, model.item_embeddings().shape[1])
    np.testing.assert_array_equal(q1, q2)
    new_ids, _ = model.recommend_new(hist, None, k=5)
    assert not np.take_along_axis(hist.toarray() != 0, new_ids, 1).any()


def test_refit_is_deterministic(tiny_split):
    a = RandomEmbeddings(dim=4, random_state=3).fit(tiny_split).recommend(k=5)[0]
    b = RandomEmbeddings(dim=4, random_state=3).fit(tiny_split).recommend(k=5)[0]
    c = RandomEmbeddings(dim=4, random_state=4).fit(tiny_split).recommend(k=5)[0]
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_popularity_orders_by_count_with_index_ties():
    ds = from_interactions(["a", "b", "c", "c"], ["x", "y", "y", "z"])
    model = Popularity().fit(ds)
    ids, scores = model.recommend(np.array([0]), 3, exclude_seen=False)
    np.testing.assert_array_equal(ids[0], [1, 0, 2])  # y (2), then x and z tied: lower index
    np.testing.assert_array_equal(scores[0], [2, 1, 1])
    # every new user gets the same embedding
    q = model.embed_new_users(None, features=__import__("pandas").DataFrame({"f": [1, 2]}))
    np.testing.assert_array_equal(q[0], q[1])


def test_popularity_by_group_stays_in_group(tiny_split):
    model = Popularity(by_group=True).fit(tiny_split)
    ids, _ = model.recommend(np.arange(tiny_split.n_users), 10)
    groups = tiny_split.query_groups()
    assert (tiny_split.item_groups[ids] == groups[:, None]).all()


def test_popularity_by_group_needs_groups():
    ds = from_interactions(["a", "b"], ["x", "y"])
    with pytest.raises(RecompareError, match="needs item groups"):
        Popularity(by_group=True).fit(ds)


def test_bad_params_and_loading(tiny_split, tmp_path):
    with pytest.raises(RecompareError, match="dim"):
        RandomEmbeddings(dim=0).fit(tiny_split)
    with pytest.raises(RecompareError, match="not fitted"):
        Popularity().recommend(k=1)
    with pytest.raises(RecompareError, match="unknown baseline"):
        make_baseline("nope")
    other = split(planted(n_users=240, n_items=120, n_groups=3, seed=2), "both", seed=1)
    Popularity().fit(other).save(tmp_path / "other")
    with pytest.raises(RecompareError, match="another data set"):
        load_model(tmp_path / "other", tiny_split)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.json").write_text(json.dumps({"kind": "random"}))
    with pytest.raises(RecompareError, match="missing"):
        load_model(tmp_path / "broken")


def test_empty_training_matrix_is_refused():
    ds = from_interactions(["a"], ["x"])
    ds = ds.replace(interactions=sp.csr_matrix((1, 1), dtype=np.float32))
    with pytest.raises(RecompareError, match="empty"):
        Popularity().fit(ds)


def test_new_user_count_checks_its_inputs():
    from recompare.models.base import n_new_users

    features = __import__("pandas").DataFrame({"f": [1, 2, 3]})
    assert n_new_users(sp.csr_matrix((3, 4)), None) == 3
    assert n_new_users(None, features) == 3
    assert n_new_users(sp.csr_matrix((3, 4)), features) == 3
    with pytest.raises(RecompareError, match="2 rows but features have 3"):
        n_new_users(sp.csr_matrix((2, 4)), features)
    with pytest.raises(RecompareError, match="history or features"):
        n_new_users(None, None)
