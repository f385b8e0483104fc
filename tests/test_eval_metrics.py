"""Accuracy metrics: hand-computed tiny cases and an independent loop implementation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recompare.errors import RecompareError
from recompare.evaluate.metrics import (
    METRICS,
    accuracy,
    check_ks,
    embedding_recall,
    split_key,
)


def _relevant(rows: list[set[int]], n_items: int) -> sp.csr_matrix:
    dense = np.zeros((len(rows), n_items), np.float32)
    for r, items in enumerate(rows):
        dense[r, list(items)] = 1.0
    return sp.csr_matrix(dense)


def test_hand_computed_values():
    ids = np.array([[0, 1, 2], [3, 1, 0], [4, 2, 1]])
    relevant = _relevant([{1, 4}, {3}, set()], 5)
    out = accuracy(ids, relevant, (1, 3))
    m = out["metrics"]
    assert out["n_queries"] == 2 and out["n_skipped"] == 1
    d2 = 1 / math.log2(3)
    assert m["recall@1"] == pytest.approx(0.5)          # (0 + 1) / 2
    assert m["recall@3"] == pytest.approx(0.75)         # (1/2 + 1) / 2
    assert m["recall_norm@3"] == pytest.approx(0.75)    # (1/min(3,2) + 1/1) / 2
    assert m["recall_norm@1"] == pytest.approx(0.5)     # (0/1 + 1/1) / 2
    assert m["precision@3"] == pytest.approx(1 / 3)
    assert m["ndcg@3"] == pytest.approx((d2 / (1 + d2) + 1) / 2)
    assert m["map@3"] == pytest.approx((0.5 / 2 + 1) / 2)
    assert m["hit_rate@3"] == 1.0 and m["hit_rate@1"] == 0.5
    # coverage only over evaluated queries: items {0,1,2,3} at k=3, {0,3} at k=1
    assert m["coverage@3"] == pytest.approx(4 / 5)
    assert m["coverage@1"] == pytest.approx(2 / 5)


def test_recall_and_normalised_recall_differ_when_many_relevant():
    ids = np.array([[0, 1]])
    relevant = _relevant([{0, 1, 2, 3}], 6)
    m = accuracy(ids, relevant, (2,))["metrics"]
    assert m["recall@2"] == pytest.approx(0.5)
    assert m["recall_norm@2"] == pytest.approx(1.0)
    assert m["ndcg@2"] == pytest.approx(1.0)


def test_invalid_slots_are_neither_hits_nor_covered():
    ids = np.array([[0, 1]])
    relevant = _relevant([{1}], 3)
    valid = np.array([[True, False]])
    m = accuracy(ids, relevant, (2,), valid)["metrics"]
    assert m["recall@2"] == 0.0 and m["coverage@2"] == pytest.approx(1 / 3)


def test_no_evaluated_query_gives_zeros_not_nan():
    out = accuracy(np.array([[0]]), _relevant([set()], 2), (1,))
    assert out["n_queries"] == 0 and out["n_skipped"] == 1
    assert all(v == 0.0 for v in out["metrics"].values())


@pytest.mark.parametrize("ks", [(0,), (-2,), (), (1.5,), (True,)])
def test_bad_ks(ks):
    with pytest.raises(RecompareError):
        check_ks(ks)


def test_k_larger_than_catalogue():
    with pytest.raises(RecompareError, match="larger than the catalogue"):
        check_ks((10,), n_items=5)


def test_split_key():
    assert split_key("recall_norm@20") == ("recall_norm", 20)


def loop_reference(ids, relevant_sets, k, n_items):
    """Straightforward per-user implementation of every definition."""
    per = {name: [] for name in METRICS if name != "coverage"}
    covered = set()
    for row, rel in zip(ids, relevant_sets):
        if not rel:
            continue
        top = list(row[:k])
        covered.update(top)
        hits = [1.0 if item in rel else 0.0 for item in top]
        n_hits = sum(hits)
        cap = min(k, len(rel))
        per["recall"].append(n_hits / len(rel))
        per["recall_norm"].append(n_hits / cap)
        per["precision"].append(n_hits / k)
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(cap))
        per["ndcg"].append(dcg / idcg)
        ap, seen = 0.0, 0
        for r, h in enumerate(hits):
            if h:
                seen += 1
                ap += seen / (r + 1)
        per["map"].append(ap / cap)
        per["hit_rate"].append(1.0 if n_hits else 0.0)
    out = {name: (sum(v) / len(v) if v else 0.0) for name, v in per.items()}
    out["coverage"] = len(covered) / n_items if per["recall"] else 0.0
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 15), st.integers(2, 25), st.integers(0, 10**6), st.data())
def test_metrics_agree_with_loop_reference(n_queries, n_items, seed, data):
    rng = np.random.default_rng(seed)
    big_k = data.draw(st.integers(1, n_items))
    ks = sorted(set(data.draw(st.lists(st.integers(1, big_k), min_size=1, max_size=3))))
    ids = np.stack([rng.permutation(n_items)[:big_k] for _ in range(n_queries)])
    relevant_sets = [set(np.flatnonzero(rng.random(n_items) < rng.random() * 0.5).tolist())
                     for _ in range(n_queries)]
    out = accuracy(ids, _relevant(relevant_sets, n_items), ks)
    for k in ks:
        ref = loop_reference(ids, relevant_sets, k, n_items)
        for name in METRICS:
            value = out["metrics"][f"{name}@{k}"]
            assert 0.0 <= value <= 1.0 + 1e-12
            assert value == pytest.approx(ref[name], abs=1e-12), (name, k)
    assert out["n_queries"] + out["n_skipped"] == n_queries


def test_embedding_recall_hand_computed():
    # items on the axes of a 3-d space: query r scores item j by queries[r, j]
    items = np.eye(4, 3, dtype=np.float32)
    items[3] = [0.5, 0.5, 0.0]
    queries = np.array([[3, 2, 1], [1, 0, 3], [0, 0, 1]], dtype=np.float32)
    relevant = _relevant([{1, 2}, {0}, set()], 4)
    # top-2: row 0 -> items 0, 3 (3 > 2.5): no hit; row 1 -> 2, 0: one hit of one
    assert embedding_recall(queries, items, relevant, 2) == pytest.approx((0 / 2 + 1 / 1) / 2)
    # excluding item 0 for row 0 lifts item 3 then 1 into its top 2: 1 hit of 2
    exclude = sp.csr_matrix(([1.0], ([0], [0])), shape=(3, 4))
    assert embedding_recall(queries, items, relevant, 2, exclude=exclude) == pytest.approx(
        (1 / 2 + 1 / 1) / 2)
    # k is capped at the catalogue; no query with relevant items gives 0.0
    assert embedding_recall(queries, items, relevant, 10) == pytest.approx(1.0)
    assert embedding_recall(queries, items, _relevant([set()] * 3, 4), 2) == 0.0
