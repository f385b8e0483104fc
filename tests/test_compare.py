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


def test_results_json_is_written_with_the_shared_encoder(tmp_path):
    from recompare._jsonutil import dumps

    text = dumps({"a": np.float32(0.5), "b": (1, 2), "c": np.int64(3), "p": tmp_path})
    assert json.loads(text) == {"a": 0.5, "b": [1, 2], "c": 3, "p": str(tmp_path)}
    assert text.endswith("\n")
    with pytest.raises(TypeError):
        dumps({"x": object()})
