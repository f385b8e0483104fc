"""Protocols, the results dict, and folding on planted data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from recompare.data.dataset import from_interactions
from recompare.data.splits import split
from recompare.data.synth import planted
from recompare.errors import RecompareError
from recompare.evaluate.metrics import accuracy
from recompare.evaluate.protocols import evaluate, evaluate_models, resolve_protocols
from recompare.models.baselines import Popularity, RandomEmbeddings


@pytest.fixture(scope="module")
def results(tiny_split):
    models = {
        "popularity": Popularity().fit(tiny_split),
        "popularity-by-group": Popularity(by_group=True).fit(tiny_split),
        "random": RandomEmbeddings(dim=16).fit(tiny_split),
    }
    return evaluate_models(models, tiny_split, "all", (5, 10), folding=True)


def test_results_shape_and_jsonable(results, tiny_split):
    assert results["protocols"] == ["weak", "strong", "cold"]
    assert results["ks"] == [5, 10]
    json.dumps(results)  # plain JSON, no numpy values
    weak = results["models"]["random"]["protocols"]["weak"]
    assert weak["status"] == "ok"
    n_training_users = tiny_split.n_users - len(tiny_split.split.heldout_users)
    assert weak["n_queries"] + weak["n_skipped"] == n_training_users
    for key in ("recall@5", "recall_norm@10", "ndcg@10", "map@5", "hit_rate@5", "coverage@10"):
        assert 0.0 <= weak["metrics"][key] <= 1.0
    folding = weak["folding"]
    assert len(folding["confusion"]["10"]) == tiny_split.n_groups
    np.testing.assert_allclose(np.sum(folding["ground_truth_confusion"], axis=1), 1.0)


def test_random_folds_and_popularity_by_group_does_not(results):
    for protocol in ("weak", "strong"):
        rand = results["models"]["random"]["protocols"][protocol]["folding"]
        pop = results["models"]["popularity-by-group"]["protocols"][protocol]["folding"]
        assert rand["leakage@10"] > 0.5
        assert pop["leakage@10"] < 0.05
        assert rand["leakage@10"] - pop["leakage@10"] > 0.5
        assert rand["excess_leakage@10"] == pytest.approx(
            rand["leakage@10"] - rand["ground_truth_cross_share"])
        assert rand["spurious@10"] > pop["spurious@10"]
        assert rand["folding_auc"] == pytest.approx(0.5, abs=0.1)
        assert pop["folding_auc"] < 0.05
    worst = results["models"]["random"]["protocols"]["weak"]["folding"]["spurious"]
    assert worst and worst[0]["item_group"] != worst[0]["query_group"]
    assert worst[0]["item_id"] and worst[0]["query_group_name"] in ("en", "es", "fr", "de")


def test_weak_matches_direct_computation(tiny_split):
    model = Popularity().fit(tiny_split)
    out = evaluate(model, tiny_split, "weak", (10,), folding=False)
    users = np.setdiff1d(np.arange(tiny_split.n_users), tiny_split.split.heldout_users)
    users = users[np.diff(tiny_split.split.test[users].indptr) > 0]
    ids, scores = model.recommend(users, 10)
    direct = accuracy(ids, tiny_split.split.test[users], (10,), np.isfinite(scores))
    assert out["metrics"] == direct["metrics"]
    assert "folding" not in out


def test_same_seed_same_numbers(tiny_split):
    models = {"random": RandomEmbeddings(dim=8, random_state=1).fit(tiny_split)}
    a = evaluate_models(models, tiny_split, "weak", (5,), folding=True)
    b = evaluate_models(models, tiny_split, "weak", (5,), folding=True)
    for r in (a, b):
        r["models"]["random"]["protocols"]["weak"].pop("seconds")
    assert a == b


class _WeakOnly(Popularity):
    kind = "weak-only"
    protocols = frozenset({"weak"})


class _NoNewUsers(Popularity):
    kind = "no-new-users"

    def embed_new_users(self, history, features=None):
        raise RecompareError("this model cannot embed new users")


def test_unsupported_protocols_are_reported_not_raised(tiny_split):
    models = {"a": _WeakOnly().fit(tiny_split), "b": _NoNewUsers().fit(tiny_split)}
    out = evaluate_models(models, tiny_split, "all", (5,))
    assert out["models"]["a"]["protocols"]["strong"]["status"] == "unsupported"
    assert out["models"]["a"]["protocols"]["weak"]["status"] == "ok"
    cold = out["models"]["b"]["protocols"]["cold"]
    assert cold == {"status": "unsupported", "reason": "this model cannot embed new users"}


def test_bad_requests(tiny_split):
    random_split = split(planted(n_users=100, n_items=60, seed=1), "random")
    with pytest.raises(RecompareError, match="held-out users"):
        resolve_protocols(random_split, "strong")
    with pytest.raises(RecompareError, match="unknown protocol"):
        resolve_protocols(tiny_split, "warm")
    no_split = from_interactions(["a", "b"], ["x", "y"])
    with pytest.raises(RecompareError, match="split"):
        resolve_protocols(no_split, "all")
    model = Popularity().fit(tiny_split)
    with pytest.raises(RecompareError, match="larger than the catalogue"):
        evaluate(model, tiny_split, "weak", (tiny_split.n_items + 1,))
    with pytest.raises(RecompareError, match="positive"):
        evaluate(model, tiny_split, "weak", (0,))
    no_groups = tiny_split.replace(item_groups=None, user_groups=None)
    with pytest.raises(RecompareError, match="--group-col"):
        evaluate_models({"p": Popularity().fit(no_groups)}, no_groups, "weak", (5,),
                        folding=True)
    other = split(planted(n_users=400, n_items=200, n_groups=4, seed=6), "both", seed=5)
    with pytest.raises(RecompareError, match="another data set"):
        evaluate(Popularity().fit(other), tiny_split, "weak", (5,))


def test_bundled_planted_data_random_folds_far_more_than_popularity_by_group(bundled_path):
    from recompare.data.dataset import Dataset

    bundled = Dataset.load(bundled_path)
    models = {"random": RandomEmbeddings().fit(bundled),
              "popularity-by-group": Popularity(by_group=True).fit(bundled)}
    out = evaluate_models(models, bundled, "weak", (10,), folding=True, score_folding=False)
    rand = out["models"]["random"]["protocols"]["weak"]["folding"]
    pop = out["models"]["popularity-by-group"]["protocols"]["weak"]["folding"]
    assert rand["excess_leakage@10"] > 0.5
    assert pop["excess_leakage@10"] < 0.05


def test_results_keys_are_the_documented_ones(results):
    from recompare.evaluate import Evaluation, Folding, ProtocolResult
    from recompare.evaluate.results import ModelResult, SpuriousItem, Unsupported

    assert set(results) == set(Evaluation.__annotations__)
    for entry in results["models"].values():
        assert set(entry) == set(ModelResult.__annotations__)
        for result in entry["protocols"].values():
            kind = Unsupported if result["status"] == "unsupported" else ProtocolResult
            assert kind.__required_keys__ <= set(result)
            assert set(result) <= kind.__required_keys__ | kind.__optional_keys__
            if "folding" not in result:
                continue
            folding = result["folding"]
            named = {key for key in folding if "@" not in key}
            assert named == set(Folding.__annotations__)
            prefixes = {key.split("@")[0] for key in folding if "@" in key}
            assert prefixes == {"leakage", "leakage_queries", "excess_leakage", "spurious"}
            for item in folding["spurious"]:
                assert set(item) == set(SpuriousItem.__annotations__)
