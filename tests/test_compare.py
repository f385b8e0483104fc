"""The comparison: verdicts come from the numbers, the command writes a whole report."""
import builtins
import copy
import ctypes
import json
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from recompare.cli import main
from recompare.compare import (
    ComparisonResults,
    ModelRecord,
    TableRow,
    Variant,
    comparison_table,
    measure_cost,
    run_comparison,
)
from recompare.data.splits import split
from recompare.data.synth import planted

FAST = [
    Variant("WALS", "wals", {"iterations": 4, "dim": 16}, "wals"),
    Variant("WALS w0=0 const-reg", "wals",
            {"iterations": 4, "dim": 16, "unobserved_weight": 0.0, "reg_scaling": "none"},
            "fold"),
    Variant("DNN", "softmax", {"epochs": 10, "dim": 16, "hidden": (32,)}, "dnn"),
    Variant("DNN history only", "softmax",
            {"epochs": 10, "dim": 16, "hidden": (32,), "features": "history"}, "features"),
    Variant("DNN no negatives", "softmax",
            {"epochs": 10, "dim": 16, "hidden": (32,), "loss": "sampled", "negatives": "none",
             "num_negatives": 32}, "fold"),
    Variant("popularity", "popularity", {}, "baseline"),
    Variant("popularity by group", "popularity", {"by_group": True}, "baseline"),
]


@pytest.fixture(scope="module")
def small():
    data = planted(n_users=300, n_items=150, n_groups=3, interactions_per_user=15, seed=2)
    return split(data, kind="both", seed=0)


class _ProbeRecorder:
    """Records what a run does to the process's memory probes: writes to
    /proc/self/clear_refs and malloc_trim calls through ctypes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        real_open, real_cdll = builtins.open, ctypes.CDLL
        recorder = self

        def recording_open(file, mode="r", *args, **kwargs):
            if "clear_refs" in str(file) and any(c in mode for c in "wa+"):
                recorder.calls.append(f"write {file}")
            return real_open(file, mode, *args, **kwargs)

        class RecordingCDLL(real_cdll):
            def __getattr__(self, name):
                if name == "malloc_trim":
                    recorder.calls.append("malloc_trim")
                return super().__getattr__(name)

        monkeypatch.setattr(builtins, "open", recording_open)
        monkeypatch.setattr(ctypes, "CDLL", RecordingCDLL)


@pytest.fixture(scope="module")
def recorded(small):
    with pytest.MonkeyPatch.context() as patch:
        recorder = _ProbeRecorder(patch)
        threads_before = threading.active_count()
        out = run_comparison(small, variants=FAST, serving_queries=20)
        return out, recorder.calls, threads_before, threading.active_count()


@pytest.fixture(scope="module")
def results(recorded):
    return recorded[0]


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
    # like with like: both paths for both families, on one thread, in >= 3 rounds
    for name in ("WALS", "DNN"):
        serving = results["models"][name]["serving"]
        assert serving["threads"] == 1 and serving["rounds"] >= 3
        for index in ("exact", "ann"):  # the test set-up installs the faiss extra
            for path in ("static", "computed"):
                figure = serving["latency"]["paths"][index][path]
                assert len(figure["rounds_p50_ms"]) == serving["rounds"]
                assert figure["threads"] == 1
        assert 0 <= serving["latency"]["paths"]["ann"]["static"]["recall"] <= 1
    # ANN only for the two family defaults the verdict compares
    assert "ann" not in results["models"]["popularity"]["serving"]["latency"]["paths"]
    scaling = results["scaling"]["families"]
    assert set(scaling) == {"wals", "dnn"}
    nnz = [p["nnz"] for p in scaling["wals"]["points"]]
    assert nnz == sorted(nnz) and len(nnz) == 3


def _set_comparison(results, protocol, a, b, mean_a, mean_b, low, high):
    """Make the stored paired comparison a - b on recall@20 say what the test needs."""
    for c in results["statistics"]["comparisons"]:
        if (c["protocol"], c["metric"], c["a"], c["b"]) == (protocol, "recall@20", a, b):
            c.update(mean_a=mean_a, mean_b=mean_b, difference=mean_a - mean_b, low=low,
                     high=high)
            return
    raise AssertionError(f"no comparison {a} - {b} under {protocol}")


def test_verdicts_follow_the_intervals(results):
    changed = copy.deepcopy(results)
    _set_comparison(changed, "weak", "WALS", "DNN", 0.30, 0.20, 0.08, 0.12)
    row = comparison_table(changed)[0]
    assert row["verdict"].startswith("WALS better") and "95% CI [+0.080, +0.120]" in row["verdict"]
    _set_comparison(changed, "weak", "WALS", "DNN", 0.30, 0.40, -0.12, -0.08)
    assert comparison_table(changed)[0]["verdict"].startswith("DNN better")
    # a 10% gap in the means is still "on par" when the interval includes zero
    _set_comparison(changed, "weak", "WALS", "DNN", 0.30, 0.27, -0.01, 0.07)
    verdict = comparison_table(changed)[0]["verdict"]
    assert verdict.startswith("on par") and "[-0.010, +0.070] includes 0" in verdict


def test_statistics_pair_the_same_queries_as_the_means(results):
    stats = results["statistics"]
    assert stats["confidence"] == 0.95 and stats["method"] == "bootstrap"
    weak = {(c["a"], c["b"], c["metric"]): c for c in stats["comparisons"]
            if c["protocol"] == "weak"}
    c = weak[("WALS", "DNN", "recall@20")]
    metrics = results["evaluation"]["models"]
    assert c["mean_a"] == pytest.approx(metrics["WALS"]["protocols"]["weak"]["metrics"]["recall@20"])
    assert c["mean_b"] == pytest.approx(metrics["DNN"]["protocols"]["weak"]["metrics"]["recall@20"])
    assert c["n"] == metrics["WALS"]["protocols"]["weak"]["n_queries"]
    assert c["low"] <= c["difference"] <= c["high"]
    # every default against both floors, under every protocol, and no per-query arrays left
    for protocol in results["evaluation"]["protocols"]:
        for family in ("WALS", "DNN"):
            for floor in ("popularity", "popularity by group"):
                assert any(x["protocol"] == protocol and (x["a"], x["b"]) == (family, floor)
                           for x in stats["comparisons"])
    for entry in metrics.values():
        for result in entry["protocols"].values():
            assert "per_query" not in result


def test_verdict_says_when_neither_family_beats_popularity(results):
    changed = copy.deepcopy(results)
    for floor in ("popularity", "popularity by group"):
        _set_comparison(changed, "cold", "WALS", floor, 0.12, 0.13, -0.02, 0.001)
        _set_comparison(changed, "cold", "DNN", floor, 0.11, 0.13, -0.03, -0.01)
    _set_comparison(changed, "cold", "WALS", "DNN", 0.12, 0.11, 0.001, 0.02)
    row = next(r for r in comparison_table(changed) if r["question"] == "Cold start")
    assert row["verdict"].startswith("neither family beats the popularity")
    assert "between the two: WALS better" in row["verdict"]
    # one family above the floor, the other not
    _set_comparison(changed, "cold", "WALS", "popularity", 0.15, 0.13, 0.01, 0.03)
    _set_comparison(changed, "cold", "WALS", "popularity by group", 0.15, 0.13, 0.01, 0.03)
    row = next(r for r in comparison_table(changed) if r["question"] == "Cold start")
    assert row["verdict"].startswith("WALS better") and "only WALS beats" in row["verdict"]


def _set_p50(results, model, index, path, rounds):
    figure = results["models"][model]["serving"]["latency"]["paths"][index][path]
    # the same figures on both clocks (service time and wall)
    figure.update(rounds_p50_ms=rounds, p50_ms=float(np.median(rounds)),
                  p50_spread_ms=max(rounds) - min(rounds))
    figure.update(rounds_cpu_p50_ms=rounds, cpu_p50_ms=float(np.median(rounds)),
                  cpu_p50_spread_ms=max(rounds) - min(rounds))


def test_serving_verdict_pairs_like_with_like_beyond_the_noise(results):
    changed = copy.deepcopy(results)
    for index in ("exact", "ann"):
        _set_p50(changed, "WALS", index, "static", [0.10, 0.11, 0.10])
        _set_p50(changed, "DNN", index, "static", [0.30, 0.31, 0.30])
        _set_p50(changed, "WALS", index, "computed", [2.0, 2.1, 2.0])
        _set_p50(changed, "DNN", index, "computed", [0.5, 3.0, 1.0])  # overlapping: noise
    row = comparison_table(changed)[-1]
    assert row["question"] == "Serving scalability"
    parts = row["verdict"].split("; ")
    assert parts[0].startswith("static (exact): WALS better")
    assert parts[1].startswith("computed (exact): on par (within noise)")
    assert parts[2].startswith("static (ann): WALS better")
    assert parts[3].startswith("computed (ann): on par (within noise)")
    assert "0.1 [0.1] / 2 [2] ms exact" in row["wals"] and "ms ann (recall" in row["dnn"]
    assert "service time" in parts[0]


def test_serving_without_faiss_names_the_extra(results, small, monkeypatch):
    import sys

    from recompare.compare.cost import serving_costs
    from recompare.models import model_class

    monkeypatch.setitem(sys.modules, "faiss", None)  # import now fails as if absent
    models = {"WALS": model_class("wals")(iterations=1, dim=4).fit(small)}
    serving = serving_costs(models, small, n_queries=5, ann=["WALS"])["WALS"]
    assert set(serving["latency"]["paths"]) == {"exact"}
    assert "recompare[ann]" in serving["ann_missing"]
    changed = copy.deepcopy(results)
    for name in ("WALS", "DNN"):
        changed["models"][name]["serving"]["latency"]["paths"].pop("ann")
        changed["models"][name]["serving"]["ann_missing"] = serving["ann_missing"]
    verdict = comparison_table(changed)[-1]["verdict"]
    assert "ANN not measured" in verdict and "recompare[ann]" in verdict


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
    assert again["statistics"] == results["statistics"]


def test_folding_is_answered_on_separated_groups(results):
    check = results["folding"]
    assert check["separated"] and check["answered_on"] == "data" and check["mirror"] is None
    assert check["cross_share"] < check["threshold"]


def test_overlapping_groups_get_no_folding_verdict():
    """Groups most interactions cross: the folding row says so and compares nothing."""
    data = planted(n_users=200, n_items=100, n_groups=3, interactions_per_user=12,
                   cross_group_rate=0.6, seed=4)
    data = split(data, kind="random", seed=0)
    variants = [FAST[0], FAST[2], FAST[5]]
    results = run_comparison(data, variants=variants, serving_queries=5)
    check = results["folding"]
    assert check["cross_share"] > check["threshold"] and check["separated"] is False
    assert check["answered_on"] is None
    row = next(r for r in results["table"] if r["question"] == "Folding")
    assert row["wals"] == row["dnn"] == "not compared"
    assert "not separated" in row["verdict"] and "--folding-mirror" in row["verdict"]
    assert "leaks" not in row["verdict"]


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


def test_report_files(tmp_path, small, monkeypatch):
    """The command writes report.md, results.json and the plots, all at once; with
    --tune N both families are tuned with N trials on validation, and the report (terminal,
    report.md, results.json) shows each pick beside the defaults and the seconds each
    search took."""
    import recompare.compare as compare_module
    import recompare.tune as tune_module

    def fake_run(dataset, **kwargs):
        kwargs["variants"] = FAST[:3] + [FAST[5]]
        kwargs["serving_queries"] = 5
        return run_comparison(dataset, **kwargs)

    monkeypatch.setattr(compare_module, "run_comparison", fake_run)
    # small spaces, so that trials take a second; trial 0 is still the family defaults
    monkeypatch.setitem(tune_module.SPACES, "wals", {"dim": [8, 16], "iterations": [3, 4]})
    monkeypatch.setitem(tune_module.SPACES, "dnn", {"dim": [8], "hidden": [[16]],
                                                    "epochs": [3, 4], "members": [1, 2]})
    small.save(tmp_path / "ds3")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "ds3"), "-o", str(out),
                                       "--tune", "2", "--quick"])
    assert result.exit_code == 0, result.output
    files = {p.name for p in out.iterdir()}
    assert {"report.md", "results.json", "folding_map.png", "leakage.png"} <= files
    text = (out / "report.md").read_text()
    assert "| **Folding** |" in text and "folding_map.png" in text
    saved = json.loads((out / "results.json").read_text())
    assert saved["table"][0]["question"] == "Accuracy"
    tuning = saved["tuning"]
    assert tuning["budget"] == 2
    for name, family in (("WALS", "wals"), ("DNN", "dnn")):
        entry = tuning[name]
        assert entry["family"] == family and len(entry["trials"]) == 2
        assert entry["seconds"] == pytest.approx(sum(t["seconds"] for t in entry["trials"]))
        best = max(entry["trials"], key=lambda t: t["score"])
        assert entry["chosen"] == best["params"]
        trained = saved["models"][name]["params"]  # the compared model runs the pick
        assert {k: trained[k] for k in entry["chosen"]} == entry["chosen"]
    assert "## Configurations" in text
    assert text.count("tuned: 2 trials on validation") == 2
    assert "Configurations" in result.stdout and "tuned: 2 trials" in result.stdout


def test_report_says_when_the_defaults_ran(results):
    """Without --tune, the report says that each family ran with its defaults."""
    from rich.console import Console

    from recompare.report.comparison import markdown, rich_tables

    assert results["tuning"]["budget"] is None
    text = markdown(results)
    assert "## Configurations" in text and "each family's defaults (no --tune" in text
    console = Console(width=120, record=True)
    for table in rich_tables(results, 120):
        console.print(table)
    assert "each family's defaults (no --tune" in console.export_text()


def test_folding_mirror_command(tmp_path, small, monkeypatch):
    """--folding-mirror answers folding on coupled copies, and the report says so."""
    import recompare.compare as compare_module

    def fake_run(dataset, **kwargs):
        kwargs["variants"] = FAST[:3] + [FAST[5]]
        kwargs["serving_queries"] = 5
        return run_comparison(dataset, **kwargs)

    monkeypatch.setattr(compare_module, "run_comparison", fake_run)
    small.save(tmp_path / "ds4")
    out = tmp_path / "mirror-report"
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "ds4"), "-o", str(out),
                                       "--folding-mirror", "--mirror-copies", "3", "--json"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    check = saved["folding"]
    assert check["answered_on"] == "mirror"
    mirror = check["mirror"]
    assert mirror["copies"] == 3 and mirror["dataset"]["users"] == 3 * small.n_users
    assert set(mirror["models"]) == {"WALS", "WALS w0=0 const-reg", "DNN"}
    assert mirror["evaluation"]["protocols"] == ["weak"]
    row = next(r for r in saved["table"] if r["question"] == "Folding")
    assert "3 coupled copies" in row["measure"] and "--folding-mirror" in row["verdict"]
    assert "coupled copies" in (out / "report.md").read_text()


def test_folding_mirror_needs_two_copies(small):
    from recompare.errors import RecompareError

    with pytest.raises(RecompareError, match="at least 2 copies"):
        run_comparison(small, variants=FAST, folding_mirror=1)
    result = CliRunner().invoke(main, ["compare", "data/planted", "--folding-mirror",
                                       "--mirror-copies", "1"])
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_results_have_the_documented_keys(results):
    assert set(results) == set(ComparisonResults.__annotations__)
    for record in results["models"].values():
        assert set(record) == set(ModelRecord.__annotations__)
    for row in results["table"]:
        assert set(row) == set(TableRow.__annotations__)


def test_steps_are_the_sweeps_and_epochs_run(results):
    wals = results["models"]["WALS"]["training"]
    assert wals["steps"] == 4
    assert wals["seconds_per_step"] == pytest.approx(wals["seconds"] / 4)
    dnn = results["models"]["DNN"]["training"]
    assert 1 <= dnn["steps"] <= 10
    assert results["models"]["popularity"]["training"]["steps"] is None
    # the scaling runs time whole steps: every epoch runs, no early stop
    family = results["scaling"]["families"]["dnn"]
    assert family["step"] == "epoch"
    for point in family["points"]:
        assert point["seconds_per_step"] == pytest.approx(point["seconds"] / 3)


def test_comparison_leaves_the_memory_probes_and_threads_alone(recorded):
    _, calls, threads_before, threads_after = recorded
    assert not [c for c in calls if "clear_refs" in c]
    assert "malloc_trim" not in calls
    assert threads_after == threads_before  # the memory sampler threads are joined


def test_measure_cost_is_read_only_and_sees_an_allocation(monkeypatch):
    recorder = _ProbeRecorder(monkeypatch)
    threads_before = threading.active_count()
    with measure_cost() as cost:
        block = np.ones(48 * 2**20 // 8)  # 48 MiB, touched
    assert block.sum() > 0
    assert recorder.calls == []
    assert threading.active_count() == threads_before
    assert cost["seconds"] >= 0
    assert cost["peak_extra_bytes"] >= 40 * 2**20


def test_measure_cost_stops_its_sampler_when_the_body_raises():
    threads_before = threading.active_count()
    with pytest.raises(ValueError), measure_cost() as cost:
        raise ValueError("boom")
    assert threading.active_count() == threads_before
    assert set(cost) == {"seconds", "peak_rss_bytes", "peak_extra_bytes"}


def test_the_recorder_sees_the_benchmark_probe(monkeypatch):
    """The benchmarks' probe resets the peak counter and trims the heap: the recorder
    used above notices both, so its silence about the comparison means something."""
    from recompare.bench.common import measure

    recorder = _ProbeRecorder(monkeypatch)
    with measure():
        pass
    assert any("clear_refs" in c for c in recorder.calls)
    assert "malloc_trim" in recorder.calls


def test_one_number_format_for_tables_prose_and_benchmarks():
    from recompare.report.bench import headline
    from recompare.report.formatting import fmt, fmt_bytes

    # columns of scores: fixed decimals
    assert fmt(0.123456) == "0.1235" and fmt(0.5, 1) == "0.5" and fmt(None) == "-"
    assert fmt(12) == "12" and fmt("weak") == "weak" and fmt(np.float32(0.25), 2) == "0.25"
    # figures in prose: significant digits, thousands separated, a chosen missing mark
    assert fmt(0.123456, 3, significant=True) == "0.123"
    assert fmt(7.41e-05, 3, significant=True) == "7.41e-05"
    assert fmt(12345.6, 3, significant=True) == "12,346"
    assert fmt(12345, significant=True) == "12,345"
    assert fmt(None, significant=True, missing="n/a") == "n/a" and fmt(True) == "True"
    assert fmt_bytes(None) == "n/a" and fmt_bytes(512) == "512 B"
    assert fmt_bytes(1.5 * 2**20) == "1.5 MiB" and fmt_bytes(3 * 2**40) == "3072.0 GiB"
    # the benchmark tables use the same rule
    rows = dict(headline({"figures": {"rows": 1234567, "ratio": 0.123456, "ok": True}}))
    assert rows == {"rows": 1234567, "ratio": 0.123456, "ok": True}
    from recompare.report.bench import bench_markdown

    text = bench_markdown({"scale": "tiny", "suites": {"s": {"figures": {"rows": 1234567,
                                                                         "ratio": 0.123456}}}})
    assert "| rows | 1,234,567 |" in text and "| ratio | 0.1235 |" in text
    # a ratio figure with its interval shows it beside the value; without one, nothing
    row = headline({"figures": [{"name": "r", "value": 0.9, "unit": "x",
                                 "interval": [0.85, 0.95], "target": 0.92, "met": False}]})
    assert row == [("r", "0.9 x (95% CI 0.85-0.95; target=0.92; NOT met)")]
    assert "CI" not in headline({"figures": [{"name": "r", "value": 0.9,
                                              "interval": [None, None]}]})[0][1]


def test_results_json_is_written_with_the_shared_encoder(tmp_path):
    from recompare._jsonutil import dumps

    text = dumps({"a": np.float32(0.5), "b": (1, 2), "c": np.int64(3), "p": tmp_path})
    assert json.loads(text) == {"a": 0.5, "b": [1, 2], "c": 3, "p": str(tmp_path)}
    assert text.endswith("\n")
    with pytest.raises(TypeError):
        dumps({"x": object()})


def test_a_question_the_data_cannot_answer_keeps_its_row_with_the_reason(results):
    changed = copy.deepcopy(results)
    changed["evaluation"]["protocols"] = ["weak"]  # as after a temporal split
    changed["dataset"]["protocols"] = ["weak"]
    changed["dataset"]["split"]["kind"] = "temporal"
    changed["dataset"]["user_features"] = []
    rows = {row["question"]: row for row in comparison_table(changed)}
    assert list(rows) == ["Accuracy", "Query features", "Cold start", "Folding",
                          "Training scalability", "Serving scalability"]
    assert rows["Query features"]["verdict"] == (
        "not answered: the temporal split has no held-out users; use --split both (or users) "
        "to ask it")
    assert rows["Cold start"]["verdict"].startswith("not answered: no user features")
    assert rows["Query features"]["wals"] == rows["Cold start"]["dnn"] == "n/a"


def test_no_duplicate_history_only_model_without_user_features(small):
    from dataclasses import replace

    from recompare.compare import run_comparison

    bare = replace(small, user_features=None) if hasattr(small, "__dataclass_fields__") else None
    if bare is None:
        pytest.fail("Dataset is expected to be a dataclass")
    variants = [v for v in FAST if v.role in ("wals", "dnn", "features")]
    results = run_comparison(bare, variants=variants, quick=True, serving_queries=5)
    assert "DNN history only" not in results["models"]
    assert {"WALS", "DNN"} <= set(results["models"])
