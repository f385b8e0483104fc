"""recompare tune: seeded random search on validation, trials table, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from recompare.cli import main
from recompare.errors import RecompareError
from recompare.models import load_model
from recompare.tune import SPACES, check_space, sample_point, tune

SMALL_WALS = {"dim": [4, 8], "regularization": {"log": [0.01, 1.0]}, "iterations": [3]}


def test_space_draws_stay_inside_and_are_seeded():
    rng = np.random.default_rng(0)
    draws = [sample_point(SPACES["dnn"], rng) for _ in range(50)]
    for d in draws:
        assert d["dim"] in (128, 192)
        assert d["batch_size"] in (32, 64)
        assert 0.3 <= d["dropout"] <= 0.6
        assert 1.5e-3 <= d["lr"] <= 6e-3
        assert 30 <= d["epochs"] <= 60 and isinstance(d["epochs"], int)
        assert d["lr_decay"] in ("auto", "linear")
        assert d["gravity"] in ("auto", 0.5, 2.0)
        assert 0.35 <= d["target_fraction"] <= 0.65
        assert d["normalize"] in (False, True) and d["temperature"] in (0.1, 0.125)
    # every choice is drawn at least once in 50 draws
    assert {d["dim"] for d in draws} == {128, 192}
    assert {d["normalize"] for d in draws} == {False, True}
    assert {d["gravity"] for d in draws} == {"auto", 0.5, 2.0}
    again = [sample_point(SPACES["dnn"], np.random.default_rng(0)) for _ in range(1)]
    assert again[0] == draws[0]


def test_tune_wals_trial_zero_is_defaults_and_best_is_the_max(tiny_split):
    events = []
    result = tune(tiny_split, "wals", 4, random_state=2, callback=events.append,
                  space=SMALL_WALS)
    assert len(result.trials) == 4 and len(events) == 4
    assert result.trials[0]["params"] == {"dim": 128, "regularization": 0.3, "iterations": 15}
    best = max(result.trials, key=lambda t: t["score"])
    assert result.params == best["params"]
    assert all(0.0 <= t["score"] <= 1.0 for t in result.trials)
    again = tune(tiny_split, "wals", 4, random_state=2, space=SMALL_WALS)
    assert [t["params"] for t in again.trials] == [t["params"] for t in result.trials]
    assert [t["score"] for t in again.trials] == [t["score"] for t in result.trials]


def test_tune_never_reads_test(tiny_split):
    from test_validation import _poisoned

    a = tune(tiny_split, "wals", 3, random_state=0, space=SMALL_WALS)
    b = tune(_poisoned(tiny_split), "wals", 3, random_state=0, space=SMALL_WALS)
    assert [t["score"] for t in a.trials] == [t["score"] for t in b.trials]


@pytest.mark.parametrize("space, message", [
    ({}, "empty"),
    ({"dim": []}, "no valid point"),
    ({"regularization": {"log": [1.0, 0.1]}}, "no valid point"),
    ({"no_such": [1]}, "no tunable parameter"),
])
def test_bad_spaces_are_one_line_errors(space, message):
    with pytest.raises(RecompareError, match=message):
        check_space(space, "wals")


def test_space_whose_every_draw_is_refused(tiny_split):
    # more negatives than the catalogue has items: the model refuses every draw
    space = {"loss": ["sampled"], "num_negatives": [10_000, 20_000]}
    with pytest.raises(RecompareError, match="no valid point"):
        tune(tiny_split, "dnn", 3, space=space)


def test_budget_zero_is_one_line_error(tiny_split):
    with pytest.raises(RecompareError, match="budget"):
        tune(tiny_split, "wals", 0)


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_writes_model_trials_and_json(tiny_path, out_dir):
    space = json.dumps({"dim": [8, 16], "hidden": [[16]], "epochs": [2], "batch_size": [64]})
    res = _run("tune", tiny_path, "--family", "dnn", "--budget", 2, "--space", space,
               "-o", out_dir, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["trials_run"] == 2 and len(summary["trials"]) == 2
    assert (out_dir / "trials.csv").read_text().count("\n") == 3
    from recompare.data.dataset import Dataset

    model = load_model(out_dir / "model", Dataset.load(tiny_path))
    assert model.fit_info_["selected_on"] == "validation"
    assert model.get_params()["dim"] == summary["best_params"]["dim"]


def test_cli_budget_zero_and_bad_space(bundled_path, out_dir):
    res = _run("tune", bundled_path, "--family", "wals", "--budget", 0, "-o", out_dir)
    assert res.exit_code != 0 and "budget" in res.output and "Traceback" not in res.output
    res = _run("tune", bundled_path, "--family", "wals", "--budget", 2, "--space", "{}",
               "-o", out_dir)
    assert res.exit_code != 0 and "empty" in res.output
    assert not out_dir.exists()


def test_bench_peer_is_tuned_on_validation_and_ratios_reported():
    pytest.importorskip("implicit")
    from recompare.bench.dnn_peer import accuracy_vs_peer

    out = accuracy_vs_peer(None, "tiny", threads=1, seed=0, tune_budget=1, seeds=2,
                            say=lambda m: None)
    peer = out["implicit"]
    assert all("validation_recall@20" in t for t in peer["grid"])
    best = max(peer["grid"], key=lambda t: t["validation_recall@20"])
    assert peer["best"] == {k: best[k] for k in ("factors", "regularization", "alpha")}
    assert set(out["models"]) == {"default DNN", "tuned DNN", "default WALS"}
    for row in out["models"].values():
        assert row["ratio"] == pytest.approx(row["recall@20"] / peer["recall@20"])
        low, high = row["ratio_interval"]  # paired bootstrap over the test users
        assert low <= row["ratio"] <= high and low < high
    assert len(out["models"]["default DNN"]["seeds"]) == 2
    # equal budget: as many DNN trials as the peer got grid points (budget 1: one each)
    assert len(peer["grid"]) == len(out["models"]["tuned DNN"]["trials"]) == 1
    # ... and the compute each side spent, since a DNN trial may train several members
    assert peer["seconds"] > 0 and out["models"]["tuned DNN"]["seconds"] > 0
    from recompare.bench.dnn import _figures

    rows = _figures({"ratio": 1, "achieved_gflops": 1, "peak_gflops": 1, "ratio_cpu_time": 1},
                    {"catalogues": [1, 2], "by_catalogue": {}, "sampled_growth": 1,
                     "full_growth": 1, "sampled_growth_cpu_time": 1},
                    {w: {"min_ratio": 9, "none": {"leakage@10": 0.5}}
                     for w in ("planted", "mirror")},
                    {"data": "x", "ratio": 2, "popularity_recall@20": 0.1}, out)
    cost = [r for r in rows if r["name"].startswith("tuning and refit seconds")]
    assert len(cost) == 1 and cost[0]["value"] == pytest.approx(
        out["models"]["tuned DNN"]["seconds"] / peer["seconds"], rel=0.06, abs=0.06)


def test_bench_peer_grid_is_sampled_to_the_budget():
    from recompare.bench.dnn_peer import ALS_GRID, grid_points

    every = grid_points(ALS_GRID, None, 0)
    assert len(every) == 18 and grid_points(ALS_GRID, 50, 0) == every
    some = grid_points(ALS_GRID, 5, 0)
    assert len(some) == 5 and all(p in every for p in some)
    assert some == grid_points(ALS_GRID, 5, 0)


def test_compare_tune_gives_both_families_the_same_budget(tiny_split, monkeypatch):
    from recompare import tune as tune_module
    from recompare.compare import Variant, run_comparison

    monkeypatch.setitem(tune_module.SPACES, "wals", {"dim": [4, 8], "iterations": [3]})
    monkeypatch.setitem(tune_module.SPACES, "dnn", {"dim": [4, 8], "epochs": [2],
                                                    "hidden": [[8]]})
    variants = [Variant("WALS", "wals", {"iterations": 3, "dim": 8}, "wals"),
                Variant("DNN", "softmax", {"epochs": 2, "dim": 8, "hidden": (8,)}, "dnn"),
                Variant("popularity", "popularity", {}, "baseline")]
    results, models = run_comparison(tiny_split, quick=True, variants=variants, tune=2,
                                     return_models=True)
    tuning = results["tuning"]
    assert tuning["budget"] == 2
    for name in ("WALS", "DNN"):
        row = tuning[name]
        assert len(row["trials"]) == 2
        assert row["validation_recall@20"] >= row["default_validation_recall@20"]
        assert models[name].get_params()["dim"] == row["chosen"]["dim"]
