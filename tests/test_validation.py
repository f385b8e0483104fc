"""Validation is carved from the training part only, and fitting never reads the test split."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recompare.data.dataset import Split
from recompare.data.validation import is_validation, validation_split
from recompare.errors import RecompareError
from recompare.models.softmax import SoftmaxDNN
from recompare.models.wals import WALS

DNN = {"epochs": 4, "patience": 2, "validation_fraction": 0.2, "threads": 1, "hidden": (16,),
       "dim": 8, "batch_size": 32, "lr": 1e-2}


def _poisoned(dataset):
    """``dataset`` with its test, fold-in and held-out parts replaced by random junk of
    the same shape: a fit that never reads them gives the same numbers."""
    rng = np.random.default_rng(99)
    s = dataset.split

    def junk(part):
        if part is None:
            return None
        dense = (rng.random(part.shape) < 0.3).astype(np.float32) * 5
        return sp.csr_matrix(dense)

    poison = Split(kind=s.kind, train=s.train, test=junk(s.test), foldin=junk(s.foldin),
                   heldout=junk(s.heldout), heldout_users=s.heldout_users, options=s.options)
    return dataset.replace(split=poison)


def test_weak_carve_partitions_training_part_and_is_seeded(tiny_split):
    val = validation_split(tiny_split, 0.2, random_state=4, heldout_users=False)
    train = tiny_split.train
    s = val.split
    assert is_validation(val) and s.foldin is None and len(s.heldout_users) == 0
    assert (s.train + s.test - train).nnz == 0  # train = fit part + validation part
    assert s.train.multiply(s.test).nnz == 0
    share = s.test.nnz / train.nnz
    assert 0.12 < share < 0.28
    degree = np.diff(train.indptr)
    assert (np.diff(s.train.indptr)[degree > 0] >= 1).all()  # nobody loses all training
    again = validation_split(tiny_split, 0.2, random_state=4, heldout_users=False)
    assert (again.split.test != s.test).nnz == 0
    other = validation_split(tiny_split, 0.2, random_state=5, heldout_users=False)
    assert (other.split.test != s.test).nnz > 0


def test_strong_carve_holds_out_training_users(tiny_split):
    val = validation_split(tiny_split, 0.2, random_state=0)  # 'both' split: users too
    s = val.split
    held = s.heldout_users
    assert len(held) > 0
    assert not np.isin(held, tiny_split.split.heldout_users).any()  # training users only
    assert s.train[held].nnz == 0 and s.test[held].nnz == 0
    assert (s.foldin + s.heldout)[held].nnz == tiny_split.train[held].nnz
    assert "strong" in s.protocols and "weak" in s.protocols


def test_carve_never_reads_the_test_split(tiny_split):
    a = validation_split(tiny_split, 0.2, random_state=1)
    b = validation_split(_poisoned(tiny_split), 0.2, random_state=1)
    for name in ("train", "test", "foldin", "heldout"):
        assert (getattr(a.split, name) != getattr(b.split, name)).nnz == 0


def test_too_few_interactions_is_one_line_error(tiny_planted):
    from recompare.data.dataset import from_interactions

    one_each = from_interactions(["a", "b", "c"], ["x", "y", "z"])
    with pytest.raises(RecompareError, match="too few interactions"):
        validation_split(one_each, 0.2)
    with pytest.raises(RecompareError, match="between 0 and 1"):
        validation_split(tiny_planted, 0.0)


def test_dnn_fit_never_reads_test(tiny_split):
    """Early stopping on, test/fold-in/held-out poisoned: the same model comes out."""
    a = SoftmaxDNN(**DNN).fit(tiny_split)
    b = SoftmaxDNN(**DNN).fit(_poisoned(tiny_split))
    np.testing.assert_array_equal(a.item_embeddings(), b.item_embeddings())
    np.testing.assert_array_equal(a.query_embeddings(), b.query_embeddings())
    assert a.fit_info_["selected_on"] == "validation"
    assert a.fit_info_["best_epoch"] == b.fit_info_["best_epoch"]


def test_wals_fit_never_reads_test_and_refuses_test_as_validation(tiny_split):
    a = WALS(iterations=3, dim=8).fit(tiny_split)
    b = WALS(iterations=3, dim=8).fit(_poisoned(tiny_split))
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    assert a.fit_info_["selected_on"] == "none"
    with pytest.raises(RecompareError, match="test"):
        WALS(iterations=2, dim=8, patience=1).fit(tiny_split, validation=tiny_split.split.test)
    val = validation_split(tiny_split, 0.2, random_state=0, heldout_users=False)
    fitted = WALS(iterations=3, dim=8, patience=1).fit(val, validation=val.split.test)
    assert fitted.fit_info_["selected_on"] == "validation"


def test_feature_statistics_come_from_training_users_only(tiny_split):
    held = tiny_split.split.heldout_users
    n = tiny_split.n_users
    ages = np.full(n, 30.0)
    ages[held] = 1000.0  # held-out users: an outlier age and a category of their own
    kind = np.array(["common"] * n, dtype=object)
    kind[held] = "held-out-only"
    features = pd.DataFrame({"age": ages, "kind": kind})
    ds = tiny_split.replace(user_features=features)
    model = SoftmaxDNN(**{**DNN, "patience": None, "validation_fraction": 0.0}).fit(ds)
    schema = model.schema_
    assert schema.mean.tolist() == [30.0]
    assert schema.categorical["kind"].tolist() == ["common"]


def test_evaluate_warns_about_a_model_selected_on_test(tiny_split, tmp_path):
    """Models saved before issue 9 with validate_on='test' load, and evaluate says so."""
    import json

    from click.testing import CliRunner

    from recompare.cli import main

    data_dir, model_dir = tmp_path / "data", tmp_path / "dnn"
    tiny_split.save(data_dir)
    SoftmaxDNN(**{**DNN, "epochs": 2}).fit(tiny_split).save(model_dir)
    meta_file = model_dir / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["params"]["validate_on"] = "test"
    meta["fit_info"].pop("selected_on")
    meta_file.write_text(json.dumps(meta))
    res = CliRunner().invoke(main, ["evaluate", str(data_dir), str(model_dir), "--protocol",
                                    "weak", "--k", "20"])
    assert res.exit_code == 0, res.output
    assert "selected on the test split" in res.output
