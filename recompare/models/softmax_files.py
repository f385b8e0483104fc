"""Reading the softmax DNN's files back: the saved model directory and the checkpoint.

Every file is read through :mod:`recompare._io` under its fixed name: ``model.json`` /
``checkpoint.json`` key by key, ``arrays.npz`` array by array, ``state.pt`` with
``weights_only=True`` against the SHA-256 recorded next to it at save time (torch does not
checksum tensor bytes), and each ``state_dict`` tensor by tensor against a freshly built
tower, so that ``load_state_dict`` cannot fail half-way and damaged weights never load.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from .._io import ArraySpec, check_keys, check_state_dict, own_file, read_json, refuse
from .._io import read_torch_state as _read_torch_state
from ..errors import RecompareError
from .base import ARRAYS_FILE, MODEL_FILE, read_model_arrays
from .softmax_training import CHECKPOINT_FILE, RESUMABLE_CHANGES, STATE_FILE, FitRun
from .tower import FeatureSchema, QueryTower

#: model.json keys of the DNN beyond the common ones (state_sha256: absent in models
#: saved before it was recorded; their state.pt is read without the checksum)
SAVED_KEYS = {"features": list, "state_sha256": str}
SAVED_REQUIRED = {"schema": dict}
CHECKPOINT_FORMAT = "recompare-softmax-checkpoint"
_WHAT = "model description"


def read_schema(path: str | os.PathLike, meta: dict, model) -> tuple[FeatureSchema, dict]:
    """The feature schema of ``model.json`` and the arrays of ``arrays.npz``, both checked.

    ``model`` is the instance :func:`read_saved_model` built (sizes and ``dim`` set).
    Returns ``(schema, arrays)``.
    """
    file = own_file(path, MODEL_FILE)
    schema = check_keys(meta["schema"], {"uses_history": bool, "categorical": list,
                                         "numeric": list, "mean": list, "std": list},
                        path=file, what=_WHAT, where="schema")
    names = schema["categorical"] + schema["numeric"]
    if not all(isinstance(name, str) for name in names):
        raise refuse(file, _WHAT, "schema: feature names must be strings")
    stats = schema["mean"] + schema["std"]
    if len(schema["mean"]) != len(schema["numeric"]) or len(schema["std"]) != len(
            schema["numeric"]) or not all(_finite_number(v) for v in stats):
        raise refuse(file, _WHAT, "schema: 'mean' and 'std' need one finite number per "
                                  "numeric feature")
    if not all(isinstance(name, str) for name in meta.get("features", [])):
        raise refuse(file, _WHAT, "'features' must be a list of strings")
    specs = {"query_embeddings": ArraySpec("f", ("n_users", "dim")),
             "item_embeddings": ArraySpec("f", ("n_items", "dim"))}
    specs.update({f"vocab_{i}": ArraySpec("U", (None,))
                  for i in range(len(schema["categorical"]))})
    members = model.members
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise refuse(file, _WHAT, f"params: members must be a positive integer, got "
                                  f"{members!r}")
    # an ensemble serves its members' embeddings side by side
    dims = {"n_users": model.n_users_, "n_items": model.n_items_,
            "dim": model.dim * model.members}
    arrays = read_model_arrays(path, specs, dims)
    return FeatureSchema.from_json(schema, arrays), arrays


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def build_tower(path: str | os.PathLike, model, schema: FeatureSchema) -> QueryTower:
    """The tower the saved parameters describe, or one line naming ``model.json``."""
    try:
        return model._build_tower(model.n_items_, schema)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise refuse(own_file(path, MODEL_FILE), _WHAT,
                     f"its parameters do not describe a model ({exc})") from None


def load_tower_state(path: str | os.PathLike, meta: dict, tower: QueryTower) -> None:
    """Fill ``tower`` from ``state.pt``: checksum, then every tensor, then load."""
    file = own_file(path, STATE_FILE)
    state = _read_torch_state(file, what="model weights", sha256=meta.get("state_sha256"))
    check_state_dict(state, tower.state_dict(), path=file, what="model weights")
    tower.load_state_dict(state)


# ----------------------------------------------------------------- checkpoints
_CHECKPOINT_KEYS = {"format": str, "params": dict, "fingerprint": str, "state": dict}
_CHECKPOINT_OPTIONAL = {"history": list, "state_sha256": str}
_STATE_KEYS = {"epoch": int, "best_score": (float, type(None)),
               "best_epoch": (int, type(None)), "bad_epochs": int}


def read_checkpoint(path, run: FitRun, params: dict, fingerprint: str) -> None:
    """The body of :func:`softmax_training.resume`: read, check and load a checkpoint.

    Raises :class:`RecompareError` when ``path`` is no checkpoint, a file of it is damaged,
    or it was written on another data set (``fingerprint``) or with other ``params``.
    """
    root = Path(path)
    meta_file = own_file(root, CHECKPOINT_FILE)
    if not meta_file.exists():
        raise RecompareError(f"{root} is not a softmax checkpoint (no {CHECKPOINT_FILE})")
    what = "checkpoint description"
    meta = read_json(meta_file, _CHECKPOINT_KEYS, _CHECKPOINT_OPTIONAL, what=what)
    if meta["format"] != CHECKPOINT_FORMAT:
        raise refuse(meta_file, what, f"format '{meta['format']}' is not {CHECKPOINT_FORMAT}")
    saved = check_keys(meta["state"], _STATE_KEYS, {"average_first": int}, path=meta_file,
                       what=what, where="state")
    if meta["fingerprint"] != fingerprint:
        raise RecompareError(
            f"checkpoint {root} was written while training on another data set "
            f"(fingerprint {meta['fingerprint']}, data set {fingerprint})")
    # checkpoints written before these options had them at these values
    theirs = {"average_epochs": 0, "lr_decay": "none", **meta["params"]}
    differ = sorted(k for k in set(params) | set(theirs) if params.get(k) != theirs.get(k))
    if differ:
        raise RecompareError(
            f"checkpoint {root} was written with different parameters "
            f"({', '.join(differ)}); only {', '.join(RESUMABLE_CHANGES)} may change")
    payload = _read_checkpoint_state(root, meta, run)
    run.tower.load_state_dict(payload["model"])
    run.state.update(epoch=saved["epoch"],
                     best_score=(-math.inf if saved["best_score"] is None
                                 else float(saved["best_score"])),
                     best_epoch=int(saved["best_epoch"] or 0), bad_epochs=saved["bad_epochs"])
    if saved.get("average_first") is not None:
        run.state["average_first"] = int(saved["average_first"])
    run.history.extend(meta.get("history", []))
    run.best_state = payload.get("best_model")
    run.average_state = payload.get("average_model")


def _read_checkpoint_state(root: Path, meta: dict, run: FitRun) -> dict:
    """``state.pt`` of a checkpoint, checked against the run's tower and optimisers; the
    optimisers are loaded here (their own check needs them loaded)."""
    file = own_file(root, STATE_FILE)
    what = "checkpoint weights"
    payload = _read_torch_state(file, what=what, required=("model", "optimizers"),
                                sha256=meta.get("state_sha256"))
    unknown = sorted(set(payload) - {"model", "optimizers", "best_model", "average_model"})
    if unknown:
        raise refuse(file, what, f"unknown entry '{unknown[0]}'")
    reference = run.tower.state_dict()
    check_state_dict(payload["model"], reference, path=file, what=what, where="entry 'model'")
    for entry in ("best_model", "average_model"):
        if entry in payload:
            check_state_dict(payload[entry], reference, path=file, what=what,
                             where=f"entry '{entry}'")
    saved = payload["optimizers"]
    if not isinstance(saved, list) or len(saved) != len(run.optimizers):
        raise refuse(file, what, f"entry 'optimizers' must be a list of {len(run.optimizers)} "
                                 "optimiser states")
    for j, (opt, state) in enumerate(zip(run.optimizers, saved)):
        try:
            opt.load_state_dict(state)
        except (TypeError, ValueError, KeyError, RuntimeError, AttributeError) as exc:
            raise refuse(file, what, f"optimiser {j} does not fit the model ({exc})") from None
        _check_optimizer_state(opt, file, what, j)
    return payload


def _check_optimizer_state(opt: torch.optim.Optimizer, file: Path, what: str, j: int) -> None:
    """Every per-parameter buffer of ``opt`` (Adam's moments, Adagrad's sums) must have its
    parameter's shape and be finite."""
    for group in opt.param_groups:
        for param in group["params"]:
            for name, value in opt.state.get(param, {}).items():
                if not isinstance(value, torch.Tensor) or value.ndim == 0:
                    continue
                if value.shape != param.shape or (
                        value.is_floating_point() and not bool(torch.isfinite(value).all())):
                    raise refuse(file, what, f"optimiser {j}: buffer '{name}' does not fit "
                                             f"its parameter {tuple(param.shape)}")


__all__ = ["ARRAYS_FILE", "SAVED_KEYS", "SAVED_REQUIRED", "build_tower", "load_tower_state", "read_checkpoint",
           "read_schema"]
