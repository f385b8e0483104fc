"""PNG plots of an evaluation: the folding map, leakage per model, recall against leakage.

matplotlib is used through :class:`matplotlib.figure.Figure` with the Agg canvas (no
pyplot, no display, no global state), imported only when a plot is drawn.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_dir, atomic_file
from ..errors import RecompareError
from .tables import succeeded

#: queries and items drawn per model in the folding map (a seeded subsample)
MAP_POINTS = 600

PLOT_FILES = {
    "accuracy": "accuracy.png",
    "folding_map": "folding_map.png",
    "leakage": "leakage.png",
    "recall_vs_leakage": "recall_vs_leakage.png",
}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]


#: groups drawn in their own colour in the folding map; the rest are grey
MAP_COLOURED_GROUPS = 8
_GREY = (0.62, 0.62, 0.62, 1.0)


def _group_colours() -> list:
    """tab10 without its grey, which stands for the groups that get no colour."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i) for i in range(10) if i != 7]


def _model_styles(n: int) -> list[tuple]:
    """(colour, line style) per model: ten distinct colours, then the same colours dashed
    and dotted, so no two models share a look (paired palettes made pairs look alike)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    styles = ("-", "--", ":", "-.")
    return [(cmap(i % 10), styles[(i // 10) % len(styles)]) for i in range(max(n, 1))]


def _plot_k(results: dict) -> int:
    ks = results["ks"]
    return 20 if 20 in ks else ks[0]


def pca_2d(points: np.ndarray) -> np.ndarray:
    """First two principal components of ``points`` (ndarray of shape (n, dim)).

    Returns ndarray of shape (n, 2); a missing second component (dim 1) is zero.
    Signs are fixed (largest loading positive) so the same data gives the same picture.
    """
    centred = np.asarray(points, dtype=np.float64) - np.mean(points, axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:2]
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1, signs)[:, None]
    out = np.zeros((len(points), 2))
    out[:, : len(comps)] = centred @ comps.T
    return out


def folding_map(models: Mapping[str, Any], dataset, seed: int = 0,
                points: int = MAP_POINTS):
    """Figure: per model, a PCA map of query (squares) and item (circles) embeddings,
    coloured by group.

    A seeded sample of ``points`` training users and ``points`` items of known group;
    queries and items are each scaled to unit RMS norm, stacked, and projected on their
    first two principal components.  The :data:`MAP_COLOURED_GROUPS` groups with the
    most sampled points get a colour, the others are grey and named under the figure;
    the legend lists only groups that appear.  Models without embeddings get an empty
    panel.
    """
    rng = np.random.default_rng(seed)
    item_groups = np.asarray(dataset.item_groups, dtype=np.int64)
    query_groups = dataset.query_groups()
    heldout = np.zeros(dataset.n_users, dtype=bool)
    if dataset.split is not None:
        heldout[dataset.split.heldout_users] = True
    users = np.flatnonzero(~heldout & (query_groups >= 0))
    users = np.sort(rng.choice(users, size=min(points, len(users)), replace=False))
    items = np.flatnonzero(item_groups >= 0)
    items = np.sort(rng.choice(items, size=min(points, len(items)), replace=False))
    names = list(dataset.group_names)
    n_groups = max(len(names), int(item_groups.max(initial=-1)) + 1)
    counts = (np.bincount(item_groups[items], minlength=n_groups)
              + np.bincount(query_groups[users], minlength=n_groups))
    present = np.flatnonzero(counts > 0)
    coloured = present[np.argsort(-counts[present], kind="stable")][:MAP_COLOURED_GROUPS]
    colours = {int(g): c for g, c in zip(sorted(coloured), _group_colours())}
    greyed = [int(g) for g in present if int(g) not in colours]
    n = len(models)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = _figure(4.2 * cols, 4.0 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    draw_order = greyed + sorted(colours)  # grey underneath, coloured groups on top
    for ax, (name, model) in zip(axes, models.items()):
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("principal component 1", fontsize=8)
        ax.set_ylabel("principal component 2", fontsize=8)
        try:
            q = np.asarray(model.query_embeddings(users), dtype=np.float64)
            v = np.asarray(model.item_embeddings(), dtype=np.float64)[items]
        except (NotImplementedError, AttributeError):
            ax.text(0.5, 0.5, "no embeddings", ha="center", va="center", transform=ax.transAxes)
            continue
        # scale each set to unit RMS norm: rankings are unchanged by it, and neither set
        # (e.g. raw popularity counts) then dominates the projection by sheer size
        q = q / max(float(np.sqrt((q ** 2).sum(axis=1).mean())), 1e-12)
        v = v / max(float(np.sqrt((v ** 2).sum(axis=1).mean())), 1e-12)
        xy = pca_2d(np.vstack([q, v]))
        qxy, vxy = xy[: len(q)], xy[len(q):]
        for g in draw_order:
            colour = colours.get(g, _GREY)
            mask = item_groups[items] == g
            ax.scatter(vxy[mask, 0], vxy[mask, 1], s=9, marker="o", color=colour,
                       alpha=0.5, linewidths=0)
            mask = query_groups[users] == g
            ax.scatter(qxy[mask, 0], qxy[mask, 1], s=14, marker="s", color=colour,
                       alpha=0.85, edgecolors="black", linewidths=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    _map_legend(fig, colours, greyed, names)
    fig.suptitle("Folding map: PCA of query (squares) and item (circles) embeddings",
                 fontsize=11)
    return fig


def _map_legend(fig, colours: dict, greyed: list[int], names: list[str]) -> None:
    """One entry per coloured group present, one for the grey rest, two for the markers;
    the grey groups are named in the legend's title."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    def label(g: int) -> str:
        return names[g] if g < len(names) else str(g)

    handles = [Patch(color=colour, label=label(g)) for g, colour in colours.items()]
    if greyed:
        handles.append(Patch(color=_GREY, label=f"{len(greyed)} other groups"))
    handles += [Line2D([], [], marker="s", color="white", markerfacecolor="none",
                       markeredgecolor="black", label="queries (users)"),
                Line2D([], [], marker="o", color="white", markerfacecolor="grey",
                       markeredgecolor="none", label="items")]
    # the grey groups are named in the legend's title, which the layout makes room for
    title = f"grey: {', '.join(label(g) for g in greyed)}" if greyed else None
    fig.legend(handles=handles, loc="outside lower center", ncol=min(6, len(handles)),
               fontsize=8, frameon=False, title=title, title_fontsize=7)


def leakage_plot(results: dict):
    """Figure: leakage@k against k per model (one panel per protocol), with the
    held-out cross-group share as a dashed line."""
    protocols = [p for p in results["protocols"] if _ok(results, p)]
    fig = _figure(4.5 * max(1, len(protocols)) + 2.5, 3.6)
    axes = fig.subplots(1, max(1, len(protocols)), squeeze=False).ravel()
    styles = _model_styles(len(results["models"]))
    ks = results["ks"]
    for ax, protocol in zip(axes, protocols):
        truth = None
        for (colour, style), (name, entry) in zip(styles, results["models"].items()):
            res = entry["protocols"].get(protocol, {})
            if res.get("status") != "ok":
                continue
            f = res["folding"]
            truth = f["ground_truth_cross_share"]
            ax.plot(ks, [f[f"leakage@{k}"] for k in ks], marker="o", color=colour,
                    linestyle=style, label=name)
        if truth is not None:
            ax.axhline(truth, color="grey", linestyle="--", linewidth=1,
                       label="held-out cross-group share")
        ax.set_title(protocol, fontsize=10)
        ax.set_xlabel("k")
        ax.set_ylabel("leakage@k")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(ks)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False)
    fig.suptitle("Cross-group leakage of the top-k lists", fontsize=11)
    return fig


def recall_vs_leakage_plot(results: dict):
    """Figure: recall_norm@k against leakage@k, every model (colour) and protocol
    (marker), one k; legends outside the axes so any number of models stays legible."""
    from matplotlib.lines import Line2D

    k = _plot_k(results)
    fig = _figure(7.5, 4.4)
    ax = fig.subplots()
    colours = [colour for colour, _ in _model_styles(len(results["models"]))]
    markers = {"weak": "o", "strong": "^", "cold": "s"}
    model_handles = []
    for colour, (name, entry) in zip(colours, results["models"].items()):
        shown = False
        for protocol, res in entry["protocols"].items():
            if res.get("status") != "ok":
                continue
            x = res["folding"][f"leakage@{k}"]
            y = res["metrics"][f"recall_norm@{k}"]
            ax.scatter([x], [y], color=colour, marker=markers.get(protocol, "o"), s=50,
                       edgecolors="black", linewidths=0.4)
            shown = True
        if shown:
            model_handles.append(Line2D([], [], color=colour, marker="o", linestyle="",
                                        markeredgecolor="black", markeredgewidth=0.4,
                                        label=name))
    protocol_handles = [Line2D([], [], color="grey", marker=m, linestyle="", label=p)
                        for p, m in markers.items() if p in results["protocols"]]
    ax.set_xlabel(f"leakage@{k} (lower is better)")
    ax.set_ylabel(f"recall_norm@{k} (higher is better)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    fig.legend(handles=model_handles + protocol_handles, loc="outside right upper",
               fontsize=7, frameon=False)
    ax.set_title("Accuracy against folding", fontsize=11)
    return fig


def accuracy_plot(results: dict):
    """Figure: one panel per question (recall_norm@k, then ndcg@k) and protocol, lines
    per model against k; every panel on the same y scale, each axis labelled."""
    protocols = [p for p in results["protocols"] if _ok(results, p)] or results["protocols"]
    metrics = (("recall_norm", "recall_norm@k"), ("ndcg", "ndcg@k"))
    fig = _figure(3.6 * len(protocols) + 2.8, 2.9 * len(metrics) + 0.6)
    axes = fig.subplots(len(metrics), len(protocols), squeeze=False, sharex=True,
                        sharey=True)
    styles = _model_styles(len(results["models"]))
    ks = results["ks"]
    top = 0.0
    for col, protocol in enumerate(protocols):
        for row, (metric, ylabel) in enumerate(metrics):
            ax = axes[row, col]
            for (colour, style), (name, entry) in zip(styles, results["models"].items()):
                res = entry["protocols"].get(protocol, {})
                if res.get("status") != "ok":
                    continue
                values = [res["metrics"][f"{metric}@{k}"] for k in ks]
                top = max(top, *values)
                ax.plot(ks, values, marker="o", markersize=3, color=colour, linestyle=style,
                        label=name)
            ax.set_title(f"{ylabel.replace('@k', '')}, {protocol}", fontsize=9)
            ax.grid(True, alpha=0.3)
            if col == 0:
                ax.set_ylabel(ylabel)
            if row == len(metrics) - 1:
                ax.set_xlabel("k")
                ax.set_xticks(ks)
    axes[0, 0].set_ylim(0, min(1.0, top * 1.08) if top > 0 else 1.0)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes.ravel()[1:]:  # models missing from the first panel
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False)
    fig.suptitle("Accuracy at k (same scale in every panel)", fontsize=11)
    return fig


def _ok(results: dict, protocol: str) -> bool:
    return bool(succeeded(results, protocol))


def figures(results: dict, models: Mapping[str, Any], dataset, seed: int = 0) -> dict:
    """All figures the results support, keyed as in :data:`PLOT_FILES`."""
    out = {"accuracy": accuracy_plot(results)}
    if results.get("folding"):
        out["folding_map"] = folding_map(models, dataset, seed=seed)
        out["leakage"] = leakage_plot(results)
        out["recall_vs_leakage"] = recall_vs_leakage_plot(results)
    return out


def write_plots(results: dict, models: Mapping[str, Any], dataset,
                directory: str | os.PathLike, overwrite: bool = False, seed: int = 0
                ) -> dict[str, Path]:
    """Draw every figure and write them as PNGs into ``directory``.

    A new directory appears whole or not at all; in an existing one (``overwrite``
    needed) each PNG is replaced atomically and other files are left alone.

    Returns
    -------
    dict key -> path of the written PNG (keys of :data:`PLOT_FILES`)
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise RecompareError(f"--plots {directory} is a file, not a directory")
    if directory.exists() and not overwrite:
        raise RecompareError(f"plot directory {directory} already exists; "
                             "pass --overwrite or choose another")
    drawn = figures(results, models, dataset, seed=seed)
    paths = {key: directory / PLOT_FILES[key] for key in drawn}
    if not directory.exists():
        with atomic_dir(directory) as tmp:
            for key, fig in drawn.items():
                fig.savefig(tmp / PLOT_FILES[key])
    else:
        for key, fig in drawn.items():
            with atomic_file(paths[key], mode="wb") as handle:
                fig.savefig(handle, format="png")
    return paths
