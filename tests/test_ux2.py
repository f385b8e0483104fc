"""The user's view, round 2: data warnings, mirror's group_hint, help, logs, bench and
compare output (issue 15, stage D and the smaller items)."""
from __future__ import annotations

import io
import json
import re
import shlex
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from recompare.cli import main
from recompare.data import Dataset
from recompare.data.synth import planted

SOURCE_LOCATION = re.compile(r"\b\w+\.py:\d+\b")


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def write_ratings_log(root: Path) -> None:
    """Star ratings with a 0.5, a repeated pair, an item missing from the item table and an
    item without a genre."""
    root.mkdir()
    rows = ["user,item,rating", "1,10,0.5", "1,11,4", "2,10,5", "2,12,3.5", "3,11,4.5",
            "3,13,2", "3,13,4", "4,12,1"]  # (3, 13) twice; item 13 not in the item table
    (root / "log.csv").write_text("\n".join(rows) + "\n")
    (root / "items.csv").write_text("item,title,genre\n10,Ten,Drama\n11,Eleven,Comedy\n"
                                    "12,Twelve,\n99,Unrated,Drama\n")


def test_prepare_prints_a_warnings_block(tmp_path):
    write_ratings_log(tmp_path / "raw")
    args = ["data", "prepare", str(tmp_path / "raw" / "log.csv"), str(tmp_path / "out"),
            "--items", str(tmp_path / "raw" / "items.csv"), "--group-col", "genre",
            "--split", "none"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    warnings = " ".join(result.stderr.split())  # as one line, whatever the wrapping
    assert "warnings" in warnings
    assert "1 items of the log are missing from the item table" in warnings
    assert "1 items have no group" in warnings  # item 12: empty genre
    assert "1 items of the item table have no interactions" in warnings  # item 99
    assert "1 repeated (user, item) rows merged" in warnings
    assert "the 1 of value 0.5 too" in warnings and "--min-rating 4" in warnings
    # the terminal explains the row of ungrouped items
    assert "(no group)" in result.stdout and "(none)" not in result.stdout
    assert "(no group): no group in the item table" in " ".join(result.stdout.split())
    # and --json carries the same sentences
    as_json = run(*args[:3], str(tmp_path / "out2"), *args[4:], "--json")
    info = json.loads(as_json.stdout)
    assert len(info["warnings"]) == 5
    assert info["items_without_group"] == 2  # 12 (no genre) and 13 (not in the table)


def test_min_rating_silences_the_positives_warning_and_reports_the_drop(tmp_path):
    write_ratings_log(tmp_path / "raw")
    result = run("data", "prepare", str(tmp_path / "raw" / "log.csv"), str(tmp_path / "out"),
                 "--min-rating", "4", "--split", "none", "--json")
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    assert not any("positive" in w for w in warnings)
    assert "3 rows below --min-rating 4 dropped" in warnings  # 0.5, 3.5 and 1


def test_clean_binary_log_has_no_warnings(tmp_path):
    (tmp_path / "log.csv").write_text("user,item\n1,a\n1,b\n2,a\n")
    result = run("data", "prepare", str(tmp_path / "log.csv"), str(tmp_path / "out"),
                 "--split", "none", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["warnings"] == []
    assert "warning" not in result.stderr


def test_mirror_states_group_hint_and_can_leave_it_out(tmp_path):
    help_text = run("data", "mirror", "--help").output
    assert "group_hint" in help_text and "--no-group-hint" in help_text
    planted(n_users=60, n_items=30, n_groups=2, interactions_per_user=6, seed=0).save(
        tmp_path / "src")
    for flag, expected in (("--group-hint", True), ("--no-group-hint", False)):
        out = tmp_path / flag.strip("-")
        result = run("data", "mirror", str(tmp_path / "src"), str(out), "--split", "none",
                     flag)
        assert result.exit_code == 0, result.output
        features = Dataset.load(out).user_features
        assert ("group_hint" in features.columns) is expected
        assert "age" in features.columns  # the source's own features stay
        if expected:
            assert set(features["group_hint"]) == {"c0", "c1"}


def test_cli_reference_says_recompare():
    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert "Usage: recompare" in text and "Usage: main" not in text


def test_first_example_of_the_top_level_help_works(tmp_path, monkeypatch):
    first = next(line for line in main.help.splitlines() if line.strip().startswith("recompare"))
    words = shlex.split(first.split("#")[0])
    monkeypatch.chdir(tmp_path)
    # the example names a folder of its own: it must not exist in the repository root
    assert not (Path(__file__).resolve().parents[1] / words[-1]).exists()
    result = CliRunner().invoke(main, words[1:] + ["--users", "80", "--items", "40"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / words[-1] / "meta.json").is_file()


def test_log_lines_carry_no_source_location(tmp_path):
    result = run("data", "synth", str(tmp_path / "d"), "--users", "50", "--items", "30")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stderr
    assert not SOURCE_LOCATION.search(result.stderr), result.stderr


def test_compare_without_a_split_fails_before_any_progress(tmp_path):
    planted(n_users=60, n_items=30, n_groups=2, interactions_per_user=6, seed=0).save(
        tmp_path / "nosplit")
    result = run("compare", str(tmp_path / "nosplit"))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # the error alone
    assert result.stderr.startswith("Error:") and "data split" in result.stderr


@pytest.fixture
def fake_suite(monkeypatch):
    """A benchmark suite with one figure that misses its target."""
    module = types.ModuleType("fake_bench_suite")
    module.run = lambda scale, callback: {"figures": [
        {"name": "speed vs peer", "value": 2.0, "unit": "x", "target": 0.8, "met": False}]}
    monkeypatch.setitem(sys.modules, "fake_bench_suite", module)
    from recompare.commands import bench

    monkeypatch.setitem(bench._MODULES, "wals", "fake_bench_suite")


@pytest.mark.parametrize("scale", ["tiny", "full"])
def test_bench_short_output_flag_and_targets_only_judged_at_full_scale(tmp_path, fake_suite,
                                                                       scale):
    out = tmp_path / "results"
    result = run("bench", "wals", "--scale", scale, "-o", str(out))
    assert result.exit_code == 0, result.output
    markdown = (out / "bench.md").read_text()
    for text in (result.stdout, markdown):
        if scale == "full":
            assert "NOT met" in text
        else:
            assert "NOT met" not in text and "applies at --scale full" in text
    assert json.loads((out / "bench.json").read_text())["suites"]["wals"]["figures"]


def _comparison_results() -> dict:
    long_verdict = ("WALS better: recall@20 0.252 vs 0.112, difference +0.140 (95% CI "
                    "[+0.126, +0.155], +125%); see --folding-mirror")
    table = [{"question": q, "measure": "recall@20 / ndcg@20, known users (weak)",
              "wals": "0.252 / 0.319", "dnn": "0.112 / 0.155", "verdict": long_verdict}
             for q in ("Accuracy", "Folding")]
    metrics = {"recall@20": 0.25213, "recall_norm@20": 0.32817, "ndcg@20": 0.07712,
               "coverage@20": 0.10301}
    models = {name: {"protocols": {
        "weak": {"status": "ok", "metrics": metrics,
                 "folding": {"leakage@10": 0.63712, "excess_leakage@10": -0.01034}},
        "strong": {"status": "unsupported", "reason": "no fold-in"}}}
        for name in ("WALS w0=0.001 const-reg", "DNN uniform negatives", "popularity")}
    return {"table": table,
            "evaluation": {"protocols": ["weak", "strong"], "models": models},
            "models": {name: {"training": {"seconds": 11.94}} for name in models}}


@pytest.mark.parametrize("width", [80, 200])
def test_comparison_tables_fit_and_keep_every_number(width):
    from recompare.report.comparison import rich_tables

    results = _comparison_results()
    console = Console(file=io.StringIO(), width=width, color_system=None)
    for table in rich_tables(results, width):
        console.print(table)
    text = console.file.getvalue()
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    assert "…" not in text
    for number in ("0.252", "0.328", "0.077", "0.103", "0.637", "-0.010", "11.9",
                   "[+0.126, +0.155]"):
        assert number in text, number
    for name in ("WALS w0=0.001 const-reg", "DNN uniform negatives", "--folding-mirror"):
        assert name in text, name
    assert "no fold-in" in text
