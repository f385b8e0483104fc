"""Rich tables of evaluation results (the CLI's human output).

All functions take the results dict of
:func:`recompare.evaluate.protocols.evaluate_models` and return rich renderables;
nothing here prints.
"""
from __future__ import annotations

from ..evaluate.metrics import METRICS
from .formatting import fmt

#: short column headers for the metric names used in the JSON and docs
HEADERS = {
    "recall": "recall",
    "recall_norm": "recall norm",
    "precision": "precision",
    "ndcg": "ndcg",
    "map": "map",
    "hit_rate": "hit rate",
    "coverage": "coverage",
    "leakage": "leakage",
    "excess_leakage": "excess",
}


def succeeded(results: dict, protocol: str) -> dict[str, dict]:
    """The models evaluated under ``protocol``: name -> that protocol's result."""
    return {name: entry["protocols"][protocol] for name, entry in results["models"].items()
            if entry["protocols"].get(protocol, {}).get("status") == "ok"}


def _best(results: dict, protocol: str, key: str, section: str = "metrics") -> float | None:
    values = []
    for entry in results["models"].values():
        res = entry["protocols"].get(protocol, {})
        if res.get("status") == "ok":
            source = res.get(section, {}) if section == "folding" else res["metrics"]
            if key in source:
                values.append(source[key])
    return max(values) if values and len(results["models"]) > 1 else None


def rich_table(results: dict, digits: int = 3):
    """One table with every model side by side: a section per protocol, a row per
    model and k, a column per accuracy metric of
    :data:`~recompare.evaluate.metrics.METRICS` (leakage has its own tables, see
    :func:`folding_tables`).  The best value of a column within a protocol and k is bold;
    a model that cannot serve a protocol gets one "not supported" row, its reason in the
    caption.
    """
    from rich import box
    from rich.table import Table

    table = Table(title="Evaluation", title_justify="left", header_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    longest = max([len(m) for m in results["models"]] + [len(p) for p in results["protocols"]])
    table.add_column("model", overflow="fold", min_width=min(longest, 22))
    table.add_column("k", justify="right", no_wrap=True)
    for name in METRICS:
        # headers wrap (at their space) before numbers are cut, so 80 columns suffice
        table.add_column(HEADERS[name], justify="right", min_width=digits + 2)
    notes = []
    for protocol in results["protocols"]:
        table.add_row(f"[bold underline]{protocol}[/]", *[""] * (len(METRICS) + 1))
        for k in results["ks"]:
            for model_name, entry in results["models"].items():
                res = entry["protocols"].get(protocol, {"status": "unsupported",
                                                        "reason": "not run"})
                if res.get("status") != "ok":
                    if k == results["ks"][0]:
                        table.add_row(model_name, "", "not supported",
                                      *[""] * (len(METRICS) - 1))
                        notes.append(f"{model_name} / {protocol}: {res.get('reason', '')}")
                    continue
                cells = []
                for name in METRICS:
                    key = f"{name}@{k}"
                    value = res["metrics"][key]
                    text = fmt(value, digits)
                    best = _best(results, protocol, key)
                    if best is not None and value == best and name != "coverage":
                        text = f"[bold]{text}[/bold]"
                    cells.append(text)
                table.add_row(model_name, str(k), *cells)
        table.add_section()
    unique_notes = list(dict.fromkeys(notes))
    if unique_notes:
        table.caption = "\n".join(unique_notes)
        table.caption_justify = "left"
    return table


def counts_table(results: dict):
    """Queries evaluated and skipped, and evaluation time, per model and protocol."""
    from rich.table import Table

    table = Table(title="Queries", title_justify="left", header_style="bold")
    for name in ("model", "protocol", "evaluated", "skipped: no held-out items", "seconds"):
        table.add_column(name, justify="left" if name in ("model", "protocol") else "right")
    for model_name, entry in results["models"].items():
        for protocol, res in entry["protocols"].items():
            if res.get("status") != "ok":
                table.add_row(model_name, protocol, "-", "-", "-")
                continue
            table.add_row(model_name, protocol, str(res["n_queries"]), str(res["n_skipped"]),
                          f"{res['seconds']:.2f}")
    return table


def folding_tables(results: dict, top: int = 5) -> list:
    """The leakage section: leakage per model and k against the ground truth,
    confusion matrices (smallest k) and the most spurious recommendations."""
    from rich.table import Table

    if not results.get("folding"):
        return []
    out: list = []
    ks = results["ks"]
    names = results.get("group_names") or []
    for protocol in results["protocols"]:
        ok = succeeded(results, protocol)
        if not ok:
            continue
        table = Table(title=f"Folding ({protocol})", title_justify="left", header_style="bold")
        table.add_column("model")
        for k in ks:
            table.add_column(f"leakage@{k}", justify="right")
        for k in ks:
            table.add_column(f"excess@{k}", justify="right")
        table.add_column(f"spurious@{ks[0]}", justify="right")
        table.add_column("folding_auc", justify="right")
        truth = None
        for model_name, res in ok.items():
            f = res["folding"]
            truth = f["ground_truth_cross_share"]
            table.add_row(model_name, *[fmt(f[f"leakage@{k}"]) for k in ks],
                          *[fmt(f[f"excess_leakage@{k}"]) for k in ks],
                          fmt(f[f"spurious@{ks[0]}"]), fmt(f.get("folding_auc")))
        table.add_section()
        table.add_row("[italic]held-out truth[/italic]", *[fmt(truth) for _ in ks],
                      *["0.0000" for _ in ks], "-", "-")
        table.caption = ("leakage: share of top-k items outside the query's group; "
                         "excess: minus the held-out cross-group share")
        out.append(table)
        out.append(_confusion_table(ok, protocol, ks[0], names))
        for model_name, res in ok.items():
            worst = res["folding"]["spurious"][:top]
            if worst:
                out.append(_spurious_table(model_name, protocol, worst))
    return out


def _confusion_table(ok: dict, protocol: str, k: int, names: list[str]):
    from rich.table import Table

    first = next(iter(ok.values()))["folding"]
    n_groups = len(first["ground_truth_confusion"])
    labels = [names[g] if g < len(names) else str(g) for g in range(n_groups)]
    table = Table(title=f"Group confusion ({protocol}, top-{k}): rows = query group, "
                        "columns = recommended item group",
                  title_justify="left", header_style="bold")
    table.add_column("model")
    table.add_column("query group")
    for label in labels:
        table.add_column(label, justify="right")
    blocks = [("held-out truth", first["ground_truth_confusion"])]
    blocks += [(m, r["folding"]["confusion"][str(k)]) for m, r in ok.items()]
    for model_name, matrix in blocks:
        for g, row in enumerate(matrix):
            cells = [f"[bold]{v:.2f}[/bold]" if i == g else f"{v:.2f}" for i, v in enumerate(row)]
            table.add_row(model_name if g == 0 else "", labels[g], *cells)
        table.add_section()
    return table


def _spurious_table(model_name: str, protocol: str, worst: list[dict]):
    from rich.table import Table

    table = Table(title=f"Most spurious recommendations: {model_name} ({protocol})",
                  title_justify="left", header_style="bold")
    for name in ("query group", "item", "title", "item group", "queries", "best rank",
                 "mean rank"):
        table.add_column(name, justify="right" if name in ("queries", "best rank",
                                                           "mean rank") else "left")
    for w in worst:
        table.add_row(w["query_group_name"], w["item_id"], w.get("title") or "-",
                      w["item_group_name"], str(w["n_queries"]), str(w["best_rank"]),
                      f"{w['mean_rank']:.1f}")
    return table
