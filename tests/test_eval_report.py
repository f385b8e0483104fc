"""Report building blocks: rich tables, Markdown, plots."""
from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from recompare.errors import RecompareError
from recompare.evaluate.protocols import evaluate_models
from recompare.models.baselines import Popularity, RandomEmbeddings
from recompare.report.markdown import markdown_report
from recompare.report.plots import pca_2d, write_plots
from recompare.report.tables import counts_table, folding_tables, rich_table


class _WeakOnly(Popularity):
    kind = "weak-only"
    protocols = frozenset({"weak"})


@pytest.fixture(scope="module")
def evaluated(tiny_split):
    data = tiny_split
    models = {"weak-only": _WeakOnly().fit(data), "random": RandomEmbeddings(dim=4).fit(data)}
    return data, models, evaluate_models(models, data, "all", (5, 10), folding=True)


def render(renderable) -> str:
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def test_tables_show_every_model_and_unsupported_protocols(evaluated):
    _, _, results = evaluated
    text = render(rich_table(results))
    assert "not supported" in text and "weak-only / strong" in text
    assert "recall norm" in text and "random" in text
    assert "skipped" in render(counts_table(results))
    folding = "".join(render(t) for t in folding_tables(results))
    assert "Folding (weak)" in folding and "held-out truth" in folding


def test_markdown_report_embeds_plots_relatively(evaluated, tmp_path):
    data, models, results = evaluated
    plots = write_plots(results, models, data, tmp_path / "figs")
    text = markdown_report(results, plots, tmp_path / "report.md")
    assert "![folding map](figs/folding_map.png)" in text
    assert "| weak-only | - | not supported |" in text
    assert "## Folding" in text and "Group confusion at k=5" in text
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "accuracy.png", "folding_map.png", "leakage.png", "recall_vs_leakage.png"]
    with pytest.raises(RecompareError, match="already exists"):
        write_plots(results, models, data, tmp_path / "figs")


def test_accuracy_only_results_give_only_the_accuracy_plot(evaluated, tmp_path):
    data, models, _ = evaluated
    results = evaluate_models(models, data, "weak", (5,), folding=False)
    plots = write_plots(results, models, data, tmp_path / "p")
    assert list(plots) == ["accuracy"]
    assert "## Folding" not in markdown_report(results, plots)


def test_pca_2d_is_deterministic_and_handles_one_dimension():
    points = np.random.default_rng(0).normal(size=(50, 5))
    np.testing.assert_array_equal(pca_2d(points), pca_2d(points.copy()))
    flat = pca_2d(np.arange(10.0)[:, None])
    assert flat.shape == (10, 2) and (flat[:, 1] == 0).all()
