"""Render a comparison (``recompare compare``): rich tables, Markdown, JSON."""
from __future__ import annotations

from .formatting import fmt


def model_rows(results: dict, k: int = 20) -> list[dict]:
    """Per model and protocol: recall@k (both), ndcg@k, leakage@10, train time."""
    ev = results["evaluation"]
    rows = []
    for name, entry in ev["models"].items():
        info = results["models"].get(name, {})
        for protocol in ev["protocols"]:
            res = entry["protocols"].get(protocol, {})
            if res.get("status") != "ok":
                rows.append({"model": name, "protocol": protocol,
                             "note": res.get("reason", "not supported")})
                continue
            m = res["metrics"]
            fold = res.get("folding", {})
            rows.append({
                "model": name,
                "protocol": protocol,
                f"recall@{k}": m.get(f"recall@{k}"),
                f"recall_norm@{k}": m.get(f"recall_norm@{k}"),
                f"ndcg@{k}": m.get(f"ndcg@{k}"),
                f"coverage@{k}": m.get(f"coverage@{k}"),
                "leakage@10": fold.get("leakage@10"),
                "excess_leakage@10": fold.get("excess_leakage@10"),
                "train_s": info.get("training", {}).get("seconds"),
            })
    return rows


#: value columns of the every-model table, after the labels ``model`` and ``protocol``
DETAIL_COLUMNS = ("recall@20", "recall_norm@20", "ndcg@20", "coverage@20", "leakage@10",
                  "excess_leakage@10", "train_s")
#: their headers in the terminal, on two lines to keep the columns narrow
DETAIL_HEADERS = {"recall@20": "recall\n@20", "recall_norm@20": "recall_norm\n@20",
                  "ndcg@20": "ndcg\n@20", "coverage@20": "coverage\n@20",
                  "leakage@10": "leakage\n@10", "excess_leakage@10": "excess\nleakage@10",
                  "train_s": "train\nseconds"}
#: below this many columns the five-column comparison wraps its verdicts into slivers, so
#: each question is printed as a block of label / text lines instead
WIDE_LAYOUT_COLUMNS = 140


def configuration_rows(results: dict) -> list[tuple[str, str]]:
    """What each family ran with: ``(model, text)`` per tuned family (trials, seconds,
    validation recall@20 of the pick against the defaults', the parameters that changed),
    or one row saying that the family defaults were used (no ``--tune``)."""
    tuning = results.get("tuning") or {}
    if not tuning.get("budget"):
        return [("WALS and DNN", ("each family's defaults (no --tune; --tune N searches "
                                  "both with N trials each on validation)"))]

    rows = []
    for name, entry in tuning.items():
        if not isinstance(entry, dict):
            continue
        changed = [f"{k} {fmt(v, 3, significant=True)} "
                   f"(default {fmt(entry['defaults'].get(k), 3, significant=True)})"
                   for k, v in entry["chosen"].items() if entry["defaults"].get(k) != v]
        text = (f"tuned: {len(entry['trials'])} trials on validation in "
                f"{fmt(entry.get('seconds'), 2, significant=True)} s, recall@20 {entry['validation_recall@20']:.4f} "
                f"vs {entry['default_validation_recall@20']:.4f} for the defaults; "
                + ("chose " + ", ".join(changed) if changed else "the defaults won"))
        rows.append((name, text))
    return rows


def _configuration_table(results: dict):
    from rich import box
    from rich.table import Table

    table = Table(title="Configurations", title_justify="left", box=box.SIMPLE_HEAD,
                  show_header=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("", overflow="fold")
    for name, text in configuration_rows(results):
        table.add_row(f"[bold]{name}[/]", text)
    return table


def rich_tables(results: dict, width: int = 120) -> list:
    """The comparison and every model's numbers as rich tables that fit ``width`` columns.

    The comparison is one row per question when ``width`` allows (at least
    :data:`WIDE_LAYOUT_COLUMNS`), else one block per question; the every-model table is
    split over several tables (labels repeated) when its numbers do not fit side by side,
    so no number is cut.
    """
    from .fit import min_width, natural_width, split_to_fit

    table = _wide_comparison(results)
    if width < WIDE_LAYOUT_COLUMNS or min_width(table) > width:
        table = _stacked_comparison(results)
    rows = model_rows(results)
    details = split_to_fit(lambda chunk, part: _detail_table(rows, chunk, part),
                           list(DETAIL_COLUMNS), width, measure=natural_width)
    return [table, _configuration_table(results), *details]


def _wide_comparison(results: dict):
    from rich.table import Table

    table = Table(title="Matrix factorization vs softmax DNN, measured", show_lines=True)
    for column in ("question", "measure", "WALS", "softmax DNN", "verdict"):
        table.add_column(column, overflow="fold")
    for row in results["table"]:
        table.add_row(f"[bold]{row['question']}[/]", row["measure"], row["wals"], row["dnn"],
                      row["verdict"])
    return table


def _stacked_comparison(results: dict):
    """The comparison as a block per question: the measure beside the question, then the
    WALS, softmax DNN and verdict lines, wrapped under their text."""
    from rich import box
    from rich.table import Table

    table = Table(title="Matrix factorization vs softmax DNN, measured", title_justify="left",
                  box=box.SIMPLE_HEAD, show_header=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("", overflow="fold")
    for row in results["table"]:
        table.add_row(f"[bold]{row['question']}[/]", f"[italic]{row['measure']}[/]")
        table.add_row("  WALS", row["wals"])
        table.add_row("  softmax DNN", row["dnn"])
        table.add_row("  verdict", row["verdict"])
        table.add_section()
    return table


def _detail_table(rows: list[dict], columns: list[str], part: str = ""):
    """Every model and protocol, with the value ``columns`` (a subset of
    :data:`DETAIL_COLUMNS`); a model that cannot serve a protocol gets its reason."""
    from rich import box
    from rich.table import Table

    detail = Table(title=f"Every model, every protocol{part}", title_justify="left",
                   box=box.SIMPLE_HEAD, pad_edge=False)
    # fitted at its natural width (nothing wraps): every name and number whole
    detail.add_column("model", no_wrap=True)
    detail.add_column("protocol", no_wrap=True)
    for column in columns:
        detail.add_column(DETAIL_HEADERS[column], justify="right", no_wrap=True)
    notes = []
    for row in rows:
        if "note" in row:
            detail.add_row(row["model"], row["protocol"], "n/a", *[""] * (len(columns) - 1))
            notes.append(f"{row['model']} / {row['protocol']}: {row['note']}")
        else:
            detail.add_row(row["model"], row["protocol"],
                           *[fmt(row.get(c), 1 if c == "train_s" else 3) for c in columns])
    if notes:
        detail.caption = "\n".join(dict.fromkeys(notes))
        detail.caption_justify = "left"
    return detail


def markdown(results: dict, plots: dict[str, str] | None = None) -> str:
    """The Markdown report; ``plots`` maps a caption to a PNG path relative to the report."""
    ds = results["dataset"]
    lines = [
        "# recompare: matrix factorization vs softmax DNN",
        "",
        f"Data set: {ds.get('source') or 'prepared data set'}, {ds['users']:,} users x "
        f"{ds['items']:,} items, {ds['interactions']:,} interactions "
        f"(fingerprint `{ds['fingerprint']}`); protocols: {', '.join(ds['protocols'])}"
        + ("; quick mode" if results.get("quick") else "") + f"; seed {results.get('seed')}.",
        "",
        "## The comparison",
        "",
        "| question | measure | WALS | softmax DNN | verdict |",
        "|---|---|---|---|---|",
    ]
    for row in results["table"]:
        lines.append(f"| **{row['question']}** | {row['measure']} | {row['wals']} | "
                     f"{row['dnn']} | {row['verdict']} |")
    lines += ["", "## Configurations", ""]
    lines += [f"- **{name}**: {text}" for name, text in configuration_rows(results)]
    lines += ["", "## Every model, every protocol", ""]
    rows = model_rows(results)
    columns = ["model", "protocol", *DETAIL_COLUMNS]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        if "note" in row:
            lines.append(f"| {row['model']} | {row['protocol']} | {row['note']} |"
                         + " |" * (len(columns) - 3))
        else:
            lines.append("| " + " | ".join(fmt(row.get(c), 1 if c == "train_s" else 3)
                                           for c in columns) + " |")
    lines += ["", "## Training and serving cost", "",
              ("| model | train s | peak extra MiB | p50 ms (known) | p99 ms (known) | "
               "p50 ms (computed) | service ms (known / computed) | batch queries/s | "
               "serving MiB |"),
              "|---|---|---|---|---|---|---|---|---|"]
    for name, info in results["models"].items():
        t = info["training"]
        s = info.get("serving")
        if s is None:
            continue
        fresh = s.get("fresh", {})
        lines.append(
            f"| {name} | {t['seconds']:.2f} | {t['peak_extra_bytes'] / 2**20:.1f} | "
            f"{s['known']['p50_ms']:.2f} | {s['known']['p99_ms']:.2f} | "
            f"{fmt(fresh.get('p50_ms'), 2)} | {fmt(s['known'].get('cpu_p50_ms'), 2)} / "
            f"{fmt(fresh.get('cpu_p50_ms'), 2)} | {fmt(s['batch']['queries_per_second'], 0)} | "
            f"{s['memory_bytes'] / 2**20:.2f} |")
    scaling = results.get("scaling", {}).get("families", {})
    if scaling:
        lines += ["", "## Training scalability on this data set", "",
                  ("Each family's default model trained on nested random subsamples "
                   "of the training interactions."), "",
                  "| family | nnz | seconds per step | peak extra MiB |", "|---|---|---|---|"]
        for entry in scaling.values():
            for p in entry["points"]:
                lines.append(f"| {entry['model']} | {p['nnz']:,} | {p['seconds_per_step']:.3f}"
                             f" | {p['peak_extra_bytes'] / 2**20:.1f} |")
            mem = entry["memory_slope"]
            lines.append(f"| {entry['model']} | log-log slope | {entry['time_slope']:.2f} | "
                         + (f"{mem:.2f} |" if mem is not None else
                            "n/a (increase below 16 MiB) |"))
    if plots:
        lines += ["", "## Pictures", ""]
        for caption, path in plots.items():
            lines += [f"### {caption}", "", f"![{caption}]({path})", ""]
    from .markdown import markdown_report

    details = markdown_report(results["evaluation"], plots=None, title="Evaluation details")
    # nest the evaluation report's headings one level below ours
    lines += [""] + ["#" + line if line.startswith("#") else line
                     for line in details.splitlines()]
    return "\n".join(lines) + "\n"


CAPTIONS = {
    "folding_map": "Folding map: queries (squares) and items (circles) by group, PCA to 2-D",
    "leakage": "Leakage@k per model",
    "recall_vs_leakage": "Recall against leakage, every model",
    "accuracy": "Accuracy per model",
    "scaling": "Training time per step against interactions",
}


def comparison_plots(results: dict, models: dict, dataset, directory) -> dict[str, str]:
    """Write the evaluation figures and the scaling figure as PNGs into ``directory``.

    Returns caption -> file name (relative to ``directory``).
    """
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import PLOT_FILES, figures

    directory = Path(directory)
    written: dict[str, str] = {}
    drawn = figures(results["evaluation"], models, dataset, seed=results.get("seed", 0))
    for key, fig in drawn.items():
        fig.savefig(directory / PLOT_FILES[key])
        plt.close(fig)
        written[CAPTIONS.get(key, key)] = PLOT_FILES[key]
    families = results.get("scaling", {}).get("families", {})
    if families:
        fig, ax = plt.subplots(figsize=(6, 4))
        for entry in families.values():
            xs = [p["nnz"] for p in entry["points"]]
            ys = [p["seconds_per_step"] for p in entry["points"]]
            ax.loglog(xs, ys, "o-", label=f"{entry['model']} (slope {entry['time_slope']:.2f})")
        ax.set_xlabel("training interactions")
        ax.set_ylabel("seconds per iteration / epoch")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(directory / "scaling.png", dpi=110)
        plt.close(fig)
        written[CAPTIONS["scaling"]] = "scaling.png"
    return written
