"""Rich tables of evaluation results (the CLI's human output).

All functions take the results dict of
:func:`recompare.evaluate.protocols.evaluate_models` and return rich renderables;
nothing here prints.
"""
from __future__ import annotations

from collections.abc import Sequence

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


def rich_table(results: dict, digits: int = 3, metrics: Sequence[str] | None = None,
               part: str = ""):
    """One table with every model side by side: a section per protocol, a row per
    model and k, a column per accuracy metric of
    :data:`~recompare.evaluate.metrics.METRICS` (or of ``metrics``; leakage has its own
    tables, see :func:`folding_tables`).  The best value of a column within a protocol
    and k is bold; a model that cannot serve a protocol gets one "not supported" row, its
    reason in the caption.  :func:`evaluation_tables` splits it to fit a console.
    """
    from rich import box
    from rich.table import Table

    metrics = list(METRICS if metrics is None else metrics)
    table = Table(title=f"Evaluation{part}", title_justify="left", header_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    longest = max([len(m) for m in results["models"]] + [len(p) for p in results["protocols"]])
    table.add_column("model", overflow="fold", min_width=min(longest, 22))
    table.add_column("k", justify="right", no_wrap=True)
    for name in metrics:
        # headers wrap (at their space); numbers are never narrower than their text
        table.add_column(HEADERS[name], justify="right", min_width=digits + 2)
    notes = []
    for protocol in results["protocols"]:
        table.add_row(f"[bold underline]{protocol}[/]", *[""] * (len(metrics) + 1))
        for k in results["ks"]:
            for model_name, entry in results["models"].items():
                res = entry["protocols"].get(protocol, {"status": "unsupported",
                                                        "reason": "not run"})
                if res.get("status") != "ok":
                    if k == results["ks"][0]:
                        table.add_row(model_name, "", "n/a", *[""] * (len(metrics) - 1))
                        notes.append(f"{model_name} / {protocol}: not supported: "
                                     f"{res.get('reason', '')}")
                    continue
                table.add_row(model_name, str(k), *[
                    _metric_cell(results, protocol, res, f"{name}@{k}", digits)
                    for name in metrics])
        table.add_section()
    unique_notes = list(dict.fromkeys(notes))
    if unique_notes:
        table.caption = "\n".join(unique_notes)
        table.caption_justify = "left"
    return table


def _metric_cell(results: dict, protocol: str, res: dict, key: str, digits: int) -> str:
    value = res["metrics"][key]
    text = fmt(value, digits)
    best = _best(results, protocol, key)
    if best is not None and value == best and not key.startswith("coverage@"):
        text = f"[bold]{text}[/bold]"
    return text


def evaluation_tables(results: dict, width: int = 120, digits: int = 3) -> list:
    """:func:`rich_table` as one or more tables that fit ``width`` columns, each number whole
    (the metric columns are split over several tables when they do not fit side by side)."""
    from .fit import split_to_fit

    return split_to_fit(lambda chunk, part: rich_table(results, digits, chunk, part),
                        list(METRICS), width)


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


def folding_tables(results: dict, top: int = 5, width: int = 120,
                   group_sizes: Sequence[int] | None = None) -> list:
    """The leakage section: leakage per model and k against the ground truth,
    confusion matrices (smallest k) and the most spurious recommendations, each fitted to
    ``width`` columns.  Confusion matrices over many groups are shown compactly (see
    :func:`confusion_table`); ``group_sizes`` (items per group) picks the largest."""
    from .fit import split_to_fit

    if not results.get("folding"):
        return []
    out: list = []
    ks = results["ks"]
    names = results.get("group_names") or []
    columns = ([f"leakage@{k}" for k in ks] + [f"excess_leakage@{k}" for k in ks]
               + [f"spurious@{ks[0]}", "folding_auc"])
    for protocol in results["protocols"]:
        ok = succeeded(results, protocol)
        if not ok:
            continue
        out += split_to_fit(lambda chunk, part, p=protocol, o=ok: _leakage_table(p, o, chunk,
                                                                                 part),
                            columns, width)
        out.append(confusion_table(ok, protocol, ks[0], names, width, group_sizes))
        for model_name, res in ok.items():
            worst = res["folding"]["spurious"][:top]
            if worst:
                out.append(_spurious_table(model_name, protocol, worst))
    return out


def _leakage_table(protocol: str, ok: dict, columns: Sequence[str], part: str):
    from rich.table import Table

    table = Table(title=f"Folding ({protocol}){part}", title_justify="left",
                  header_style="bold")
    table.add_column("model", overflow="fold")
    for column in columns:
        table.add_column(column.replace("excess_leakage", "excess"), justify="right")
    truth = None
    for model_name, res in ok.items():
        f = res["folding"]
        truth = f["ground_truth_cross_share"]
        table.add_row(model_name, *[fmt(f.get(column)) for column in columns])
    table.add_section()
    table.add_row("[italic]held-out truth[/italic]", *[
        fmt(truth) if column.startswith("leakage@") else
        "0.0000" if column.startswith("excess") else "-" for column in columns])
    table.caption = ("leakage: share of top-k items outside the query's group; "
                     "excess: minus the held-out cross-group share")
    return table


#: groups shown by name in a compact confusion table (the rest summed as "other")
CONFUSION_GROUPS = 8


def confusion_table(ok: dict, protocol: str, k: int, names: list[str], width: int = 120,
                    group_sizes: Sequence[int] | None = None):
    """Group confusion at ``k``: rows = query group, columns = recommended item group.

    With more groups than fit ``width`` (at most :data:`CONFUSION_GROUPS`), only the
    largest groups (by ``group_sizes``, else by their share of the held-out truth) get a
    row and a column; an "other" column sums the remaining groups' shares of each row,
    so every row still sums to 1.  The full matrix is in ``--json`` and the folding plot.
    """
    import numpy as np
    from rich.table import Table

    first = next(iter(ok.values()))["folding"]
    truth = np.asarray(first["ground_truth_confusion"], dtype=float)
    n_groups = len(truth)
    labels = [names[g] if g < len(names) else str(g) for g in range(n_groups)]
    if group_sizes is not None and len(group_sizes) >= n_groups:
        size = np.asarray(group_sizes[:n_groups], dtype=float)
    else:
        size = truth.sum(axis=0) if n_groups else np.zeros(0)
    blocks = [("held-out truth", truth)]
    blocks += [(m, np.asarray(r["folding"]["confusion"][str(k)], dtype=float))
               for m, r in ok.items()]
    label_width = max([len(m) for m, _ in blocks] + [11]) + max([len(x) for x in labels] + [5])
    fit = max(2, (width - label_width - 8) // 7 - 1)  # ~7 columns per group cell
    shown = n_groups if n_groups <= min(fit + 1, CONFUSION_GROUPS + 1) else min(
        fit, CONFUSION_GROUPS)
    keep = np.sort(np.argsort(-size, kind="stable")[:shown])
    rest = np.setdiff1d(np.arange(n_groups), keep)
    title = (f"Group confusion ({protocol}, top-{k}): rows = query group, "
             "columns = recommended item group")
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("model", overflow="fold")
    table.add_column("query group", overflow="fold")
    for g in keep:
        table.add_column(labels[g], justify="right", overflow="ellipsis")
    if len(rest):
        table.add_column("other", justify="right")
        table.caption = (f"the {len(keep)} largest of {n_groups} groups; other = the "
                         f"{len(rest)} remaining groups' share of the row (rows for them "
                         "omitted); the full matrix is in --json and the folding plot")
        table.caption_justify = "left"
    for model_name, matrix in blocks:
        for i, g in enumerate(keep):
            row = matrix[g]
            cells = [f"[bold]{row[c]:.2f}[/bold]" if c == g else f"{row[c]:.2f}" for c in keep]
            if len(rest):
                cells.append(f"{row[rest].sum():.2f}")
            table.add_row(model_name if i == 0 else "", labels[g], *cells)
        table.add_section()
    return table


def _spurious_table(model_name: str, protocol: str, worst: list[dict]):
    from rich.table import Table

    table = Table(title=f"Most spurious recommendations: {model_name} ({protocol})",
                  title_justify="left", header_style="bold")
    for name in ("query group", "item", "title", "item group", "queries", "best rank",
                 "mean rank"):
        numeric = name in ("queries", "best rank", "mean rank")
        # text columns wrap when the console is narrow; numbers never shrink below their text
        table.add_column(name, justify="right" if numeric else "left", no_wrap=numeric,
                         overflow="fold")
    for w in worst:
        table.add_row(w["query_group_name"], w["item_id"], w.get("title") or "-",
                      w["item_group_name"], str(w["n_queries"]), str(w["best_rank"]),
                      f"{w['mean_rank']:.1f}")
    return table
