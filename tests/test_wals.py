"""WALS: the maths (row solves, exact objective, CG), folding, quality, I/O, bad input."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recompare.data.dataset import Dataset, IdMap, from_interactions
from recompare.errors import RecompareError
from recompare.models.wals import WALS
from recompare.models.wals_exact import exact_rows

# ---------------------------------------------------------------- helpers


def _matrix_dataset(matrix: sp.spmatrix, **fields) -> Dataset:
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sort_indices()
    return Dataset(interactions=matrix, users=IdMap(np.arange(matrix.shape[0])),
                   items=IdMap(np.arange(matrix.shape[1])), **fields)


def _random_dataset(n_users=40, n_items=25, density=0.15, seed=0, values="binary") -> Dataset:
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[0] = False  # a user without interactions
    mask[:, 1] = False  # an item without interactions
    data = np.ones(mask.sum()) if values == "binary" else rng.integers(1, 6, mask.sum())
    rows, cols = np.nonzero(mask)
    return _matrix_dataset(sp.csr_matrix((data, (rows, cols)), shape=(n_users, n_items)))


def _dense_objective(model: WALS, matrix: sp.csr_matrix) -> float:
    """The objective of the module docstring, computed over every pair."""
    x = model.user_factors_.astype(np.float64)
    y = model.item_factors_.astype(np.float64)
    scores = x @ y.T
    r = matrix.toarray().astype(np.float64)
    observed = matrix.toarray() != 0
    if model.weighting == "constant":
        w = np.ones_like(r)
    elif model.weighting == "linear":
        w = 1 + model.alpha * r
    else:
        w = 1 + model.alpha * np.log1p(r / model.epsilon)
    if model.item_weight_ is not None:
        w = w * model.item_weight_[None, :]
    t = np.ones_like(r) if model.targets == "binary" else r
    w0 = model.unobserved_weight
    loss = np.where(observed, w * (t - scores) ** 2, w0 * scores ** 2).sum()
    n_u, n_i = observed.sum(1), observed.sum(0)
    lam, nu = model.penalty()  # the parameters, or the scaling's defaults (a test below)
    if model.reg_scaling == "frequency":
        lam_u = lam * (n_u + w0 * matrix.shape[1]) ** nu
        lam_i = lam * (n_i + w0 * matrix.shape[0]) ** nu
    elif model.reg_scaling == "observed":
        lam_u, lam_i = lam * n_u ** nu, lam * n_i ** nu
    else:
        lam_u, lam_i = np.full(len(n_u), lam), np.full(len(n_i), lam)
    return float(loss + (lam_u * (x ** 2).sum(1)).sum() + (lam_i * (y ** 2).sum(1)).sum())


def _leakage(model, dataset: Dataset, k: int = 10) -> tuple[float, float]:
    """Model leakage@k and the true cross-group share of the test part."""
    from recompare.evaluate.leakage import ground_truth_cross_share, leakage_at_k

    test = dataset.split.test
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    groups = dataset.query_groups()
    ids, _ = model.recommend(users, k=k)
    leak = leakage_at_k(ids, groups[users], dataset.item_groups, [k])[f"leakage@{k}"]
    truth = ground_truth_cross_share(test[users], groups[users], dataset.item_groups)
    return leak, truth


def _recall(model, dataset: Dataset, k: int = 20) -> float:
    from recompare.evaluate.metrics import accuracy

    test = dataset.split.test
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    ids, _ = model.recommend(users, k=k)
    return accuracy(ids, test[users], [k])["metrics"][f"recall@{k}"]


# ---------------------------------------------------------- row solve = lstsq


@settings(max_examples=40, deadline=None)
@given(
    n_items=st.integers(2, 12),
    k=st.integers(1, 5),
    w0=st.sampled_from([0.0, 0.01, 0.3, 1.0, 3.0]),
    lam=st.sampled_from([0.0, 1e-3, 0.1, 2.0]),
    seed=st.integers(0, 10_000),
)
def test_row_solve_equals_dense_weighted_lstsq(n_items, k, w0, lam, seed):
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((n_items, k))
    observed = rng.random(n_items) < 0.5
    observed[rng.integers(n_items)] = True
    w = rng.uniform(0.0, 3.0, n_items)  # observed weights, may be below w0
    t = rng.uniform(-1.0, 2.0, n_items)
    row = sp.csr_matrix((np.ones(observed.sum()), (np.zeros(observed.sum(), int),
                                                     np.flatnonzero(observed))),
                        shape=(1, n_items))
    import torch

    yt = torch.from_numpy(y)
    x = exact_rows(row, yt, yt.T @ yt, w[observed], t[observed], w0, np.array([lam])).numpy()
    # the same problem densely: weight w on observed pairs (target t), w0 elsewhere (target 0)
    weight = np.where(observed, w, w0)
    target = np.where(observed, t, 0.0)
    a = np.vstack([np.sqrt(weight)[:, None] * y, np.sqrt(lam) * np.eye(k)])
    b = np.concatenate([np.sqrt(weight) * target, np.zeros(k)])
    expected = np.linalg.lstsq(a, b, rcond=None)[0]
    assert np.allclose(x[0], expected, atol=1e-6, rtol=1e-6)


def test_fold_in_is_the_exact_row_solve():
    data = _random_dataset(values="counts")
    model = WALS(dim=4, weighting="linear", alpha=0.5, unobserved_weight=0.2,
                 regularization=0.05, reg_scaling="none", iterations=3, dtype="float64").fit(data)
    history = sp.csr_matrix(data.train[[3, 7]])
    got = model.embed_new_users(history)
    y = model.item_factors_.astype(np.float64)
    for row, x in zip(history.toarray(), got):
        observed = row != 0
        weight = np.where(observed, 1 + 0.5 * row, 0.2)
        target = observed.astype(float)
        a = np.vstack([np.sqrt(weight)[:, None] * y, np.sqrt(0.05) * np.eye(4)])
        b = np.concatenate([np.sqrt(weight) * target, np.zeros(4)])
        assert np.allclose(x, np.linalg.lstsq(a, b, rcond=None)[0], atol=1e-5)


# ------------------------------------------------------------- objective


def test_penalty_defaults_follow_the_scaling_and_explicit_values_win():
    # the documented defaults (docs/wals.md): frequency 0.3 with nu 0.5; none and observed
    # keep lambda 0.01, observed Spark's nu 1
    assert WALS().penalty() == (0.3, 0.5)
    assert WALS(reg_scaling="observed").penalty() == (0.01, 1.0)
    assert WALS(reg_scaling="none").penalty()[0] == 0.01
    assert WALS(regularization=0.0, reg_exponent=2.0).penalty() == (0.0, 2.0)
    model = WALS(dim=2, iterations=1, reg_scaling="frequency", unobserved_weight=0.5)
    model.fit(_random_dataset())
    counts = np.array([0, 4, 9])
    assert np.allclose(model._row_regularization(counts, 10), 0.3 * (counts + 5.0) ** 0.5)


@pytest.mark.parametrize("params", [
    {},
    {"unobserved_weight": 0.0, "reg_scaling": "none"},
    {"weighting": "linear", "alpha": 2.0, "item_weights": "inverse_frequency"},
    {"weighting": "log", "alpha": 3.0, "targets": "values", "reg_exponent": 1.0},
    {"reg_scaling": "observed", "regularization": 0.05},
    {"unobserved_weight": 1.5, "weighting": "constant"},  # observed weight below w0
])
def test_exact_objective_never_increases_and_is_exact(params):
    data = _random_dataset(values="counts", seed=1)
    model = WALS(dim=5, solver="cholesky", iterations=8, dtype="float64",
                 **params).fit(data)
    objective = np.array(model.fit_info_["objective"])
    assert np.all(np.diff(objective) <= 1e-9 * objective[:-1])
    assert model.fit_info_["objective"][-1] == pytest.approx(
        _dense_objective(model, data.train), rel=1e-9)
    assert model.objective(data) == pytest.approx(objective[-1], rel=1e-9)


def test_cg_objective_is_exact_too():
    data = _random_dataset(seed=2)
    model = WALS(dim=6, solver="cg", iterations=4, dtype="float64").fit(data)
    assert model.fit_info_["objective"][-1] == pytest.approx(
        _dense_objective(model, data.train), rel=1e-9)


def test_cg_with_many_steps_reaches_the_exact_solution():
    data = _random_dataset(seed=3)
    common = {"dim": 6, "iterations": 4, "dtype": "float64", "random_state": 5}
    exact = WALS(solver="cholesky", **common).fit(data)
    cg = WALS(solver="cg", cg_steps=40, **common).fit(data)
    few = WALS(solver="cg", cg_steps=1, **common).fit(data)
    assert np.allclose(cg.user_factors_, exact.user_factors_, atol=1e-5)
    assert np.allclose(cg.item_factors_, exact.item_factors_, atol=1e-5)
    assert np.allclose(cg.fit_info_["objective"], exact.fit_info_["objective"], rtol=1e-9)
    # and one step is not exact: the comparison above can fail
    assert not np.allclose(few.user_factors_, exact.user_factors_, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_public_transposed_product_matches_scipys_private_kernel(monkeypatch, dtype):
    """The item half-sweep runs on scipy's private CSC kernel when it exists; without it
    (a scipy release that moves it) the public ``csr.T @ dense`` gives the same fit."""
    from recompare.models import wals_solver

    if wals_solver.CSC_KERNEL is None:
        pytest.skip("this scipy has no private CSC kernel: the fallback is the only path")
    data = _random_dataset(n_users=300, n_items=60, seed=7)
    # small blocks and two threads: several blocks per accumulator, as on large data
    common = {"dim": 6, "iterations": 4, "dtype": dtype, "threads": 2, "block_nnz": 200}
    fast = WALS(**common).fit(data)
    monkeypatch.setattr(wals_solver, "CSC_KERNEL", None)
    public = WALS(**common).fit(data)
    tol = 1e-4 if dtype == "float32" else 1e-10
    assert np.allclose(public.item_factors_, fast.item_factors_, rtol=tol, atol=tol)
    assert np.allclose(public.fit_info_["objective"], fast.fit_info_["objective"], rtol=tol)


def test_cg_float32_tracks_float64():
    data = _random_dataset(n_users=200, n_items=80, seed=4)
    a = WALS(dim=8, iterations=5).fit(data)
    b = WALS(dim=8, iterations=5, dtype="float64").fit(data)
    assert np.allclose(a.fit_info_["objective"], b.fit_info_["objective"], rtol=1e-4)


def test_w0_zero_and_empty_rows():
    data = _random_dataset(seed=5)
    model = WALS(dim=4, unobserved_weight=0.0, regularization=0.0, reg_scaling="none",
                 solver="cholesky", iterations=3).fit(data)
    assert np.isfinite(model.user_factors_).all() and np.isfinite(model.item_factors_).all()
    assert not model.user_factors_[0].any()  # no interactions: the zero vector
    assert not model.item_factors_[1].any()
    cg = WALS(dim=4, unobserved_weight=0.0, iterations=3).fit(data)
    assert np.isfinite(cg.user_factors_).all() and not cg.user_factors_[0].any()


# --------------------------------------------------------------- folding


def _mirror(cross_rate: float):
    from recompare.data.splits import split
    from recompare.data.synth import mirror, planted

    base = planted(n_users=500, n_items=250, n_groups=1, seed=0)
    return split(mirror(base, copies=2, cross_rate=cross_rate, seed=0), kind="random", seed=0)


def _exact(w0: float) -> WALS:
    return WALS(dim=32, unobserved_weight=w0, regularization=0.01, reg_scaling="none",
                solver="cholesky", iterations=8)


def test_w0_controls_folding_on_a_mirror_with_one_percent_cross_rate():
    data = _mirror(0.01)
    leak0, truth = _leakage(_exact(0.0).fit(data), data)
    leak_small, _ = _leakage(_exact(0.01).fit(data), data)
    assert truth < 0.03
    assert leak0 > 3 * truth  # observed entries only: folded
    assert leak_small < leak0 / 3
    assert leak_small <= truth + 0.01  # down to the true cross-group share


def test_disjoint_copies_do_not_fold():
    data = _mirror(0.0)
    for w0 in (0.0, 0.01):
        leak, truth = _leakage(_exact(w0).fit(data), data)
        assert truth == 0.0
        assert leak < 0.01


def test_w0_controls_folding_on_planted_groups():
    from recompare.data.splits import split
    from recompare.data.synth import planted

    data = split(planted(n_users=800, n_items=400, n_groups=4, cross_group_rate=0.02, seed=1),
                 kind="random", seed=0)
    for solver in ("cholesky", "cg"):
        common = {"dim": 32, "regularization": 0.01, "reg_scaling": "none",
                  "solver": solver, "iterations": 8}
        leak0, truth = _leakage(WALS(unobserved_weight=0.0, **common).fit(data), data)
        leak1, _ = _leakage(WALS(unobserved_weight=0.03, **common).fit(data), data)
        assert leak0 > 3 * truth, solver
        assert leak1 < leak0 / 2, solver
        assert leak1 <= truth + 0.01, solver


# --------------------------------------------------------------- quality


@pytest.fixture(scope="module")
def bundled():
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "data" / "planted"
    return Dataset.load(path)


def test_beats_popularity_clearly_on_the_bundled_planted_data(bundled):
    from recompare.models.baselines import Popularity

    wals = _recall(WALS(iterations=10).fit(bundled), bundled)
    popularity = _recall(Popularity().fit(bundled), bundled)
    assert wals > 2 * popularity
    assert wals > popularity + 0.15


def test_deterministic_and_refit_reinitialises(bundled):
    a = WALS(iterations=3, threads=2, random_state=7)
    first = a.fit(bundled).user_factors_.copy()
    assert a.fit(bundled) is a  # fit returns self...
    assert np.array_equal(a.user_factors_, first)  # ...and starts over, not from old factors
    b = WALS(iterations=3, threads=2, random_state=7).fit(bundled)
    assert np.array_equal(b.item_factors_, a.item_factors_)
    assert a.fit_info_["objective"] == b.fit_info_["objective"]
    c = WALS(iterations=3, threads=2, random_state=8).fit(bundled)
    assert not np.allclose(c.user_factors_, first)


def test_validation_recall_and_early_stopping(bundled):
    from recompare.data.validation import validation_split

    events = []
    bundled = validation_split(bundled, 0.2, random_state=0)  # never select on test
    model = WALS(iterations=30, patience=2).fit(bundled, callback=events.append,
                                                  validation=bundled.split.test)
    info = model.fit_info_
    assert events[0] == {"stage": "start", "total": 30}
    assert all("recall@20" in e for e in events[1:])
    assert info["iterations"] < 30  # stopped early
    best = info["best_iteration"]
    assert info["validation"][best - 1] == max(info["validation"])
    # the kept factors are those of the best sweep
    assert _validation_recall(model, bundled) == pytest.approx(info["validation"][best - 1])


def _validation_recall(model, data):
    """recall_norm@20 of the kept factors over every validation user (fewer than the 5,000
    that fit samples), through the public recommend and metrics."""
    from recompare.evaluate.metrics import accuracy

    test = data.split.test
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    assert len(users) <= 5000
    ids, scores = model.recommend(users, k=20)
    return accuracy(ids, test[users], [20], valid=np.isfinite(scores))["metrics"]["recall_norm@20"]


# ------------------------------------------------------- new users, cold start


def test_strong_and_cold_protocols(bundled):
    model = WALS(iterations=8).fit(bundled)
    assert model.protocols == {"weak", "strong", "cold"}
    split = bundled.split
    users = split.heldout_users
    assert not model.user_factors_[users].any()  # held out of training
    foldin = split.foldin[users]
    features = bundled.user_features.iloc[users].reset_index(drop=True)
    warm = model.embed_new_users(foldin, features)
    cold = model.embed_new_users(None, features)
    assert warm.shape == cold.shape == (len(users), model.dim)
    # cold start: the mean of training users sharing the most feature values
    train_users = np.flatnonzero(np.diff(bundled.train.indptr) > 0)
    frame = bundled.user_features.iloc[train_users].reset_index(drop=True)
    row = features.iloc[0]
    same = np.ones(len(frame), bool)
    for col in ("group_hint", "region", "device"):
        same &= (frame[col] == row[col]).to_numpy()
    age_edges = np.asarray(model.cold_columns_[1]["edges"])
    same &= (np.searchsorted(age_edges, frame["age"].to_numpy(), side="right")
             == np.searchsorted(age_edges, [row["age"]], side="right")[0])
    if same.any():
        expected = model.user_factors_[train_users[same]].mean(0)
        assert np.allclose(cold[0], expected, atol=1e-5)
    # both protocols recommend within the user's group far more than across
    groups = bundled.query_groups()[users]
    for emb, history in ((warm, foldin), (cold, None)):
        from recompare.models.topk import topk_dot

        ids, _ = topk_dot(emb, model.item_factors_, 10, exclude=history)
        in_group = (bundled.item_groups[ids] == groups[:, None]).mean()
        assert in_group > 0.8
    # no features and no history: the global mean
    blank = model.embed_new_users(sp.csr_matrix((2, bundled.n_items), dtype=np.float32))
    assert np.allclose(blank, model.global_mean_)


def test_unknown_feature_values_fall_back_to_the_global_mean(bundled):
    model = WALS(iterations=2).fit(bundled)
    frame = pd.DataFrame({"group_hint": ["nowhere"], "region": ["mars"], "device": ["abacus"],
                          "age": [np.nan]})
    assert np.allclose(model.embed_new_users(None, frame), model.global_mean_)


# ------------------------------------------------------------------ I/O


def test_save_load_round_trip(tmp_path, bundled):
    from recompare.models import load_model

    model = WALS(iterations=3, item_weights="inverse_sqrt_frequency").fit(bundled)
    path = model.save(tmp_path / "wals")
    meta = json.loads((path / "model.json").read_text())
    assert meta["kind"] == "wals" and meta["fingerprint"] == bundled.fingerprint
    with np.load(path / "arrays.npz", allow_pickle=False) as arrays:
        assert all(arrays[name].dtype != object for name in arrays.files)
    loaded = load_model(path, bundled)
    assert loaded.get_params() == model.get_params()
    for a, b in zip(loaded.recommend(k=10), model.recommend(k=10)):
        assert np.array_equal(a, b)
    users = bundled.split.heldout_users[:20]
    feats = bundled.user_features.iloc[users].reset_index(drop=True)
    assert np.array_equal(loaded.embed_new_users(bundled.split.foldin[users], feats),
                          model.embed_new_users(bundled.split.foldin[users], feats))
    assert np.array_equal(loaded.embed_new_users(None, feats), model.embed_new_users(None, feats))
    with pytest.raises(RecompareError, match="already exists"):
        model.save(path)


def test_explicit_item_weights_round_trip(tmp_path):
    data = _random_dataset(seed=6)
    weights = np.linspace(0.5, 2.0, data.n_items)
    model = WALS(dim=3, iterations=2, item_weights=weights, dtype="float64",
                 solver="cholesky").fit(data)
    assert model.fit_info_["objective"][-1] == pytest.approx(
        _dense_objective(model, data.train), rel=1e-9)
    loaded = WALS.load(model.save(tmp_path / "m"))
    assert np.allclose(loaded.item_weight_, weights)


def test_export_arrays_names():
    model = WALS(dim=3, iterations=1).fit(_random_dataset())
    arrays = model.export_arrays()
    assert set(arrays) == {"user_factors", "item_factors", "query_embeddings", "item_embeddings"}
    assert arrays["user_factors"].shape == (40, 3)


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize("params, message", [
    ({"dim": 0}, "dim must be a positive integer"),
    ({"dim": -3}, "dim must be a positive integer"),
    ({"dim": 2.5}, "dim must be a positive integer"),
    ({"unobserved_weight": -0.1}, "unobserved_weight must be"),
    ({"regularization": -1}, "regularization must be"),
    ({"reg_exponent": float("nan")}, "reg_exponent must be"),
    ({"alpha": -1.0, "weighting": "linear"}, "alpha must be"),
    ({"iterations": 0}, "iterations must be"),
    ({"cg_steps": 0}, "cg_steps must be"),
    ({"solver": "lu"}, "solver must be one of"),
    ({"weighting": "square"}, "weighting must be one of"),
    ({"reg_scaling": "huge"}, "reg_scaling must be one of"),
    ({"item_weights": "popular"}, "item_weights must be one of"),
    ({"item_weights": [1.0, -1.0]}, "item_weights has shape"),
])
def test_bad_hyperparameters_raise_clear_errors(params, message):
    with pytest.raises(RecompareError, match=message):
        WALS(**params).fit(_random_dataset())


def test_negative_weights_and_empty_data_raise():
    data = _random_dataset()
    with pytest.raises(RecompareError, match="item_weights must be finite and > 0"):
        WALS(item_weights=-np.ones(data.n_items)).fit(data)
    negative = from_interactions(["a", "b"], ["x", "y"], [-5.0, 1.0])
    with pytest.raises(RecompareError, match="observed weights must be >= 0"):
        WALS(weighting="linear", alpha=1.0).fit(negative)
    empty = _matrix_dataset(sp.csr_matrix((3, 4)))
    with pytest.raises(RecompareError, match="training matrix is empty"):
        WALS().fit(empty)
    with pytest.raises(RecompareError, match="not fitted"):
        WALS().recommend(k=1)
    model = WALS(dim=2, iterations=1).fit(data)
    with pytest.raises(RecompareError, match="item columns"):
        model.embed_new_users(sp.csr_matrix((1, 3)))


# ------------------------------------------------------------------- CLI


def test_cli_train_wals_and_export(tmp_path, bundled):
    from click.testing import CliRunner

    from recompare.cli import main

    runner = CliRunner()
    from pathlib import Path

    data = str(Path(__file__).resolve().parent.parent / "data" / "planted")
    out = tmp_path / "wals"
    result = runner.invoke(main, ["train-wals", data, "-o", str(out), "--iterations", "3",
                                  "--dim", "8", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["iterations"] == 3 and len(summary["objective"]) == 3
    assert summary["peak_extra_bytes"] >= 0 and summary["seconds"] > 0
    assert (out / "model.json").is_file()
    again = runner.invoke(main, ["train-wals", data, "-o", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output
    bad = runner.invoke(main, ["train-wals", data, "-o", str(tmp_path / "x"), "--dim", "0"])
    assert bad.exit_code == 1 and "dim must be a positive integer" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "x").exists()
    npz = tmp_path / "wals.npz"
    exported = runner.invoke(main, ["export", str(out), str(npz), "--dataset", data, "--json"])
    assert exported.exit_code == 0, exported.output
    with np.load(npz, allow_pickle=False) as arrays:
        assert arrays["user_factors"].shape == (bundled.n_users, 8)
        assert arrays["item_embeddings"].shape == (bundled.n_items, 8)
        assert arrays["item_ids"][0] == bundled.items.ids[0]
    clash = runner.invoke(main, ["export", str(out), str(npz)])
    assert clash.exit_code == 1 and "already exists" in clash.output


def test_cli_penalty_options_reach_the_model_and_the_summary(tmp_path):
    from click.testing import CliRunner

    from recompare.cli import main
    from recompare.models import load_model

    data = _random_dataset()
    data.save(tmp_path / "ds")
    runner = CliRunner()
    out = tmp_path / "m"
    result = runner.invoke(main, ["train-wals", str(tmp_path / "ds"), "-o", str(out), "--dim",
                                  "4", "--iterations", "2", "--regularization", "0.02",
                                  "--reg-exponent", "1"])
    assert result.exit_code == 0, result.output
    assert "0.02 (frequency: lambda (n_u + w0 n)^1)" in result.output
    params = load_model(out, data).get_params()
    assert (params["regularization"], params["reg_exponent"]) == (0.02, 1.0)
    # no flags: the scaling's defaults, saved as such and shown as the values in effect
    result = runner.invoke(main, ["train-wals", str(tmp_path / "ds"), "-o", str(tmp_path / "d"),
                                  "--dim", "4", "--iterations", "2"])
    assert result.exit_code == 0, result.output
    assert "0.3 (frequency: lambda (n_u + w0 n)^0.5)" in result.output
    assert load_model(tmp_path / "d", data).penalty() == (0.3, 0.5)
    bad = runner.invoke(main, ["train-wals", str(tmp_path / "ds"), "-o", str(tmp_path / "x"),
                               "--reg-exponent", "-1"])
    assert bad.exit_code == 1 and "reg_exponent must be" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "x").exists()


def test_train_wals_help_states_the_models_penalty_defaults():
    # the CLI does not import the model (start-up time), so its help repeats REG_DEFAULTS
    from recompare.commands.train_wals import train_wals
    from recompare.models.wals import REG_DEFAULTS

    helps = {p.name: p.help for p in train_wals.params}
    freq_lam, freq_nu = REG_DEFAULTS["frequency"]
    assert f"{freq_lam:g} with --reg-scaling frequency" in helps["regularization"]
    assert f"{REG_DEFAULTS['none'][0]:g} with none or observed" in helps["regularization"]
    assert REG_DEFAULTS["none"][0] == REG_DEFAULTS["observed"][0]
    assert f"{freq_nu:g} with frequency, {REG_DEFAULTS['observed'][1]:g} with observed" in \
        helps["reg_exponent"]
