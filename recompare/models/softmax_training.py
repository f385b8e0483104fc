"""Training steps of the softmax DNN: epochs, batch losses, validation, checkpoints.

:class:`recompare.models.softmax.SoftmaxDNN` strings these together in ``fit``;
each is a plain function of explicit inputs, so one step can be read (or tested)
without the others.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .._atomic import atomic_dir
from .._io import sha256_of
from .._jsonutil import json_default
from ..errors import RecompareError
from .ddp import Distributed, all_mean, all_reduce_gradients, barrier, is_main, loss_scale, shard
from .sampling import (
    MatmulTimer,
    NegativeSampler,
    full_softmax_loss,
    gravity_penalty,
    mask_accidental_hits,
    multi_positive_nll,
    positives_only_loss,
    sampled_softmax_loss,
)
from .tower import Batch, QueryTower, embed_queries, mask_history

STATE_FILE = "state.pt"
CHECKPOINT_FILE = "checkpoint.json"
#: Validation recall is recall@this, normalised by min(k, |held-out|) (``recall_norm``).
VALIDATION_K = 20
MAX_VALIDATION_USERS = 2000
#: Parameters that may change when resuming from a checkpoint.
RESUMABLE_CHANGES = ("epochs", "patience", "threads")


@dataclass
class FitRun:
    """What the epochs of one fit share: the tower and its optimisers, the data as the
    epochs read it, the validation users, and the progress so far."""

    tower: QueryTower
    optimizers: list[torch.optim.Optimizer]
    sampler: NegativeSampler
    matrix: sp.csr_matrix  # training interactions less the validation items
    active_users: np.ndarray
    user_cats: np.ndarray
    user_nums: np.ndarray
    val_users: np.ndarray
    val_target: sp.csr_matrix | None
    timer: MatmulTimer = field(default_factory=MatmulTimer)
    state: dict = field(default_factory=lambda: {
        "epoch": 0, "best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0})
    history: list[dict] = field(default_factory=list)
    best_state: dict | None = None
    average_state: dict | None = None  # running mean of the last epochs' weights


def torch_generator(seed: int, stream: int) -> torch.Generator:
    """An independent torch generator per (seed, stream): epochs replay exactly on resume."""
    seq = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, stream])
    return torch.Generator().manual_seed(int(seq.generate_state(1, np.uint64)[0] >> 1))


def binary_safe(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Training matrix with non-positive values dropped (they cannot weigh p)."""
    m = sp.csr_matrix(matrix, dtype=np.float32)
    if m.nnz and (m.data <= 0).any():
        m = m.copy()
        m.data[m.data <= 0] = 0
        m.eliminate_zeros()
    m.sort_indices()
    return m


# ------------------------------------------------------------------ validation
def validation_holdout(dataset, validation_fraction: float, random_state: int) -> tuple[np.ndarray, sp.csr_matrix | None,
                                                   sp.csr_matrix]:
    """Users to validate on, their held-out items, and the matrix to train on.

    A ``validation_fraction`` share of every training user's items is held out by
    :func:`recompare.data.validation.validation_split` (weak part only; the test split
    is never read).  At most :data:`MAX_VALIDATION_USERS` users, chosen by the seed,
    are scored each epoch.  With a zero fraction there is no validation (no users,
    target None) and all of ``dataset.train`` is trained on.
    """
    from ..data.validation import validation_split

    empty = np.zeros(0, dtype=np.int64)
    train = binary_safe(dataset.train)
    if validation_fraction == 0:
        return empty, None, train
    carved = validation_split(dataset, validation_fraction, random_state, heldout_users=False)
    target = binary_safe(carved.split.test)
    users = np.flatnonzero(np.diff(target.indptr) > 0)
    if len(users) > MAX_VALIDATION_USERS:
        rng = np.random.default_rng([random_state, 7])
        users = np.sort(rng.choice(users, MAX_VALIDATION_USERS, replace=False))
    return users, target, binary_safe(carved.split.train)


def validation_recall(tower: QueryTower, matrix: sp.csr_matrix, user_cats: np.ndarray,
                      user_nums: np.ndarray, users: np.ndarray, target: sp.csr_matrix) -> float:
    """recall_norm@:data:`VALIDATION_K` of ``users`` against their rows of ``target``,
    the items in ``matrix`` excluded (see :mod:`recompare.evaluate.metrics`)."""
    from ..evaluate.metrics import accuracy
    from .topk import topk_dot

    queries = embed_queries(tower, matrix, user_cats, user_nums, users)
    items = tower.item_matrix().detach().numpy()
    k = min(VALIDATION_K, matrix.shape[1])
    ids, _ = topk_dot(queries, items, k, exclude=matrix[users])
    return accuracy(ids, target[users], (k,))["metrics"][f"recall_norm@{k}"]


# ---------------------------------------------------------------------- epochs
def train_epochs(model, run: FitRun, patience: int | None, fingerprint: str,
                 checkpoint_dir, emit: Callable[[dict], None],
                 ctx: Distributed | None = None) -> bool:
    """The epochs after ``run.state["epoch"]``, until ``model.epochs`` or early stopping.

    After each epoch: validation (with a copy of the best weights), a history record,
    a checkpoint in ``checkpoint_dir`` (when given) and an ``"epoch"`` event.  Returns
    whether training stopped early (``patience`` epochs without a better validation
    recall; None: never).  Data-parallel (``ctx``), only the main process writes
    checkpoints, and every process uses the processes' mean validation recall, so
    they all make the same early-stopping decision.
    """
    state = run.state
    for epoch in range(state["epoch"] + 1, model.epochs + 1):
        if patience and state["bad_epochs"] >= patience:
            break
        t0, c0 = time.perf_counter(), time.process_time()
        loss = run_epoch(model, run.tower, run.optimizers, run.sampler, run.matrix,
                         run.active_users, run.user_cats, run.user_nums, epoch, run.timer, emit,
                         ctx)
        window = model.average_window()
        if epoch > model.epochs - window:
            _accumulate_average(run, epoch, model.epochs - window + 1, window)
        val = _validate_epoch(run, epoch, ctx)
        state["epoch"] = epoch
        record = {"epoch": epoch, "loss": loss, "validation_recall": val,
                  "seconds": time.perf_counter() - t0,
                  "cpu_seconds": time.process_time() - c0}
        run.history.append(record)
        if checkpoint_dir is not None and is_main(ctx):
            write_checkpoint(checkpoint_dir, run, comparable_params(model), fingerprint)
        barrier(ctx)
        emit({"stage": "epoch", "total": model.epochs, **record,
              "best_epoch": state["best_epoch"] or None})
    return bool(patience) and state["bad_epochs"] >= patience


def _accumulate_average(run: FitRun, epoch: int, first: int, n_epochs: int) -> None:
    """Add this epoch's weights, divided by ``n_epochs``, to the running average of
    epochs ``first`` .. ``first + n_epochs - 1`` (``average_epochs``).

    A resumed fit whose ``epochs`` moved the window before the checkpoint's epoch
    cannot rebuild that average: a one-line error.
    """
    weights = run.tower.state_dict()
    if epoch == first:
        run.average_state = {k: torch.zeros_like(v) for k, v in weights.items()}
        run.state["average_first"] = first
    elif run.average_state is None or run.state.get("average_first") != first:
        raise RecompareError(
            f"cannot resume: the weight average (average_epochs) would start at epoch "
            f"{first}, before the checkpoint's epoch {epoch - 1}, whose average covered "
            "other epochs; resume with the original epochs")
    for key, value in weights.items():
        if value.is_floating_point():
            run.average_state[key].add_(value.detach(), alpha=1.0 / n_epochs)
        else:
            run.average_state[key] = value.detach().clone()


def _validate_epoch(run: FitRun, epoch: int, ctx: Distributed | None = None) -> float | None:
    """Validation recall after ``epoch`` (None without validation users); keeps a copy
    of the best epoch's weights and counts the epochs without improvement."""
    if not len(run.val_users):
        return None
    val = all_mean(validation_recall(run.tower, run.matrix, run.user_cats, run.user_nums,
                                     run.val_users, run.val_target), ctx)
    if val > run.state["best_score"]:
        run.state.update(best_score=val, best_epoch=epoch, bad_epochs=0)
        run.best_state = {k: v.detach().clone() for k, v in run.tower.state_dict().items()}
    else:
        run.state["bad_epochs"] += 1
    return val


def make_optimizers(tower: QueryTower, optimizer: str, lr: float,
                    weight_decay: float) -> list[torch.optim.Optimizer]:
    """One optimiser for the dense parameters, one for the sparse embedding tables."""
    dense = [p for n, p in tower.named_parameters() if n not in tower.sparse_names()]
    sparse = [p for n, p in tower.named_parameters() if n in tower.sparse_names()]
    out: list[torch.optim.Optimizer] = []
    if optimizer == "adam":
        out.append(torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay))
        if sparse:
            out.append(torch.optim.SparseAdam(sparse, lr=lr))
    else:
        out.append(torch.optim.Adagrad(dense, lr=lr, weight_decay=weight_decay))
        if sparse:
            out.append(torch.optim.Adagrad(sparse, lr=lr))
    return out


#: ``lr_decay="auto"`` holds the learning rate for this many optimiser steps before it
#: decays (the constant-lr validation curves of docs/dnn-research.md rise steeply for
#: the first ~200 Adam steps at batch 32: the initial transient is not annealed)
AUTO_DECAY_STEADY_STEPS = 200


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The learning rate's share of ``lr`` at optimiser step ``step`` (0-based) of
    ``total``: 1 (``none``); ``1 - step / total`` (``linear``); ``(1 + cos(pi step /
    total)) / 2`` (``cosine``); ``auto``: 1 for the first
    :data:`AUTO_DECAY_STEADY_STEPS` steps, then linear to 0 over the rest (no decay in a
    shorter run)."""
    progress = step / total
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "auto":
        steady = AUTO_DECAY_STEADY_STEPS
        return 1.0 if step < steady else 1.0 - (step - steady) / (total - steady)
    return 1.0


def set_lr(optimizers: list[torch.optim.Optimizer], model, step: int, total: int) -> None:
    """Set every optimiser's learning rate for step ``step`` of ``total`` (a function of
    the step alone, so a resumed fit replays the schedule)."""
    lr = model.lr * lr_factor(model.lr_decay, step, total)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr


def run_epoch(model, tower: QueryTower, optimizers: list[torch.optim.Optimizer],
              sampler: NegativeSampler, matrix: sp.csr_matrix, active_users: np.ndarray,
              user_cats: np.ndarray, user_nums: np.ndarray, epoch: int,
              timer: MatmulTimer | None, emit: Callable[[dict], None],
              ctx: Distributed | None = None) -> float:
    """One pass over ``active_users`` in batches; returns the mean loss per user.

    ``model`` is the :class:`~recompare.models.softmax.SoftmaxDNN` whose hyperparameters
    (``random_state``, ``target_fraction``, ``history_dropout``, ``batch_size``,
    ``num_negatives``, ``gravity``, ``embedding_l2``) drive the epoch; its random
    streams depend only on
    ``(random_state, epoch)``, so a resumed fit replays the same epochs.

    Data-parallel (``ctx`` with several processes): every process draws the same
    global batches, dropout masks and negatives, computes the loss of its shard of
    users (:func:`.ddp.shard`) scaled to its share of the global mean, and the
    gradients are averaged before the step, so the processes take the step one
    process takes on the global batch.
    """
    rng = np.random.default_rng([model.random_state, 1, epoch])
    gen = torch_generator(model.random_state, 1000 + epoch)
    inputs, targets = mask_history(matrix, model.target_fraction, model.history_dropout, rng)
    order = rng.permutation(active_users)
    tower.train()
    total, n_rows = 0.0, 0
    n_batches = math.ceil(len(order) / model.batch_size)
    report_every = max(1, n_batches // 10)
    for b in range(n_batches):
        global_users = order[b * model.batch_size:(b + 1) * model.batch_size]
        users = global_users if ctx is None else shard(global_users, ctx)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if len(users):
            batch = Batch.build(users, inputs, targets, user_cats, user_nums)
            rows = None
            if ctx is not None and ctx.enabled:
                rows = (torch.arange(ctx.rank, len(global_users), ctx.world_size),
                        len(global_users))
            loss = batch_loss(tower, batch, sampler, gen, model.num_negatives,
                              model.gravity_value(), timer, rows)
            if model.embedding_l2 > 0:
                loss = loss + model.embedding_l2 * tower.embedding_penalty(batch)
            scale = 1.0 if ctx is None else loss_scale(len(users), len(global_users), ctx)
            (loss * scale).backward()
            total += float(loss.detach()) * len(users)
        else:  # a last batch smaller than the processes: draw as the others do
            skip_draws(tower, sampler, gen, len(global_users))
        all_reduce_gradients(tower.parameters(), ctx)
        set_lr(optimizers, model, (epoch - 1) * n_batches + b, model.epochs * n_batches)
        for opt in optimizers:
            opt.step()
        n_rows += len(users)
        if (b + 1) % report_every == 0 and b + 1 < n_batches:
            emit({"stage": "batch", "epoch": epoch, "batch": b + 1, "batches": n_batches})
    if ctx is not None and ctx.enabled:  # the mean over every process's users
        return all_mean(total, ctx) / max(1e-12, all_mean(n_rows, ctx))
    return total / max(1, n_rows)


def skip_draws(tower: QueryTower, sampler: NegativeSampler, gen: torch.Generator,
               n_global: int) -> None:
    """Advance ``gen`` as :func:`batch_loss` does on a global batch of ``n_global``
    rows, for a process whose shard of it is empty (the streams stay in step)."""
    if tower.training and tower.dropout > 0:
        for layer in tower.layers[:-1]:
            torch.rand((n_global, layer.out_features), generator=gen)
    if sampler.kind not in ("full", "none"):
        sampler.sample(gen, torch.zeros(0, dtype=torch.int64))


def batch_loss(tower: QueryTower, batch: Batch, sampler: NegativeSampler,
               gen: torch.Generator, num_negatives: int, gravity: float,
               timer: MatmulTimer | None = None,
               rows: tuple[torch.Tensor, int] | None = None) -> torch.Tensor:
    """The training loss of one batch: the sampler's kind picks the loss
    (``full``, ``none`` = positives only, ``hard``, or a logQ-corrected sampled softmax),
    plus ``gravity`` times the gravity penalty.  ``rows``: the batch is these rows of a
    global batch of this size (data-parallel; dropout masks are drawn for all of it)."""
    queries = tower.query(batch, gen, rows)
    kind = sampler.kind
    gravity_items = None
    if kind == "full":
        items = tower.item_matrix()
        loss = full_softmax_loss(queries, items, batch.target_rows, batch.target_items,
                                 batch.target_weights, batch.input_rows, batch.input_items,
                                 timer=timer)
        gravity_items = items
    elif kind == "none":
        pos = tower.item_rows(batch.target_items)
        loss = positives_only_loss(queries, pos, batch.target_rows, batch.target_weights,
                                   len(batch))
    else:
        known_rows = torch.cat([batch.target_rows, batch.input_rows])
        known_items = torch.cat([batch.target_items, batch.input_items])
        pos = tower.item_rows(batch.target_items)
        if kind == "hard":
            pool, pool_log_prob = sampler.sample(gen, batch.target_items)
            neg = tower.item_rows(pool)
            neg_logits = queries @ neg.T - pool_log_prob
            neg_logits = mask_accidental_hits(neg_logits, pool, known_rows, known_items)
            k = min(num_negatives, len(pool))
            neg_logits = neg_logits.topk(k, dim=1).values
            pos_logits = (queries[batch.target_rows] * pos).sum(1)
            loss = multi_positive_nll(pos_logits, batch.target_rows, batch.target_weights,
                                      neg_logits)
        else:
            cand, cand_log_prob = sampler.sample(gen, batch.target_items)
            loss = sampled_softmax_loss(queries, pos, tower.item_rows(cand), cand,
                                        cand_log_prob, batch.target_rows,
                                        batch.target_weights, known_rows, known_items)
    if gravity > 0:
        if gravity_items is None:
            gravity_items = tower.item_matrix()
        loss = loss + gravity * gravity_penalty(queries, gravity_items)
    return loss


# ----------------------------------------------------------------- checkpoints
def comparable_params(model) -> dict:
    """The parameters a checkpoint must share with the fit that resumes it, as JSON."""
    return {k: jsonable(v) for k, v in model.get_params().items()
            if k not in RESUMABLE_CHANGES}


def write_checkpoint(path, run: FitRun, params: dict, fingerprint: str) -> None:
    """Replace the checkpoint directory ``path``: model and optimiser state (torch
    state dicts, with the best epoch's model when there is one) and, as JSON, the
    parameters, the data's fingerprint, the progress and the history."""
    payload = {
        "model": run.tower.state_dict(),
        "optimizers": [opt.state_dict() for opt in run.optimizers],
    }
    if run.best_state is not None:
        payload["best_model"] = run.best_state
    if run.average_state is not None:
        payload["average_model"] = run.average_state
    meta = {
        "format": "recompare-softmax-checkpoint",
        "params": params,
        "fingerprint": fingerprint,
        "state": {k: (None if isinstance(v, float) and math.isinf(v) else v)
                  for k, v in run.state.items()},
        "history": run.history,
    }
    with atomic_dir(path, overwrite=True) as tmp:
        torch.save(payload, tmp / STATE_FILE)
        meta["state_sha256"] = sha256_of(tmp / STATE_FILE)  # torch checksums no tensor bytes
        (tmp / CHECKPOINT_FILE).write_text(json.dumps(meta, indent=2, default=json_default))


def resume(path, run: FitRun, params: dict, fingerprint: str) -> None:
    """Load into ``run`` the weights, optimiser state and progress of the checkpoint
    ``path``, written by :func:`write_checkpoint`.

    Every file is read through the guarded readers (:func:`.softmax_files.read_checkpoint`).
    Raises :class:`RecompareError` when ``path`` is no checkpoint, is damaged, or was
    written on another data set (``fingerprint``) or with other ``params`` (see
    :func:`comparable_params`).
    """
    from .softmax_files import read_checkpoint  # it imports this module

    read_checkpoint(path, run, params, fingerprint)


def jsonable(value: Any) -> Any:
    """Hyperparameters as JSON values (tuples as lists); anything else unchanged."""
    try:
        return json_default(value)
    except TypeError:
        return value


def auto_threads(batch_size: int, dim: int, n_items: int, loss: str, num_negatives: int) -> int:
    """``threads=0``: 1 for small problems, else 0 (keep torch's setting).

    Below about 0.5 GFLOP of logits work per batch, a second thread buys little, and on
    a busy machine idle-waiting OpenMP threads make each small operation wait for a
    time slice (measured here, same fit: 3-6 s on one thread; 3 s or 90 s on two,
    depending on the other jobs).
    """
    per_batch = 6.0 * batch_size * dim * n_items
    if loss == "sampled":
        per_batch = 6.0 * batch_size * dim * min(n_items, 4 * num_negatives)
    return 1 if per_batch < 5e8 else 0
