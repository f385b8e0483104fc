"""Evaluation: accuracy metrics, leakage and folding, and the weak/strong/cold protocols.

The entry points are :func:`evaluate` (one model, one protocol) and
:func:`evaluate_models` (several models side by side, the dict the reports render).
Definitions: ``docs/methodology.md``.
"""
from .metrics import METRICS, accuracy, check_ks, embedding_recall
from .protocols import PROTOCOLS, evaluate, evaluate_models, resolve_protocols
from .results import Accuracy, Evaluation, Folding, ProtocolResult, Unsupported

__all__ = ["METRICS", "PROTOCOLS", "Accuracy", "Evaluation", "Folding", "ProtocolResult",
           "Unsupported", "accuracy", "check_ks", "embedding_recall", "evaluate",
           "evaluate_models", "resolve_protocols"]
