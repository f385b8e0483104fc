"""The model contract, run over every registered family whose module imports.

fit/recommend shapes, seen items excluded, save/load round trip with identical
recommendations, determinism under a seed, fit returns self and starts over.
"""
from __future__ import annotations

import numpy as np
import pytest

from recompare.data.dataset import from_interactions
from recompare.errors import RecompareError
from recompare.models import KINDS, load_model, model_class

#: small, fast hyperparameters per kind (kinds not listed use their defaults)
FAST = {
    "wals": {"dim": 8, "iterations": 3},
    "softmax": {"dim": 8, "hidden": (16,), "epochs": 2, "batch_size": 32, "patience": 0},
    "random": {"factors": 8},
}


# every registered family must import: a broken one fails here, it is never skipped
KIND_PARAMS = [pytest.param(kind, id=kind) for kind in KINDS]


def _make(kind: str, seed: int = 0, **extra):
    cls = model_class(kind)
    params = dict(FAST.get(kind, {}))
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    params = {k: v for k, v in params.items() if k in accepted}
    if "random_state" in accepted:
        params["random_state"] = seed
    params.update(extra)
    return cls(**params)


@pytest.fixture(scope="module")
def data():
    """Two groups of users and items, a few cross-group interactions."""
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(60):
        group = u % 2
        pool = np.arange(group * 20, group * 20 + 20)
        chosen = rng.choice(pool, size=int(rng.integers(4, 10)), replace=False)
        if u % 10 == 0:
            chosen = np.append(chosen, (1 - group) * 20)
        users += [f"u{u}"] * len(chosen)
        items += [f"i{i}" for i in chosen]
    from recompare.data.splits import split

    ds = from_interactions(users, items)
    return split(ds, kind="random", test_fraction=0.2, seed=0)


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_fit_returns_self_and_recommend_shapes(kind, data):
    model = _make(kind)
    assert model.fit(data) is model
    ids, scores = model.recommend(k=5)
    assert ids.shape == scores.shape == (data.n_users, 5)
    assert ids.dtype == np.int64 and ((ids >= 0) & (ids < data.n_items)).all()
    assert np.all(np.diff(scores, axis=1) <= 0)  # descending per row
    sub_ids, _ = model.recommend(np.array([3, 1]), k=5)
    assert np.array_equal(sub_ids, ids[[3, 1]])


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_seen_items_are_excluded(kind, data):
    model = _make(kind).fit(data)
    ids, scores = model.recommend(k=10)
    train = data.train
    for u in range(data.n_users):
        seen = set(train.indices[train.indptr[u]:train.indptr[u + 1]])
        allowed = np.isfinite(scores[u])
        assert not seen & set(ids[u][allowed].tolist())
    kept, _ = model.recommend(k=10, exclude_seen=False)
    assert kept.shape == ids.shape


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_save_load_round_trip(kind, data, tmp_path):
    model = _make(kind).fit(data)
    path = tmp_path / kind
    model.save(path)
    loaded = load_model(path, data)
    assert type(loaded) is type(model)
    for a, b in zip(loaded.recommend(k=7), model.recommend(k=7)):
        assert np.array_equal(a, b)
    assert np.array_equal(loaded.item_embeddings(), model.item_embeddings())
    arrays = loaded.export_arrays()
    assert arrays["item_embeddings"].shape[0] == data.n_items
    assert arrays["query_embeddings"].shape[0] == data.n_users
    with pytest.raises(RecompareError):
        model.save(path)  # exists, no overwrite


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_deterministic_under_a_seed_and_refit_starts_over(kind, data):
    a = _make(kind, seed=3).fit(data)
    first = a.recommend(k=5)
    b = _make(kind, seed=3).fit(data)
    for x, y in zip(first, b.recommend(k=5)):
        assert np.array_equal(x, y)
    a.fit(data)  # again: same result, not a continuation
    for x, y in zip(first, a.recommend(k=5)):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_unfitted_and_bad_k(kind, data):
    model = _make(kind)
    with pytest.raises(RecompareError):
        model.recommend(k=3)
    model.fit(data)
    for k in (0, -1, data.n_items + 1):
        with pytest.raises(RecompareError):
            model.recommend(k=k)
