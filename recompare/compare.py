"""The main job: train both families and their folding variants on one data set,
evaluate them under every protocol it supports, measure training and serving
cost, and answer each row of the source document's comparison with numbers.

Python API::

    from recompare.compare import run_comparison
    results = run_comparison(recompare.load_dataset("data/planted"), quick=True)
    results["table"]   # one row per question, with measured values and a verdict
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from .bench.common import measure
from .errors import RecompareError

Callback = Callable[[dict], None]

#: relative differences below this are reported as "on par"
PAR = 0.05
#: peak-memory increases below this are not resolved well enough to fit a slope
MEMORY_RESOLUTION = 16 * 2**20


@dataclass(frozen=True)
class Variant:
    """One model to train: a display name, a registered kind and its parameters."""

    name: str
    kind: str
    params: dict = field(default_factory=dict)
    role: str = ""  # "wals", "dnn" (the family defaults), "fold" (folding variant), "baseline"


def default_variants(quick: bool = False, seed: int = 0) -> list[Variant]:
    """The models of a comparison: both defaults, the folding variants, two baselines."""
    sampled = {"loss": "sampled", "random_state": seed}
    # The w0 sweep uses a constant L2 penalty so that w0 is the only thing handling
    # the missing data, as in classic WALS; the frequency-scaled penalty of the
    # default, lambda (n_u + w0 n), also shrinks embeddings at w0 = 0 and hides folding.
    const = {"reg_scaling": "none", "random_state": seed}
    return [
        Variant("WALS", "wals", {"random_state": seed}, "wals"),
        Variant("WALS w0=0", "wals", {"unobserved_weight": 0.0, "random_state": seed}, "fold"),
        Variant("WALS w0=0 const-reg", "wals", {**const, "unobserved_weight": 0.0}, "fold"),
        Variant("WALS w0=0.001 const-reg", "wals", {**const, "unobserved_weight": 0.001},
                "fold"),
        Variant("DNN", "softmax", {"random_state": seed}, "dnn"),
        Variant("DNN history only", "softmax", {"features": "history", "random_state": seed},
                "features"),
        Variant("DNN no negatives", "softmax", {**sampled, "negatives": "none"}, "fold"),
        Variant("DNN uniform negatives", "softmax", {**sampled, "negatives": "uniform"}, "fold"),
        Variant("DNN hard negatives", "softmax", {**sampled, "negatives": "hard"}, "fold"),
        Variant("DNN gravity", "softmax", {**sampled, "negatives": "none", "gravity": 1.0},
                "fold"),
        Variant("popularity", "popularity", {}, "baseline"),
        Variant("popularity by group", "popularity", {"by_group": True}, "baseline"),
        Variant("random", "random", {"random_state": seed}, "baseline"),
    ]


def _quick_params(variant: Variant) -> dict:
    # --quick trades accuracy for time: fewer epochs / iterations, same models
    if variant.kind == "softmax":
        return {"epochs": 15}
    if variant.kind == "wals":
        return {"iterations": 8}
    return {}


def run_comparison(
    dataset,
    quick: bool = False,
    ks: tuple[int, ...] = (10, 20, 50),
    seed: int = 0,
    threads: int = 0,
    variants: list[Variant] | None = None,
    serving_queries: int = 200,
    callback: Callback | None = None,
    return_models: bool = False,
) -> dict | tuple[dict, dict]:
    """Train, evaluate and measure every variant; return a JSON-able results dict
    (and, with ``return_models``, the fitted models by name).

    Returns
    -------
    dict
        ``{"dataset", "models": {name: {"kind", "role", "params", "training",
        "serving"}}, "evaluation": <evaluate_models result>, "scaling",
        "table": [{"question", "measure", "wals", "dnn", "verdict"}]}``
    """
    from .evaluate.protocols import evaluate_models
    from .models import model_class

    emit = callback or (lambda event: None)
    if dataset.train.nnz == 0:
        raise RecompareError("the data set has no training interactions")
    if not dataset.protocols:
        raise RecompareError(
            "the data set has no split to evaluate on; prepare it with --split both "
            "(or random/temporal/users)")
    variants = variants or default_variants(quick, seed)
    ks = tuple(sorted(set(ks) | {10, 20}))
    _warm_up()
    models: dict[str, Any] = {}
    info: dict[str, dict] = {}
    for number, variant in enumerate(variants, 1):
        params = dict(variant.params)
        if quick:
            params.update(_quick_params(variant))
        cls = model_class(variant.kind)
        defaults = cls().get_params()
        if "threads" in defaults:
            params.setdefault("threads", threads)
        if params.get("loss") == "sampled":
            # a small catalogue cannot supply the default number of negatives
            wanted = params.get("num_negatives", defaults.get("num_negatives", 256))
            params["num_negatives"] = max(1, min(wanted, dataset.n_items // 2))
        model = cls(**params)
        emit({"stage": "train", "model": variant.name, "index": number, "total": len(variants),
              "message": f"training {variant.name} ({number}/{len(variants)})"})

        def forward(event: dict, _name=variant.name) -> None:
            emit({**event, "stage": "train-progress", "model": _name,
                  "inner_stage": event.get("stage")})

        with measure() as cost:
            model.fit(dataset, callback=forward)
        models[variant.name] = model
        info[variant.name] = {
            "kind": variant.kind,
            "role": variant.role,
            "params": params,
            "features": list((getattr(model, "fit_info_", {}) or {}).get("features") or []),
            "training": {
                "seconds": cost["seconds"],
                "peak_extra_bytes": cost["peak_extra_bytes"],
                "steps": _steps(model),
                "seconds_per_step": cost["seconds"] / max(1, _steps(model) or 1),
            },
        }
    emit({"stage": "evaluate", "message": "evaluating all models"})
    folding = dataset.has_groups
    evaluation = evaluate_models(models, dataset, "all", ks, folding=folding, seed=seed,
                                 callback=lambda e: emit({**e, "stage": "evaluate"}))
    for name, model in models.items():
        emit({"stage": "serve", "message": f"serving cost of {name}"})
        info[name]["serving"] = serving_cost(model, dataset, serving_queries, seed)
    emit({"stage": "scaling", "message": "training scalability"})
    scaling = training_scaling(dataset, variants, quick, seed, threads, emit)
    results = {
        "dataset": {**dataset.info(), "protocols": list(dataset.protocols)},
        "quick": quick,
        "seed": seed,
        "ks": list(ks),
        "models": info,
        "evaluation": evaluation,
        "scaling": scaling,
    }
    results["table"] = comparison_table(results)
    return (results, models) if return_models else results


def _warm_up() -> None:
    """Load torch and its kernels once, so that the first model trained is not
    charged for the libraries' start-up time and memory."""
    import warnings

    import torch

    a = torch.ones((64, 64))
    w = torch.nn.Parameter(torch.ones((64, 64)))
    optimizer = torch.optim.Adam([w])
    torch.nn.functional.cross_entropy(a @ w, torch.zeros(64, dtype=torch.long)).backward()
    optimizer.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch calls its CSR support "beta"
        torch.sparse.mm(torch.eye(64).to_sparse_csr(), a)


def _steps(model) -> int | None:
    fit_info = getattr(model, "fit_info_", {}) or {}
    for key in ("iterations_run", "seconds_per_iteration", "epochs_run", "epochs"):
        value = fit_info.get(key)
        if isinstance(value, (int, np.integer)) and value > 0:
            return int(value)
        if isinstance(value, list) and value:
            return len(value)
    return None


# ------------------------------------------------------------------ serving
def serving_cost(model, dataset, n_queries: int = 200, seed: int = 0, k: int = 10) -> dict:
    """Per-query latency and batch throughput of producing top-k, and serving memory.

    * ``known``: a training user, one at a time, through ``recommend`` (static
      query embeddings where the family has them).
    * ``fresh``: the query embedding computed at query time from the user's
      history and features (``recommend_new``), as a DNN serves every request
      and a matrix factorization serves a user it has not seen (fold-in).
    """
    rng = np.random.default_rng(seed)
    train = dataset.train
    active = np.flatnonzero(np.diff(train.indptr) > 0)
    users = np.sort(rng.choice(active, size=min(n_queries, len(active)), replace=False))
    features = dataset.user_features

    def latencies(call) -> dict:
        call(users[0])  # warm-up (lazy imports, caches)
        times = []
        for user in users:
            start = time.perf_counter()
            call(user)
            times.append(time.perf_counter() - start)
        arr = np.asarray(times) * 1e3
        return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
                "queries": len(arr)}

    out: dict[str, Any] = {
        "known": latencies(lambda u: model.recommend(np.array([u]), k, seen=train)),
    }
    if "strong" in getattr(model, "protocols", ()):
        def fresh(u: int) -> None:
            feats = features.iloc[[u]].reset_index(drop=True) if features is not None else None
            model.recommend_new(train[[u]], feats, k)

        try:
            out["fresh"] = latencies(fresh)
        except RecompareError as exc:
            out["fresh"] = {"unsupported": str(exc)}
    batch = active[: min(len(active), 4096)]
    start = time.perf_counter()
    model.recommend(batch, k, seen=train)
    seconds = time.perf_counter() - start
    out["batch"] = {"queries": len(batch), "seconds": seconds,
                    "queries_per_second": float(len(batch) / seconds) if seconds else None}
    out["memory_bytes"] = int(model.serving_nbytes())
    return out


# ------------------------------------------------------------------ scaling
def training_scaling(dataset, variants, quick: bool, seed: int, threads: int,
                     emit: Callback) -> dict:
    """Train the two family defaults on nested subsamples of the training interactions
    and fit log-log slopes of time per iteration/epoch and peak memory against nnz."""
    from .models import model_class

    fractions = (0.25, 0.5, 1.0)
    rng = np.random.default_rng(seed)
    train = dataset.train.tocoo()
    order = rng.permutation(train.nnz)
    out: dict[str, Any] = {"fractions": list(fractions), "families": {}}
    for variant in variants:
        if variant.role not in ("wals", "dnn"):
            continue
        params = dict(variant.params)
        steps_param = "iterations" if variant.kind == "wals" else "epochs"
        params[steps_param] = 2 if quick else 3
        if variant.kind == "softmax":
            params["patience"] = 10**6  # time whole epochs; no early stop
        points = []
        for fraction in fractions:
            keep = np.sort(order[: max(1, int(fraction * train.nnz))])
            sub = sp.csr_matrix((train.data[keep], (train.row[keep], train.col[keep])),
                                shape=train.shape, dtype=np.float32)
            subset = dataset.replace(interactions=sub, split=None, timestamps=None)
            emit({"stage": "scaling", "message":
                  f"scaling: {variant.name} on {sub.nnz:,} interactions"})
            cls = model_class(variant.kind)
            if "threads" in cls().get_params():
                params.setdefault("threads", threads)
            model = cls(**params)
            with measure() as cost:
                model.fit(subset)
            steps = _steps(model) or params[steps_param]
            points.append({"nnz": int(sub.nnz), "seconds": cost["seconds"],
                           "seconds_per_step": cost["seconds"] / steps,
                           "peak_extra_bytes": cost["peak_extra_bytes"]})
        nnz = np.log([p["nnz"] for p in points])
        slope_time = float(np.polyfit(nnz, np.log([p["seconds_per_step"] for p in points]), 1)[0])
        mem = [p["peak_extra_bytes"] for p in points]
        # below ~16 MiB the allocator's reuse of freed memory swamps the signal
        slope_mem = (float(np.polyfit(nnz, np.log(mem), 1)[0])
                     if min(mem) >= MEMORY_RESOLUTION else None)
        out["families"][variant.role] = {"model": variant.name, "step": steps_param[:-1],
                                         "points": points, "time_slope": slope_time,
                                         "memory_slope": slope_mem}
    return out


# ---------------------------------------------------------------- the table
def _metric(evaluation: dict, model: str, protocol: str, name: str) -> float | None:
    entry = evaluation["models"].get(model, {}).get("protocols", {}).get(protocol)
    if not entry or entry.get("status") != "ok":
        return None
    if name in entry.get("metrics", {}):
        return entry["metrics"][name]
    return entry.get("folding", {}).get(name)


def _relative(a: float, b: float) -> float:
    return (a - b) / max(abs(b), 1e-12)


def _better(label_a: str, a: float | None, label_b: str, b: float | None,
            higher_is_better: bool = True, what: str = "") -> str:
    if a is None or b is None:
        missing = label_a if a is None else label_b
        return f"{missing}: not measurable on this data set"
    if abs(a - b) <= PAR * max(abs(a), abs(b)):
        return f"on par ({what} within {PAR:.0%})"
    winner, wv, lv = (label_a, a, b) if ((a > b) == higher_is_better) else (label_b, b, a)
    if higher_is_better:
        gap = f"+{_relative(wv, lv):.0%}" if lv > 0 else "from zero"
    else:
        gap = f"{lv / wv:.1f}x lower" if wv > 0 else "lower"
    return f"{winner} better: {what} {_fmt(wv)} vs {_fmt(lv)} ({gap})"


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def comparison_table(results: dict) -> list[dict]:
    """One row per question of the source document, with numbers and a verdict."""
    ev = results["evaluation"]
    models = results["models"]
    wals = next(n for n, m in models.items() if m["role"] == "wals")
    dnn = next(n for n, m in models.items() if m["role"] == "dnn")
    pop = next((n for n, m in models.items()
                if m["kind"] == "popularity" and not m["params"].get("by_group")), None)
    rows = []

    # accuracy
    if "weak" in ev["protocols"]:
        w, d = (_metric(ev, wals, "weak", "recall@20"), _metric(ev, dnn, "weak", "recall@20"))
        p = _metric(ev, pop, "weak", "recall@20") if pop else None
        wn, dn = (_metric(ev, wals, "weak", "ndcg@20"), _metric(ev, dnn, "weak", "ndcg@20"))
        rows.append({
            "question": "Accuracy",
            "measure": "recall@20 / ndcg@20, known users (weak)",
            "wals": f"{_fmt(w)} / {_fmt(wn)}", "dnn": f"{_fmt(d)} / {_fmt(dn)}",
            "verdict": _better("WALS", w, "DNN", d, what="recall@20")
            + (f"; popularity floor {_fmt(p)}" if p is not None else ""),
        })
    # query features: unseen users with history; WALS can only fold the history in
    if "strong" in ev["protocols"]:
        w, d = (_metric(ev, wals, "strong", "recall@20"), _metric(ev, dnn, "strong", "recall@20"))
        dnn_features = models[dnn].get("features") or []
        plain = next((n for n, m in models.items() if m["role"] == "features"), None)
        h = _metric(ev, plain, "strong", "recall@20") if plain else None
        gain = (f"; features move the DNN from {_fmt(h)} (history only) to {_fmt(d)} "
                f"({_relative(d, h):+.0%})" if h is not None and d is not None else "")
        rows.append({
            "question": "Query features",
            "measure": "recall@20, unseen users with fold-in history (strong)",
            "wals": f"{_fmt(w)} (history fold-in; features unused)",
            "dnn": f"{_fmt(d)} ({' + '.join(dnn_features) or 'history'})",
            "verdict": _better("WALS", w, "DNN", d, what="recall@20") + gain,
        })
    if "cold" in ev["protocols"]:
        w, d = (_metric(ev, wals, "cold", "recall@20"), _metric(ev, dnn, "cold", "recall@20"))
        p = _metric(ev, pop, "cold", "recall@20") if pop else None
        rows.append({
            "question": "Cold start",
            "measure": "recall@20, unseen users with features only (cold)",
            "wals": f"{_fmt(w)} (average of similar users)",
            "dnn": f"{_fmt(d)} (features through the tower)",
            "verdict": _better("WALS", w, "DNN", d, what="recall@20")
            + (f"; popularity {_fmt(p)}" if p is not None else ""),
        })
    # folding
    if ev.get("folding"):
        protocol = "weak" if "weak" in ev["protocols"] else ev["protocols"][0]

        def leak(name: str) -> float | None:
            return _metric(ev, name, protocol, "leakage@10")

        truth = None
        entry = ev["models"][wals]["protocols"].get(protocol, {})
        if entry.get("status") == "ok":
            truth = entry.get("folding", {}).get("ground_truth_cross_share")
        wals_fold = {n: leak(n) for n, m in models.items() if m["kind"] == "wals"}
        dnn_fold = {n: leak(n) for n, m in models.items() if m["kind"] == "softmax"}
        worst_w = max(((v, n) for n, v in wals_fold.items() if v is not None), default=None)
        worst_d = max(((v, n) for n, v in dnn_fold.items() if v is not None), default=None)
        verdict = []
        if worst_w and wals_fold.get(wals) is not None:
            verdict.append(f"WALS default leaks {_fmt(wals_fold[wals])} vs {_fmt(worst_w[0])} "
                           f"for {worst_w[1]}")
        if worst_d and dnn_fold.get(dnn) is not None:
            verdict.append(f"DNN default leaks {_fmt(dnn_fold[dnn])} vs {_fmt(worst_d[0])} "
                           f"for {worst_d[1]}")
        if truth is not None:
            verdict.append(f"true cross-group share {_fmt(truth)}")
        rows.append({
            "question": "Folding",
            "measure": f"leakage@10 ({protocol}); worst variant in brackets",
            "wals": f"{_fmt(wals_fold.get(wals))} ({_fmt(worst_w[0]) if worst_w else 'n/a'})",
            "dnn": f"{_fmt(dnn_fold.get(dnn))} ({_fmt(worst_d[0]) if worst_d else 'n/a'})",
            "verdict": "; ".join(verdict),
        })
    # training scalability
    tw, td = models[wals]["training"], models[dnn]["training"]
    sc = results.get("scaling", {}).get("families", {})
    slope = {role: sc.get(role, {}).get("time_slope") for role in ("wals", "dnn")}
    rows.append({
        "question": "Training scalability",
        "measure": "training time, peak extra memory; log-log slope of time per step vs "
                   "nnz on subsamples (small data: fixed costs dominate; see `bench scaling`)",
        "wals": f"{tw['seconds']:.1f} s, {_bytes(tw['peak_extra_bytes'])}, "
                f"slope {_fmt(slope['wals'], 2)}",
        "dnn": f"{td['seconds']:.1f} s, {_bytes(td['peak_extra_bytes'])}, "
               f"slope {_fmt(slope['dnn'], 2)}",
        "verdict": _better("WALS", tw["seconds"], "DNN", td["seconds"], higher_is_better=False,
                           what="training seconds"),
    })
    # serving scalability
    sw, sd = models[wals].get("serving"), models[dnn].get("serving")
    if sw and sd:
        def fresh_p50(s: dict) -> float | None:
            return s.get("fresh", {}).get("p50_ms")

        rows.append({
            "question": "Serving scalability",
            "measure": "p50 ms per query (static embedding / computed at query time); memory",
            "wals": f"{_fmt(sw['known']['p50_ms'])} / {_fmt(fresh_p50(sw))} ms, "
                    f"{_bytes(sw['memory_bytes'])}",
            "dnn": f"{_fmt(sd['known']['p50_ms'])} / {_fmt(fresh_p50(sd))} ms, "
                   f"{_bytes(sd['memory_bytes'])}",
            "verdict": _better("WALS", sw["known"]["p50_ms"], "DNN", fresh_p50(sd),
                               higher_is_better=False,
                               what="p50 latency (WALS static, DNN computed per query)"),
        })
    return rows
