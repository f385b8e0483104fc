"""SoftmaxDNN(members=K): K networks trained alone, served as the mean of their scores."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from recompare.cli import main
from recompare.data.splits import split
from recompare.data.synth import planted
from recompare.errors import RecompareError
from recompare.evaluate.protocols import evaluate
from recompare.models import load_model
from recompare.models.softmax import SoftmaxDNN

FAST = {"epochs": 3, "patience": None, "validation_fraction": 0.0, "threads": 1,
        "hidden": (16,), "dim": 8, "batch_size": 64, "lr": 1e-2}


@pytest.fixture(scope="module")
def data():
    return split(planted(n_users=200, n_items=120, n_groups=3, interactions_per_user=15,
                         seed=5), "both", seed=0)


@pytest.fixture(scope="module")
def pair(data):
    """An ensemble of two and its two members trained alone with the members' seeds."""
    ensemble = SoftmaxDNN(**FAST, members=2, random_state=4).fit(data)
    alone = [SoftmaxDNN(**FAST, random_state=ensemble.member_seed(k)).fit(data)
             for k in range(2)]
    return ensemble, alone


def test_ensemble_is_its_members_side_by_side(pair, data):
    ensemble, alone = pair
    assert ensemble.member_seed(0) == 4  # the first member is the single model
    assert ensemble.item_embeddings().shape == (data.n_items, 16)
    np.testing.assert_allclose(ensemble.item_embeddings(),
                               np.hstack([m.item_embeddings() for m in alone]))
    # a score is the mean of the members' scores
    users = np.arange(10)
    scores = ensemble.query_embeddings(users) @ ensemble.item_embeddings().T
    mean = sum(m.query_embeddings(users) @ m.item_embeddings().T for m in alone) / 2
    np.testing.assert_allclose(scores, mean, rtol=1e-5, atol=1e-5)
    info = ensemble.fit_info_
    assert [m["seed"] for m in info["members"]] == [ensemble.member_seed(k) for k in range(2)]
    assert info["epochs_run"] == 2 * FAST["epochs"]
    assert [h["member"] for h in info["history"]] == [0] * 3 + [1] * 3


def test_member_seeds_differ_within_and_across_ensembles():
    seeds = {SoftmaxDNN(members=3, random_state=r).member_seed(k)
             for r in range(4) for k in range(3)}
    assert len(seeds) == 12
    assert SoftmaxDNN(random_state=7).member_seed(2) == SoftmaxDNN(random_state=7).member_seed(2)


def test_fold_in_and_cold_serve_the_mean_of_the_members(pair, data):
    ensemble, alone = pair
    history = data.train[:6]
    features = data.user_features.iloc[:6]
    got = ensemble.embed_new_users(history, features)
    want = np.hstack([m.embed_new_users(history, features) for m in alone]) / 2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # with the training features, fold-in reproduces the cached training queries
    np.testing.assert_allclose(got, ensemble.query_embeddings(np.arange(6)), atol=1e-5)
    for protocol in ("weak", "strong", "cold"):
        assert evaluate(ensemble, data, protocol, ks=(10,), folding=False)["metrics"]


def test_save_load_round_trip(pair, tmp_path):
    ensemble, _ = pair
    ensemble.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.members == 2
    np.testing.assert_array_equal(loaded.item_embeddings(), ensemble.item_embeddings())
    assert loaded.serving_nbytes() == ensemble.serving_nbytes()
    # a saved single model with the ensemble's arrays is refused: dims follow members
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["params"]["members"] = 1
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(RecompareError, match="axis 1 should be 8"):
        load_model(tmp_path / "m")
    for bad in (0, None, "2", True, 2.0):
        meta["params"]["members"] = bad
        (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
        with pytest.raises(RecompareError, match="members must be a positive integer"):
            load_model(tmp_path / "m")


def test_resume_resumes_each_member(data, tmp_path):
    params = dict(FAST, epochs=4, members=2, loss="sampled", negatives="popularity",
                  num_negatives=32)
    straight = SoftmaxDNN(**params).fit(data)
    ckpt = tmp_path / "ckpt"
    SoftmaxDNN(**{**params, "epochs": 2}).fit(data, checkpoint_dir=ckpt)
    assert sorted(p.name for p in ckpt.iterdir()) == ["member-0", "member-1"]
    resumed = SoftmaxDNN(**params).fit(data, resume_from=ckpt)
    np.testing.assert_allclose(resumed.item_embeddings(), straight.item_embeddings(),
                               atol=1e-6)
    # interrupted during the second member: its folder does not exist yet
    import shutil
    shutil.rmtree(ckpt / "member-1")
    again = SoftmaxDNN(**params).fit(data, resume_from=ckpt)
    np.testing.assert_allclose(again.item_embeddings(), straight.item_embeddings(), atol=1e-6)
    with pytest.raises(RecompareError, match="not a softmax checkpoint"):
        SoftmaxDNN(**params).fit(data, resume_from=tmp_path / "elsewhere")


@pytest.mark.parametrize("members", [0, -1, 1.5, True])
def test_bad_members_is_one_line(data, members):
    with pytest.raises(RecompareError, match="members must be a positive integer"):
        SoftmaxDNN(**FAST, members=members).fit(data)


def test_cli_members(data, tmp_path):
    data.save(tmp_path / "d")
    runner = CliRunner()
    result = runner.invoke(main, ["train-dnn", str(tmp_path / "d"), "-o", str(tmp_path / "m"),
                                  "--members", "2", "--epochs", "2", "--dim", "8",
                                  "--hidden", "16", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["params"]["members"] == 2 and len(summary["members"]) == 2
    assert load_model(tmp_path / "m").item_embeddings().shape[1] == 16
    bad = runner.invoke(main, ["train-dnn", str(tmp_path / "d"), "-o", str(tmp_path / "m0"),
                               "--members", "0"])
    assert bad.exit_code != 0 and "members must be a positive integer" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "m0").exists()
