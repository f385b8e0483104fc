"""WALS on Spark: the objective mapping (no Spark needed), the one-line errors, and
agreement with the local engine on small data with ``local[2]``.

The tests that need a running Spark share one session per module (its start-up
costs tens of seconds).  Without pyspark or Java they are skipped, unless
``RECOMPARE_REQUIRE_SPARK=1`` (``make test`` sets it where Java is present), where
they fail instead, so CI cannot pass by skipping them.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from recompare.cli import main as cli
from recompare.data.splits import split
from recompare.data.synth import planted
from recompare.errors import RecompareError
from recompare.models import wals_spark
from recompare.models.wals import WALS
from recompare.models.wals_spark import (
    check_master,
    fit_spark,
    local_equivalent,
    parse_conf,
    relative_gap,
    require_spark,
    spark_mapping,
    spark_ratings,
)

MAPPED = {"dim": 8, "unobserved_weight": 0.1, "regularization": 0.05,
          "reg_scaling": "observed", "iterations": 10, "random_state": 3}


@pytest.fixture(scope="module")
def agreement_data():
    """600 users x 300 items of planted data with a random split (test = weak protocol)."""
    return split(planted(n_users=600, n_items=300, n_groups=2, seed=0), kind="random", seed=0)


def _spark_objective(model: WALS, dataset, mapping) -> float:
    """Spark's objective S computed densely over every pair, from its definition."""
    train = sp.csr_matrix(dataset.train)
    ratings = sp.csr_matrix((spark_ratings(model, train), train.indices, train.indptr),
                            shape=train.shape).toarray()
    confidence = 1.0 + mapping.alpha * np.abs(ratings)
    preference = (ratings > 0).astype(np.float64)
    x = model.user_factors_.astype(np.float64)
    y = model.item_factors_.astype(np.float64)
    fit = (confidence * (preference - x @ y.T) ** 2).sum()
    n_u, n_i = (ratings > 0).sum(1), (ratings > 0).sum(0)
    penalty = mapping.reg_param * ((n_u * (x * x).sum(1)).sum() + (n_i * (y * y).sum(1)).sum())
    return float(fit + penalty)


@pytest.mark.parametrize("extra", [
    {"weighting": "constant"},
    {"weighting": "log", "alpha": 2.0, "item_weights": "inverse_sqrt_frequency"},
    {"weighting": "linear", "alpha": 0.5, "unobserved_weight": 0.3},
])
def test_local_objective_is_w0_times_spark_objective(tiny_split, extra):
    """At any factors, L = w0 S under the mapping: both engines minimise the same thing."""
    model = WALS(**{**MAPPED, "iterations": 2, **extra}).fit(tiny_split)
    rng = np.random.default_rng(0)
    model.user_factors_ = rng.normal(size=model.user_factors_.shape).astype(np.float32)
    model.item_factors_ = rng.normal(size=model.item_factors_.shape).astype(np.float32)
    # rows without ratings do not exist for Spark (zero factors, as the local engine keeps them)
    train = tiny_split.train
    model.user_factors_[np.diff(train.indptr) == 0] = 0
    model.item_factors_[np.bincount(train.indices, minlength=train.shape[1]) == 0] = 0
    mapping = spark_mapping(model)
    local = model.objective(tiny_split)
    assert local == pytest.approx(mapping.scale * _spark_objective(model, tiny_split, mapping),
                                  rel=1e-6)


def test_observed_reg_scaling_solves_normal_equations_with_lambda_n(tiny_split):
    """reg_scaling='observed': after a sweep each item solves A_i y_i = b_i with lambda n_i."""
    model = WALS(dim=4, unobserved_weight=0.2, regularization=0.3, reg_scaling="observed",
                 iterations=2, solver="cholesky", dtype="float64").fit(tiny_split)
    train = sp.csc_matrix(tiny_split.train)
    x, y = model.user_factors_.astype(np.float64), model.item_factors_.astype(np.float64)
    gram = 0.2 * x.T @ x
    checked = 0
    for i in range(train.shape[1]):
        users = train.indices[train.indptr[i]:train.indptr[i + 1]]
        if len(users) == 0:
            continue
        xu = x[users]
        a = gram + (1.0 - 0.2) * xu.T @ xu + 0.3 * len(users) * np.eye(4)
        np.testing.assert_allclose(a @ y[i], xu.sum(0), rtol=1e-6, atol=1e-9)
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("params, message", [
    ({"unobserved_weight": 0.0}, "w0 = 0 cannot be expressed"),
    ({"targets": "values"}, "targets='values' cannot run on Spark"),
    ({"reg_scaling": "frequency"}, "use --reg-scaling observed"),
    ({"reg_scaling": "observed", "reg_exponent": 0.5}, "use --reg-scaling observed"),
    ({"patience": 2}, "early stopping"),
])
def test_unreachable_settings_are_refused(params, message):
    with pytest.raises(RecompareError, match=message):
        spark_mapping(WALS(**{**MAPPED, **params}))


def test_observed_weights_not_above_w0_are_refused(tiny_split):
    model = WALS(**{**MAPPED, "unobserved_weight": 1.0})
    model.check(tiny_split)
    with pytest.raises(RecompareError, match="not above unobserved_weight"):
        spark_ratings(model, tiny_split.train)


def test_zero_penalty_is_reachable_with_any_scaling():
    mapping = spark_mapping(WALS(**{**MAPPED, "regularization": 0.0, "reg_scaling": "none"}))
    assert mapping.reg_param == 0.0 and mapping.scale == pytest.approx(0.1)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("master, message", [
    ("mesos://x:5050", "cannot use Spark master"),
    ("local[0]", "cannot use Spark master"),
    ("spark://nohostport", "expected spark://host:port"),
    (f"spark://127.0.0.1:{_closed_port()}", "is unreachable"),
])
def test_bad_masters_fail_before_spark_starts(master, message):
    with pytest.raises(RecompareError, match=message):
        check_master(master)


def test_parse_conf():
    assert parse_conf(["spark.executor.memory=2g", "a.b= c=d"]) == {
        "spark.executor.memory": "2g", "a.b": " c=d"}
    with pytest.raises(RecompareError, match="KEY=VALUE"):
        parse_conf(["spark.executor.memory"])


def test_missing_pyspark_or_java_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(RecompareError, match=r"pip install 'recompare\[spark\]'"):
        require_spark()
    monkeypatch.setitem(sys.modules, "pyspark", type(sys)("pyspark"))
    monkeypatch.setenv("JAVA_HOME", "/nonexistent/java/home")
    with pytest.raises(RecompareError, match="needs a Java 17 runtime"):
        require_spark()


@pytest.mark.parametrize("args, message", [
    (["--unobserved-weight", "0", "--reg-scaling", "observed"], "w0 = 0 cannot be expressed"),
    (["--reg-scaling", "observed", "--spark-master", f"spark://127.0.0.1:{_closed_port()}"],
     "is unreachable"),
    (["--reg-scaling", "observed", "--spark-conf", "novalue"], "KEY=VALUE"),
])
def test_cli_spark_errors_are_one_line_and_write_nothing(bundled_path, out_dir, args, message):
    result = CliRunner().invoke(cli, ["train-wals", str(bundled_path), "-o", str(out_dir),
                                      "--engine", "spark", *args])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert not out_dir.exists()


# ----------------------------------------------------------- with a running Spark
@pytest.fixture(scope="module")
def session():
    try:
        require_spark()
    except RecompareError as exc:
        if os.environ.get("RECOMPARE_REQUIRE_SPARK") == "1":
            pytest.fail(f"RECOMPARE_REQUIRE_SPARK=1 but {exc}")
        pytest.skip(str(exc))
    before = signal.getsignal(signal.SIGINT)
    with wals_spark.spark_session("local[2]") as spark:
        yield spark
    # the library leaves the process as it found it: pyspark's SIGINT handler is removed
    assert signal.getsignal(signal.SIGINT) is before


@pytest.fixture(scope="module")
def spark_fit(session, agreement_data):
    return fit_spark(WALS(**MAPPED), agreement_data, session=session)


def _recall20(model: WALS, dataset) -> float:
    """recall@20 (hits / |relevant|) on the weak-protocol test part, seen items excluded."""
    from recompare.evaluate.metrics import accuracy

    test = dataset.split.test
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    ids, _ = model.recommend(users, k=20)
    return accuracy(ids, test[users], [20])["metrics"]["recall@20"]


def test_spark_agrees_with_local_wals(spark_fit, agreement_data):
    """Same objective, same data and seed: recall@20 within 2%, objective within 1%."""
    local = local_equivalent(spark_fit).fit(agreement_data)
    spark_objective = spark_fit.fit_info_["objective"][-1]
    local_objective = local.fit_info_["objective"][-1]
    assert relative_gap(spark_objective, local_objective) < 0.01
    assert relative_gap(_recall20(spark_fit, agreement_data),
                        _recall20(local, agreement_data)) < 0.02
    # the recorded Spark objective is S itself: L / w0
    assert spark_fit.fit_info_["spark_objective"] == pytest.approx(spark_objective / 0.1)
    assert spark_fit.user_factors_.shape == (agreement_data.n_users, 8)


def test_spark_model_round_trips_and_cli_writes_the_same_model(
        spark_fit, session, agreement_data, tmp_path, monkeypatch):
    """The CLI (reusing this module's session) writes a model equal to the library fit,
    in the local model format: same seed, same numbers."""
    data_dir = tmp_path / "data"
    agreement_data.save(data_dir)

    @contextlib.contextmanager
    def shared(master, conf):
        yield session

    monkeypatch.setattr(wals_spark, "spark_session", shared)
    out = tmp_path / "model"
    args = ["train-wals", str(data_dir), "-o", str(out), "--engine", "spark", "--json"]
    for key, value in MAPPED.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["objective"] == pytest.approx(spark_fit.fit_info_["objective"], rel=1e-6)
    loaded = WALS.load(out)
    np.testing.assert_allclose(loaded.user_factors_, spark_fit.user_factors_, rtol=1e-5,
                               atol=1e-6)
    assert loaded.fit_info_["engine"] == "spark"
    evaluated = CliRunner().invoke(cli, ["evaluate", str(data_dir), str(out), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
