"""Leakage and folding measures on hand-made and planted data."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recompare.evaluate import leakage as lk

ITEM_GROUPS = np.array([0, 0, 0, 1, 1, 1, -1])


def test_leakage_zero_for_in_group_and_one_for_out_of_group():
    query_groups = np.array([0, 1])
    in_group = np.array([[0, 1, 2], [3, 4, 5]])
    out_group = np.array([[3, 4, 5], [0, 1, 2]])
    assert lk.leakage_at_k(in_group, query_groups, ITEM_GROUPS, (1, 3))["leakage@3"] == 0.0
    leak = lk.leakage_at_k(out_group, query_groups, ITEM_GROUPS, (1, 3))
    assert leak["leakage@1"] == 1.0 and leak["leakage@3"] == 1.0


def test_leakage_skips_unknown_groups_and_averages_over_queries():
    query_groups = np.array([0, 1, -1])
    ids = np.array([[0, 3, 6, 1], [3, 0, 1, 6], [0, 1, 2, 3]])
    leak = lk.leakage_at_k(ids, query_groups, ITEM_GROUPS, (2, 4))
    # query 0 at k=4: known items 0,3,1 -> 1/3 cross; query 1: 3,0,1 -> 2/3; query 2 skipped
    assert leak["leakage@4"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert leak["leakage@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert leak["leakage_queries@4"] == 2
    valid = np.ones(ids.shape, bool)
    valid[1, 1:] = False  # only item 3 (in group) remains for query 1
    assert lk.leakage_at_k(ids, query_groups, ITEM_GROUPS, (4,), valid)["leakage@4"] == \
        pytest.approx((1 / 3 + 0) / 2)


def test_ground_truth_share_and_confusion():
    relevant = sp.csr_matrix(np.array([[1, 0, 0, 1, 0, 0, 1],
                                       [0, 0, 0, 1, 1, 1, 0]], np.float32))
    query_groups = np.array([0, 1])
    assert lk.ground_truth_cross_share(relevant, query_groups, ITEM_GROUPS) == \
        pytest.approx((1 / 2 + 0) / 2)
    truth = np.array(lk.ground_truth_confusion(relevant, query_groups, ITEM_GROUPS, 2))
    np.testing.assert_allclose(truth, [[0.5, 0.5], [0.0, 1.0]])
    ids = np.array([[3, 4, 0], [3, 4, 5]])
    conf = lk.confusion(ids, 2, query_groups, ITEM_GROUPS, 2)
    np.testing.assert_allclose(conf, [[0.0, 1.0], [0.0, 1.0]])
    conf3 = lk.confusion(ids, 3, np.array([0, -1]), ITEM_GROUPS, 2)
    np.testing.assert_allclose(conf3, [[1 / 3, 2 / 3], [0.0, 0.0]])


def test_spurious_lists_untouched_cross_group_items():
    train = sp.csr_matrix(np.array([[1, 1, 0, 1, 0, 0, 0],    # group-0 user also touched 3
                                    [0, 0, 0, 1, 1, 0, 0]], np.float32))
    counts = lk.group_item_counts(train, np.array([0, 1]), 2)
    np.testing.assert_array_equal(counts, [[1, 1, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0, 0]])
    ids = np.array([[5, 3, 0], [4, 5, 2], [5, 4, 1]])
    query_groups = np.array([0, 1, 0])
    shares, worst = lk.spurious(ids, (3,), query_groups, ITEM_GROUPS, counts)
    # query 0: 5 is spurious (group 0 never touched it), 3 is cross but touched
    # query 1: 2 is cross and untouched by group 1; query 2: 5 and 4 are spurious
    assert shares["spurious@3"] == pytest.approx((1 / 3 + 1 / 3 + 2 / 3) / 3)
    assert worst[0] == {"query_group": 0, "item": 5, "item_group": 1, "n_queries": 2,
                        "best_rank": 1, "mean_rank": 1.0}
    assert [(w["query_group"], w["item"]) for w in worst[1:]] == [(0, 4), (1, 2)]


def test_folding_auc_separated_and_folded():
    item_groups = np.array([0] * 20 + [1] * 20)
    items = np.zeros((40, 2))
    items[:20, 0] = np.linspace(1, 2, 20)
    items[20:, 1] = np.linspace(1, 2, 20)
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert lk.folding_auc(queries, items, np.array([0, 1]), item_groups) == 0.0
    # every item scored the same: the model cannot tell groups apart
    flat = np.ones((40, 2))
    assert lk.folding_auc(queries, flat, np.array([0, 1]), item_groups) == pytest.approx(0.5)
    # excluded items leave the comparison without shifting it
    exclude = sp.csr_matrix(([1.0, 1.0], ([0, 0], [0, 25])), shape=(2, 40))
    assert lk.folding_auc(queries, items, np.array([0, 1]), item_groups, exclude) == 0.0
    reversed_q = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert lk.folding_auc(reversed_q, items, np.array([0, 1]), item_groups) == 1.0


def test_folding_auc_equals_pairwise_count_with_ties():
    rng = np.random.default_rng(4)
    queries = rng.integers(-2, 3, size=(12, 3)).astype(float)
    items = rng.integers(-2, 3, size=(30, 3)).astype(float)  # many tied scores
    item_groups = rng.integers(-1, 3, size=30)
    query_groups = rng.integers(-1, 3, size=12)
    exclude = sp.random(12, 30, density=0.2, format="csr", random_state=4)
    scores = queries @ items.T
    dense = exclude.toarray() != 0
    expected = []
    for r in range(12):
        if query_groups[r] < 0:
            continue
        ok = (item_groups >= 0) & ~dense[r]
        inside = scores[r, ok & (item_groups == query_groups[r])]
        cross = scores[r, ok & (item_groups != query_groups[r])]
        if len(inside) and len(cross):
            pairs = [(c > i) + 0.5 * (c == i) for c in cross for i in inside]
            expected.append(np.mean(pairs))
    got = lk.folding_auc(queries, items, query_groups, item_groups, exclude, chunk_size=5)
    assert got == pytest.approx(np.mean(expected))


def test_majority_groups_hand_computed():
    item_groups = np.array([0, 0, 1, 1, -1])
    history = sp.csr_matrix(np.array([
        [1, 1, 1, 0, 0],   # two of group 0, one of group 1
        [0, 5, 0, 2, 0],   # values do not weigh: a tie, lowest code wins
        [0, 0, 0, 0, 3],   # only an item of unknown group
        [0, 0, 0, 0, 0],   # nothing
        [0, 0, 1, 1, 1],   # group 1
    ], dtype=np.float32))
    np.testing.assert_array_equal(lk.majority_groups(history, item_groups), [0, 0, -1, -1, 1])
    no_groups = lk.majority_groups(history, np.full(5, -1))
    np.testing.assert_array_equal(no_groups, np.full(5, -1))


def test_majority_groups_is_the_dataset_query_group_rule(tiny_split):
    unlabelled = tiny_split.replace(user_groups=None)
    expected = lk.majority_groups(tiny_split.train, tiny_split.item_groups)
    np.testing.assert_array_equal(unlabelled.query_groups(), expected)
