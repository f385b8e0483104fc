"""``recompare evaluate`` end to end, and its refusals."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from recompare.cli import main
from recompare.data.splits import split
from recompare.data.synth import planted
from recompare.models.baselines import Popularity


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_planted, tiny_split):
    root = tmp_path_factory.mktemp("eval-cli")
    tiny_split.save(root / "data")
    Popularity().fit(tiny_split).save(root / "pop-model")
    other = split(planted(n_users=240, n_items=120, n_groups=3, seed=3), "both", seed=1)
    Popularity().fit(other).save(root / "foreign-model")
    tiny_split.replace(item_groups=None, user_groups=None, group_names=()).save(root / "nogroups")
    split(tiny_planted, "random", seed=1).save(root / "random-split")
    return root


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def test_json_output_has_every_metric(paths):
    result = run("evaluate", paths / "data", paths / "pop-model", "random", "--k", "5,10",
                 "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert list(payload["models"]) == ["pop-model", "random"]
    weak = payload["models"]["pop-model"]["protocols"]["weak"]
    for name in ("recall", "recall_norm", "precision", "ndcg", "map", "hit_rate", "coverage"):
        assert f"{name}@5" in weak["metrics"] and f"{name}@10" in weak["metrics"]
    assert payload["protocols"] == ["weak", "strong", "cold"]


def test_human_output_and_folding_report(paths):
    result = run("evaluate", paths / "data", "popularity-by-group", "random", "--k", "10",
                 "--protocol", "weak", "--folding-report")
    assert result.exit_code == 0, result.output
    for text in ("Evaluation", "recall", "Folding (weak)", "Group confusion",
                 "Most spurious recommendations: random"):
        assert text in result.stdout


def test_plots_and_report_are_written(paths, tmp_path):
    report = tmp_path / "out" / "eval.md"
    result = run("evaluate", paths / "data", "popularity", "random", "--k", "5,10",
                 "--plots", tmp_path / "plots", "--report", report)
    assert result.exit_code == 0, result.output
    for name in ("accuracy", "folding_map", "leakage", "recall_vs_leakage"):
        png = tmp_path / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = report.read_text()
    assert "## Folding" in text and "](../plots/folding_map.png)" in text
    # refuses to overwrite, unless asked
    again = run("evaluate", paths / "data", "popularity", "--report", report)
    assert again.exit_code != 0 and "already exists" in again.output
    again = run("evaluate", paths / "data", "popularity", "--report", report, "--plots",
                tmp_path / "plots", "--overwrite", "--protocol", "weak")
    assert again.exit_code == 0, again.output
    assert "random" not in report.read_text()


def test_report_without_plots_dir_uses_sibling(paths, tmp_path):
    result = run("evaluate", paths / "data", "random", "--protocol", "weak", "--report",
                 tmp_path / "r.md")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r-plots" / "folding_map.png").is_file()
    assert "](r-plots/folding_map.png)" in (tmp_path / "r.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["{data}", "{foreign}"], "trained on another data set"),
    (["{data}", "popularity", "--k", "0"], "positive integer"),
    (["{data}", "popularity", "--k", "10,x"], "comma-separated integers"),
    (["{data}", "popularity", "--k", "151"], "larger than the catalogue"),
    (["{random}", "popularity", "--protocol", "strong"], "held-out users"),
    (["{nogroups}", "popularity", "--folding-report"], "--group-col"),
    (["{data}", "no-such-model"], "neither a saved model directory nor a baseline"),
])
def test_bad_input_is_one_line_and_writes_nothing(paths, tmp_path, args, message):
    names = {"data": paths / "data", "foreign": paths / "foreign-model",
             "random": paths / "random-split", "nogroups": paths / "nogroups"}
    args = [a.format(**names) for a in args]
    report = tmp_path / "report.md"
    result = run("evaluate", *args, "--report", report)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_device_auto_gives_the_cpu_figures_and_cuda_needs_a_gpu(paths, tmp_path):
    import torch

    args = ("evaluate", paths / "data", paths / "pop-model", "--k", "10", "--json")
    cpu = json.loads(run(*args, "--device", "cpu").stdout)
    auto = json.loads(run(*args, "--device", "auto").stdout)
    for protocol, result in cpu["models"]["pop-model"]["protocols"].items():
        other = auto["models"]["pop-model"]["protocols"][protocol]
        assert other["metrics"] == pytest.approx(result["metrics"], abs=1e-6)
    report = tmp_path / "r.md"
    result = run(*args[:-1], "--device", "cuda", "--report", report)
    if torch.cuda.is_available():  # a GPU machine: the lists are computed there
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0
        assert result.output.strip() == "Error: --device cuda: no CUDA GPU is available to " \
            "torch here; use --device cpu or auto"
        assert not report.exists()


def test_help():
    result = run("evaluate", "--help")
    assert result.exit_code == 0 and "--folding-report" in result.output
