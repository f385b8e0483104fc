"""Top-k by dot product: exact against a full stable sort, ties and exclusions included."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recompare.errors import RecompareError
from recompare.models.topk import topk_dot


def reference_topk(queries, items, k, exclude=None):
    """Full sort of every row: higher score first, then lower item index."""
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    if exclude is not None:
        scores[exclude.toarray() != 0] = -np.inf
    ids = np.empty((len(scores), k), dtype=np.int64)
    for row in range(len(scores)):
        order = np.lexsort((np.arange(scores.shape[1]), -scores[row]))
        ids[row] = order[:k]
    return ids, np.take_along_axis(scores, ids, 1)


@st.composite
def problems(draw):
    n_queries = draw(st.integers(1, 12))
    n_items = draw(st.integers(1, 30))
    dim = draw(st.integers(1, 4))
    k = draw(st.integers(1, n_items))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    # small integers: products are exact in float32, so ties are real and frequent
    span = draw(st.sampled_from([1, 2, 5]))
    queries = rng.integers(-span, span + 1, size=(n_queries, dim)).astype(np.float32)
    items = rng.integers(-span, span + 1, size=(n_items, dim)).astype(np.float32)
    density = draw(st.sampled_from([0.0, 0.2, 0.6, 1.0]))
    exclude = sp.random(n_queries, n_items, density=density, format="csr", random_state=seed,
                        dtype=np.float32)
    exclude.data[:] = 1.0
    chunk = draw(st.integers(1, 8))
    return queries, items, k, exclude, chunk


@settings(max_examples=200, deadline=None)
@given(problems())
def test_topk_equals_full_sort_with_ties_and_exclusions(problem):
    queries, items, k, exclude, chunk = problem
    ids, scores = topk_dot(queries, items, k, exclude=exclude, chunk_size=chunk)
    ref_ids, ref_scores = reference_topk(queries, items, k, exclude)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores.astype(np.float32))
    # rows are descending, and excluded items only appear with -inf
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    dense = exclude.toarray() != 0
    picked = np.take_along_axis(dense, ids, 1)
    assert np.isneginf(scores[picked]).all()


def test_topk_random_floats_match_reference():
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(300, 16)).astype(np.float32)
    items = rng.normal(size=(500, 16)).astype(np.float32)
    seen = sp.random(300, 500, density=0.05, format="csr", random_state=1)
    ids, scores = topk_dot(queries, items, 20, exclude=seen, chunk_size=64)
    ref_ids, ref_scores = reference_topk(queries, items, 20, seen)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    # floating-point rounding may swap near-equal neighbours; the sets agree otherwise
    agree = (ids == ref_ids).mean()
    assert agree > 0.99


def test_topk_all_tied_prefers_low_index():
    queries = np.ones((3, 2), np.float32)
    items = np.zeros((10, 2), np.float32)
    exclude = sp.csr_matrix(([1.0, 1.0], ([0, 0], [0, 2])), shape=(3, 10))
    ids, scores = topk_dot(queries, items, 4, exclude=exclude)
    np.testing.assert_array_equal(ids[0], [1, 3, 4, 5])
    np.testing.assert_array_equal(ids[1], [0, 1, 2, 3])
    assert (scores == 0).all()


def test_topk_fewer_allowed_than_k_fills_with_neg_inf():
    queries = np.ones((1, 1), np.float32)
    items = np.arange(4, dtype=np.float32)[:, None]
    exclude = sp.csr_matrix(np.array([[0, 1, 1, 1]]))
    ids, scores = topk_dot(queries, items, 3, exclude=exclude)
    np.testing.assert_array_equal(ids[0], [0, 1, 2])
    assert scores[0, 0] == 0 and np.isneginf(scores[0, 1:]).all()


def test_topk_is_deterministic_and_thread_count_independent():
    rng = np.random.default_rng(3)
    queries = rng.normal(size=(200, 8)).astype(np.float32)
    items = np.round(rng.normal(size=(400, 8)), 1).astype(np.float32)
    a = topk_dot(queries, items, 10, threads=1)
    b = topk_dot(queries, items, 10)
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("k", [0, -1, 11, 2.5])
def test_topk_rejects_bad_k(k):
    with pytest.raises(RecompareError):
        topk_dot(np.ones((2, 2)), np.ones((10, 2)), k)


def test_topk_rejects_mismatch_and_nan():
    with pytest.raises(RecompareError, match="do not match"):
        topk_dot(np.ones((2, 3)), np.ones((10, 2)), 1)
    with pytest.raises(RecompareError, match="NaN"):
        topk_dot(np.full((2, 2), np.nan), np.ones((10, 2)), 1)
    with pytest.raises(RecompareError, match="exclusion"):
        topk_dot(np.ones((2, 2)), np.ones((10, 2)), 1, exclude=sp.csr_matrix((3, 10)))


def test_topk_empty_queries():
    ids, scores = topk_dot(np.zeros((0, 2)), np.ones((5, 2)), 2)
    assert ids.shape == (0, 2) and scores.shape == (0, 2)


def test_chunking_does_not_change_the_lists():
    rng = np.random.default_rng(7)
    # values on a coarse grid: products are exact in float32 whatever the BLAS blocking,
    # and many scores tie exactly
    queries = (np.round(rng.normal(size=(150, 8)) * 4) / 4).astype(np.float32)
    items = (np.round(rng.normal(size=(3001, 8)) * 2) / 2).astype(np.float32)
    seen = sp.random(150, 3001, density=0.3, format="csr", random_state=2)
    ref_ids, ref_scores = reference_topk(queries, items, 20, seen)
    for chunk in (1, 37, 150, None):
        ids, scores = topk_dot(queries, items, 20, exclude=seen, chunk_size=chunk)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(scores, ref_scores.astype(np.float32))


@settings(max_examples=300, deadline=None)
@given(problems(), st.sampled_from([1, 2, 3, 4, 5, 16, 32]))
def test_two_stage_block_selection_equals_full_sort(problem, block):
    """The block-maxima path is exact too, ties, exclusions and padding included
    (blocks of 16 and more also select inside the candidates by sub-blocks)."""
    queries, items, k, exclude, chunk = problem
    ids, scores = topk_dot(queries, items, k, exclude=exclude, chunk_size=chunk,
                           block_size=block)
    ref_ids, ref_scores = reference_topk(queries, items, k, exclude)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores.astype(np.float32))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6), st.sampled_from([16, 32]),
       st.sampled_from([1, 2, 5]), st.sampled_from([0.0, 0.3, 0.97]))
def test_sub_block_selection_equals_full_sort(seed, k, block, span, density):
    """Catalogues with more than k + 1 blocks take the sub-block step inside the
    candidates; small integer scores make ties across blocks and sub-blocks frequent."""
    from recompare.models.topk import _selection_block, prepare_items

    rng = np.random.default_rng(seed)
    n_items = int(rng.integers(block * (k + 2), block * (k + 6)))
    queries = rng.integers(-span, span + 1, size=(7, 3)).astype(np.float32)
    items = rng.integers(-span, span + 1, size=(n_items, 3)).astype(np.float32)
    exclude = sp.random(7, n_items, density=density, format="csr", random_state=seed % 2**32,
                        dtype=np.float32)
    exclude.data[:] = 1.0
    assert _selection_block(prepare_items(items, block), k, True) == block  # the path taken
    ids, scores = topk_dot(queries, items, k, exclude=exclude, block_size=block)
    ref_ids, ref_scores = reference_topk(queries, items, k, exclude)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores.astype(np.float32))


def test_default_block_path_on_a_large_catalogue_matches_plain_path():
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((300, 16)).astype(np.float32)
    items = rng.standard_normal((6000, 16)).astype(np.float32)
    items[100:140] = items[7]  # exact ties across blocks
    exclude = sp.random(300, 6000, density=0.01, format="csr", random_state=1)
    blocked = topk_dot(queries, items, 20, exclude=exclude)
    plain = topk_dot(queries, items, 20, exclude=exclude, block_size=0)
    np.testing.assert_array_equal(blocked[0], plain[0])
    np.testing.assert_array_equal(blocked[1], plain[1])


def test_prepared_items_give_the_same_lists_as_topk_dot():
    from recompare.models.topk import prepare_items, topk_prepared

    rng = np.random.default_rng(11)
    queries = (np.round(rng.normal(size=(40, 8)) * 2) / 2).astype(np.float32)
    items = (np.round(rng.normal(size=(6000, 8)) * 2) / 2).astype(np.float32)
    seen = sp.random(40, 6000, density=0.02, format="csr", random_state=3)
    prepared = prepare_items(items)
    assert prepared.width % 64 == 0 and prepared.n_items == 6000
    expected = topk_dot(queries, items, 10, exclude=seen)
    for row in range(len(queries)):  # one query at a time, as a server asks
        ids, scores = topk_prepared(queries[row:row + 1], prepared, 10, exclude=seen[row])
        np.testing.assert_array_equal(ids[0], expected[0][row])
        np.testing.assert_array_equal(scores[0], expected[1][row])


def test_prepared_items_reject_bad_input():
    from recompare.models.topk import prepare_items, topk_prepared

    with pytest.raises(RecompareError, match="NaN"):
        prepare_items(np.full((5, 2), np.inf))
    with pytest.raises(RecompareError, match="block_size"):
        prepare_items(np.ones((5, 2)), block_size=-1)
    prepared = prepare_items(np.ones((5, 2)))
    with pytest.raises(RecompareError, match="do not match"):
        topk_prepared(np.ones((1, 3)), prepared, 2)
    with pytest.raises(RecompareError, match="larger than the catalogue"):
        topk_prepared(np.ones((1, 2)), prepared, 6)


def test_topk_restores_the_thread_count():
    import torch

    before = torch.get_num_threads()
    topk_dot(np.ones((3, 2)), np.ones((10, 2)), 2, threads=1)
    assert torch.get_num_threads() == before


def test_missing_faiss_names_the_extra(monkeypatch):
    import sys

    from recompare.models import ann as topk

    monkeypatch.setitem(sys.modules, "faiss", None)  # import now fails as if absent
    assert not topk.ann_available()
    with pytest.raises(RecompareError, match=r"recompare\[ann\]"):
        topk.build_ann_index(np.ones((100, 4), np.float32), np.ones((2, 4), np.float32), 5)


def test_ann_index_recall_and_exclusion():
    from recompare.models.ann import ann_search, build_ann_index, recall_against

    rng = np.random.default_rng(0)
    items = rng.standard_normal((4000, 16)).astype(np.float32)
    validation = rng.standard_normal((50, 16)).astype(np.float32)
    test = rng.standard_normal((50, 16)).astype(np.float32)
    index = build_ann_index(items, validation, k=10, target_recall=0.9, seed=0)
    assert 1 <= index.n_probe <= index.n_lists
    assert index.validation_recall >= 0.9 or index.n_probe == index.n_lists
    exact, _ = topk_dot(test, items, 10)
    found, _ = ann_search(index, test, 10)
    assert recall_against(found, exact) > 0.7
    assert recall_against(exact, exact) == 1.0
    # seen items never come back, and the rest of the list is still exact-ranked
    seen = sp.csr_matrix((np.ones(50), (np.arange(50), exact[:, 0])), shape=(50, 4000))
    ids, scores = ann_search(index, test, 10, exclude=seen)
    assert not (ids == exact[:, :1]).any()
    assert (scores[:, :-1] >= scores[:, 1:]).all()
