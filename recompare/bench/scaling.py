"""Training scalability: time and memory of each family as items and interactions grow.

Two sweeps on planted synthetic data, each family trained with its defaults
for a fixed number of iterations (WALS) or epochs (DNN):

* ``items``: the catalogue grows at a fixed number of interactions;
* ``interactions``: interactions grow at a fixed catalogue.

For each sweep and family the benchmark reports seconds per iteration/epoch and
peak extra memory per point, and the fitted log-log slopes (1 = linear).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .common import measure

# (items sweep at fixed interactions, interactions sweep at fixed items)
SIZES = {
    "tiny": {"items": (1_000, 4_000), "interactions_fixed": 20_000,
             "interactions": (10_000, 40_000), "items_fixed": 2_000, "steps": 1},
    "small": {"items": (10_000, 30_000, 100_000), "interactions_fixed": 200_000,
              "interactions": (100_000, 300_000, 1_000_000), "items_fixed": 10_000, "steps": 2},
    "full": {"items": (10_000, 100_000, 1_000_000), "interactions_fixed": 1_000_000,
             "interactions": (250_000, 1_000_000, 4_000_000), "items_fixed": 20_000,
             "steps": 2},
}

FAMILIES = {
    # the DNN uses the sampled softmax here: it is how a DNN scales to large corpora;
    # the full softmax is benchmarked (and shown growing linearly) in `bench dnn`
    "wals": ("wals", {}),
    "dnn": ("softmax", {"loss": "sampled", "negatives": "uniform"}),
}


def _data(n_items: int, n_interactions: int, seed: int):
    from ..data.synth import planted

    per_user = 40
    n_users = max(50, n_interactions // per_user)
    return planted(n_users=n_users, n_items=n_items, n_groups=4,
                   interactions_per_user=per_user, seed=seed)


def _fit(family: str, dataset, steps: int) -> dict:
    from ..models import model_class

    kind, params = FAMILIES[family]
    params = dict(params)
    if kind == "wals":
        params["iterations"] = steps
    else:
        params.update(epochs=steps, patience=None, validation_fraction=0.0)
    model = model_class(kind)(**params)
    with measure() as cost:
        model.fit(dataset)
    return {"seconds": cost["seconds"], "seconds_per_step": cost["seconds"] / steps,
            "peak_extra_bytes": cost["peak_extra_bytes"]}


def _slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(np.maximum(y, 1e-9)), 1)[0])


def run(scale: str = "small", callback: Callable[[dict], None] | None = None,
        plot_dir: str | None = None) -> dict:
    """Run both sweeps for both families; returns points and log-log slopes."""
    emit = callback or (lambda event: None)
    sizes = SIZES[scale]
    out: dict[str, Any] = {"scale": scale, "steps": sizes["steps"], "sweeps": {}}
    figures: dict[str, Any] = {}
    sweeps = {
        "items": [(n, sizes["interactions_fixed"]) for n in sizes["items"]],
        "interactions": [(sizes["items_fixed"], n) for n in sizes["interactions"]],
    }
    # one untimed fit per family first: library start-up is not training cost
    warm = _data(600, 3_000, seed=1)
    for family in FAMILIES:
        _fit(family, warm, 1)
    for sweep, points in sweeps.items():
        out["sweeps"][sweep] = {}
        for family in FAMILIES:
            rows = []
            for n_items, n_inter in points:
                emit({"stage": "scaling",
                      "message": f"{family}: {n_items:,} items, {n_inter:,} interactions"})
                data = _data(n_items, n_inter, seed=0)
                row = {"items": n_items, "interactions": int(data.interactions.nnz),
                       **_fit(family, data, sizes["steps"])}
                rows.append(row)
            x = [r[sweep] for r in rows]
            time_slope = _slope(x, [r["seconds_per_step"] for r in rows])
            mem = [r["peak_extra_bytes"] for r in rows]
            # below ~16 MiB the allocator's reuse of freed memory swamps the signal
            mem_slope = _slope(x, mem) if min(mem) >= 16 * 2**20 else None
            out["sweeps"][sweep][family] = {"points": rows, "time_slope": time_slope,
                                            "memory_slope": mem_slope}
            figures[f"{family} time slope vs {sweep}"] = round(time_slope, 3)
            figures[f"{family} memory slope vs {sweep}"] = (
                round(mem_slope, 3) if mem_slope is not None else "n/a (below 16 MiB)")
    out["figures"] = figures
    if plot_dir is not None:
        out["plot"] = plot_scaling(out, plot_dir)
    return out


def plot_scaling(result: dict, directory: str) -> str:
    """Log-log plot of seconds per step against size, one panel per sweep."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (sweep, families) in zip(axes, result["sweeps"].items()):
        for family, entry in families.items():
            xs = [p[sweep] for p in entry["points"]]
            ys = [p["seconds_per_step"] for p in entry["points"]]
            ax.loglog(xs, ys, "o-", label=f"{family} (slope {entry['time_slope']:.2f})")
        ax.set_xlabel(sweep)
        ax.set_ylabel("seconds per iteration / epoch")
        ax.set_title(f"training time as {sweep} grow")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(directory) / "scaling.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
