"""Folding where it can be asked.

Folding (Xin et al. 2017) is about groups that have nothing to do with each other: a model
folds when it recommends across them.  A data set's groups can only answer that question
when its users mostly stay inside their own group.  The check here reads the true
cross-group share of the data (``ground_truth_cross_share``: the mean share of a query's
held-out interactions outside its group) and calls the groups separated when it is at
most :data:`MAX_CROSS_SHARE`.  When they are not, ``compare --folding-mirror`` asks the
question on the user's own data turned into coupled copies (:func:`mirrored`), whose
groups are separated by construction.
"""
from __future__ import annotations

from typing import Any

from .results import FoldingCheck, MirrorRun

#: the largest true cross-group share at which a data set's groups count as separated.
#: Above one relevant item in five from another group, cross-group recommendations are
#: mostly real taste and leakage@k cannot tell folding from it (docs/methodology.md).
MAX_CROSS_SHARE = 0.2
#: copies of ``compare --folding-mirror`` when none is given
MIRROR_COPIES = 2
#: share of each copy's interactions rewired to another copy: enough to couple the
#: copies (a model can learn that they are related), far under :data:`MAX_CROSS_SHARE`
MIRROR_CROSS_RATE = 0.01


def cross_share(evaluation: dict[str, Any]) -> tuple[str | None, float | None]:
    """The protocol the folding row reads (``weak`` when evaluated) and the true
    cross-group share of its held-out interactions; ``(None, None)`` without folding.

    The share depends on the queries only, not on the model, so any model evaluated
    with folding under that protocol gives it.
    """
    if not evaluation.get("folding") or not evaluation.get("protocols"):
        return None, None
    protocol = "weak" if "weak" in evaluation["protocols"] else evaluation["protocols"][0]
    for entry in evaluation["models"].values():
        result = entry["protocols"].get(protocol, {})
        if result.get("status") == "ok" and "folding" in result:
            return protocol, float(result["folding"]["ground_truth_cross_share"])
    return protocol, None


def folding_check(evaluation: dict[str, Any], mirror: MirrorRun | None = None,
                  threshold: float = MAX_CROSS_SHARE) -> FoldingCheck:
    """Whether the data set's groups are separated enough to ask about folding, and
    where the folding row is answered: on the mirror when there is one, else on the data
    when its groups are separated, else nowhere."""
    protocol, share = cross_share(evaluation)
    separated = None if share is None else share <= threshold
    answered = "mirror" if mirror is not None else ("data" if separated else None)
    return FoldingCheck(protocol=protocol, cross_share=share, threshold=threshold,
                        separated=separated, answered_on=answered, mirror=mirror)


def mirrored(dataset: Any, copies: int = MIRROR_COPIES, cross_rate: float = MIRROR_CROSS_RATE,
             seed: int = 0) -> Any:
    """``dataset`` as ``copies`` coupled copies, one group per copy, split for the ``weak``
    protocol the folding row reads.

    Every interaction of ``dataset`` (training and held-out parts alike) is copied;
    a ``cross_rate`` share of each copy's interactions moves to the same item in another
    copy.  The ``group_hint`` feature that :func:`recompare.data.mirror.mirror` adds is
    dropped: the copies must be told apart from what the users did, as in the original
    data, not from a label.  The split keeps the original's kind where it has a per-user
    holdout (``temporal`` stays temporal) and its test fraction, with ``seed``.
    """
    from ..data.mirror import mirror
    from ..data.splits import split
    from ..errors import RecompareError

    if int(copies) != copies or copies < 2:
        raise RecompareError(f"--folding-mirror needs at least 2 copies, got {copies}")
    out = mirror(dataset.replace(split=None), copies=int(copies), cross_rate=cross_rate,
                 seed=seed, rewire="same")
    features = out.user_features.drop(columns=["group_hint"], errors="ignore")
    out = out.replace(user_features=features if features.shape[1] else None)
    options = dataset.split.options if dataset.split is not None else {}
    kind = "temporal" if options.get("kind") == "temporal" else "random"
    extra = {"last_n": options["last_n"]} if "last_n" in options else {}
    return split(out, kind, test_fraction=options.get("test_fraction", 0.2), seed=seed,
                 **extra)
