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


def rich_tables(results: dict) -> list:
    from rich.table import Table

    table = Table(title="Matrix factorization vs softmax DNN, measured", show_lines=True)
    for column in ("question", "measure", "WALS", "softmax DNN", "verdict"):
        table.add_column(column, overflow="fold")
    for row in results["table"]:
        table.add_row(f"[bold]{row['question']}[/]", row["measure"], row["wals"], row["dnn"],
                      row["verdict"])
    detail = Table(title="Every model, every protocol")
    rows = model_rows(results)
    columns = ["model", "protocol", "recall@20", "recall_norm@20", "ndcg@20", "coverage@20",
               "leakage@10", "excess_leakage@10", "train_s"]
    for column in columns:
        detail.add_column(column, justify="left" if column in ("model", "protocol") else "right")
    for row in rows:
        if "note" in row:
            detail.add_row(row["model"], row["protocol"], f"[dim]{row['note']}[/]",
                           *[""] * (len(columns) - 3))
        else:
            detail.add_row(*[fmt(row.get(c), 1 if c == "train_s" else 3) for c in columns])
    return [table, detail]


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
    lines += ["", "## Every model, every protocol", ""]
    rows = model_rows(results)
    columns = ["model", "protocol", "recall@20", "recall_norm@20", "ndcg@20", "coverage@20",
               "leakage@10", "excess_leakage@10", "train_s"]
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
               "p50 ms (computed) | batch queries/s | serving MiB |"),
              "|---|---|---|---|---|---|---|---|"]
    for name, info in results["models"].items():
        t = info["training"]
        s = info.get("serving")
        if s is None:
            continue
        fresh = s.get("fresh", {})
        lines.append(
            f"| {name} | {t['seconds']:.2f} | {t['peak_extra_bytes'] / 2**20:.1f} | "
            f"{s['known']['p50_ms']:.2f} | {s['known']['p99_ms']:.2f} | "
            f"{fmt(fresh.get('p50_ms'), 2)} | {fmt(s['batch']['queries_per_second'], 0)} | "
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
