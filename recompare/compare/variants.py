"""What a comparison trains: the two family defaults, their folding variants, baselines."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Variant:
    """One model to train: a display name, a registered kind and its parameters.

    ``params`` holds only what differs from the model's own defaults; ``role`` is
    ``"wals"`` or ``"dnn"`` (the family defaults the verdicts compare), ``"fold"``
    (a folding variant), ``"features"`` (the DNN without side features) or
    ``"baseline"``.
    """

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    role: str = ""


def default_variants(quick: bool = False, seed: int = 0) -> list[Variant]:
    """The models of a comparison: both defaults, the folding variants, two baselines.

    ``quick`` is accepted for symmetry with :func:`run_comparison`; the quick
    settings are applied when training (:func:`quick_params`).
    """
    # the folding variants isolate the loss: no dropout (the default's 0.5 regularises
    # a positives-only model towards popular items and blurs what gravity does; the
    # benchmark's folding figures use the same settings)
    sampled = {"loss": "sampled", "dropout": 0.0, "random_state": seed}
    # The w0 sweep uses a constant L2 penalty so that w0 is the only thing handling
    # the missing data, as in classic WALS; the frequency-scaled penalty of the
    # default, lambda (n_u + w0 n)^nu, also shrinks embeddings at w0 = 0 and hides folding.
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


def quick_params(kind: str) -> dict[str, Any]:
    """What ``--quick`` changes for a model kind: fewer epochs / sweeps, same models."""
    if kind == "softmax":
        return {"epochs": 15}
    if kind == "wals":
        return {"iterations": 8}
    return {}
