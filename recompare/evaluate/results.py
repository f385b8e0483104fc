"""The shapes of what evaluation returns: plain JSON-able dicts, typed here.

Every result is a :class:`typing.TypedDict`, so it is an ordinary ``dict`` at run time
(written to ``--json`` and ``results.json`` unchanged) while readers and type checkers
see its keys.  Keys that carry a cut-off are spelled ``"name@k"`` (``"recall@20"``)
and cannot be listed as fields; they are documented on the type that holds them.
"""
from __future__ import annotations

from typing import Literal, TypedDict


class Accuracy(TypedDict):
    """Accuracy of one protocol's top-k lists (:func:`recompare.evaluate.accuracy`).

    Attributes
    ----------
    n_queries : int
        Queries evaluated (those with at least one relevant item).
    n_skipped : int
        Queries without relevant items, left out of the means.
    metrics : dict
        ``"name@k"`` -> mean over evaluated queries, for every name of
        :data:`recompare.evaluate.metrics.METRICS` and every k.
    stderr : dict
        ``"name@k"`` -> standard error of that mean (``coverage`` has none).
    """

    n_queries: int
    n_skipped: int
    metrics: dict[str, float]
    stderr: dict[str, float]


class SpuriousItem(TypedDict):
    """One of the most spurious recommendations: a cross-group item that no training
    user of the query's group ever touched.

    Attributes
    ----------
    query_group, item_group : int
        Group codes of the queries and of the item.
    query_group_name, item_group_name : str
        The same as names (the code as text where the data set has no name for it).
    item : int
        Dense item index.
    item_id : str
        External item id.
    title : str or None
        From ``item_info["title"]`` where the data set has one.
    n_queries : int
        How many queries of the group got the item in their top ``max(ks)``.
    best_rank : int
        Its best rank among them, 1-based.
    mean_rank : float
        Its mean rank among them, 1-based.
    """

    query_group: int
    query_group_name: str
    item: int
    item_id: str
    title: str | None
    item_group: int
    item_group_name: str
    n_queries: int
    best_rank: int
    mean_rank: float


class Folding(TypedDict):
    """Leakage and folding of one protocol's top-k lists (``evaluate(..., folding=True)``).

    Besides the fields below it holds, for every cut-off k:
    ``"leakage@k"`` (float: mean share of known-group recommendations from another
    group), ``"leakage_queries@k"`` (int: queries with a known group and at least one
    known-group recommendation), ``"excess_leakage@k"`` (float: leakage minus
    ``ground_truth_cross_share``) and ``"spurious@k"`` (float: mean share of
    recommendations that are cross-group and untouched by the query's group).

    Attributes
    ----------
    ground_truth_cross_share : float
        Mean share of a query's relevant items that lie in other groups.
    confusion : dict
        ``str(k)`` -> n_groups x n_groups nested list: row = query group, column =
        recommended item group, each row normalised to sum 1 (or all 0).
    ground_truth_confusion : list of list of float
        The same over the relevant items.
    spurious : list of SpuriousItem
    folding_auc : float or None
        Score-based folding measure; None when not computed or when the model has
        no embeddings to score with.
    """

    ground_truth_cross_share: float
    confusion: dict[str, list[list[float]]]
    ground_truth_confusion: list[list[float]]
    spurious: list[SpuriousItem]
    folding_auc: float | None


class _ProtocolRequired(TypedDict):
    status: Literal["ok"]
    protocol: str
    n_queries: int
    n_skipped: int
    metrics: dict[str, float]
    stderr: dict[str, float]
    seconds: float


class ProtocolResult(_ProtocolRequired, total=False):
    """A model evaluated under one protocol (``status == "ok"``).

    Attributes
    ----------
    status : "ok"
    protocol : {"weak", "strong", "cold"}
    n_queries, n_skipped, metrics, stderr
        As in :class:`Accuracy`; ``n_skipped`` counts every candidate query
        without relevant items.
    seconds : float
        Wall-clock time to build the queries and their top-k lists.
    folding : Folding
        Only when evaluated with ``folding=True``.
    """

    folding: Folding


class Unsupported(TypedDict):
    """A protocol the model cannot serve; the evaluation goes on without it.

    Attributes
    ----------
    status : "unsupported"
    reason : str
        One line saying why.
    """

    status: Literal["unsupported"]
    reason: str


class DatasetSummary(TypedDict):
    """The data set a comparison ran on.

    Attributes
    ----------
    fingerprint : str
    users, items : int
    split : str or None
        The split kind (``"both"``, ...).
    source : str or None
        ``meta["source"]`` of the data set.
    """

    fingerprint: str
    users: int
    items: int
    split: str | None
    source: str | None


class ModelResult(TypedDict):
    """One model's results: ``kind`` (its family) and ``protocols`` (protocol name ->
    :class:`ProtocolResult` or :class:`Unsupported`)."""

    kind: str
    protocols: dict[str, ProtocolResult | Unsupported]


class Evaluation(TypedDict):
    """Several models side by side (:func:`recompare.evaluate.evaluate_models`).

    Attributes
    ----------
    dataset : DatasetSummary
    ks : list of int
        The cut-offs, ascending.
    protocols : list of str
        The protocols run, in the order weak, strong, cold.
    folding : bool
        Whether results carry a ``folding`` section.
    group_names : list of str
    models : dict
        Model name -> :class:`ModelResult`, in the order given.
    """

    dataset: DatasetSummary
    ks: list[int]
    protocols: list[str]
    folding: bool
    group_names: list[str]
    models: dict[str, ModelResult]
