"""Evaluation: accuracy metrics, leakage and folding, and the weak/strong/cold protocols.

The entry points are :func:`evaluate` (one model, one protocol) and
:func:`evaluate_models` (several models side by side, the dict the reports render).
Definitions: ``docs/methodology.md``.
"""
from .metrics import METRICS, accuracy, check_ks
from .protocols import PROTOCOLS, evaluate, evaluate_models, resolve_protocols

__all__ = ["METRICS", "PROTOCOLS", "accuracy", "check_ks", "evaluate", "evaluate_models",
           "resolve_protocols"]
