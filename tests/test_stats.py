"""Paired per-query intervals and the verdicts written from them, on hand-made cases."""
import numpy as np
import pytest
from scipy.stats import t as student_t

from recompare.compare.verdicts import paired_verdict
from recompare.errors import RecompareError
from recompare.evaluate.stats import compare_pairs, mean_intervals, paired, ratio_interval


def _comparison(a: np.ndarray, b: np.ndarray, method: str = "bootstrap") -> dict:
    per_query = {"A": {"users": np.arange(len(a)), "recall@20": a},
                 "B": {"users": np.arange(len(b)), "recall@20": b}}
    return compare_pairs(per_query, "weak", [("A", "B")], ["recall@20"], method=method)[0]


def test_t_interval_equals_the_textbook_formula():
    d = np.array([0.1, -0.2, 0.3, 0.05, 0.0, 0.25])
    (interval,) = mean_intervals(d, method="t")
    half = student_t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert interval["n"] == 6
    assert interval["difference"] == pytest.approx(d.mean())
    assert interval["low"] == pytest.approx(d.mean() - half)
    assert interval["high"] == pytest.approx(d.mean() + half)


def test_bootstrap_is_seeded_and_close_to_the_t_interval():
    rng = np.random.default_rng(1)
    d = rng.normal(0.03, 0.2, size=800)
    boot = mean_intervals(d, seed=3)[0]
    assert boot == mean_intervals(d, seed=3)[0]
    assert boot != mean_intervals(d, seed=4)[0]
    t = mean_intervals(d, method="t")[0]
    assert boot["low"] < boot["difference"] < boot["high"]
    # for a mean of 800 normal values both intervals are about equally wide
    assert boot["low"] == pytest.approx(t["low"], abs=0.005)
    assert boot["high"] == pytest.approx(t["high"], abs=0.005)


def test_bootstrap_columns_are_the_same_as_one_at_a_time():
    rng = np.random.default_rng(2)
    d = rng.normal(size=(300, 3))
    together = mean_intervals(d, seed=0)
    # the same resamples for every column: column 1 alone, with the same seed, agrees
    alone = mean_intervals(d[:, [1]], seed=0)[0]
    assert together[1] == pytest.approx(alone)


def test_identical_models_are_on_par_with_a_zero_interval():
    a = np.array([0.0, 0.5, 1.0, 0.25, 0.75])
    c = _comparison(a, a.copy())
    assert (c["difference"], c["low"], c["high"]) == (0.0, 0.0, 0.0)
    assert paired_verdict(c, "WALS", "DNN").startswith("on par")


def test_interval_containing_zero_is_on_par_and_says_so():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.2, 0.6, size=400)
    a = b + rng.normal(0.0, 0.01, size=400)  # noise around no difference
    c = _comparison(a, b)
    assert c["low"] < 0 < c["high"]
    verdict = paired_verdict(c, "WALS", "DNN")
    assert verdict.startswith("on par") and "95% CI" in verdict and "includes 0" in verdict
    assert "cannot rule out" not in verdict  # the interval is narrow


def test_a_wide_interval_around_zero_says_the_gap_is_not_ruled_out():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.0, 1.0, size=20)
    a = np.clip(b + rng.normal(0.0, 0.4, size=20), 0, 1)
    c = _comparison(a, b)
    if not c["low"] < 0 < c["high"]:
        pytest.fail(f"the hand-made noisy case should straddle zero: {c}")
    verdict = paired_verdict(c, "WALS", "DNN")
    assert verdict.startswith("on par") and "cannot rule out a gap" in verdict


def test_a_clear_win_is_a_verdict_with_its_interval():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.1, 0.4, size=300)
    a = b + 0.1 + rng.normal(0.0, 0.02, size=300)
    c = _comparison(a, b)
    assert c["low"] > 0
    verdict = paired_verdict(c, "WALS", "DNN")
    assert verdict.startswith("WALS better") and "95% CI [+0.09" in verdict
    # the same comparison the other way round names the other winner
    reverse = _comparison(b, a)
    assert reverse["high"] < 0
    assert paired_verdict(reverse, "WALS", "DNN").startswith("DNN better")


def test_a_significant_difference_hides_behind_unpaired_noise():
    """Users differ a lot, the models barely: pairing sees what the two means do not."""
    rng = np.random.default_rng(5)
    users = rng.uniform(0.0, 1.0, size=500)
    a, b = users + 0.01, users.copy()
    c = _comparison(a, b, method="t")
    assert c["low"] > 0  # always exactly +0.01 per user
    unpaired_se = np.sqrt(a.var(ddof=1) / 500 + b.var(ddof=1) / 500)
    assert 0.01 < 2 * unpaired_se  # two separate intervals would overlap


def test_pairs_are_aligned_on_common_users():
    users, va, vb = paired({"m": np.array([1.0, 2.0, 3.0])}, np.array([5, 7, 9]),
                           {"m": np.array([10.0, 30.0])}, np.array([9, 5]))
    assert users.tolist() == [5, 9]
    assert va["m"].tolist() == [1.0, 3.0] and vb["m"].tolist() == [30.0, 10.0]


def test_too_few_queries_give_no_interval():
    c = _comparison(np.array([0.5]), np.array([0.2]))
    assert c["n"] == 1 and c["low"] is None and c["high"] is None
    assert paired_verdict(c, "WALS", "DNN").startswith("too few queries")


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(RecompareError, match="confidence"):
        mean_intervals(np.zeros(5), confidence=1.5)
    with pytest.raises(RecompareError, match="method"):
        mean_intervals(np.zeros(5), method="jackknife")
    with pytest.raises(RecompareError, match="NaN"):
        mean_intervals(np.array([0.1, np.nan, 0.2]))


def test_ratio_interval_brackets_the_ratio_of_means_and_keeps_the_pairing():
    rng = np.random.default_rng(4)
    b = rng.uniform(0.0, 1.0, size=500)
    # a proportional model: every resample has the same ratio, so the interval is a point
    ratio, low, high = ratio_interval(1.1 * b, b)
    assert ratio == pytest.approx(1.1) and low == pytest.approx(1.1) \
        and high == pytest.approx(1.1)
    # noisy pairs: the interval holds the point ratio, is seeded, and narrows with more users
    a = b * rng.normal(0.95, 0.3, size=500)
    ratio, low, high = ratio_interval(a, b, seed=2)
    assert ratio == pytest.approx(a.mean() / b.mean())
    assert low < ratio < high
    assert ratio_interval(a, b, seed=2) == (ratio, low, high)
    _, low_few, high_few = ratio_interval(a[:50], b[:50], seed=2)
    assert high_few - low_few > high - low
    # unpaired resampling would be wider: pairing removes the per-user level
    level = rng.lognormal(0.0, 1.0, size=500)
    _, lo_p, hi_p = ratio_interval(level * 1.05, level * rng.normal(1.0, 0.05, 500))
    assert hi_p - lo_p < 0.05


def test_ratio_interval_bad_input_and_too_few_users():
    assert ratio_interval(np.array([0.5]), np.array([0.25]))[1:] == (None, None)
    with pytest.raises(RecompareError, match="aligned"):
        ratio_interval(np.zeros(3), np.zeros(4))
    with pytest.raises(RecompareError, match="NaN"):
        ratio_interval(np.array([0.1, np.nan]), np.array([0.1, 0.2]))
