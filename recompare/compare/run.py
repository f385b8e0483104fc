"""Orchestration: train every variant, evaluate them all, measure their cost, and
build the comparison table."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from .._gc import frozen_heap
from ..errors import RecompareError
from .cost import measure_cost, scaling_family, serving_costs, steps_run
from .folding import MIRROR_CROSS_RATE, folding_check, mirrored
from .results import ComparisonResults, MirrorRun, ModelRecord, Scaling
from .variants import Variant, default_variants, quick_params
from .verdicts import PAIRED_METRICS, comparison_table, paired_statistics

Callback = Callable[[dict], None]

#: shares of the training interactions the scalability runs train on
SCALING_FRACTIONS = (0.25, 0.5, 1.0)


def _check(dataset: Any) -> None:
    if dataset.train.nnz == 0:
        raise RecompareError("the data set has no training interactions")
    if not dataset.protocols:
        raise RecompareError(
            "the data set has no split to evaluate on; prepare it with --split both "
            "(or random/temporal/users)")


def _with_runtime_params(variant: Variant, dataset: Any, threads: int) -> Variant:
    """The variant with the settings of this run that its model accepts: the thread
    count, and a number of sampled negatives the catalogue can supply."""
    from ..models import model_class

    defaults = model_class(variant.kind)().get_params()
    params = dict(variant.params)
    if "threads" in defaults:
        params.setdefault("threads", threads)
    if params.get("loss") == "sampled":
        # a small catalogue cannot supply the default number of negatives
        wanted = params.get("num_negatives", defaults["num_negatives"])
        params["num_negatives"] = max(1, min(wanted, dataset.n_items // 2))
    return dataclasses.replace(variant, params=params)


def _quick(variant: Variant) -> Variant:
    return dataclasses.replace(variant, params={**variant.params, **quick_params(variant.kind)})


def _train(variant: Variant, dataset: Any, emit: Callback) -> tuple[Any, ModelRecord]:
    """Fit one variant, forwarding its progress events, and record what it cost."""
    from ..models import model_class

    model = model_class(variant.kind)(**variant.params)

    def forward(event: dict) -> None:
        emit({**event, "stage": "train-progress", "model": variant.name,
              "inner_stage": event.get("stage")})

    with measure_cost() as cost:
        model.fit(dataset, callback=forward)
    steps = steps_run(model)
    record: ModelRecord = {
        "kind": variant.kind,
        "role": variant.role,
        "params": variant.params,
        "features": list((getattr(model, "fit_info_", {}) or {}).get("features") or []),
        "training": {
            "seconds": cost["seconds"],
            "peak_extra_bytes": int(cost["peak_extra_bytes"]),
            "steps": steps,
            "seconds_per_step": cost["seconds"] / max(1, steps or 1),
        },
    }
    return model, record


def training_scaling(dataset: Any, variants: list[Variant], quick: bool, seed: int,
                     emit: Callback) -> Scaling:
    """Train the two family defaults (roles ``wals`` and ``dnn``) on nested subsamples of
    the training interactions and fit log-log slopes of time per step and peak memory
    against nnz."""
    from ..models import model_class

    order = np.random.default_rng(seed).permutation(dataset.train.nnz)
    out: Scaling = {"fractions": list(SCALING_FRACTIONS), "families": {}}
    for variant in variants:
        if variant.role in ("wals", "dnn"):
            out["families"][variant.role] = scaling_family(
                variant.name, model_class(variant.kind), variant.params, dataset,
                steps=2 if quick else 3, fractions=SCALING_FRACTIONS, order=order, emit=emit)
    return out


# long only for its documented parameters: the body is a sequence of named steps
def run_comparison(
    dataset: Any,
    quick: bool = False,
    ks: tuple[int, ...] = (10, 20, 50),
    seed: int = 0,
    threads: int = 0,
    variants: list[Variant] | None = None,
    serving_queries: int = 200,
    serving_threads: int = 1,
    callback: Callback | None = None,
    return_models: bool = False,
    folding_mirror: int | None = None,
    tune: int | None = None,
) -> ComparisonResults | tuple[ComparisonResults, dict[str, Any]]:
    """Train, evaluate and measure every variant.

    Parameters
    ----------
    dataset : Dataset
        A split data set (at least one evaluation protocol).
    quick : bool
        Fewer epochs and sweeps (:func:`~recompare.compare.variants.quick_params`).
    ks : tuple of int
        Cut-offs to evaluate; 10 and 20 are always added (the table uses them).
    seed : int
        Seed of the default variants, the evaluation and the cost measurements.
    threads : int
        Thread count passed to the models that take one (0 = their choice).
    variants : list of Variant, optional
        What to train; :func:`~recompare.compare.variants.default_variants` when None.
        One variant must have role ``wals`` and one role ``dnn``.
    serving_queries : int
        Users timed one at a time for the serving latency (per path, per round).
    serving_threads : int
        Threads every serving query runs on, the same for every model.
    callback : callable, optional
        Receives progress events (dicts with ``stage`` and ``message``).
    return_models : bool
        Also return the fitted models by name.
    folding_mirror : int, optional
        Also answer the folding question on this many coupled copies of the data set
        (:func:`~recompare.compare.folding.mirrored`); the folding row then reports it.
    tune : int, optional
        Give both families (roles ``wals`` and ``dnn``) the same budget of
        :func:`recompare.tune.tune` trials on validation and train them with the chosen
        configurations; None: the defaults (``results["tuning"]`` says which).

    Returns
    -------
    ComparisonResults
        A JSON-able dict (see :mod:`recompare.compare.results`), and with
        ``return_models`` a ``(results, models)`` pair.
    """
    from ..evaluate.protocols import evaluate_models

    emit = callback or (lambda event: None)
    _check(dataset)
    if folding_mirror is not None and (int(folding_mirror) != folding_mirror
                                       or folding_mirror < 2):
        raise RecompareError(f"--folding-mirror needs at least 2 copies, got {folding_mirror}")
    variants = variants or default_variants(quick, seed)
    ks = tuple(sorted(set(ks) | {10, 20}))
    _warm_up()
    with frozen_heap():  # the many collections of the measurements stay cheap
        if not _has_side_features(dataset):  # the DNN with features is the history-only one
            variants = [v for v in variants if v.role != "features"]
        runs = [_with_runtime_params(_quick(v) if quick else v, dataset, threads) for v in variants]
        tuning = _tune_families(dataset, runs, tune, seed, emit) if tune else None
        models, info = _train_all(runs, dataset, emit)
        emit({"stage": "evaluate", "message": "evaluating all models"})
        evaluation = evaluate_models(models, dataset, "all", ks, folding=dataset.has_groups,
                                     seed=seed, callback=lambda e: emit({**e, "stage": "evaluate"}),
                                     per_query_metrics=PAIRED_METRICS)
        statistics = paired_statistics(evaluation, info, seed)
        _measure_serving(models, info, runs, dataset, serving_queries, seed, serving_threads, emit)
        emit({"stage": "scaling", "message": "training scalability"})
        results: ComparisonResults = {
            "dataset": {**dataset.info(), "protocols": list(dataset.protocols)},
            "quick": quick,
            "seed": seed,
            "ks": list(ks),
            "models": info,
            "evaluation": evaluation,
            "scaling": training_scaling(
                dataset, [_with_runtime_params(v, dataset, threads) for v in variants],
                quick, seed, emit),
            "statistics": statistics,
            "folding": folding_check(evaluation, None if folding_mirror is None else
                                     _folding_on_mirror(dataset, int(folding_mirror), runs, ks,
                                                        seed, emit)),
            "table": [],
            "tuning": tuning or {"budget": None, "note": "family defaults (no --tune)"},
        }
        results["table"] = comparison_table(results)
    return (results, models) if return_models else results


def _train_all(runs: list[Variant], dataset: Any, emit: Callback
               ) -> tuple[dict[str, Any], dict[str, ModelRecord]]:
    """Fit every variant in order; the fitted models and their training records."""
    models: dict[str, Any] = {}
    info: dict[str, ModelRecord] = {}
    for number, variant in enumerate(runs, 1):
        emit({"stage": "train", "model": variant.name, "index": number, "total": len(runs),
              "message": f"training {variant.name} ({number}/{len(runs)})"})
        models[variant.name], info[variant.name] = _train(variant, dataset, emit)
    return models, info


def _measure_serving(models: dict[str, Any], info: dict[str, ModelRecord],
                     runs: list[Variant], dataset: Any, queries: int, seed: int, threads: int,
                     emit: Callback) -> None:
    """Serving latency of every model in interleaved rounds, into ``info[name]["serving"]``;
    the two family defaults (the verdict's pairs) are also served from an ANN index."""
    emit({"stage": "serve", "message": "serving latency, all models in interleaved rounds"})
    ann = [v.name for v in runs if v.role in ("wals", "dnn")]
    serving = serving_costs(models, dataset, queries, seed, threads=threads, ann=ann)
    for name in models:
        info[name]["serving"] = serving[name]


def _has_side_features(dataset: Any) -> bool:
    """Whether the data has user features besides the history (what ``features`` adds)."""
    features = getattr(dataset, "user_features", None)
    return features is not None and features.shape[1] > 0


def _folding_on_mirror(dataset: Any, copies: int, runs: list[Variant], ks: tuple[int, ...],
                       seed: int, emit: Callback) -> MirrorRun:
    """Train the family defaults and folding variants on ``copies`` coupled copies of the
    data set and evaluate their folding there (weak protocol)."""
    from ..evaluate.protocols import evaluate_models

    emit({"stage": "mirror", "message": f"folding on {copies} coupled copies of the data"})
    data = mirrored(dataset, copies, MIRROR_CROSS_RATE, seed)
    models: dict[str, Any] = {}
    info: dict[str, ModelRecord] = {}
    for variant in runs:
        if variant.role in ("wals", "dnn", "fold"):
            emit({"stage": "mirror", "message": f"mirror: training {variant.name}"})
            models[variant.name], info[variant.name] = _train(variant, data, emit)
    evaluation = evaluate_models(models, data, "weak", ks, folding=True, seed=seed,
                                 callback=lambda e: emit({**e, "stage": "mirror"}))
    return MirrorRun(copies=copies, cross_rate=MIRROR_CROSS_RATE,
                     dataset={**data.info(), "protocols": list(data.protocols)},
                     models=info, evaluation=dict(evaluation))
def _tune_families(dataset: Any, runs: list[Variant], budget: int, seed: int,
                   emit: Callback) -> dict[str, Any]:
    """Tune the ``wals`` and ``dnn`` roles with the same budget (on validation); their
    runs take the chosen parameters.  Returns the chosen and default configurations."""
    from ..tune import tune

    out: dict[str, Any] = {"budget": budget}
    for i, variant in enumerate(runs):
        if variant.role not in ("wals", "dnn"):
            continue
        emit({"stage": "tune", "message": f"tuning {variant.name} ({budget} trials)"})
        result = tune(dataset, variant.role, budget, random_state=seed,
                      callback=lambda e, n=variant.name: emit(
                          {"stage": "tune", "message": f"tuning {n}: trial {e['trial'] + 1}"}))
        runs[i] = dataclasses.replace(variant, params={**variant.params, **result.params})
        out[variant.name] = {"family": variant.role, "chosen": result.params,
                             "defaults": result.trials[0]["params"],
                             "validation_recall@20": max(t["score"] for t in result.trials),
                             "default_validation_recall@20": result.trials[0]["score"],
                             # the same number of trials is not the same compute (a DNN
                             # trial may train several members): the seconds say how much
                             "seconds": sum(t["seconds"] for t in result.trials),
                             "trials": result.trials}
    return out


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
