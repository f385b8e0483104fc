"""Tables that never lie: every number whole at 80 and 200 columns, and piped."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from recompare.cli import main
from recompare.data.splits import split
from recompare.data.synth import planted
from recompare.evaluate.protocols import evaluate_models
from recompare.models.baselines import Popularity, RandomEmbeddings
from recompare.report.fit import min_width, split_to_fit
from recompare.report.formatting import fmt
from recompare.report.tables import (
    CONFUSION_GROUPS,
    confusion_table,
    evaluation_tables,
    folding_tables,
)


@pytest.fixture(scope="module")
def many_groups():
    data = split(planted(n_users=400, n_items=240, n_groups=12, interactions_per_user=15,
                         seed=4), "both", seed=0)
    models = {"popularity-with-a-long-name": Popularity().fit(data),
              "random": RandomEmbeddings(dim=4).fit(data)}
    return data, evaluate_models(models, data, "all", (5, 10, 20), folding=True)


def render(renderables, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    for renderable in renderables:
        console.print(renderable)
    return console.file.getvalue()


@pytest.mark.parametrize("width", [80, 200])
def test_every_metric_is_printed_whole(many_groups, width):
    _, results = many_groups
    text = render(evaluation_tables(results, width), width)
    assert max(len(line) for line in text.splitlines()) <= width
    cells = set(re.findall(r"\d\.\d{3}\b", text))
    for entry in results["models"].values():
        for res in entry["protocols"].values():
            for value in res["metrics"].values():
                assert fmt(value, 3) in cells
    for header in ("recall", "precision", "coverage", "hit"):
        assert header in text
    assert "…" not in text


@pytest.mark.parametrize("width", [80, 200])
def test_folding_section_fits_and_keeps_leakage_whole(many_groups, width):
    data, results = many_groups
    sizes = np.bincount(data.item_groups, minlength=data.n_groups).tolist()
    text = render(folding_tables(results, width=width, group_sizes=sizes), width)
    assert max(len(line) for line in text.splitlines()) <= width
    for entry in results["models"].values():
        folding = entry["protocols"]["weak"]["folding"]
        for key in ("leakage@5", "leakage@20", "excess_leakage@10", "spurious@5"):
            assert fmt(folding[key]) in text


def test_confusion_is_compact_with_many_groups_and_rows_still_sum_to_one(many_groups):
    data, results = many_groups
    ok = {name: entry["protocols"]["weak"] for name, entry in results["models"].items()}
    sizes = np.bincount(data.item_groups, minlength=data.n_groups)
    table = confusion_table(ok, "weak", 5, list(data.group_names), 200, sizes.tolist())
    headers = [str(column.header) for column in table.columns]
    assert headers[-1] == "other" and len(headers) - 3 == CONFUSION_GROUPS
    largest = {data.group_names[g] for g in np.argsort(-sizes, kind="stable")[:CONFUSION_GROUPS]}
    assert set(headers[2:-1]) == largest
    assert "12 groups" in str(table.caption) and "--json" in str(table.caption)
    for row in range(table.row_count):
        values = [float(re.sub(r"\[/?bold\]", "", list(column.cells)[row]))
                  for column in table.columns[2:]]
        assert sum(values) == pytest.approx(1.0, abs=0.01 * len(values)) or sum(values) == 0
    narrow = confusion_table(ok, "weak", 5, list(data.group_names), 80, sizes.tolist())
    assert len(narrow.columns) < len(table.columns)
    assert min_width(narrow) <= 80


def test_few_groups_show_the_full_matrix():
    data = split(planted(n_users=200, n_items=100, n_groups=3, seed=1), "both", seed=0)
    results = evaluate_models({"pop": Popularity().fit(data)}, data, "weak", (5,), folding=True)
    ok = {"pop": results["models"]["pop"]["protocols"]["weak"]}
    table = confusion_table(ok, "weak", 5, list(data.group_names), 80)
    assert [str(c.header) for c in table.columns][2:] == list(data.group_names)
    assert table.caption is None


def test_split_to_fit_uses_the_fewest_parts():
    from rich.table import Table

    def build(chunk, part):
        table = Table(title=f"t{part}")
        table.add_column("label")
        for name in chunk:
            table.add_column(name, no_wrap=True)
        table.add_row("x", *["1234567890" for _ in chunk])
        return table

    columns = [f"c{i}" for i in range(8)]
    assert len(split_to_fit(build, columns, 500)) == 1
    parts = split_to_fit(build, columns, 60)
    assert len(parts) > 1 and all(min_width(t) <= 60 for t in parts)
    assert str(parts[0].title).endswith(f"(1/{len(parts)})")


@pytest.mark.parametrize("columns", ["80", "200", None])
def test_cli_output_honours_columns_when_piped(tmp_path_factory, monkeypatch, columns):
    root = tmp_path_factory.mktemp("fit-cli")
    data = split(planted(n_users=300, n_items=150, n_groups=10, seed=2), "both", seed=2)
    data.save(root / "data")
    monkeypatch.delenv("COLUMNS", raising=False)
    env = {"COLUMNS": columns} if columns else {}
    result = CliRunner().invoke(main, ["evaluate", str(root / "data"), "popularity", "random",
                                       "--folding-report"], env=env)
    assert result.exit_code == 0, result.output
    width = int(columns) if columns else 120  # piped without $COLUMNS: 120
    assert max(len(line) for line in result.stdout.splitlines()) <= width
    assert "other" in result.stdout


def test_folding_map_legend_names_only_present_groups_and_greys_the_rest():
    from recompare.report.plots import MAP_COLOURED_GROUPS, folding_map

    data = split(planted(n_users=300, n_items=200, n_groups=12, seed=6), "both", seed=0)
    # two groups without any item or user left: they must not appear in the legend
    groups = np.where(np.isin(data.item_groups, (10, 11)), 0, data.item_groups)
    data = data.replace(item_groups=groups, user_groups=None)
    fig = folding_map({"pop": Popularity().fit(data)}, data, seed=0)
    (legend,) = fig.legends
    labels = [text.get_text() for text in legend.get_texts()]
    names = set(data.group_names)
    coloured = [label for label in labels if label in names]
    assert len(coloured) == MAP_COLOURED_GROUPS
    assert "2 other groups" in labels
    assert not {data.group_names[10], data.group_names[11]} & set(labels)
    grey = legend.get_title().get_text()
    assert grey.startswith("grey: ") and len(grey.split(", ")) == 2
