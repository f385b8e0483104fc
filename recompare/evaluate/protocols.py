"""Who is recommended to, what is excluded, and what they are judged on.

Three protocols (definitions in ``docs/methodology.md``):

``weak``
    Training users.  Top-k over the catalogue minus their training items, judged on
    their held-out interactions (``split.test``).
``strong``
    Held-out users, never seen in training.  The model folds in part of their history
    (``split.foldin``) and is judged on the rest (``split.heldout``); fold-in items are
    excluded from the lists.
``cold``
    Held-out users with side features only.  The model gets no history at all, so every
    interaction of theirs (fold-in and held-out part alike) is unseen truth: it is judged
    on ``foldin + heldout`` and nothing is excluded.

A model that cannot serve a protocol (its ``protocols`` attribute lacks it, or
``embed_new_users`` raises) gets ``{"status": "unsupported", "reason": ...}`` instead of
numbers; the evaluation goes on.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from ..errors import RecompareError
from . import leakage as lk
from .metrics import accuracy, check_ks, per_query
from .results import (
    DatasetSummary,
    Evaluation,
    Folding,
    ModelResult,
    ProtocolResult,
    SpuriousItem,
    Unsupported,
)

PROTOCOLS = ("weak", "strong", "cold")

NO_GROUPS = (
    "this data set has no item groups, so there is nothing to measure folding against; "
    "add groups with `recompare data prepare ... --group-col COLUMN` (a column of the "
    "items file), or use MovieLens, whose genres become groups"
)

Callback = Callable[[dict], None]


def resolve_protocols(dataset, protocol: str | Sequence[str] = "all") -> tuple[str, ...]:
    """The protocols to run; ``"all"`` means every one the data set's split supports.

    Raises
    ------
    RecompareError
        For an unknown protocol, or one the split cannot support, saying why.
    """
    supported = dataset.protocols
    if protocol == "all":
        if not supported:
            raise RecompareError(
                "this data set has no evaluation split; re-create it with `--split both` "
                "(recompare data prepare / synth / mirror)"
            )
        return tuple(p for p in PROTOCOLS if p in supported)
    wanted = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    for name in wanted:
        if name not in PROTOCOLS:
            raise RecompareError(f"unknown protocol '{name}' (known: {', '.join(PROTOCOLS)})")
        if name not in supported:
            raise RecompareError(_why_unsupported(dataset, name))
    return tuple(p for p in PROTOCOLS if p in wanted)


def _why_unsupported(dataset, protocol: str) -> str:
    split = dataset.split
    kind = split.kind if split is not None else "none"
    if split is None:
        return (f"protocol '{protocol}' needs an evaluation split; re-create the data set "
                "with `--split both` (recompare data prepare / synth / mirror)")
    if protocol == "weak":
        return (f"protocol 'weak' needs held-out interactions of training users, which a "
                f"'{kind}' split does not have; re-create the data set with --split random, "
                "temporal or both")
    if protocol == "cold" and "strong" in dataset.protocols:
        return "protocol 'cold' needs user features, and this data set has none"
    return (f"protocol '{protocol}' needs held-out users, which a '{kind}' split does not "
            "have; re-create the data set with --split users or both")


def check_folding(dataset) -> None:
    """Raise :class:`RecompareError` (how to add groups) when there are no item groups."""
    if not dataset.has_groups:
        raise RecompareError(NO_GROUPS)


def _n_groups(dataset) -> int:
    groups = np.asarray(dataset.item_groups, dtype=np.int64)
    return max(dataset.n_groups, int(groups.max(initial=-1)) + 1)


def _features(dataset, users: np.ndarray):
    if dataset.user_features is None:
        return None
    return dataset.user_features.iloc[users].reset_index(drop=True)


class _Context:
    """Per-data-set values shared by every model: computed once, reused."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        self._counts: np.ndarray | None = None

    def counts_by_group(self) -> np.ndarray:
        if self._counts is None:
            ds = self.dataset
            self._counts = lk.group_item_counts(ds.train, ds.query_groups(), _n_groups(ds))
        return self._counts


def evaluate(
    model,
    dataset,
    protocol: str = "weak",
    ks: Sequence[int] = (10, 20, 50),
    folding: bool = True,
    score_folding: bool = True,
    auc_queries: int = 1000,
    spurious_top: int = 10,
    seed: int = 0,
    per_query_metrics: Sequence[str] = (),
    device: str = "cpu",
    _context: _Context | None = None,
) -> ProtocolResult | Unsupported:
    """Evaluate one fitted model under one protocol.

    Parameters
    ----------
    model : Recommender
        Fitted on ``dataset`` (same fingerprint).
    dataset : Dataset
        With a split that supports ``protocol``.
    protocol : {"weak", "strong", "cold"}
    ks : sequence of int
        Cut-offs; one top-``max(ks)`` list per query serves them all.
    folding : bool
        Add the leakage and folding measures (needs item groups).
    score_folding : bool
        With ``folding``, also the score-based ``folding_auc`` on a sample of
        ``auc_queries`` queries (drawn with ``seed``).
    spurious_top : int
        How many of the most spurious recommendations to list.
    per_query_metrics : sequence of str
        Metric keys (``"recall@20"``) whose per-query values to keep, under
        ``result["per_query"]`` (numpy arrays, for paired statistics; not JSON).
    device : {"cpu", "cuda", "auto"}
        Where the top-k lists are computed (the metrics are the same on every device,
        up to items whose scores tie in the last bits).

    Returns
    -------
    ProtocolResult or Unsupported
        A JSON-able dict; :mod:`recompare.evaluate.results` documents every key.
    """
    ks = _check_evaluable(model, dataset, protocol, ks, folding)
    if protocol not in getattr(model, "protocols", frozenset({"weak"})):
        return Unsupported(status="unsupported",
                           reason=f"model kind '{model.kind}' cannot serve the {protocol} protocol")
    context = _context or _Context(dataset)
    start = time.perf_counter()
    if protocol == "weak":
        queries = _known_user_queries(dataset)
    else:
        queries = _new_user_queries(dataset, protocol)
    try:
        ids, scores = _top_lists(model, dataset, protocol, queries, ks[-1], device)
    except (RecompareError, NotImplementedError) as exc:
        if protocol == "weak":
            raise  # every model serves known users: this is a real error
        reason = str(exc) or f"model kind '{model.kind}' cannot embed new users"
        return Unsupported(status="unsupported", reason=reason)
    groups_all = queries.groups() if folding else None
    seconds = time.perf_counter() - start
    ids = np.asarray(ids, dtype=np.int64)
    valid = np.isfinite(np.asarray(scores))
    found = accuracy(ids, queries.relevant, ks, valid)
    result = ProtocolResult(
        status="ok", protocol=protocol, n_queries=found["n_queries"],
        n_skipped=int(len(queries.candidates) - len(queries.users)),
        metrics=found["metrics"], stderr=found["stderr"], seconds=seconds)
    if per_query_metrics:
        values, evaluated = per_query(ids, queries.relevant, ks, valid)
        result["per_query"] = {"users": queries.users[evaluated],
                               **{key: values[key] for key in per_query_metrics}}
    if folding:
        result["folding"] = _folding(
            model, dataset, protocol, ks, ids, valid, queries.relevant, queries.users,
            groups_all[queries.users], queries.history, queries.features, context,
            score_folding, auc_queries, spurious_top, seed,
        )
    return result


def _check_evaluable(model, dataset, protocol: str, ks: Sequence[int], folding: bool
                     ) -> tuple[int, ...]:
    """Validated cut-offs; raises :class:`RecompareError` for a protocol the data set cannot
    serve, folding without item groups, or a model fit on another data set."""
    if protocol not in PROTOCOLS:
        raise RecompareError(f"unknown protocol '{protocol}' (known: {', '.join(PROTOCOLS)})")
    ks = check_ks(ks, dataset.n_items)
    if protocol not in dataset.protocols:
        raise RecompareError(_why_unsupported(dataset, protocol))
    if folding:
        check_folding(dataset)
    fingerprint = getattr(model, "fingerprint_", None)
    if fingerprint is not None and fingerprint != dataset.fingerprint:
        raise RecompareError(
            f"the {getattr(model, 'kind', 'model')} model was trained on another data set "
            f"(fingerprint {fingerprint}, data set {dataset.fingerprint})"
        )
    return ks


@dataclass
class _Queries:
    """The queries of one protocol and what they are judged on.

    ``candidates`` are every user the protocol concerns; ``users`` those of them with
    relevant items (the queries), ``relevant`` their truth rows, ``history`` their
    fold-in rows (strong only) and ``features`` their side features (new users only).
    ``groups`` gives the query group of every data set user (computed on demand).
    """

    candidates: np.ndarray
    users: np.ndarray
    relevant: sp.csr_matrix
    groups: Callable[[], np.ndarray]
    history: sp.csr_matrix | None = None
    features: Any = None


def _known_user_queries(dataset) -> _Queries:
    """Training users judged on their held-out interactions (``weak``)."""
    split = dataset.split
    heldout_mask = np.zeros(dataset.n_users, dtype=bool)
    heldout_mask[split.heldout_users] = True
    candidates = np.flatnonzero(~heldout_mask)
    relevant_all = split.test[candidates]
    has = np.diff(relevant_all.indptr) > 0
    return _Queries(candidates=candidates, users=candidates[has], relevant=relevant_all[has],
                    groups=dataset.query_groups)


def _new_user_queries(dataset, protocol: str) -> _Queries:
    """Held-out users: judged on their held-out part (``strong``, which folds in the rest)
    or on everything they did (``cold``)."""
    split = dataset.split
    candidates = np.asarray(split.heldout_users, dtype=np.int64)
    heldout = split.heldout[candidates]
    foldin = (split.foldin[candidates] if split.foldin is not None
              else sp.csr_matrix(heldout.shape, dtype=np.float32))
    target = heldout if protocol == "strong" else (foldin + heldout).tocsr()
    has = np.diff(target.indptr) > 0
    users = candidates[has]

    def groups() -> np.ndarray:
        # held-out users have no training rows: their group comes from all they did
        return dataset.query_groups(
            _rows_to_full((foldin + heldout).tocsr(), candidates, dataset.n_users))

    return _Queries(candidates=candidates, users=users, relevant=target[has], groups=groups,
                    history=foldin[has] if protocol == "strong" else None,
                    features=_features(dataset, users))


def _top_lists(model, dataset, protocol: str, queries: _Queries, k: int, device: str = "cpu"
               ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item ids and scores of every query: training items excluded for known users,
    fold-in items for ``strong``, nothing for ``cold``; top-k on ``device``."""
    if protocol == "weak":
        return model.recommend(queries.users, k, exclude_seen=True, seen=dataset.train,
                               device=device)
    if protocol == "strong":
        return model.recommend_new(queries.history, queries.features, k, exclude_seen=True,
                                   device=device)
    return model.recommend_new(None, queries.features, k, exclude_seen=False, device=device)


def _rows_to_full(rows: sp.csr_matrix, users: np.ndarray, n_users: int) -> sp.csr_matrix:
    """Place the rows of ``users`` into an n_users-row matrix (other rows empty)."""
    coo = sp.coo_matrix(rows)
    return sp.csr_matrix((coo.data, (users[coo.row], coo.col)), shape=(n_users, rows.shape[1]))


def _folding(model, dataset, protocol, ks, ids, valid, relevant, users, query_groups,
             history, features, context, score_folding, auc_queries, spurious_top, seed
             ) -> Folding:
    """The folding section of one protocol's result (keys: :class:`Folding`)."""
    item_groups = np.asarray(dataset.item_groups, dtype=np.int64)
    n_groups = _n_groups(dataset)
    out: dict[str, Any] = {}
    out.update(lk.leakage_at_k(ids, query_groups, item_groups, ks, valid))
    truth = lk.ground_truth_cross_share(relevant, query_groups, item_groups)
    out["ground_truth_cross_share"] = truth
    for k in ks:
        out[f"excess_leakage@{k}"] = out[f"leakage@{k}"] - truth
    shares, worst = lk.spurious(ids, ks, query_groups, item_groups, context.counts_by_group(),
                                valid, top=spurious_top)
    out.update(shares)
    out["confusion"] = {
        str(k): lk.confusion(ids, k, query_groups, item_groups, n_groups, valid).tolist()
        for k in ks
    }
    out["ground_truth_confusion"] = lk.ground_truth_confusion(
        relevant, query_groups, item_groups, n_groups).tolist()
    out["spurious"] = [_describe(dataset, entry) for entry in worst]
    out["folding_auc"] = None
    if score_folding and len(users):
        out["folding_auc"] = _score_folding(model, dataset, protocol, users, query_groups,
                                            history, features, auc_queries, seed)
    return cast(Folding, out)  # plus the "name@k" keys a TypedDict cannot list


def _describe(dataset, entry: dict) -> SpuriousItem:
    """An entry of :func:`leakage.spurious` with names, external id and title added."""
    names = list(dataset.group_names)

    def name(code: int) -> str:
        return names[code] if 0 <= code < len(names) else str(code)

    described = dict(entry)
    described["query_group_name"] = name(entry["query_group"])
    described["item_group_name"] = name(entry["item_group"])
    described["item_id"] = str(dataset.items.external([entry["item"]])[0])
    title = None
    if dataset.item_info is not None and "title" in dataset.item_info.columns:
        value = dataset.item_info["title"].iloc[entry["item"]]
        title = None if value is None or (isinstance(value, float) and np.isnan(value)) \
            else str(value)
    described["title"] = title
    return cast(SpuriousItem, described)


def _score_folding(model, dataset, protocol, users, query_groups, history, features,
                   auc_queries, seed) -> float | None:
    rng = np.random.default_rng(seed)
    n = len(users)
    sample = np.sort(rng.choice(n, size=min(n, auc_queries), replace=False))
    try:
        if protocol == "weak":
            queries = model.query_embeddings(users[sample])
            exclude = dataset.train[users[sample]]
        else:
            sub_features = None if features is None else features.iloc[sample].reset_index(
                drop=True)
            sub_history = history[sample] if protocol == "strong" else None
            queries = model.embed_new_users(sub_history, sub_features)
            exclude = sub_history
        items = model.item_embeddings()
    except (NotImplementedError, RecompareError):
        return None  # a model that scores without embeddings has no score-based measure
    return lk.folding_auc(queries, items, query_groups[sample], dataset.item_groups, exclude)


def evaluate_models(
    models: Mapping[str, Any],
    dataset,
    protocols: str | Sequence[str] = "all",
    ks: Sequence[int] = (10, 20, 50),
    folding: bool = False,
    score_folding: bool = True,
    seed: int = 0,
    callback: Callback | None = None,
    per_query_metrics: Sequence[str] = (),
    device: str = "cpu",
) -> Evaluation:
    """Evaluate several fitted models side by side.

    Parameters
    ----------
    models : mapping name -> fitted Recommender
    dataset : Dataset
    protocols : "all", a protocol name, or a sequence of them
    ks : sequence of int
    folding : bool
        Add the leakage section (raises :class:`RecompareError` without item groups).
    callback : callable, optional
        Receives ``{"stage": "evaluate", "model", "protocol", "message"}`` events.
    per_query_metrics : sequence of str
        Passed to :func:`evaluate`: keep these metrics' per-query values.
    device : {"cpu", "cuda", "auto"}
        Passed to :func:`evaluate`: where the top-k lists are computed.

    Returns
    -------
    Evaluation
        A JSON-able dict; :mod:`recompare.evaluate.results` documents every key.
    """
    names = resolve_protocols(dataset, protocols)
    ks = check_ks(ks, dataset.n_items)
    if folding:
        check_folding(dataset)
    if not models:
        raise RecompareError("give at least one model to evaluate")
    context = _Context(dataset)
    # top-k runs on torch: import it here so the first model's timing does not pay for it
    import torch  # noqa: F401

    out = Evaluation(
        dataset=DatasetSummary(
            fingerprint=dataset.fingerprint,
            users=dataset.n_users,
            items=dataset.n_items,
            split=dataset.split.kind if dataset.split is not None else None,
            source=dataset.meta.get("source"),
        ),
        ks=list(ks),
        protocols=list(names),
        folding=bool(folding),
        group_names=list(dataset.group_names),
        models={},
    )
    for model_name, model in models.items():
        entry = ModelResult(kind=getattr(model, "kind", type(model).__name__), protocols={})
        for protocol in names:
            if callback is not None:
                callback({"stage": "evaluate", "model": model_name, "protocol": protocol,
                          "message": f"{model_name}: {protocol}"})
            entry["protocols"][protocol] = evaluate(
                model, dataset, protocol, ks, folding=folding, score_folding=score_folding,
                seed=seed, per_query_metrics=per_query_metrics, device=device,
                _context=context)
        out["models"][model_name] = entry
    return out
