"""Seeded random search of a model family's hyperparameters, on validation data only.

``tune(dataset, family, budget)`` carves a validation split from the training part
(:func:`recompare.data.validation.validation_split`; the test split is never read),
then fits ``budget`` configurations on it and scores each by weak recall@20 on the
validation items.  Trial 0 is always the family's defaults, so a tuned model is never
worse than the defaults *on validation*; the others are drawn from the family's
search space (:data:`SPACES`, documented in ``docs/tuning.md``) by a generator seeded
with ``random_state``: the same seed gives the same trials.

A space maps a parameter name to one of::

    [v1, v2, ...]              a choice among values
    {"log": [low, high]}       log-uniform float
    {"uniform": [low, high]}   uniform float
    {"int": [low, high]}       uniform integer, both ends included
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from .errors import RecompareError

FAMILIES = ("wals", "dnn")
#: The metric every trial is scored by, on the validation carve (weak protocol).
METRIC = "recall@20"
#: Share of each training user's items lent to validation.
FRACTION = 0.2

#: The documented search space of each family (see docs/tuning.md for the reasons).
SPACES: dict[str, dict[str, Any]] = {
    "wals": {
        "dim": [64, 128, 192],
        "regularization": {"log": [1e-3, 1.0]},
        "unobserved_weight": {"log": [0.01, 1.0]},
        "reg_exponent": {"uniform": [0.0, 1.0]},
        "iterations": [10, 15, 25],
    },
    "dnn": {
        # A neighbourhood of the defaults (issue 9 part 5): the wide space of part 4
        # (dim 64, hidden 600, gravity 0 or 3, mean pooling, no lr decay, ...) drew several
        # weak settings per trial and all 17 draws scored under the defaults on validation.
        # pooling (sqrt), hidden (256,) and average_epochs (0) stay at their defaults.
        "dim": [128, 192],
        "dropout": {"uniform": [0.3, 0.6]},
        "lr": {"log": [1.5e-3, 6e-3]},
        "batch_size": [32, 64],
        "epochs": {"int": [30, 60]},
        "lr_decay": ["auto", "linear"],
        "target_fraction": {"uniform": [0.35, 0.65]},
        "gravity": ["auto", 0.5, 2.0],
        # cosine scores (the full-loss default since issue 9 part 6: +3.4% / +5.5% validation
        # recall@20 on two ml-latest-small splits, -1.0% on data/planted) or dot products;
        # the temperature only matters when normalize is drawn
        "normalize": [False, True],
        "temperature": [0.1, 0.125],
        # an ensemble of independently trained networks, served as the mean of their
        # scores (issue 9 part 7: +4-5% / +6% validation recall@20 with 2 / 3 members on
        # two ml-latest-small carves); a draw costs members x the training
        "members": [1, 2, 3],
    },
}


class TuneResult(NamedTuple):
    """The best configuration (a value for every searched name; the rest stay at the
    family defaults) and one row per trial: ``trial``, ``params``, ``score``,
    ``seconds``, ``status`` ("ok" or the one-line reason it was skipped)."""

    params: dict[str, Any]
    trials: list[dict[str, Any]]


def make_model(family: str, params: Mapping[str, Any] | None = None, random_state: int = 0):
    """An unfitted model of ``family`` with ``params`` (the rest at their defaults)."""
    params = dict(params or {})
    if family == "wals":
        from .models.wals import WALS

        return WALS(random_state=random_state, **params)
    if family == "dnn":
        from .models.softmax import SoftmaxDNN

        if isinstance(params.get("hidden"), list):
            params["hidden"] = tuple(params["hidden"])
        return SoftmaxDNN(random_state=random_state, **params)
    raise RecompareError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")


def check_space(space: Mapping[str, Any], family: str) -> dict[str, Any]:
    """``space`` checked against the family's parameters; raises one-line errors."""
    if not space:
        raise RecompareError("the search space is empty: it has no valid point")
    known = make_model(family).get_params()
    out: dict[str, Any] = {}
    for name, spec in space.items():
        if name not in known or name == "random_state":
            raise RecompareError(f"{family} has no tunable parameter {name!r}")
        if isinstance(spec, list):
            if not spec:
                raise RecompareError(f"the search space has no valid point: {name} has no values")
        elif isinstance(spec, Mapping) and len(spec) == 1:
            kind, bounds = next(iter(spec.items()))
            ok = (kind in ("log", "uniform", "int") and isinstance(bounds, list)
                  and len(bounds) == 2 and bounds[0] <= bounds[1]
                  and (kind != "log" or bounds[0] > 0))
            if not ok:
                raise RecompareError(
                    f"the search space has no valid point: {name} = {spec!r} is not a "
                    "non-empty range (log needs 0 < low <= high)")
        else:
            raise RecompareError(
                f"search space entry {name} must be a list of values or one of "
                '{"log"|"uniform"|"int": [low, high]}')
        out[name] = spec
    return out


def sample_point(space: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One configuration drawn from ``space`` (see the module docstring)."""
    point: dict[str, Any] = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            point[name] = spec[int(rng.integers(len(spec)))]
            continue
        kind, (low, high) = next(iter(spec.items()))
        if kind == "log":
            point[name] = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        elif kind == "uniform":
            point[name] = float(rng.uniform(low, high))
        else:
            point[name] = int(rng.integers(int(low), int(high) + 1))
    return point


def _score(model, validation) -> float:
    from .evaluate.protocols import evaluate

    return float(evaluate(model, validation, "weak", ks=(20,), folding=False)["metrics"][METRIC])


def tune(dataset, family: str, budget: int, seconds: float | None = None,
         random_state: int = 0, callback: Callable[[dict], None] | None = None, *,
         space: Mapping[str, Any] | None = None) -> TuneResult:
    """Random search of ``family`` on a validation carve of ``dataset``'s training part.

    Parameters
    ----------
    dataset : Dataset
    family : {"wals", "dnn"}
    budget : int >= 1
        Number of trials (trial 0: the defaults).
    seconds : float, optional
        Start no new trial after this many seconds (at least one trial runs).
    random_state : int
        Seeds the carve, the draws and every model.
    callback : callable(dict), optional
        Receives ``{"stage": "trial", "trial", "budget", "params", "score", "best",
        "seconds", "status"}`` after each trial.
    space : mapping, optional
        Overrides :data:`SPACES` ``[family]``.

    Returns
    -------
    TuneResult
        The best parameters (on validation) and the trials table.

    Raises
    ------
    RecompareError
        Unknown family, budget < 1, an empty space or one with no valid point, or too
        few interactions for a validation split.
    """
    from .data.validation import validation_split

    if family not in FAMILIES:
        raise RecompareError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise RecompareError(f"budget must be a positive number of trials, got {budget}")
    if seconds is not None and seconds <= 0:
        raise RecompareError(f"seconds must be positive, got {seconds}")
    space = check_space(SPACES[family] if space is None else space, family)
    validation = validation_split(dataset, FRACTION, random_state, heldout_users=False)
    points = _draw_points(space, family, validation, budget, random_state)
    emit = callback or (lambda event: None)
    trials: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any]] = (-math.inf, {})
    start = time.perf_counter()
    for i, point in enumerate(points):
        if seconds is not None and i > 0 and time.perf_counter() - start >= seconds:
            break
        t0 = time.perf_counter()
        model = make_model(family, point, random_state).fit(validation)
        score = _score(model, validation)
        if score > best[0]:
            best = (score, point)
        row = {"trial": i, "params": point, "score": score,
               "seconds": time.perf_counter() - t0, "status": "ok"}
        trials.append(row)
        emit({"stage": "trial", "budget": len(points), "best": best[0], **row})
    return TuneResult(params=best[1], trials=trials)


def _draw_points(space: Mapping[str, Any], family: str, validation, budget: int,
                 random_state: int) -> list[dict[str, Any]]:
    """The defaults, then up to ``budget - 1`` distinct valid draws from ``space``.

    A draw the model refuses (``check`` raises, e.g. more negatives than items) is
    skipped; a space whose draws are all refused has no valid point.
    """
    model = make_model(family)
    # parameters whose default is "the value that fits the others" (WALS's penalty) are
    # recorded as the values in effect
    defaults = getattr(model, "resolved_params", model.get_params)()
    points = [{name: _plain(defaults[name]) for name in space}]
    rng = np.random.default_rng([int(random_state) & 0xFFFFFFFF, 31])
    seen = {repr(sorted(points[0].items()))}
    attempts, refused = 0, None
    while len(points) < budget and attempts < 50 * budget:
        attempts += 1
        point = sample_point(space, rng)
        key = repr(sorted(point.items()))
        if key in seen:
            continue
        seen.add(key)
        try:
            make_model(family, point, random_state).check(validation)
        except RecompareError as exc:
            refused = str(exc)
            continue
        points.append(point)
    if len(points) == 1 and budget > 1 and refused is not None:
        raise RecompareError(f"the search space has no valid point: {refused}")
    return points


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value




def fit_best(dataset, family: str, result: TuneResult, random_state: int = 0,
             callback: Callable[[dict], None] | None = None):
    """Refit the best configuration of ``result`` on the whole training part of
    ``dataset``; the model's ``fit_info_`` records that it was selected on validation
    and the tuning summary (budget, trials run, best validation score)."""
    model = make_model(family, result.params, random_state).fit(dataset, callback)
    scores = [t["score"] for t in result.trials]
    model.fit_info_["selected_on"] = "validation"
    model.fit_info_["tuning"] = {
        "metric": f"validation {METRIC}", "trials": len(result.trials),
        "best_score": max(scores) if scores else None,
        "default_score": result.trials[0]["score"] if result.trials else None,
        "params": result.params,
    }
    return model


__all__ = ["FAMILIES", "METRIC", "SPACES", "TuneResult", "check_space", "fit_best",
           "make_model", "sample_point", "tune"]
