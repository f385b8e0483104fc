"""The softmax DNN: losses against their definitions, masking, training contract, CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from recompare.cli import main
from recompare.data.dataset import from_interactions
from recompare.data.splits import split
from recompare.data.synth import planted
from recompare.errors import RecompareError
from recompare.evaluate.protocols import evaluate
from recompare.models import load_model, softmax_training
from recompare.models.sampling import (
    NegativeSampler,
    full_softmax_loss,
    gravity_penalty,
    mask_accidental_hits,
    sampled_softmax_loss,
)
from recompare.models.softmax import SoftmaxDNN
from recompare.models.softmax_training import batch_loss, make_optimizers
from recompare.models.tower import Batch, FeatureSchema, QueryTower, mask_history

FAST = {"epochs": 6, "patience": None, "validation_fraction": 0.0, "threads": 1, "hidden": (32,),
        "dim": 16, "batch_size": 64, "lr": 1e-2, "num_negatives": 64}


@pytest.fixture(scope="module")
def data():
    """Small planted data (4 groups, user features) with a 'both' split."""
    return split(planted(n_users=500, n_items=240, n_groups=4, interactions_per_user=20,
                         seed=3), "both", seed=0)


def _random_problem(seed: int, n_rows: int = 5, n_items: int = 12, dim: int = 4):
    """Queries, items, per-row targets (p) and per-row excluded input items."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    queries = torch.randn(n_rows, dim, generator=gen, dtype=torch.float64)
    items = torch.randn(n_items, dim, generator=gen, dtype=torch.float64)
    t_rows, t_items, t_w, x_rows, x_items = [], [], [], [], []
    for r in range(n_rows):
        chosen = rng.choice(n_items, size=rng.integers(2, 6), replace=False)
        n_t = rng.integers(1, len(chosen))
        w = rng.random(n_t) + 0.1
        t_rows += [r] * n_t
        t_items += chosen[:n_t].tolist()
        t_w += (w / w.sum()).tolist()
        x_rows += [r] * (len(chosen) - n_t)
        x_items += chosen[n_t:].tolist()

    def t(values, dtype=torch.int64):
        return torch.tensor(values, dtype=dtype)

    return (queries, items, t(t_rows), t(t_items), t(t_w, torch.float64), t(x_rows),
            t(x_items))


# ------------------------------------------------------------------- losses
@pytest.mark.parametrize("seed", range(4))
def test_sampled_loss_with_all_items_as_candidates_equals_full_loss(seed):
    q, v, t_rows, t_items, t_w, x_rows, x_items = _random_problem(seed)
    q.requires_grad_(True)
    v.requires_grad_(True)
    full = full_softmax_loss(q, v, t_rows, t_items, t_w, x_rows, x_items)
    g_full = torch.autograd.grad(full, (q, v))
    n = len(v)
    sampled = sampled_softmax_loss(
        q, v[t_items], v, torch.arange(n), torch.zeros(n, dtype=torch.float64), t_rows, t_w,
        torch.cat([t_rows, x_rows]), torch.cat([t_items, x_items]))
    g_sampled = torch.autograd.grad(sampled, (q, v))
    assert float(full.detach()) == pytest.approx(float(sampled.detach()), rel=1e-10)
    for a, b in zip(g_full, g_sampled):
        assert torch.allclose(a, b, atol=1e-10)


def test_full_loss_is_cross_entropy_against_p_with_inputs_removed():
    q, v, t_rows, t_items, t_w, x_rows, x_items = _random_problem(7)
    logits = (q @ v.T).numpy()
    expected = []
    for r in range(len(q)):
        keep = np.ones(len(v), bool)
        keep[x_items[x_rows == r].numpy()] = False
        lse = np.log(np.exp(logits[r, keep]).sum())
        items, w = t_items[t_rows == r].numpy(), t_w[t_rows == r].numpy()
        expected.append(-(w * (logits[r, items] - lse)).sum())
    got = full_softmax_loss(q, v, t_rows, t_items, t_w, x_rows, x_items)
    assert float(got) == pytest.approx(np.mean(expected), rel=1e-10)


def test_logq_correction_matches_its_formula():
    q, v, t_rows, t_items, t_w, x_rows, x_items = _random_problem(11, n_items=20)
    cand = torch.tensor([0, 3, 4, 8, 9, 13, 17, 19])
    log_q = torch.log(torch.linspace(0.05, 0.9, len(cand), dtype=torch.float64))
    got = sampled_softmax_loss(q, v[t_items], v[cand], cand, log_q, t_rows, t_w,
                               torch.cat([t_rows, x_rows]), torch.cat([t_items, x_items]))
    expected = []
    for r in range(len(q)):
        pos = t_items[t_rows == r].numpy()
        known = set(pos) | set(x_items[x_rows == r].numpy())
        pos_logits = (q[r] @ v[pos].T).numpy()
        neg = [(int(c), float(lq)) for c, lq in zip(cand, log_q) if int(c) not in known]
        neg_logits = np.array([float(q[r] @ v[c]) - lq for c, lq in neg])
        lse = np.log(np.exp(pos_logits).sum() + np.exp(neg_logits).sum())
        expected.append(lse - (t_w[t_rows == r].numpy() * pos_logits).sum())
    assert float(got) == pytest.approx(np.mean(expected), rel=1e-10)


def test_sampler_log_probability_is_the_inclusion_probability():
    counts = np.array([100.0, 30, 10, 5, 1, 0, 0, 2])
    sampler = NegativeSampler("popularity", 3, counts)
    q = (counts + 1) / (counts + 1).sum()
    gen = torch.Generator().manual_seed(0)
    hits = np.zeros(len(counts))
    for _ in range(2000):
        cand, log_q = sampler.sample(gen, torch.zeros(0, dtype=torch.int64))
        hits[cand.numpy()] += 1
        np.testing.assert_allclose(log_q.numpy(), np.log(1 - (1 - q[cand.numpy()]) ** 3),
                                   rtol=1e-5)
    np.testing.assert_allclose(hits / 2000, 1 - (1 - q) ** 3, atol=0.03)
    uniform = NegativeSampler("uniform", 5, counts)
    cand, log_q = uniform.sample(gen, torch.zeros(0, dtype=torch.int64))
    assert torch.all(cand[1:] > cand[:-1])  # sorted, unique
    np.testing.assert_allclose(log_q.numpy(), math.log(1 - (1 - 1 / 8) ** 5), rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 6), n=st.integers(1, 9), d=st.integers(1, 5), seed=st.integers(0, 999))
def test_gravity_equals_its_dense_definition(m, n, d, seed):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(m, d, generator=gen, dtype=torch.float64)
    v = torch.randn(n, d, generator=gen, dtype=torch.float64)
    dense = ((u @ v.T) ** 2).sum() / (m * n)
    assert float(gravity_penalty(u, v)) == pytest.approx(float(dense), rel=1e-10, abs=1e-12)


def test_accidental_hits_are_removed():
    logits = torch.zeros(3, 4)
    cand = torch.tensor([2, 5, 7, 9])
    known_rows = torch.tensor([0, 0, 1, 2, 2])
    known_items = torch.tensor([5, 6, 9, 1, 2])  # 6 and 1 are not candidates
    out = mask_accidental_hits(logits, cand, known_rows, known_items)
    expected = torch.zeros(3, 4)
    expected[0, 1] = expected[1, 3] = expected[2, 0] = -math.inf
    assert torch.equal(out, expected)
    # a candidate that is a positive of the row changes nothing in that row's loss
    q, v, t_rows, t_items, t_w, x_rows, x_items = _random_problem(5, n_rows=1, n_items=10)
    known = torch.cat([t_items, x_items])
    negatives = torch.tensor(sorted(set(range(10)) - set(known.tolist())))
    with_hits = torch.arange(10)

    def loss(c):
        return sampled_softmax_loss(q, v[t_items], v[c], c, torch.zeros(len(c), dtype=q.dtype),
                                    t_rows, t_w, torch.cat([t_rows, x_rows]), known)

    assert float(loss(with_hits)) == pytest.approx(float(loss(negatives)), rel=1e-12)


# ------------------------------------------------------------ masked history
def test_masked_history_partitions_each_users_items():
    rng = np.random.default_rng(0)
    m = sp.random(60, 40, density=0.2, random_state=1, format="csr", dtype=np.float32)
    m.data[:] = rng.integers(1, 5, m.nnz)
    inputs, targets = mask_history(m, 0.3, 0.1, np.random.default_rng(1))
    assert (inputs.multiply(targets)).nnz == 0  # disjoint
    assert abs(inputs + targets - m).max() == 0  # together: everything, values kept
    n = np.diff(m.indptr)
    n_t = np.diff(targets.indptr)
    n_in = np.diff(inputs.indptr)
    assert (n_t[n >= 1] >= 1).all()
    cold = (n_in == 0) & (n >= 2)  # history dropout: whole history as target
    assert ((n_in >= 1) | cold)[n >= 2].all() and 0 < cold.sum() < 20


def test_no_target_ever_appears_in_its_own_input(data, monkeypatch):
    seen_batches = []
    original = softmax_training.batch_loss

    def spy(tower, batch, *args, **kwargs):
        bag_pairs = set(zip(batch.input_rows.tolist(), batch.bag_items.tolist()))
        target_pairs = set(zip(batch.target_rows.tolist(), batch.target_items.tolist()))
        seen_batches.append((len(bag_pairs), len(target_pairs), bag_pairs & target_pairs))
        # the bag the tower reads is exactly the input part
        offsets = batch.bag_offsets.tolist() + [len(batch.bag_items)]
        rows = np.repeat(np.arange(len(batch)), np.diff(offsets))
        assert rows.tolist() == batch.input_rows.tolist()
        return original(tower, batch, *args, **kwargs)

    monkeypatch.setattr(softmax_training, "batch_loss", spy)
    SoftmaxDNN(**{**FAST, "epochs": 2}).fit(data)
    assert seen_batches and all(not leak for _, _, leak in seen_batches)
    assert sum(b for b, _, _ in seen_batches) > 0 and sum(t for _, t, _ in seen_batches) > 0


# --------------------------------------------------------- training contract
def test_determinism_under_a_seed(data):
    a = SoftmaxDNN(**FAST, loss="sampled", negatives="uniform", random_state=4).fit(data)
    b = SoftmaxDNN(**FAST, loss="sampled", negatives="uniform", random_state=4).fit(data)
    c = SoftmaxDNN(**FAST, loss="sampled", negatives="uniform", random_state=5).fit(data)
    assert np.array_equal(a.item_embeddings(), b.item_embeddings())
    assert np.array_equal(a.query_embeddings(), b.query_embeddings())
    assert not np.allclose(a.item_embeddings(), c.item_embeddings())


def test_fit_reinitialises_and_returns_self(data):
    model = SoftmaxDNN(**FAST)
    assert model.fit(data) is model
    first = model.item_embeddings().copy()
    assert np.array_equal(model.fit(data).item_embeddings(), first)


def test_save_load_round_trip(data, tmp_path):
    model = SoftmaxDNN(**FAST, dropout=0.2).fit(data)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m", data)
    assert isinstance(loaded, SoftmaxDNN) and loaded.get_params() == model.get_params()
    assert loaded.protocols == model.protocols
    ids_a, sc_a = model.recommend(np.arange(50), k=10)
    ids_b, sc_b = loaded.recommend(np.arange(50), k=10)
    assert np.array_equal(ids_a, ids_b) and np.allclose(sc_a, sc_b)
    users = data.split.heldout_users
    hist, feats = data.split.foldin[users], data.user_features.iloc[users]
    assert np.allclose(model.embed_new_users(hist, feats), loaded.embed_new_users(hist, feats))
    with pytest.raises(RecompareError, match="already exists"):
        model.save(tmp_path / "m")
    arrays = loaded.export_arrays()
    assert arrays["item_embeddings"].shape == (data.n_items, 16)
    assert arrays["query_embeddings"].shape == (data.n_users, 16)


def test_resume_continues_where_it_stopped(data, tmp_path):
    params = dict(FAST, epochs=4, loss="sampled", negatives="popularity", dropout=0.1,
                  validation_fraction=0.1, patience=3)
    straight = SoftmaxDNN(**params).fit(data)
    ckpt = tmp_path / "ckpt"
    first = SoftmaxDNN(**{**params, "epochs": 2}).fit(data, checkpoint_dir=ckpt)
    assert first.fit_info_["epochs_run"] == 2
    resumed = SoftmaxDNN(**params).fit(data, resume_from=ckpt)
    assert resumed.fit_info_["epochs_run"] == 4
    assert [h["epoch"] for h in resumed.fit_info_["history"]] == [1, 2, 3, 4]
    assert np.allclose(resumed.item_embeddings(), straight.item_embeddings(), atol=1e-6)
    assert np.allclose(resumed.query_embeddings(), straight.query_embeddings(), atol=1e-6)
    with pytest.raises(RecompareError, match="different parameters.*dim"):
        SoftmaxDNN(**{**params, "dim": 8}).fit(data, resume_from=ckpt)
    other = split(planted(n_users=300, n_items=240, n_groups=4, seed=9), "both", seed=0)
    with pytest.raises(RecompareError, match="another data set"):
        SoftmaxDNN(**params).fit(other, resume_from=ckpt)


def test_sampled_training_touches_only_sampled_item_rows(data):
    """Sparse gradients: items neither positive nor sampled in a batch are not updated."""
    model = SoftmaxDNN(**{**FAST, "num_negatives": 8}, loss="sampled", negatives="uniform")
    features = model.check(data)
    schema = FeatureSchema.build(data.user_features, uses_history="history" in features)
    cats, nums = schema.encode(data.user_features)
    tower = QueryTower(data.n_items, 16, (32,), "tanh", 0.0, schema, False, False, 1.0,
                      sparse_out=True)
    tower.reset_parameters(torch.Generator().manual_seed(0))
    opts = make_optimizers(tower, model.optimizer, model.lr, model.weight_decay)
    sampler = NegativeSampler("uniform", 8, np.ones(data.n_items))
    inputs, targets = mask_history(data.train, 0.2, 0.0, np.random.default_rng(0))
    batch = Batch.build(np.arange(3), inputs, targets, cats, nums)
    before = tower.item_out.detach().clone()
    gen = torch.Generator().manual_seed(1)
    state = gen.get_state()
    cand, _ = sampler.sample(gen, batch.target_items)
    gen.set_state(state)
    loss = batch_loss(tower, batch, sampler, gen, model.num_negatives, model.gravity_value())
    loss.backward()
    for opt in opts:
        opt.step()
    changed = torch.nonzero((tower.item_out.detach() != before).any(dim=1)).ravel()
    allowed = set(cand.tolist()) | set(batch.target_items.tolist())
    assert len(changed) > 0 and set(changed.tolist()) <= allowed


def test_folding_positives_only_leaks_much_more(data):
    leak = {}
    for name, params in {
        "none": {"loss": "sampled", "negatives": "none"},
        "uniform": {"loss": "sampled", "negatives": "uniform"},
        "full": {"loss": "full"},
        "gravity": {"loss": "sampled", "negatives": "none", "gravity": 1.0},
    }.items():
        # without dropout, as bench dnn's folding variants (see FOLDING_VARIANTS there)
        model = SoftmaxDNN(**{**FAST, "epochs": 10, "dropout": 0.0}, **params).fit(data)
        result = evaluate(model, data, "weak", ks=(10,), folding=True, score_folding=False)
        leak[name] = result["folding"]["leakage@10"]
    assert leak["none"] > 0.3, leak
    for name in ("uniform", "full", "gravity"):
        assert leak["none"] >= 5 * max(leak[name], 0.01), leak


def test_beats_popularity_on_planted_data(data):
    from recompare.models import model_class

    dnn = SoftmaxDNN(threads=1).fit(data)  # the defaults
    pop = model_class("popularity")().fit(data)
    r_dnn = evaluate(dnn, data, "weak", ks=(20,), folding=False)["metrics"]["recall@20"]
    r_pop = evaluate(pop, data, "weak", ks=(20,), folding=False)["metrics"]["recall@20"]
    assert r_dnn > 1.5 * r_pop, (r_dnn, r_pop)


def test_cold_and_strong_protocols(data):
    model = SoftmaxDNN(**FAST).fit(data)
    assert model.protocols == {"weak", "strong", "cold"}
    users = data.split.heldout_users
    cold = model.embed_new_users(None, data.user_features.iloc[users])
    assert cold.shape == (len(users), 16) and np.isfinite(cold).all()
    # the group_hint feature tells groups apart: cold queries differ by group
    assert len(np.unique(cold.round(4), axis=0)) > 1
    strong = model.embed_new_users(data.split.foldin[users], data.user_features.iloc[users])
    assert not np.allclose(strong, cold)
    history_only = SoftmaxDNN(**FAST, features="history").fit(data)
    assert history_only.protocols == {"weak", "strong"}
    result = evaluate(history_only, data, "cold", ks=(10,), folding=False)
    assert result["status"] == "unsupported"
    with pytest.raises(RecompareError, match="lack column"):
        model.embed_new_users(None, pd.DataFrame({"age": [30.0]}))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("params,message", [
    ({"features": "history,foo"}, "unknown feature"),
    ({"dim": 0}, "dim must be"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"loss": "sampled", "num_negatives": 10_000}, "larger than the catalogue"),
    ({"hidden": (0,)}, "hidden sizes"),
    ({"loss": "softmax"}, "loss must be"),
    ({"dropout": 1.0}, "dropout"),
    ({"patience": -1}, "patience must be a positive integer or None"),
])
def test_bad_parameters_give_clear_errors(data, params, message):
    with pytest.raises(RecompareError, match=message):
        SoftmaxDNN(**params).fit(data)


def test_user_features_requested_without_any():
    ds = from_interactions(["a", "a", "b", "b", "c"], ["x", "y", "x", "z", "y"])
    with pytest.raises(RecompareError, match="no user features"):
        SoftmaxDNN(features=("history", "user")).fit(ds)
    model = SoftmaxDNN(**FAST).fit(ds)  # auto: history only
    assert model.fit_info_["features"] == ["history"]



def test_patience_none_trains_every_epoch_and_zero_means_none(data):
    """None is "no early stopping"; the old spelling 0 still means it, with a warning."""
    params = dict(FAST, epochs=4, validation_fraction=0.2, lr=0.5)  # lr: validation wobbles
    off = SoftmaxDNN(**params).fit(data)
    assert off.fit_info_["epochs_run"] == 4 and not off.fit_info_["stopped_early"]
    assert all(h["validation_recall"] is not None for h in off.fit_info_["history"])
    with pytest.warns(FutureWarning, match="patience=None"):
        zero = SoftmaxDNN(**{**params, "patience": 0}).fit(data)
    assert np.array_equal(zero.item_embeddings(), off.item_embeddings())


def test_early_stopping_restores_the_best_epoch(data):
    params = {**FAST, "epochs": 30, "validation_fraction": 0.2, "patience": 1, "lr": 0.05}
    model = SoftmaxDNN(**params).fit(data)
    info = model.fit_info_
    vals = [h["validation_recall"] for h in info["history"]]
    assert info["best_epoch"] == 1 + int(np.argmax(vals))
    assert info["best_validation_recall"] == max(vals)
    assert info["stopped_early"] and info["epochs_run"] == info["best_epoch"] + 1 < 30
    # epochs replay from the seed alone: the restored model is the one trained to best_epoch
    best = SoftmaxDNN(**{**params, "epochs": info["best_epoch"], "patience": None,
                         "average_epochs": 0}).fit(data)
    assert np.array_equal(model.item_embeddings(), best.item_embeddings())


def test_fit_restores_the_thread_count(data):
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    seen = []
    SoftmaxDNN(**{**FAST, "epochs": 1, "threads": wanted}).fit(
        data, callback=lambda event: seen.append(torch.get_num_threads()))
    assert set(seen) == {wanted} and torch.get_num_threads() == before


# ----------------------------------------------------------------------- CLI
def test_cli_trains_saves_and_reports_json(data, tmp_path):
    data.save(tmp_path / "ds")
    out = tmp_path / "model"
    result = CliRunner().invoke(main, [
        "train-dnn", str(tmp_path / "ds"), "-o", str(out), "--epochs", "3", "--dim", "8",
        "--hidden", "16,8", "--loss", "sampled", "--negatives", "in-batch", "--threads", "1",
        "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["epochs_run"] <= 3 and payload["params"]["hidden"] == [16, 8]
    assert load_model(out, data).item_embeddings().shape == (data.n_items, 8)
    again = CliRunner().invoke(main, ["train-dnn", str(tmp_path / "ds"), "-o", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output


def test_cli_defaults_are_the_estimators(data, tmp_path):
    """Every train-dnn option that mirrors a parameter defaults to the estimator's value,
    and --patience 0 (no early stopping) reaches the model as None."""
    import inspect

    from recompare.commands.train_dnn import train_dnn

    signature = inspect.signature(SoftmaxDNN.__init__).parameters
    options = {p.name: p.default for p in train_dnn.params if p.name in signature}
    assert len(options) >= 17
    for name, default in options.items():
        expected = signature[name].default
        if name == "hidden":
            expected = ",".join(map(str, expected))
        if name == "normalize":  # a flag cannot default to "auto": unset (None) stands for it
            assert default is None and expected == "auto"
            continue
        assert default == expected, name
    data.save(tmp_path / "ds")
    result = CliRunner().invoke(main, ["train-dnn", str(tmp_path / "ds"), "-o",
                                       str(tmp_path / "m"), "--epochs", "1", "--dim", "8",
                                       "--patience", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["params"]["patience"] is None


@pytest.mark.parametrize("args,message", [
    (["--features", "history,colour"], "unknown feature"),
    (["--dim", "0"], "dim must be"),
    (["--batch-size", "-3"], "batch_size must be"),
    (["--loss", "sampled", "--num-negatives", "99999"], "larger than the catalogue"),
    (["--hidden", "64,x"], "--hidden must be"),
    (["--resume", "/nonexistent/ckpt"], "does not exist"),
    (["--gravity", "heavy"], "--gravity must be a number or auto"),
    (["--average-epochs", "1.5"], "--average-epochs must be an integer or auto"),
    (["--average-epochs", "-1"], "average_epochs must be a non-negative integer"),
])
def test_cli_bad_input_is_one_clear_line(data, tmp_path, args, message):
    data.save(tmp_path / "ds")
    result = CliRunner().invoke(main, ["train-dnn", str(tmp_path / "ds"), "-o",
                                       str(tmp_path / "m"), *args])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output and not (tmp_path / "m").exists()


def test_weighted_pooling_is_a_value_weighted_mean():
    schema = FeatureSchema.build(None, uses_history=True)
    cats, nums = schema.encode(None, n_rows=4)
    rows = np.array([0, 0, 0, 1, 1, 3])
    items = np.array([1, 5, 7, 2, 5, 9])
    values = np.array([1.0, 3.0, 4.0, 2.0, 2.0, 5.0], dtype=np.float32)
    matrix = sp.csr_matrix((values, (rows, items)), shape=(4, 12))
    batch = Batch.build(np.arange(4), matrix, None, cats, nums)
    towers = {}
    for pooling in ("weighted", "mean"):
        tower = QueryTower(12, 3, (), "relu", 0.0, schema, False, False, 1.0,
                          sparse_out=False, pooling=pooling)
        tower.reset_parameters(torch.Generator().manual_seed(0))
        towers[pooling] = tower
    bag_in = towers["weighted"].item_in.detach()
    layer = towers["weighted"].layers[0]
    expected_bags = torch.stack([
        (bag_in[[1, 5, 7]] * torch.tensor([[1.0], [3.0], [4.0]])).sum(0) / 8,
        bag_in[[2, 5]].mean(0), torch.zeros(3), bag_in[9]])
    with torch.no_grad():
        got = towers["weighted"].query(batch, None)
        assert torch.allclose(got, layer(expected_bags), atol=1e-6)
        # equal values within a bag (rows 1 and 3): weighted == plain mean
        mean = towers["mean"].query(batch, None)
    assert torch.allclose(got[[1, 2, 3]], mean[[1, 2, 3]], atol=1e-6)
    assert not torch.allclose(got[0], mean[0])


def _bag_batch():
    schema = FeatureSchema.build(None, uses_history=True)
    cats, nums = schema.encode(None, n_rows=4)
    rows = np.array([0, 0, 0, 0, 1, 3])
    items = np.array([1, 5, 7, 8, 2, 9])
    matrix = sp.csr_matrix((np.ones(6, dtype=np.float32), (rows, items)), shape=(4, 12))
    targets = sp.csr_matrix((np.ones(2, dtype=np.float32), ([0, 1], [3, 4])), shape=(4, 12))
    return schema, Batch.build(np.arange(4), matrix, targets, cats, nums)


def test_sqrt_pooling_is_sum_over_root_bag_size():
    schema, batch = _bag_batch()
    tower = QueryTower(12, 3, (), "relu", 0.0, schema, False, False, 1.0,
                       sparse_out=False, pooling="sqrt")
    tower.reset_parameters(torch.Generator().manual_seed(0))
    bag_in = tower.item_in.detach()
    expected = torch.stack([bag_in[[1, 5, 7, 8]].sum(0) / 2, bag_in[2], torch.zeros(3),
                            bag_in[9]])
    with torch.no_grad():
        assert torch.allclose(tower.query(batch, None), tower.layers[0](expected), atol=1e-6)


def test_embedding_penalty_is_squared_norm_of_rows_used_per_query():
    schema, batch = _bag_batch()
    tower = QueryTower(12, 3, (), "relu", 0.0, schema, False, False, 1.0, sparse_out=False)
    tower.reset_parameters(torch.Generator().manual_seed(1))
    with torch.no_grad():
        inp = tower.item_in[[1, 5, 7, 8, 2, 9]].pow(2).sum()
        out = tower.item_out[[3, 4]].pow(2).sum()
        assert torch.allclose(tower.embedding_penalty(batch), (inp + out) / 4)


def test_cli_negatives_need_the_sampled_loss(tmp_path):
    from click.testing import CliRunner

    from recompare.cli import main
    from recompare.data.splits import split as make_split
    from recompare.data.synth import planted

    data = make_split(planted(n_users=200, n_items=300, n_groups=2, interactions_per_user=10,
                              seed=0), kind="random", seed=0)
    data.save(tmp_path / "ds")
    runner = CliRunner()
    result = runner.invoke(main, ["train-dnn", str(tmp_path / "ds"), "-o", str(tmp_path / "m"),
                                  "--loss", "sampled", "--negatives", "none",
                                  "--num-negatives", "16", "--epochs", "1", "--json"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["params"]["loss"] == "sampled" and meta["params"]["negatives"] == "none"
    # no silent switch of the loss: negatives without --loss sampled are refused
    for extra in ([], ["--loss", "full"]):
        for flag, value in (("--negatives", "uniform"), ("--num-negatives", "16")):
            result = runner.invoke(main, ["train-dnn", str(tmp_path / "ds"), "-o",
                                          str(tmp_path / "m2"), flag, value, "--epochs", "1",
                                          *extra])
            assert result.exit_code == 2, result.output
            assert f"{flag} applies to the sampled softmax only" in result.output
            assert "--loss sampled" in result.output
            assert not (tmp_path / "m2").exists()
    help_text = runner.invoke(main, ["train-dnn", "--help"], terminal_width=200).output
    assert "[default: uniform]" not in help_text and "With --loss sampled only" in help_text


def test_average_epochs_means_the_last_epochs_weights(data, tmp_path):
    """average_epochs=1 is the last epoch; 3 is the mean of the last three epochs' weights,
    also across a checkpoint; a resume that moves the window before it is refused."""
    # dot-product scores: item_embeddings() are then the (averaged) weights themselves
    params = dict(FAST, epochs=4, average_epochs=0, normalize=False)
    last = SoftmaxDNN(**params).fit(data)
    assert np.array_equal(SoftmaxDNN(**dict(params, average_epochs=1)).fit(data).item_embeddings(),
                          last.item_embeddings())
    snapshots = [SoftmaxDNN(**dict(params, epochs=e)).fit(data).item_embeddings()
                 for e in (2, 3)]
    averaged = SoftmaxDNN(**dict(params, average_epochs=3)).fit(data)
    expected = (snapshots[0] + snapshots[1] + last.item_embeddings()) / 3
    assert np.allclose(averaged.item_embeddings(), expected, atol=1e-5)
    assert not np.allclose(averaged.item_embeddings(), last.item_embeddings(), atol=1e-3)
    ckpt = tmp_path / "ckpt"
    SoftmaxDNN(**dict(params, epochs=3, average_epochs=3)).fit(data, checkpoint_dir=ckpt)
    with pytest.raises(RecompareError, match="cannot resume: the weight average"):
        SoftmaxDNN(**dict(params, average_epochs=3)).fit(data, resume_from=ckpt)
    SoftmaxDNN(**dict(params, epochs=2, average_epochs=3)).fit(data, checkpoint_dir=ckpt)
    resumed = SoftmaxDNN(**dict(params, epochs=5, average_epochs=3)).fit(data, resume_from=ckpt)
    straight = SoftmaxDNN(**dict(params, epochs=5, average_epochs=3)).fit(data)
    assert np.allclose(resumed.item_embeddings(), straight.item_embeddings(), atol=1e-6)
    with pytest.raises(RecompareError, match="average_epochs must be"):
        SoftmaxDNN(**dict(params, average_epochs=-1)).fit(data)


def test_auto_average_is_the_last_quarter_of_the_run(data):
    """average_epochs="auto" averages the last epochs // 4 epochs, never the early ones."""
    params = dict(FAST, epochs=8)
    auto = SoftmaxDNN(**dict(params, average_epochs="auto"))
    assert auto.average_window() == 2
    assert SoftmaxDNN(**dict(params, epochs=3, average_epochs="auto")).average_window() == 0
    assert SoftmaxDNN(**dict(params, average_epochs=12)).average_window() == 8
    two = SoftmaxDNN(**dict(params, average_epochs=2)).fit(data)
    assert np.array_equal(auto.fit(data).item_embeddings(), two.item_embeddings())
    with pytest.raises(RecompareError, match="average_epochs must be"):
        SoftmaxDNN(**dict(params, average_epochs="last")).fit(data)


def test_lr_decay_schedules():
    """linear and cosine start at lr and fall towards 0; none stays at lr; auto holds lr
    for AUTO_DECAY_STEADY_STEPS steps, then falls linearly to 0 (a shorter run keeps lr);
    set_lr sets every optimiser's groups."""
    f = softmax_training.lr_factor
    steady = softmax_training.AUTO_DECAY_STEADY_STEPS
    assert f("none", 70, 100) == 1.0
    assert f("linear", 0, 100) == 1.0 and f("linear", 75, 100) == pytest.approx(0.25)
    assert f("cosine", 0, 100) == 1.0 and f("cosine", 50, 100) == pytest.approx(0.5)
    assert f("cosine", 99, 100) < 0.001
    assert [f("auto", s, steady) for s in (0, 60, steady - 1)] == [1.0] * 3  # a short run
    total = 3 * steady
    assert f("auto", steady - 1, total) == 1.0
    assert f("auto", 2 * steady, total) == pytest.approx(0.5)
    assert f("auto", total - 1, total) < 0.01
    assert f("auto", steady + 50, steady + 100) == pytest.approx(0.5)
    tower = torch.nn.Linear(2, 2)
    opts = [torch.optim.Adam(tower.parameters(), lr=0.01)]
    model = SoftmaxDNN(lr=0.01, lr_decay="linear")
    softmax_training.set_lr(opts, model, 5, 10)
    assert opts[0].param_groups[0]["lr"] == pytest.approx(0.005)


def test_lr_decay_changes_training_and_is_checked(data):
    params = dict(FAST, epochs=3, average_epochs=0)
    plain = SoftmaxDNN(**params).fit(data).item_embeddings()
    decayed = SoftmaxDNN(**dict(params, lr_decay="linear")).fit(data).item_embeddings()
    again = SoftmaxDNN(**dict(params, lr_decay="linear")).fit(data).item_embeddings()
    assert np.array_equal(decayed, again)
    assert not np.allclose(plain, decayed, atol=1e-4)
    with pytest.raises(RecompareError, match="lr_decay must be one of"):
        SoftmaxDNN(**dict(params, lr_decay="step")).fit(data)


def test_auto_normalize_means_cosine_scores_with_the_full_loss_only(data, tmp_path):
    """normalize="auto": unit-norm items and |query| = 1 / temperature with the full loss;
    plain dot products with a sampled loss (the folding variants keep their behaviour)."""
    full = SoftmaxDNN(**dict(FAST, epochs=2)).fit(data)
    assert full.normalize_value() and full.temperature == 0.1
    assert np.allclose(np.linalg.norm(full.item_embeddings(), axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(full.query_embeddings(), axis=1), 10.0, atol=1e-3)
    sampled = SoftmaxDNN(**dict(FAST, epochs=2, loss="sampled", num_negatives=8))
    assert not sampled.fit(data).normalize_value()
    assert not np.allclose(np.linalg.norm(sampled.item_embeddings(), axis=1), 1.0, atol=1e-3)
    assert not SoftmaxDNN(normalize=False).normalize_value()
    # the CLI: no flag = auto (saved as such), --no-normalize turns it off
    data.save(tmp_path / "ds")
    for flag, saved in (([], "auto"), (["--no-normalize"], False)):
        out = tmp_path / f"m{len(flag)}"
        result = CliRunner().invoke(main, ["train-dnn", str(tmp_path / "ds"), "-o", str(out),
                                           "--epochs", "1", "--dim", "8", "--hidden", "8",
                                           "--json", *flag])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["params"]["normalize"] == saved
        assert load_model(out).normalize == saved
    with pytest.raises(RecompareError, match="normalize must be"):
        SoftmaxDNN(**dict(FAST, normalize="yes")).fit(data)
