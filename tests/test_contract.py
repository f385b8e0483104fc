"""The model contract, run over every registered family (scikit-learn's discipline).

get_params/set_params/clone round trip, fit leaves the parameters alone, learned state
(attributes ending in ``_``) only after fit; fit/recommend shapes, seen items excluded,
save/load round trip with identical recommendations, determinism under a seed, fit
returns self and starts over.  Public API only.
"""
from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest

from recompare.errors import RecompareError
from recompare.models import KINDS, clone, load_model, model_class

#: small, fast hyperparameters per kind (kinds not listed use their defaults)
FAST = {
    "wals": {"dim": 8, "iterations": 3},
    "softmax": {"dim": 8, "hidden": (16,), "epochs": 2, "batch_size": 32, "patience": None},
    "random": {"dim": 8},
    # an ensemble is the same family with other parameters, and must keep the contract too
    "softmax-members": {"dim": 8, "hidden": (16,), "epochs": 2, "batch_size": 32,
                        "patience": None, "members": 2},
}


# every registered family must import: a broken one fails here, it is never skipped
#: variants of a family (their parameters are in FAST) -> the family
VARIANTS = {"softmax-members": "softmax"}
KIND_PARAMS = [pytest.param(kind, id=kind) for kind in (*KINDS, *VARIANTS)]


def _make(kind: str, seed: int = 0, **extra):
    cls = model_class(VARIANTS.get(kind, kind))
    params = dict(FAST.get(kind, {}))  # a stale name here must fail, never be dropped
    accepted = inspect.signature(cls.__init__).parameters
    if "random_state" in accepted:
        params["random_state"] = seed
    params.update(extra)
    return cls(**params)


def _learned(model) -> set[str]:
    """Names of the learned-state attributes set on the instance."""
    return {name for name in vars(model) if name.endswith("_") and not name.startswith("__")}


def _same(a, b) -> bool:
    return repr(a) == repr(b)  # parameters are plain values; repr also compares types


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_get_params_names_every_constructor_argument(kind):
    model = _make(kind)
    names = [p for p in inspect.signature(type(model).__init__).parameters if p != "self"]
    params = model.get_params()
    assert list(params) == names
    # the constructor stores its arguments verbatim
    assert _same(type(model)(**params).get_params(), params)


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_set_params_round_trip(kind):
    model = _make(kind)
    params = model.get_params()
    assert model.set_params(**params) is model
    assert _same(model.get_params(), params)
    name = next(iter(params))
    model.set_params(**{name: "changed"})  # stored verbatim, validated only by fit
    assert model.get_params()[name] == "changed"
    assert _same({k: v for k, v in model.get_params().items() if k != name},
                 {k: v for k, v in params.items() if k != name})
    with pytest.raises(RecompareError, match="no parameter 'not_a_parameter'"):
        model.set_params(not_a_parameter=1)


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_clone_is_an_unfitted_copy_with_the_same_params(kind, tiny_split):
    model = _make(kind, seed=2).fit(tiny_split)
    twin = clone(model)
    assert type(twin) is type(model) and twin is not model
    assert _same(twin.get_params(), model.get_params())
    for name, value in model.get_params().items():
        if isinstance(value, (list, dict, set)):
            assert twin.get_params()[name] is not value  # no shared mutable parameter
    assert not _learned(twin)
    with pytest.raises(RecompareError, match="not fitted"):
        twin.recommend(k=3)
    assert _learned(model)  # the original keeps its state
    for x, y in zip(twin.fit(tiny_split).recommend(k=5), model.recommend(k=5)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_fit_does_not_change_parameters(kind, tiny_split):
    model = _make(kind)
    before = copy.deepcopy(model.get_params())
    model.fit(tiny_split)
    assert _same(model.get_params(), before)


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_learned_state_only_after_fit(kind, tiny_split):
    model = _make(kind)
    assert not _learned(model), "the constructor must only store hyperparameters"
    model.fit(tiny_split)
    learned = _learned(model)
    assert {"fingerprint_", "n_users_", "n_items_", "fit_info_"} <= learned
    assert model.fingerprint_ == tiny_split.fingerprint
    assert (model.n_users_, model.n_items_) == (tiny_split.n_users, tiny_split.n_items)
    assert not set(model.get_params()) & learned


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_fit_returns_self_and_recommend_shapes(kind, tiny_split):
    model = _make(kind)
    assert model.fit(tiny_split) is model
    ids, scores = model.recommend(k=5)
    assert ids.shape == scores.shape == (tiny_split.n_users, 5)
    assert ids.dtype == np.int64 and ((ids >= 0) & (ids < tiny_split.n_items)).all()
    assert np.all(np.diff(scores, axis=1) <= 0)  # descending per row
    sub_ids, _ = model.recommend(np.array([3, 1]), k=5)
    assert np.array_equal(sub_ids, ids[[3, 1]])


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_seen_items_are_excluded(kind, tiny_split):
    model = _make(kind).fit(tiny_split)
    ids, scores = model.recommend(k=10)
    train = tiny_split.train
    for u in range(tiny_split.n_users):
        seen = set(train.indices[train.indptr[u]:train.indptr[u + 1]])
        allowed = np.isfinite(scores[u])
        assert not seen & set(ids[u][allowed].tolist())
    kept, _ = model.recommend(k=10, exclude_seen=False)
    assert kept.shape == ids.shape


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_save_load_round_trip(kind, tiny_split, tmp_path):
    model = _make(kind).fit(tiny_split)
    path = tmp_path / kind
    model.save(path)
    loaded = load_model(path, tiny_split)
    assert type(loaded) is type(model)
    for a, b in zip(loaded.recommend(k=7), model.recommend(k=7)):
        assert np.array_equal(a, b)
    assert np.array_equal(loaded.item_embeddings(), model.item_embeddings())
    arrays = loaded.export_arrays()
    assert arrays["item_embeddings"].shape[0] == tiny_split.n_items
    assert arrays["query_embeddings"].shape[0] == tiny_split.n_users
    with pytest.raises(RecompareError):
        model.save(path)  # exists, no overwrite


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_deterministic_under_a_seed_and_refit_starts_over(kind, tiny_split):
    a = _make(kind, seed=3).fit(tiny_split)
    first = a.recommend(k=5)
    b = _make(kind, seed=3).fit(tiny_split)
    for x, y in zip(first, b.recommend(k=5)):
        assert np.array_equal(x, y)
    a.fit(tiny_split)  # again: same result, not a continuation
    for x, y in zip(first, a.recommend(k=5)):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_unfitted_and_bad_k(kind, tiny_split):
    model = _make(kind)
    with pytest.raises(RecompareError):
        model.recommend(k=3)
    model.fit(tiny_split)
    for k in (0, -1, tiny_split.n_items + 1):
        with pytest.raises(RecompareError):
            model.recommend(k=k)
