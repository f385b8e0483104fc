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


# ------------------------------------------------------------ a Parquet log read by Spark
LOG_MAPPED = {**MAPPED, "iterations": 2}


@pytest.fixture(scope="module")
def planted_log(tmp_path_factory, bundled_path):
    """The bundled planted interactions as a raw Parquet log, with what ``data prepare``'s
    rules must resolve: repeated pairs (the latest event wins), a zero-valued event whose
    user has nothing else (user and event dropped), integer-looking text ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recompare.data.dataset import Dataset

    data = Dataset.load(bundled_path)
    coo = data.interactions.tocoo()
    times = data.timestamps.tocsr()[coo.row, coo.col].A1 if data.timestamps is not None \
        else np.arange(coo.nnz)
    users = np.asarray(data.users.ids, dtype=object)[coo.row]
    items = np.asarray(data.items.ids, dtype=object)[coo.col]
    values = coo.data.astype(np.float64)
    later, earlier = slice(0, 60), slice(60, 90)  # repeats after / before the original
    log = {
        "user_id": np.concatenate([users, users[later], users[earlier], ["zz9"]]),
        "item_id": np.concatenate([items, items[later], items[earlier], [items[0]]]),
        "rating": np.concatenate([values, np.full(60, 3.0), np.full(30, 5.0), [0.0]]),
        "timestamp": np.concatenate([times, times[later] + 10, times[earlier] - 10, [0]]),
    }
    path = tmp_path_factory.mktemp("log") / "events.parquet"
    pq.write_table(pa.table(log), path, row_group_size=40_000)
    return path


def test_spark_reads_a_parquet_log_as_data_prepare_does(session, planted_log, tmp_path):
    from recompare.data.loaders import prepare
    from recompare.data.spark_log import read_log

    prepared = prepare(planted_log)
    read = read_log(session, planted_log)
    assert read.fingerprint == prepared.fingerprint  # same ids, same matrix
    assert list(read.users.ids) == list(prepared.users.ids) and "zz9" not in read.users.ids
    assert (read.interactions != prepared.interactions).nnz == 0
    assert (prepared.interactions.data == 3.0).sum() == 60  # the later repeats won
    # a directory of Parquet files (files in name order) gives the same data set
    import pyarrow.parquet as pq

    table = pq.read_table(planted_log)
    folder = tmp_path / "events"
    folder.mkdir()
    pq.write_table(table.slice(0, 50_000), folder / "part-0.parquet")
    pq.write_table(table.slice(50_000), folder / "part-1.parquet")
    assert read_log(session, folder).fingerprint == prepared.fingerprint


@pytest.mark.parametrize("options", [{"duplicates": "max"}, {"duplicates": "sum"},
                                     {"min_rating": 2.0}])
def test_spark_log_policies_match_data_prepare(session, planted_log, options):
    from recompare.data.loaders import prepare
    from recompare.data.spark_log import read_log

    prepared = prepare(planted_log, **options)
    read = read_log(session, planted_log, **options)
    assert read.fingerprint == prepared.fingerprint
    assert (read.interactions != prepared.interactions).nnz == 0


def test_train_wals_on_a_parquet_log_writes_the_prepared_model(session, planted_log,
                                                               tmp_path, monkeypatch):
    """``--log`` gives the model ``data prepare`` + ``--engine spark`` gives, and a data set
    in MODEL/dataset with which ``recommend`` and ``export`` serve it."""
    from recompare.data.loaders import prepare

    expected = fit_spark(WALS(**LOG_MAPPED), prepare(planted_log), session=session)

    @contextlib.contextmanager
    def shared(master, conf):
        yield session

    monkeypatch.setattr(wals_spark, "spark_session", shared)
    out = tmp_path / "model"
    args = ["train-wals", "-o", str(out), "--engine", "spark", "--log", str(planted_log),
            "--log-col", "value=rating", "--duplicates", "last", "--json"]
    for key, value in LOG_MAPPED.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    loaded = WALS.load(out)
    assert loaded.fingerprint_ == expected.fingerprint_
    np.testing.assert_allclose(loaded.user_factors_, expected.user_factors_, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(loaded.item_factors_, expected.item_factors_, rtol=1e-5,
                               atol=1e-6)
    served = CliRunner().invoke(cli, ["recommend", str(out), str(out / "dataset"), "--user",
                                      "u1", "--json"])
    assert served.exit_code == 0, served.output
    exported = CliRunner().invoke(cli, ["export", str(out), str(tmp_path / "e.npz"),
                                        "--dataset", str(out / "dataset")])
    assert exported.exit_code == 0, exported.output


def _bad_logs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    no_item = tmp_path / "no-item.parquet"
    pq.write_table(pa.table({"user": ["a", "b"], "stuff": ["x", "y"]}), no_item)
    negative = tmp_path / "negative.parquet"
    pq.write_table(pa.table({"user": ["a", "b"], "item": ["x", "y"], "value": [1.0, -2.0]}),
                   negative)
    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.table({"user": ["a", None], "item": ["x", "y"]}), missing)
    return {"no-item": no_item, "negative": negative, "missing": missing}


@pytest.mark.parametrize("name, message", [
    ("no-item", "cannot tell which column of no-item.parquet holds item ids"),
    ("negative", "negative value -2"),
    ("missing", "column 'user' has 1 missing user ids"),
])
def test_bad_parquet_logs_are_one_line_errors_and_write_nothing(session, tmp_path,
                                                                monkeypatch, name, message):
    @contextlib.contextmanager
    def shared(master, conf):
        yield session

    monkeypatch.setattr(wals_spark, "spark_session", shared)
    out = tmp_path / "model"
    result = CliRunner().invoke(cli, ["train-wals", "-o", str(out), "--engine", "spark",
                                      "--reg-scaling", "observed", "--log",
                                      str(_bad_logs(tmp_path)[name])])
    assert result.exit_code != 0 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--engine", "spark", "--log", "data/planted/meta.json"], "is not a Parquet file"),
    (["--engine", "spark", "--log", "data/planted"], "not a directory of Parquet files"),
    (["--log", "x.parquet"], "add --engine spark"),
    (["data/planted", "--engine", "spark", "--log", "x.parquet"], "not both"),
    (["--engine", "spark"], "give either DATASET or --log"),
    (["--engine", "spark", "--log", "x.parquet", "--log-col", "who=x"], "ROLE=NAME"),
    (["data/planted", "--engine", "spark", "--min-rating", "4"], "apply to --log only"),
])
def test_log_input_errors_before_spark_starts(out_dir, args, message, monkeypatch):
    def no_session(*args, **kwargs):
        raise AssertionError("Spark must not start")

    monkeypatch.setattr(wals_spark, "spark_session", no_session)
    result = CliRunner().invoke(cli, ["train-wals", "-o", str(out_dir), "--reg-scaling",
                                      "observed", *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and not out_dir.exists()


def test_a_log_url_goes_to_spark_and_its_failure_is_one_line(session, tmp_path):
    from recompare.data.spark_log import parquet_files, read_log

    assert parquet_files("hdfs:///logs/events/") == "hdfs:///logs/events/"
    url = f"file://{tmp_path}/absent.parquet"
    with pytest.raises(RecompareError, match="Spark cannot read the log file://") as caught:
        read_log(session, url)
    assert "\n" not in str(caught.value)
