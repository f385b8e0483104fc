"""The comparison: verdicts come from the numbers, the command writes a whole report."""
import copy
import json

import pytest
from click.testing import CliRunner

from recompare.cli import main
from recompare.compare import Variant, comparison_table, run_comparison
from recompare.data.splits import split
from recompare.data.synth import planted

FAST = [
    Variant("WALS", "wals", {"iterations": 4, "dim": 16}, "wals"),
    Variant("WALS w0=0 const-reg", "wals",
            {"iterations": 4, "dim": 16, "unobserved_weight": 0.0, "reg_scaling": "none"},
            "fold"),
    Variant("DNN", "softmax", {"epochs": 3, "dim": 16, "hidden": (32,)}, "dnn"),
    Variant("DNN history only", "softmax",
            {"epochs": 3, "dim": 16, "hidden": (32,), "features": "history"}, "features"),
    Variant("DNN no negatives", "softmax",
            {"epochs": 3, "dim": 16, "hidden": (32,), "loss": "sampled", "negatives": "none",
             "num_negatives": 32}, "fold"),
    Variant("popularity", "popularity", {}, "baseline"),
]


@pytest.fixture(scope="module")
def small():
    data = planted(n_users=300, n_items=150, n_groups=3, interactions_per_user=15, seed=2)
    return split(data, kind="both", seed=0)


@pytest.fixture(scope="module")
def results(small):
    return run_comparison(small, variants=FAST, serving_queries=20)


def test_every_question_gets_a_row(results):
    questions = [row["question"] for row in results["table"]]
    assert questions == ["Accuracy", "Query features", "Cold start", "Folding",
                         "Training scalability", "Serving scalability"]
    for row in results["table"]:
        assert row["wals"] and row["dnn"] and row["verdict"]
    json.dumps(results)  # JSON-able throughout


def test_measurements_are_recorded(results):
    wals = results["models"]["WALS"]
    assert wals["training"]["seconds"] > 0
    assert wals["serving"]["known"]["p50_ms"] > 0
    assert wals["serving"]["memory_bytes"] > 0
    assert "fresh" in results["models"]["DNN"]["serving"]
    scaling = results["scaling"]["families"]
    assert set(scaling) == {"wals", "dnn"}
    nnz = [p["nnz"] for p in scaling["wals"]["points"]]
    assert nnz == sorted(nnz) and len(nnz) == 3


def _set_recall(results, model, value):
    for protocol in ("weak",):
        results["evaluation"]["models"][model]["protocols"][protocol]["metrics"]["recall@20"] = (
            value)


def test_verdicts_follow_the_numbers(results):
    changed = copy.deepcopy(results)
    _set_recall(changed, "WALS", 0.30)
    _set_recall(changed, "DNN", 0.20)
    row = comparison_table(changed)[0]
    assert row["verdict"].startswith("WALS better")
    _set_recall(changed, "DNN", 0.40)
    assert comparison_table(changed)[0]["verdict"].startswith("DNN better")
    _set_recall(changed, "DNN", 0.305)
    assert comparison_table(changed)[0]["verdict"].startswith("on par")


def test_folding_row_names_the_worst_variant(results):
    row = next(r for r in results["table"] if r["question"] == "Folding")
    leak = results["evaluation"]["models"]["DNN no negatives"]["protocols"]["weak"]["folding"]
    assert "DNN no negatives" in row["verdict"] or leak["leakage@10"] == 0


def test_same_seed_same_numbers(small, results):
    again = run_comparison(small, variants=FAST, serving_queries=20)
    for name in ("WALS", "DNN"):
        a = results["evaluation"]["models"][name]["protocols"]["weak"]["metrics"]
        b = again["evaluation"]["models"][name]["protocols"]["weak"]["metrics"]
        assert a == b


def test_compare_command_refuses_data_without_a_split(tmp_path):
    data = planted(n_users=100, n_items=60, n_groups=2, interactions_per_user=10, seed=0)
    data.save(tmp_path / "nosplit")
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "nosplit")])
    assert result.exit_code != 0
    assert "split" in result.output
    assert "Traceback" not in result.output


def test_compare_command_refuses_an_existing_report(tmp_path, small):
    small.save(tmp_path / "ds")
    (tmp_path / "out").mkdir()
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "ds"), "-o",
                                       str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "already exists" in result.output


def test_compare_command_rejects_bad_k(tmp_path, small):
    small.save(tmp_path / "ds2")
    for bad in ("0", "x", "100000"):
        result = CliRunner().invoke(main, ["compare", str(tmp_path / "ds2"), "--k", bad])
        assert result.exit_code != 0, bad
        assert "Traceback" not in result.output


def test_report_files(tmp_path, small, results, monkeypatch):
    """The command writes report.md, results.json and the plots, all at once."""
    import recompare.compare as compare_module

    def fake_run(dataset, **kwargs):
        kwargs["variants"] = FAST
        kwargs["serving_queries"] = 10
        return run_comparison(dataset, **kwargs)

    monkeypatch.setattr(compare_module, "run_comparison", fake_run)
    small.save(tmp_path / "ds3")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "ds3"), "-o", str(out),
                                       "--json"])
    assert result.exit_code == 0, result.output
    files = {p.name for p in out.iterdir()}
    assert {"report.md", "results.json", "folding_map.png", "leakage.png"} <= files
    text = (out / "report.md").read_text()
    assert "| **Folding** |" in text and "folding_map.png" in text
    saved = json.loads((out / "results.json").read_text())
    assert saved["table"][0]["question"] == "Accuracy"
