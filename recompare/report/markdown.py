"""A Markdown report of an evaluation, embedding the PNG plots by relative path."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..evaluate.metrics import METRICS
from .formatting import fmt
from .tables import succeeded


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_report(
    results: dict,
    plots: Mapping[str, str | os.PathLike] | None = None,
    report_path: str | os.PathLike | None = None,
    title: str = "recompare evaluation",
    top: int = 5,
) -> str:
    """The report as Markdown text.

    Parameters
    ----------
    results : dict
        From :func:`recompare.evaluate.protocols.evaluate_models`.
    plots : mapping key -> PNG path, optional
        From :func:`recompare.report.plots.write_plots`; embedded by path relative to
        ``report_path``'s directory (absolute when no ``report_path``).
    """
    base = Path(report_path).resolve().parent if report_path else None

    def link(path) -> str:
        p = Path(path).resolve()
        return Path(os.path.relpath(p, base)).as_posix() if base else p.as_posix()

    plots = dict(plots or {})
    ds = results["dataset"]
    parts = [f"# {title}", ""]
    parts.append(
        f"Data set: {ds['users']:,} users x {ds['items']:,} items, split `{ds['split']}`, "
        f"fingerprint `{ds['fingerprint']}`.  Models: "
        + ", ".join(f"`{name}` ({entry['kind']})" for name, entry in results["models"].items())
        + ".  Metric definitions: `docs/methodology.md`."
    )
    parts.append("")
    parts.append("## Accuracy")
    parts += _accuracy_section(results)
    if "accuracy" in plots:
        parts += ["", f"![accuracy at k]({link(plots['accuracy'])})"]
    if results.get("folding"):
        parts += ["", "## Folding", "",
                  ("leakage@k: share of top-k items outside the query's group; excess: minus "
                  "the cross-group share of the held-out interactions (real cross-group "
                  "taste); spurious@k: cross-group items no user of the query's group ever "
                  "touched; folding_auc: chance that a cross-group item outscores an in-group "
                  "item (0.5 = groups not separated).")]
        parts += _folding_section(results, top)
        for key, caption in (("folding_map", "folding map"), ("leakage", "leakage at k"),
                             ("recall_vs_leakage", "recall against leakage")):
            if key in plots:
                parts += ["", f"![{caption}]({link(plots[key])})"]
    return "\n".join(parts) + "\n"


def _accuracy_section(results: dict) -> list[str]:
    """Per protocol: every accuracy metric at every k, query counts, unsupported models."""
    lines: list[str] = []
    for protocol in results["protocols"]:
        lines += ["", f"### Protocol `{protocol}`", ""]
        header = ["model", "k"] + list(METRICS)
        rows = []
        notes = []
        for name, entry in results["models"].items():
            res = entry["protocols"].get(protocol, {})
            if res.get("status") != "ok":
                rows.append([name, "-", "not supported"] + [""] * (len(METRICS) - 1))
                notes.append(f"- `{name}`: {_escape(res.get('reason', 'not run'))}")
                continue
            for k in results["ks"]:
                rows.append([name, str(k)] + [fmt(res["metrics"][f"{m}@{k}"]) for m in METRICS])
        lines.append(_table(header, rows))
        counts = {(res["n_queries"], res["n_skipped"])
                  for res in succeeded(results, protocol).values()}
        if counts:
            lines += ["", "; ".join(f"{n:,} queries evaluated, {s:,} skipped (no held-out "
                                    "items)" for n, s in sorted(counts)) + "."]
        if notes:
            lines += ["", "Not supported:", *notes]
    return lines


def _folding_section(results: dict, top: int) -> list[str]:
    """Per protocol: leakage against the held-out truth, the group confusion and the
    most spurious recommendations of each model."""
    lines: list[str] = []
    ks = results["ks"]
    for protocol in results["protocols"]:
        ok = succeeded(results, protocol)
        if not ok:
            continue
        lines += ["", f"### Protocol `{protocol}`", ""]
        header = (["model"] + [f"leakage@{k}" for k in ks] + [f"excess@{k}" for k in ks]
                  + [f"spurious@{ks[0]}", "folding_auc"])
        rows = []
        truth = None
        for name, res in ok.items():
            f = res["folding"]
            truth = f["ground_truth_cross_share"]
            rows.append([name] + [fmt(f[f"leakage@{k}"]) for k in ks]
                        + [fmt(f[f"excess_leakage@{k}"]) for k in ks]
                        + [fmt(f[f"spurious@{ks[0]}"]), fmt(f.get("folding_auc"))])
        rows.append(["*held-out truth*"] + [fmt(truth)] * len(ks) + ["0.0000"] * len(ks)
                    + ["-", "-"])
        lines.append(_table(header, rows))
        lines += ["", _confusion_md(ok, results, ks[0])]
        for name, res in ok.items():
            worst = res["folding"]["spurious"][:top]
            if not worst:
                continue
            lines += ["", f"Most spurious recommendations of `{name}`:", ""]
            lines.append(_table(
                ["query group", "item", "title", "item group", "queries", "best rank",
                 "mean rank"],
                [[_escape(w["query_group_name"]), _escape(w["item_id"]),
                  _escape(w.get("title") or "-"), _escape(w["item_group_name"]),
                  str(w["n_queries"]), str(w["best_rank"]), f"{w['mean_rank']:.1f}"]
                 for w in worst]))
    return lines


def _confusion_md(ok: dict, results: dict, k: int) -> str:
    names = results.get("group_names") or []
    first = next(iter(ok.values()))["folding"]
    n_groups = len(first["ground_truth_confusion"])
    labels = [names[g] if g < len(names) else str(g) for g in range(n_groups)]
    rows = []
    blocks = [("*held-out truth*", first["ground_truth_confusion"])]
    blocks += [(m, r["folding"]["confusion"][str(k)]) for m, r in ok.items()]
    for name, matrix in blocks:
        for g, row in enumerate(matrix):
            rows.append([name if g == 0 else "", labels[g]] + [f"{v:.2f}" for v in row])
    return (f"Group confusion at k={k} (rows: query group; columns: recommended item group; "
            "rows sum to 1):\n\n" + _table(["model", "query group"] + labels, rows))
