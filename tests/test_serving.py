"""Serving as a server runs it: per-query latency paths, the noise-aware verdict, the sweep."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from recompare.cli import main
from recompare.data.splits import split
from recompare.data.synth import planted
from recompare.errors import RecompareError
from recompare.evaluate.latency import (
    PathLatency,
    latency_verdict,
    measure_latency,
)
from recompare.models import model_class


@pytest.fixture(scope="module")
def fitted():
    data = split(planted(n_users=200, n_items=120, n_groups=3, interactions_per_user=12,
                         seed=4), kind="both", seed=0)
    models = {
        "WALS": model_class("wals")(iterations=2, dim=8, threads=2),
        "DNN": model_class("softmax")(epochs=1, dim=8, hidden=(16,)),
        "popularity": model_class("popularity")(),
    }
    for model in models.values():
        model.fit(data)
    return data, models


def _latency(p50: list[float], p99: list[float] | None = None,
             cpu: list[float] | None = None) -> PathLatency:
    p99 = p99 or [v * 2 for v in p50]
    service = {}
    if cpu is not None:
        service = {"cpu_p50_ms": float(np.median(cpu)), "cpu_p99_ms": max(cpu),
                   "cpu_p50_spread_ms": max(cpu) - min(cpu), "rounds_cpu_p50_ms": cpu}
    return PathLatency(p50_ms=float(np.median(p50)), p99_ms=float(np.median(p99)),
                       p50_spread_ms=max(p50) - min(p50), p99_spread_ms=max(p99) - min(p99),
                       rounds_p50_ms=p50, rounds_p99_ms=p99, queries=10, threads=1, **service)


def test_both_paths_for_every_model_in_rounds(fitted):
    import torch

    data, models = fitted
    threads_before = torch.get_num_threads()
    result = measure_latency(models, data, n_queries=8, rounds=3, threads=1)
    assert set(result) == set(models)
    for latency in result.values():
        for path in ("static", "computed"):
            figure = latency.paths["exact"][path]
            assert len(figure.rounds_p50_ms) == 3 and figure.queries == 8
            assert figure.threads == 1
            assert 0 < figure.p50_ms <= figure.p99_ms
            assert figure.p50_spread_ms == pytest.approx(
                max(figure.rounds_p50_ms) - min(figure.rounds_p50_ms))
            # one thread: the service time is measured, and a thread's CPU time never
            # exceeds the wall time of the same query (so neither does its p50)
            assert figure.clock == "cpu" and len(figure.rounds_cpu_p50_ms) == 3
            assert all(0 < c <= w for c, w in zip(figure.rounds_cpu_p50_ms,
                                                   figure.rounds_p50_ms))
        json.dumps(latency.to_dict())
    # nothing left changed: torch's thread count and the models' own setting
    assert torch.get_num_threads() == threads_before
    assert models["WALS"].threads == 2


def test_service_time_only_on_one_thread(fitted):
    data, models = fitted
    result = measure_latency({"WALS": models["WALS"]}, data, n_queries=4, threads=2)
    figure = result["WALS"].paths["exact"]["static"]
    # work on torch's other threads would be missed: no CPU-time figure at all
    assert figure.cpu_p50_ms is None and figure.clock == "wall"


def test_service_time_leaves_out_waiting():
    import time

    from recompare.evaluate.latency import _time_queries

    def waits(user):  # a query that waits 5 ms for something else (no CPU work)
        time.sleep(0.005)

    times = _time_queries(waits, np.arange(4), warmup=0)
    assert (times[0] >= 5.0).all()  # the wall clock holds the wait
    assert (times[1] < 2.5).all()  # the service time does not


def test_a_model_that_cannot_embed_new_users_reports_why(fitted, monkeypatch):
    data, models = fitted
    model = models["popularity"]

    def refuse(history, features=None):
        raise RecompareError("cannot embed users unseen in training")

    monkeypatch.setattr(model, "embed_new_users", refuse)
    result = measure_latency({"m": model}, data, n_queries=4)
    assert "static" in result["m"].paths["exact"]
    assert "computed" not in result["m"].paths["exact"]
    assert "unseen" in result["m"].unsupported["computed"]


def test_latency_rejects_too_few_rounds(fitted):
    data, models = fitted
    with pytest.raises(RecompareError, match="3 rounds"):
        measure_latency(models, data, rounds=2)
    with pytest.raises(RecompareError, match="threads"):
        measure_latency(models, data, threads=0)


def test_verdict_needs_a_gap_beyond_the_spread():
    fast, slow = _latency([1.0, 1.1, 1.05]), _latency([3.0, 3.2, 3.1])
    verdict = latency_verdict("WALS", fast, "DNN", slow)
    assert verdict["winner"] == "WALS" and "WALS better" in verdict["verdict"]
    assert verdict["ratio"] == pytest.approx(3.1 / 1.05)
    # the same medians with rounds that overlap: noise, not a difference
    noisy = latency_verdict("WALS", _latency([0.5, 1.05, 2.9]), "DNN", _latency([1.5, 3.1, 3.3]))
    assert noisy["winner"] is None and noisy["verdict"].startswith("on par (within noise)")
    # a steady but small gap is on par too (below the minimum ratio)
    close = latency_verdict("WALS", _latency([1.0, 1.0, 1.0]), "DNN", _latency([1.1, 1.1, 1.1]))
    assert close["winner"] is None
    # the machine drifts between rounds (all models alike) while the paired gap holds:
    # the spreads across rounds overlap, but every round finds WALS 1.5x faster
    drift = latency_verdict("WALS", _latency([0.4, 0.6, 0.8]), "DNN", _latency([0.6, 0.9, 1.2]))
    assert drift["winner"] == "WALS" and drift["round_ratios"] == pytest.approx([1.5] * 3)
    # one round the other way round: no verdict, however large the median gap
    flip = latency_verdict("WALS", _latency([1.0, 1.0, 3.0]), "DNN", _latency([3.0, 3.0, 1.0]))
    assert flip["winner"] is None
    # order of the arguments does not change the winner
    assert latency_verdict("DNN", slow, "WALS", fast)["winner"] == "WALS"
    assert latency_verdict("WALS", None, "DNN", slow)["winner"] is None


def test_verdict_compares_service_times_when_both_have_them():
    # the wall clocks differ (one model's rounds waited for a busy core), the work does not
    a = _latency([1.0, 1.0, 1.0], cpu=[0.50, 0.51, 0.50])
    b = _latency([3.0, 3.1, 3.0], cpu=[0.52, 0.50, 0.51])
    auto = latency_verdict("WALS", a, "DNN", b)
    assert auto["clock"] == "cpu" and auto["winner"] is None
    assert "service time" in auto["verdict"]
    wall = latency_verdict("WALS", a, "DNN", b, clock="wall")
    assert wall["clock"] == "wall" and wall["winner"] == "WALS"
    # a real difference in work is found on the service time
    c = _latency([3.0, 3.1, 3.0], cpu=[2.0, 2.1, 2.0])
    assert latency_verdict("WALS", a, "DNN", c)["winner"] == "WALS"
    # one side without service time: both compared on the wall clock
    assert latency_verdict("WALS", _latency([1.0, 1.0, 1.0]), "DNN", b)["clock"] == "wall"
    with pytest.raises(RecompareError, match="one thread"):
        latency_verdict("WALS", _latency([1.0, 1.0, 1.0]), "DNN", b, clock="cpu")


def test_ann_paths_report_recall(fitted):
    from recompare.models.ann import ann_available

    # never skipped: `make test` installs the extra (absence is simulated below)
    assert ann_available(), "the tests need faiss: pip install -e '.[test,ann]'"
    data, models = fitted
    result = measure_latency({"WALS": models["WALS"]}, data, n_queries=6, ann=True)
    ann = result["WALS"].paths["ann"]
    assert set(ann) == {"static", "computed"}
    assert 0.0 <= ann["static"].recall <= 1.0
    assert result["WALS"].ann["probe"] >= 1


def test_latency_with_ann_but_without_faiss_names_the_extra(fitted, monkeypatch):
    data, models = fitted
    monkeypatch.setitem(sys.modules, "faiss", None)  # import now fails as if absent
    with pytest.raises(RecompareError, match=r"pip install 'recompare\[ann\]'"):
        measure_latency({"WALS": models["WALS"]}, data, n_queries=4, ann=True)
    # without ann the same call serves exact top-k
    assert set(measure_latency({"WALS": models["WALS"]}, data, n_queries=4)["WALS"].paths) == {
        "exact"}


def test_serving_bench_sweep_at_tiny_scale():
    from recompare.bench import serving

    result = serving.run("tiny")
    sizes = [p["items"] for p in result["points"]]
    assert sizes == list(serving.SIZES["tiny"][0])
    assert result["dim"] == serving.model_dim()
    for point in result["points"]:
        assert point["bound_ms"] > 0 and point["bandwidth_gb_s"] > 0
        assert point["bound_ratio"] == pytest.approx(point["exact"]["p50_ms"] / point["bound_ms"])
        assert point["item_bytes"] == point["items"] * result["dim"] * 4
    assert np.isfinite(result["slope"])
    json.dumps(result)


def test_synthetic_embeddings_are_seeded():
    from recompare.bench.serving import synthetic_embeddings

    a = synthetic_embeddings(500, 20, 16, seed=3)
    b = synthetic_embeddings(500, 20, 16, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == (500, 16) and a[1].shape == (20, 16)


def test_bench_serving_without_faiss_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "faiss", None)
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["bench", "serving", "--scale", "tiny", "--json",
                                       "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    payload = json.loads(result.stdout)
    note = payload["suites"]["serving"]["ann"]
    assert "recompare[ann]" in note
