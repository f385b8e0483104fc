"""The shapes of what :func:`~recompare.compare.run_comparison` returns.

Plain dicts typed with ``TypedDict``: ``results.json`` is the same dict written with
:func:`recompare._jsonutil.dumps`, so these classes document its keys too.
"""
from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from ..evaluate.stats import PairedComparison


class TrainingCost(TypedDict):
    """Cost of one ``fit`` on the whole training matrix."""

    seconds: float  #: wall time of ``fit``
    peak_extra_bytes: int  #: peak resident memory during ``fit`` minus the memory at its start
    steps: int | None  #: sweeps (WALS) or epochs (DNN) run; None for models without steps
    seconds_per_step: float  #: ``seconds / steps`` (``seconds`` when there are no steps)


class Latency(TypedDict):
    """Per-query latency of producing a top-k list, one query at a time: medians across
    interleaved rounds, and their spread (max - min across rounds)."""

    p50_ms: float
    p99_ms: float
    queries: int  #: queries timed per round
    p50_spread_ms: NotRequired[float]
    p99_spread_ms: NotRequired[float]
    #: the calling thread's CPU time per query (service time); None on more than one thread
    cpu_p50_ms: NotRequired[float | None]
    cpu_p50_spread_ms: NotRequired[float | None]


class Unsupported(TypedDict):
    """A serving path the model refused, with its one-line reason."""

    unsupported: str


class BatchCost(TypedDict):
    """One ``recommend`` call over a batch of known users."""

    queries: int
    seconds: float
    queries_per_second: float | None


class ServingCost(TypedDict):
    """What serving a fitted model costs (:func:`~recompare.compare.cost.serving_cost`)."""

    known: Latency  #: a training user, static embedding, exact top-k
    fresh: NotRequired[Latency | Unsupported]  #: embedding computed per query (fold-in/tower)
    batch: BatchCost
    memory_bytes: int  #: ``model.serving_nbytes()``
    threads: NotRequired[int]  #: threads every query ran on
    rounds: NotRequired[int]  #: interleaved rounds
    #: ``ModelLatency.to_dict()``: ``paths[index][path]`` (index exact/ann), with spreads
    latency: NotRequired[dict[str, Any]]
    ann_missing: NotRequired[str]  #: why ANN was not measured (the extra to install)


class ModelRecord(TypedDict):
    """One trained variant: what it is and what it cost."""

    kind: str  #: registered model kind (``wals``, ``softmax``, ``popularity``, ``random``)
    role: str  #: ``wals``/``dnn`` (family defaults), ``fold``, ``features`` or ``baseline``
    params: dict[str, Any]  #: the constructor arguments it was trained with
    features: list[str]  #: query features the model used (DNN), else empty
    training: TrainingCost
    serving: NotRequired[ServingCost]  #: added once every model is trained and evaluated


class ScalingPoint(TypedDict):
    """One training run on a subsample of the training interactions."""

    nnz: int
    seconds: float
    seconds_per_step: float
    peak_extra_bytes: int


class ScalingFamily(TypedDict):
    """A family default trained on nested subsamples, with log-log slopes against nnz."""

    model: str  #: the variant's display name
    step: str  #: ``iteration`` or ``epoch``
    points: list[ScalingPoint]
    time_slope: float  #: slope of log(seconds per step) against log(nnz)
    memory_slope: float | None  #: same for peak extra memory; None when too small to resolve


class Scaling(TypedDict):
    """Training scalability on the data set at hand."""

    fractions: list[float]  #: shares of the training interactions kept
    families: dict[str, ScalingFamily]  #: by role, ``wals`` and ``dnn``


class TableRow(TypedDict):
    """One question of the comparison, answered with numbers (all cells are text)."""

    question: str
    measure: str  #: what the numbers in ``wals`` and ``dnn`` are
    wals: str
    dnn: str
    verdict: str


class Statistics(TypedDict):
    """Paired per-query comparisons behind the quality verdicts
    (:mod:`recompare.evaluate.stats`)."""

    confidence: float  #: level of every interval (0.95)
    method: str  #: ``bootstrap`` (paired percentile bootstrap) or ``t``
    resamples: int  #: bootstrap resamples
    seed: int  #: seed of the resamples
    comparisons: list[PairedComparison]  #: family vs family, family vs floors, per protocol


class MirrorRun(TypedDict):
    """The folding question answered on ``copies`` coupled copies of the data set."""

    copies: int
    cross_rate: float  #: share of each copy's interactions rewired to another copy
    dataset: dict[str, Any]  #: ``Dataset.info()`` of the mirror, plus ``protocols``
    models: dict[str, ModelRecord]  #: the folding-relevant variants trained on it
    evaluation: dict[str, Any]  #: ``evaluate_models`` on the mirror (weak, with folding)


class FoldingCheck(TypedDict):
    """Whether the folding question can be asked of this data set, and where it was."""

    protocol: str | None  #: protocol whose held-out interactions give ``cross_share``
    cross_share: float | None  #: true cross-group share of the data; None without groups
    threshold: float  #: above it the groups count as not separated
    separated: bool | None  #: ``cross_share <= threshold``; None without groups
    answered_on: str | None  #: ``"data"``, ``"mirror"`` or None (not answered)
    mirror: MirrorRun | None  #: the mirror run, with ``compare --folding-mirror``


class ComparisonResults(TypedDict):
    """Everything :func:`~recompare.compare.run_comparison` measured (``results.json``)."""

    dataset: dict[str, Any]  #: ``Dataset.info()`` plus ``protocols``
    quick: bool
    seed: int
    ks: list[int]  #: cut-offs evaluated (always including 10 and 20)
    models: dict[str, ModelRecord]  #: by display name, in training order
    evaluation: dict[str, Any]  #: what ``evaluate_models`` returned
    scaling: Scaling
    statistics: Statistics  #: the intervals the verdicts quote
    folding: FoldingCheck  #: folding applicability and, if asked, the mirror run
    table: list[TableRow]
    tuning: dict[str, Any]  #: ``--tune``: chosen and default configurations per family
