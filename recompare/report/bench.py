"""Render benchmark results: a rich table, Markdown, and ``bench.json``."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._atomic import atomic_dir
from .._jsonutil import dumps
from .formatting import fmt


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _flatten(sub, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)) and value and all(
        isinstance(v, (int, float)) for v in value
    ) and len(value) <= 8:
        yield prefix, ", ".join(_fmt(v) for v in value)
    elif isinstance(value, (int, float, str, bool)) or value is None:
        yield prefix, value


def _fmt(value: Any) -> str:
    return fmt(value, 4, significant=True, missing="None")


def headline(suite: dict, scale: str = "full") -> list[tuple[str, Any]]:
    """The figures a suite declares as its headline (``figures``), else all scalar leaves.

    Targets are set for ``--scale full``; at a smaller scale a figure's target is shown
    with that note instead of "met" / "NOT met" (the data are too small to judge it).
    """
    figures = suite.get("figures")
    if isinstance(figures, dict):
        return list(_flatten(figures))
    if isinstance(figures, list):
        rows = []
        for fig in figures:
            label = fig.get("name", "?")
            value = fig.get("value")
            extra = []
            low, high = fig.get("interval") or (None, None)
            if low is not None and high is not None:
                extra.append(f"95% CI {_fmt(low)}-{_fmt(high)}")
            for key in ("peer_value", "ratio"):
                if fig.get(key) is not None:
                    extra.append(f"{key}={_fmt(fig[key])}")
            extra += _target_notes(fig, scale)
            rows.append((label, f"{_fmt(value)} {fig.get('unit', '')} ".strip()
                         + (f" ({'; '.join(extra)})" if extra else "")))
        return rows
    return [(k, v) for k, v in _flatten(suite) if k != "figures"]


def _target_notes(fig: dict, scale: str) -> list[str]:
    """``target=..`` and whether it was met; below full scale, that the target applies
    at full scale."""
    notes = []
    if fig.get("target") is not None:
        notes.append(f"target={_fmt(fig['target'])}")
    if scale != "full" and (fig.get("target") is not None or "met" in fig):
        notes.append("target applies at --scale full")
    elif "met" in fig:
        notes.append("met" if fig["met"] else "NOT met")
    return notes


def bench_table(results: dict):
    from rich.table import Table

    table = Table(title=f"recompare bench (scale {results.get('scale')})")
    table.add_column("suite", style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, suite in results.get("suites", {}).items():
        for label, value in headline(suite, str(results.get("scale", "full"))):
            table.add_row(name, label, value if isinstance(value, str) else _fmt(value))
            name = ""
    return table


def bench_markdown(results: dict) -> str:
    machine = results.get("machine", {})
    lines = [
        f"# recompare bench (scale `{results.get('scale')}`)",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()),
        "",
    ]
    for name, suite in results.get("suites", {}).items():
        lines += [f"## {name}", "", "| figure | value |", "|---|---|"]
        for label, value in headline(suite, str(results.get("scale", "full"))):
            lines.append(f"| {label} | {value if isinstance(value, str) else _fmt(value)} |")
        lines.append("")
    return "\n".join(lines)


def write_bench_outputs(results: dict, directory: str | Path) -> None:
    """Write ``bench.json`` and ``bench.md`` into ``directory`` (replaced atomically)."""
    with atomic_dir(directory, overwrite=True) as tmp:
        (tmp / "bench.json").write_text(dumps(results))
        extra = ""
        scaling = results.get("suites", {}).get("scaling")
        if scaling and scaling.get("sweeps"):
            from ..bench.scaling import plot_scaling

            plot_scaling(scaling, str(tmp))
            extra = "\n![training time as the data grow](scaling.png)\n"
        (tmp / "bench.md").write_text(bench_markdown(results) + "\n" + extra)
