"""A softmax DNN retrieval model in torch: a query tower against static item embeddings.

Training data are query features ``x`` and a probability distribution ``p``
over items the user interacted with.  A query tower maps ``x`` to
``psi(x)`` (an MLP); the logit of item ``j`` is ``psi(x) . V_j``; the loss
compares ``p`` with ``softmax(logits)``, exactly (``loss="full"``) or through
a sample of candidates (``loss="sampled"``).  See ``docs/softmax.md``.

Masked history
--------------
The query features of a user are its history (a bag of items) and, optionally,
its side features.  An example's target items never appear in its input: each
epoch, every training user's items are split at random into an *input* part
(the bag) and a *target* part (``p``, proportional to interaction values).
The number of targets is Binomial(n, ``target_fraction``), clipped so that a
user with at least two items keeps at least one item on each side.  Input items
are the user's known positives, so they are removed from the softmax (they are
neither targets nor negatives), as they are excluded when serving.  With
probability ``history_dropout`` a user's whole history becomes the target and
the bag is empty: the tower learns to serve users from features alone (cold).

This is the only module of recompare that imports torch at module level.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from .._atomic import atomic_dir
from .._jsonutil import json_default
from ..errors import RecompareError
from .base import MODEL_FILE, Callback, Recommender, read_model_json

FEATURES = ("history", "user")
LOSSES = ("full", "sampled")
NEGATIVES = ("none", "uniform", "popularity", "in-batch", "hard")
ACTIVATIONS = ("relu", "tanh")
OPTIMIZERS = ("adam", "adagrad")
POOLINGS = ("mean", "weighted")
VALIDATE_ON = ("train", "test")

STATE_FILE = "state.pt"
ARRAYS_FILE = "arrays.npz"
CHECKPOINT_FILE = "checkpoint.json"
#: Parameters that may change when resuming from a checkpoint.
RESUMABLE_CHANGES = ("epochs", "patience", "threads")
#: Hard negatives are the top ``num_negatives`` of a uniform pool this many times larger.
HARD_POOL_FACTOR = 4
#: Validation recall is recall@this, normalised by min(k, |held-out|).
VALIDATION_K = 20
_MAX_VALIDATION_USERS = 2000
_LOGITS_ROW_BLOCK = 128


class SoftmaxDNN(Recommender):
    """Softmax DNN: query tower psi(x) over history and user features, item embeddings V.

    Parameters
    ----------
    dim : int
        Embedding dimension of queries and items (``d``).
    hidden : sequence of int
        Hidden layer sizes of the query tower; ``()`` gives a linear tower.
    activation : {"relu", "tanh"}
    dropout : float in [0, 1)
        Dropout after each hidden layer (training only).
    features : "auto" or sequence of {"history", "user"}
        Query features.  ``"auto"``: the history, plus the user features when
        the data set has some.  Asking for ``"user"`` on a data set without
        user features is an error.
    pooling : {"mean", "weighted"}
        How the history bag is pooled: plain mean of item embeddings, or mean
        weighted by interaction value.
    tie_embeddings : bool
        Use the output item embeddings V as input embeddings of the history bag.
    normalize : bool
        L2-normalise query and item embeddings (cosine scores) ...
    temperature : float > 0
        ... and divide the query by this (scores = cos / temperature).
    loss : {"full", "sampled"}
        Exact softmax over the catalogue, or a sampled one.
    negatives : {"uniform", "popularity", "in-batch", "hard", "none"}
        Negatives of the sampled loss (ignored by ``full``).  ``none`` trains on
        positives only with a logistic loss (the folding-prone objective).
    num_negatives : int
        Negatives drawn per batch (shared by its queries) for ``uniform`` and
        ``popularity``; kept per query for ``hard``.
    gravity : float >= 0
        Coefficient of the gravity penalty ``(1/(M N)) sum_i sum_j <U_i, V_j>^2``.
    epochs, batch_size, lr : training length, users per batch, learning rate
    optimizer : {"adam", "adagrad"}
    weight_decay : float >= 0
        L2 penalty on the dense tower weights (not on embeddings).
    target_fraction : float in (0, 1)
        Expected share of a user's items that become targets each epoch.
    history_dropout : float in [0, 1)
        Share of examples per epoch whose whole history is hidden (cold training).
    validation_fraction : float in [0, 1)
        Share of training users (with at least 5 items) that lend 20% of their
        items to validation (``validate_on="train"``); 0 disables validation.
    validate_on : {"train", "test"}
        ``"test"`` validates on the split's test part instead (optimistic:
        the reported test figures are then selected on themselves).
    patience : int
        Stop after this many epochs without a better validation recall@20 and
        restore the best epoch; 0 trains all epochs.
    random_state : int
    threads : int
        torch CPU threads during fit; 0: one thread when a batch is small (under about
        0.5 GFLOP of logits work, e.g. catalogues under ~10k items), torch's setting
        otherwise.  The previous setting is restored after fit.
    """

    kind = "softmax"

    def __init__(
        self,
        dim: int = 64,
        hidden: Sequence[int] = (256,),
        activation: str = "relu",
        dropout: float = 0.0,
        features: str | Sequence[str] = "auto",
        pooling: str = "mean",
        tie_embeddings: bool = False,
        normalize: bool = False,
        temperature: float = 1.0,
        loss: str = "full",
        negatives: str = "uniform",
        num_negatives: int = 256,
        gravity: float = 0.0,
        epochs: int = 100,
        batch_size: int = 128,
        lr: float = 3e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        target_fraction: float = 0.5,
        history_dropout: float = 0.05,
        validation_fraction: float = 0.1,
        validate_on: str = "train",
        patience: int = 5,
        random_state: int = 0,
        threads: int = 0,
    ) -> None:
        self.dim = dim
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.features = features
        self.pooling = pooling
        self.tie_embeddings = tie_embeddings
        self.normalize = normalize
        self.temperature = temperature
        self.loss = loss
        self.negatives = negatives
        self.num_negatives = num_negatives
        self.gravity = gravity
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.target_fraction = target_fraction
        self.history_dropout = history_dropout
        self.validation_fraction = validation_fraction
        self.validate_on = validate_on
        self.patience = patience
        self.random_state = random_state
        self.threads = threads

    #: ``cold`` is dropped per instance (after fit/load) when no user features are used:
    #: a history-only model serves every cold user the same empty-bag query (a learned
    #: popularity list), and calling that cold start would flatter it.
    protocols = frozenset({"weak", "strong", "cold"})

    def _set_protocols(self) -> None:
        cold = self.schema_.uses_user
        self.protocols = frozenset({"weak", "strong", "cold"} if cold else {"weak", "strong"})

    # ----------------------------------------------------------- validation
    def _resolved_features(self, dataset) -> tuple[str, ...]:
        has_user = dataset.user_features is not None and dataset.user_features.shape[1] > 0
        feats = self.features
        if isinstance(feats, str):
            if feats == "auto":
                return ("history", "user") if has_user else ("history",)
            feats = [f.strip() for f in feats.split(",") if f.strip()]
        feats = tuple(feats)
        unknown = [f for f in feats if f not in FEATURES]
        if unknown:
            raise RecompareError(
                f"unknown feature name(s) {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(FEATURES)} (or auto)")
        if not feats:
            raise RecompareError("features must name at least one of history, user")
        if "user" in feats and not has_user:
            raise RecompareError(
                "features 'user' requested but the data set has no user features; "
                "use --features history")
        return tuple(f for f in FEATURES if f in feats)

    def _validate(self, dataset) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise RecompareError(message)

        def is_int(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        check(is_int(self.dim) and self.dim > 0, f"dim must be a positive integer, got {self.dim}")
        hidden = _as_hidden(self.hidden)
        check(all(h > 0 for h in hidden), f"hidden sizes must be positive, got {self.hidden}")
        check(self.activation in ACTIVATIONS,
              f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        check(self.pooling in POOLINGS,
              f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        check(self.temperature > 0, f"temperature must be positive, got {self.temperature}")
        check(self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        check(self.negatives in NEGATIVES,
              f"negatives must be one of {', '.join(NEGATIVES)}, got {self.negatives!r}")
        check(is_int(self.num_negatives) and self.num_negatives > 0,
              f"num_negatives must be a positive integer, got {self.num_negatives}")
        if self.loss == "sampled" and self.negatives in ("uniform", "popularity", "hard"):
            check(self.num_negatives <= dataset.n_items,
                  f"num_negatives={self.num_negatives} is larger than the catalogue "
                  f"({dataset.n_items} items); lower num_negatives")
        check(self.gravity >= 0, f"gravity must be >= 0, got {self.gravity}")
        check(is_int(self.epochs) and self.epochs > 0,
              f"epochs must be a positive integer, got {self.epochs}")
        check(is_int(self.batch_size) and self.batch_size > 0,
              f"batch_size must be a positive integer, got {self.batch_size}")
        check(self.lr > 0, f"lr must be positive, got {self.lr}")
        check(self.optimizer in OPTIMIZERS,
              f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(0 < self.target_fraction < 1,
              f"target_fraction must be in (0, 1), got {self.target_fraction}")
        check(0 <= self.history_dropout < 1,
              f"history_dropout must be in [0, 1), got {self.history_dropout}")
        check(0 <= self.validation_fraction < 1,
              f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        check(self.validate_on in VALIDATE_ON,
              f"validate_on must be one of {', '.join(VALIDATE_ON)}, got {self.validate_on!r}")
        check(is_int(self.patience) and self.patience >= 0,
              f"patience must be a non-negative integer, got {self.patience}")
        check(is_int(self.threads) and self.threads >= 0,
              f"threads must be a non-negative integer, got {self.threads}")
        check(dataset.n_items > 1, "the data set needs at least two items")
        train = dataset.train
        check(train.nnz > 0, "the training matrix is empty")
        if self.validate_on == "test" and self.patience > 0:
            check(dataset.split is not None and dataset.split.test is not None
                  and dataset.split.test.nnz > 0,
                  "validate_on='test' needs a split with a test part "
                  "(split the data set, or validate on train)")

    def check(self, dataset) -> tuple[str, ...]:
        """Validate the parameters against ``dataset``; returns the query features used.

        Raises :class:`RecompareError` with one clear line (``fit`` calls it first).
        """
        self._validate(dataset)
        return self._resolved_features(dataset)

    # -------------------------------------------------------------- fitting
    def fit(
        self,
        dataset,
        callback: Callback | None = None,
        *,
        checkpoint_dir: str | os.PathLike | None = None,
        resume_from: str | os.PathLike | None = None,
    ) -> SoftmaxDNN:
        """Train on ``dataset.train``; returns ``self``.

        Parameters
        ----------
        dataset : Dataset
        callback : callable(dict), optional
            Receives ``{"stage": "start"|"batch"|"epoch"|"done", ...}``; epoch
            events carry ``epoch``, ``total``, ``loss``, ``validation_recall``
            (or None) and ``seconds``.
        checkpoint_dir : path, optional
            After every epoch, write model and optimizer state there (replaced atomically).
        resume_from : path, optional
            A checkpoint directory written by an earlier fit on the same data
            with the same parameters (``epochs``, ``patience``, ``threads`` may
            differ): training continues after its last epoch, giving the same
            numbers as an uninterrupted run.
        """
        features = self.check(dataset)
        old_threads = torch.get_num_threads()
        threads = int(self.threads) or self._auto_threads(dataset.n_items)
        if threads:
            torch.set_num_threads(threads)
        try:
            return self._fit(dataset, features, callback, checkpoint_dir, resume_from)
        finally:
            torch.set_num_threads(old_threads)

    def _fit(self, dataset, features, callback, checkpoint_dir, resume_from) -> SoftmaxDNN:
        emit = callback or (lambda event: None)
        start_time = time.perf_counter()
        n_users, n_items = dataset.n_users, dataset.n_items
        train = _binary_safe(dataset.train)

        schema = _FeatureSchema.build(dataset.user_features if "user" in features else None,
                                      uses_history="history" in features)
        user_cats, user_nums = schema.encode(
            dataset.user_features if schema.uses_user else None, n_rows=n_users)
        self.schema_ = schema
        self._set_protocols()

        # validation: a random slice of training users' items, never trained on
        val_users, val_target, fit_matrix = self._validation_split(dataset, train)

        tower = _Tower(n_items, self.dim, _as_hidden(self.hidden), self.activation,
                       self.dropout, schema, self.tie_embeddings, self.normalize,
                       self.temperature, sparse_out=self._sparse_output(),
                       pooling=self.pooling)
        tower.reset_parameters(_torch_generator(self.random_state, 0))
        optimizers = self._make_optimizers(tower)

        counts = np.asarray((fit_matrix != 0).sum(axis=0)).ravel().astype(np.float64)
        sampler = _NegativeSampler(self.negatives if self.loss == "sampled" else "full",
                                   self.num_negatives, counts)

        history: list[dict] = []
        state = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0}
        best_state: dict | None = None
        if resume_from is not None:
            best_state = self._resume(resume_from, dataset, tower, optimizers, state, history)

        active_users = np.flatnonzero(np.diff(fit_matrix.indptr) > 0)
        timer = _MatmulTimer()
        self.tower_ = tower
        emit({"stage": "start", "total": self.epochs, "start_epoch": state["epoch"],
              "users": len(active_users), "items": n_items, "features": list(features),
              "validation_users": len(val_users)})
        stopped_early = False
        for epoch in range(state["epoch"] + 1, self.epochs + 1):
            if self.patience and state["bad_epochs"] >= self.patience:
                stopped_early = True
                break
            t0, c0 = time.perf_counter(), time.process_time()
            loss = self._run_epoch(tower, optimizers, sampler, fit_matrix, active_users,
                                   user_cats, user_nums, epoch, timer, emit)
            val = None
            if len(val_users):
                val = self._validation_recall(tower, fit_matrix, user_cats, user_nums,
                                              val_users, val_target)
                if val > state["best_score"]:
                    state.update(best_score=val, best_epoch=epoch, bad_epochs=0)
                    best_state = {k: v.detach().clone() for k, v in tower.state_dict().items()}
                else:
                    state["bad_epochs"] += 1
            state["epoch"] = epoch
            record = {"epoch": epoch, "loss": loss, "validation_recall": val,
                      "seconds": time.perf_counter() - t0,
                      "cpu_seconds": time.process_time() - c0}
            history.append(record)
            if checkpoint_dir is not None:
                self._write_checkpoint(checkpoint_dir, dataset, tower, optimizers, state,
                                       history, best_state)
            emit({"stage": "epoch", "total": self.epochs, **record,
                  "best_epoch": state["best_epoch"] or None})
        if self.patience and state["bad_epochs"] >= self.patience:
            stopped_early = True
        if best_state is not None and self.patience:
            tower.load_state_dict(best_state)

        self._remember(dataset)
        self.n_features_ = list(features)
        self.query_embeddings_ = self._embed(tower, train, user_cats, user_nums)
        self.item_embeddings_ = tower.item_matrix().detach().numpy().copy()
        matmul = timer.summary()
        self.fit_info_ = {
            "epochs_run": state["epoch"],
            "best_epoch": state["best_epoch"] or None,
            "best_validation_recall": (state["best_score"]
                                       if state["best_score"] > -math.inf else None),
            "validation": (f"recall@{VALIDATION_K} on {len(val_users)} users "
                           f"({self.validate_on})" if len(val_users) else None),
            "stopped_early": stopped_early,
            "features": list(features),
            "train_seconds": time.perf_counter() - start_time,
            "history": history,
            **({"logits_matmul": matmul} if matmul else {}),
        }
        emit({"stage": "done", **{k: v for k, v in self.fit_info_.items() if k != "history"}})
        return self

    def _auto_threads(self, n_items: int) -> int:
        """``threads=0``: 1 for small problems, else 0 (keep torch's setting).

        Below about 0.5 GFLOP of logits work per batch, a second thread buys little, and on
        a busy machine idle-waiting OpenMP threads make each small operation wait for a
        time slice (measured here, same fit: 3-6 s on one thread; 3 s or 90 s on two,
        depending on the other jobs).
        """
        per_batch = 6.0 * self.batch_size * self.dim * n_items
        if self.loss == "sampled":
            per_batch = 6.0 * self.batch_size * self.dim * min(n_items, 4 * self.num_negatives)
        return 1 if per_batch < 5e8 else 0

    def _sparse_output(self) -> bool:
        # sampled losses touch a few item rows per batch: sparse gradients keep the
        # optimiser from visiting the whole catalogue; gravity's gradient is dense
        return self.loss == "sampled" and self.gravity == 0

    def _make_optimizers(self, tower: _Tower) -> list[torch.optim.Optimizer]:
        dense = [p for n, p in tower.named_parameters() if n not in tower.sparse_names()]
        sparse = [p for n, p in tower.named_parameters() if n in tower.sparse_names()]
        out: list[torch.optim.Optimizer] = []
        if self.optimizer == "adam":
            out.append(torch.optim.Adam(dense, lr=self.lr, weight_decay=self.weight_decay))
            if sparse:
                out.append(torch.optim.SparseAdam(sparse, lr=self.lr))
        else:
            out.append(torch.optim.Adagrad(dense, lr=self.lr, weight_decay=self.weight_decay))
            if sparse:
                out.append(torch.optim.Adagrad(sparse, lr=self.lr))
        return out

    def _validation_split(self, dataset, train: sp.csr_matrix):
        """Users to validate on, their held-out items, and the matrix to train on."""
        empty = np.zeros(0, dtype=np.int64)
        if self.patience == 0 and self.validation_fraction == 0:
            return empty, None, train
        if self.validate_on == "test":
            if dataset.split is None or dataset.split.test is None:
                return empty, None, train
            test = dataset.split.test.tocsr()
            users = np.flatnonzero(np.diff(test.indptr) > 0)
            rng = np.random.default_rng([self.random_state, 7])
            if len(users) > _MAX_VALIDATION_USERS:
                users = np.sort(rng.choice(users, _MAX_VALIDATION_USERS, replace=False))
            return users, test, train
        if self.validation_fraction == 0:
            return empty, None, train
        rng = np.random.default_rng([self.random_state, 7])
        n_per_user = np.diff(train.indptr)
        eligible = np.flatnonzero(n_per_user >= 5)
        n_val = min(_MAX_VALIDATION_USERS, round(self.validation_fraction * len(eligible)))
        if n_val == 0:
            return empty, None, train
        users = np.sort(rng.choice(eligible, n_val, replace=False))
        coo_rows = np.repeat(np.arange(train.shape[0]), n_per_user)
        chosen = np.zeros(train.shape[0], dtype=bool)
        chosen[users] = True
        held = np.zeros(train.nnz, dtype=bool)
        draws = rng.random(train.nnz)
        held[chosen[coo_rows]] = draws[chosen[coo_rows]] < 0.2
        # every validation user holds out at least one item and keeps at least one
        held = _clip_per_row(held, draws, train.indptr, users, low=1, high_offset=1)
        val = sp.csr_matrix((train.data[held], (coo_rows[held], train.indices[held])),
                            shape=train.shape)
        keep = ~held
        fit_matrix = sp.csr_matrix((train.data[keep], (coo_rows[keep], train.indices[keep])),
                                   shape=train.shape)
        return users, val, fit_matrix

    # ---------------------------------------------------------------- epoch
    def _run_epoch(self, tower, optimizers, sampler, matrix, active_users, user_cats, user_nums,
                   epoch, timer, emit) -> float:
        rng = np.random.default_rng([self.random_state, 1, epoch])
        gen = _torch_generator(self.random_state, 1000 + epoch)
        inputs, targets = _mask_history(matrix, self.target_fraction, self.history_dropout, rng)
        order = rng.permutation(active_users)
        tower.train()
        total, n_rows = 0.0, 0
        n_batches = math.ceil(len(order) / self.batch_size)
        report_every = max(1, n_batches // 10)
        for b in range(n_batches):
            users = order[b * self.batch_size:(b + 1) * self.batch_size]
            batch = _Batch.build(users, inputs, targets, user_cats, user_nums)
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss = self._batch_loss(tower, batch, sampler, gen, timer)
            loss.backward()
            for opt in optimizers:
                opt.step()
            total += float(loss.detach()) * len(users)
            n_rows += len(users)
            if (b + 1) % report_every == 0 and b + 1 < n_batches:
                emit({"stage": "batch", "epoch": epoch, "batch": b + 1, "batches": n_batches})
        return total / max(1, n_rows)

    def _batch_loss(self, tower: _Tower, batch: _Batch, sampler: _NegativeSampler,
                    gen: torch.Generator, timer: _MatmulTimer | None = None) -> torch.Tensor:
        queries = tower.query(batch, gen)
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
                k = min(self.num_negatives, len(pool))
                neg_logits = neg_logits.topk(k, dim=1).values
                pos_logits = (queries[batch.target_rows] * pos).sum(1)
                loss = multi_positive_nll(pos_logits, batch.target_rows, batch.target_weights,
                                          neg_logits)
            else:
                cand, cand_log_prob = sampler.sample(gen, batch.target_items)
                loss = sampled_softmax_loss(queries, pos, tower.item_rows(cand), cand,
                                            cand_log_prob, batch.target_rows,
                                            batch.target_weights, known_rows, known_items)
        if self.gravity > 0:
            if gravity_items is None:
                gravity_items = tower.item_matrix()
            loss = loss + self.gravity * gravity_penalty(queries, gravity_items)
        return loss

    # ------------------------------------------------------------ validation
    def _validation_recall(self, tower, matrix, user_cats, user_nums, users, target) -> float:
        queries = self._embed(tower, matrix, user_cats, user_nums, users)
        items = tower.item_matrix().detach().numpy()
        from .topk import topk_dot

        k = min(VALIDATION_K, matrix.shape[1])
        ids, _ = topk_dot(queries, items, k, exclude=matrix[users])
        return _normalised_recall(ids, target[users], k)

    def _embed(self, tower, matrix, user_cats, user_nums, users=None,
               chunk: int = 4096) -> np.ndarray:
        """Query embeddings from full histories (eval mode), ndarray (n, dim) float32."""
        users = np.arange(matrix.shape[0]) if users is None else np.asarray(users)
        tower.eval()
        out = np.empty((len(users), self.dim), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(users), chunk):
                rows = users[start:start + chunk]
                batch = _Batch.build(rows, matrix, None, user_cats, user_nums)
                out[start:start + len(rows)] = tower.query(batch, None).numpy()
        tower.train()
        return out

    # ----------------------------------------------------------- checkpoints
    def _comparable_params(self) -> dict:
        return {k: _jsonable(v) for k, v in self.get_params().items()
                if k not in RESUMABLE_CHANGES}

    def _write_checkpoint(self, path, dataset, tower, optimizers, state, history,
                          best_state) -> None:
        payload = {
            "model": tower.state_dict(),
            "optimizers": [opt.state_dict() for opt in optimizers],
        }
        if best_state is not None:
            payload["best_model"] = best_state
        meta = {
            "format": "recompare-softmax-checkpoint",
            "params": self._comparable_params(),
            "fingerprint": dataset.fingerprint,
            "state": {k: (None if isinstance(v, float) and math.isinf(v) else v)
                      for k, v in state.items()},
            "history": history,
        }
        with atomic_dir(path, overwrite=True) as tmp:
            torch.save(payload, tmp / STATE_FILE)
            (tmp / CHECKPOINT_FILE).write_text(json.dumps(meta, indent=2, default=json_default))

    def _resume(self, path, dataset, tower, optimizers, state, history) -> dict | None:
        root = Path(path)
        meta_file = root / CHECKPOINT_FILE
        if not meta_file.is_file():
            raise RecompareError(f"{root} is not a softmax checkpoint (no {CHECKPOINT_FILE})")
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError as exc:
            raise RecompareError(f"cannot parse {meta_file}: {exc}") from None
        if meta.get("fingerprint") != dataset.fingerprint:
            raise RecompareError(
                f"checkpoint {root} was written while training on another data set "
                f"(fingerprint {meta.get('fingerprint')}, data set {dataset.fingerprint})")
        mine = self._comparable_params()
        theirs = meta.get("params", {})
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differ:
            raise RecompareError(
                f"checkpoint {root} was written with different parameters "
                f"({', '.join(differ)}); only {', '.join(RESUMABLE_CHANGES)} may change")
        payload = _torch_load(root / STATE_FILE)
        tower.load_state_dict(payload["model"])
        for opt, sd in zip(optimizers, payload["optimizers"]):
            opt.load_state_dict(sd)
        saved = meta.get("state", {})
        state.update(epoch=int(saved.get("epoch", 0)),
                     best_score=(-math.inf if saved.get("best_score") is None
                                 else float(saved["best_score"])),
                     best_epoch=int(saved.get("best_epoch") or 0),
                     bad_epochs=int(saved.get("bad_epochs", 0)))
        history.extend(meta.get("history", []))
        return payload.get("best_model")

    # ------------------------------------------------------------ embedding
    def query_embeddings(self, users: np.ndarray | None = None) -> np.ndarray:
        """Query embeddings of training users (full training history + features).

        Returns ndarray of shape (n_users, dim), float32; computed once at the end
        of ``fit``, so that serving a known user is a lookup.
        """
        self._check_fitted()
        if users is None:
            return self.query_embeddings_
        return self.query_embeddings_[np.asarray(users, dtype=np.int64)]

    def item_embeddings(self) -> np.ndarray:
        """Item embeddings V (L2-normalised when ``normalize``), shape (n_items, dim)."""
        self._check_fitted()
        return self.item_embeddings_

    def serving_nbytes(self) -> int:
        """Bytes needed to serve any query: the static item embeddings plus every
        parameter of the query tower (its input embeddings included), since the
        query embedding is computed at request time.  The cached embeddings of
        training users are an optional extra, not counted."""
        self._check_fitted()
        params = sum(t.numel() * t.element_size() for t in self.tower_.state_dict().values())
        return int(self.item_embeddings_.nbytes + params)

    def embed_new_users(
        self, history: sp.csr_matrix | None, features: pd.DataFrame | None = None
    ) -> np.ndarray:
        """Query embeddings of users unseen in training, computed by the tower now.

        Parameters
        ----------
        history : csr_matrix of shape (n_new, n_items) or None
            Fold-in history (``strong``); None or empty rows give an empty bag (``cold``).
        features : DataFrame with n_new rows, or None
            The training data set's user feature columns.  None: every feature
            unknown (categorical -> the unknown bucket, numeric -> the training mean).

        Returns
        -------
        ndarray of shape (n_new, dim), float32
        """
        self._check_fitted()
        n_new = None
        if history is not None:
            history = sp.csr_matrix(history, dtype=np.float32)
            if history.shape[1] != self.n_items_:
                raise RecompareError(
                    f"history has {history.shape[1]} item columns, the model "
                    f"{self.n_items_} items")
            n_new = history.shape[0]
        if features is not None:
            if n_new is not None and len(features) != n_new:
                raise RecompareError(
                    f"features have {len(features)} rows but history has {n_new}")
            n_new = len(features)
        if n_new is None:
            raise RecompareError("embed_new_users needs a history matrix or a features table")
        if history is None:
            history = sp.csr_matrix((n_new, self.n_items_), dtype=np.float32)
        cats, nums = self.schema_.encode(features, n_rows=n_new)
        return self._embed(self.tower_, history, cats, nums)

    def export_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays for ``recompare export``: item and training-user query embeddings."""
        self._check_fitted()
        return {"item_embeddings": self.item_embeddings_,
                "query_embeddings": self.query_embeddings_}

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``model.json``, ``state.pt`` (state_dict) and ``arrays.npz``."""
        self._check_fitted()
        meta = self._model_json(schema=self.schema_.to_json(), features=self.n_features_)
        meta["params"] = {k: _jsonable(v) for k, v in meta["params"].items()}
        with atomic_dir(path, overwrite=overwrite) as tmp:
            torch.save(self.tower_.state_dict(), tmp / STATE_FILE)
            np.savez(tmp / ARRAYS_FILE, query_embeddings=self.query_embeddings_,
                     item_embeddings=self.item_embeddings_, **self.schema_.arrays())
            (tmp / MODEL_FILE).write_text(json.dumps(meta, indent=2, default=json_default) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SoftmaxDNN:
        """Read a directory written by :meth:`save` (``weights_only`` torch load, no pickle)."""
        root = Path(path)
        meta = read_model_json(root)
        if meta.get("kind") != cls.kind:
            raise RecompareError(f"{root} holds a '{meta.get('kind')}' model, not '{cls.kind}'")
        params = dict(meta["params"])
        if isinstance(params.get("hidden"), list):
            params["hidden"] = tuple(params["hidden"])
        if isinstance(params.get("features"), list):
            params["features"] = tuple(params["features"])
        model = cls(**params)
        try:
            with np.load(root / ARRAYS_FILE, allow_pickle=False) as arrays:
                data = {k: arrays[k] for k in arrays.files}
        except (OSError, ValueError) as exc:
            raise RecompareError(f"cannot read {root / ARRAYS_FILE}: {exc}") from None
        schema = _FeatureSchema.from_json(meta["schema"], data)
        tower = _Tower(int(meta["n_items"]), model.dim, _as_hidden(model.hidden),
                       model.activation, model.dropout, schema, model.tie_embeddings,
                       model.normalize, model.temperature, sparse_out=model._sparse_output(),
                       pooling=model.pooling)
        tower.load_state_dict(_torch_load(root / STATE_FILE))
        tower.eval()
        model.schema_ = schema
        model._set_protocols()
        model.tower_ = tower
        model.fingerprint_ = meta["fingerprint"]
        model.n_users_ = int(meta["n_users"])
        model.n_items_ = int(meta["n_items"])
        model.n_features_ = list(meta.get("features", []))
        model.fit_info_ = meta.get("fit_info", {})
        model.query_embeddings_ = data["query_embeddings"]
        model.item_embeddings_ = data["item_embeddings"]
        return model


# ====================================================================== losses
class _MatmulTimer:
    """Accumulates the time and flops of the full-softmax logits' matrix products."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.flops = 0.0

    def add(self, start: tuple[float, float], flops: float) -> None:
        self.seconds += time.perf_counter() - start[0]
        self.cpu_seconds += time.process_time() - start[1]
        self.flops += flops

    def summary(self) -> dict | None:
        if not self.flops:
            return None
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds,
                "gflop": self.flops / 1e9,
                "gflops_per_second": self.flops / self.seconds / 1e9 if self.seconds else None}


class _TimedLogits(torch.autograd.Function):
    """``queries @ items.T`` whose forward and backward products are timed."""

    @staticmethod
    def forward(ctx, queries, items, timer):  # type: ignore[override]
        ctx.save_for_backward(queries, items)
        ctx.timer = timer
        start = (time.perf_counter(), time.process_time())
        # blocks of query rows: with a small inner dimension (d) BLAS ran this product
        # about twice as fast in row blocks as in one call (measured, d = 64)
        out = torch.empty((queries.shape[0], items.shape[0]), dtype=queries.dtype)
        items_t = items.T
        for begin in range(0, queries.shape[0], _LOGITS_ROW_BLOCK):
            stop = begin + _LOGITS_ROW_BLOCK
            torch.mm(queries[begin:stop], items_t, out=out[begin:stop])
        if timer is not None:
            timer.add(start, 2.0 * queries.shape[0] * queries.shape[1] * items.shape[0])
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        queries, items = ctx.saved_tensors
        timer = ctx.timer
        start = (time.perf_counter(), time.process_time())
        grad_q = grad @ items if ctx.needs_input_grad[0] else None
        grad_v = grad.T @ queries if ctx.needs_input_grad[1] else None
        if timer is not None:
            n_products = int(grad_q is not None) + int(grad_v is not None)
            timer.add(start, 2.0 * n_products * queries.shape[0] * queries.shape[1]
                      * items.shape[0])
        return grad_q, grad_v, None


def full_softmax_loss(
    queries: torch.Tensor,
    items: torch.Tensor,
    target_rows: torch.Tensor,
    target_items: torch.Tensor,
    target_weights: torch.Tensor,
    exclude_rows: torch.Tensor | None = None,
    exclude_items: torch.Tensor | None = None,
    timer: _MatmulTimer | None = None,
) -> torch.Tensor:
    """Exact softmax cross-entropy ``-sum_j p_j log softmax(U V^T)_j``, mean over queries.

    Parameters
    ----------
    queries : Tensor of shape (B, d)
    items : Tensor of shape (N, d)
    target_rows, target_items, target_weights : Tensors of shape (P,)
        The distribution p as (query row, item, p) triples; p sums to 1 per row.
    exclude_rows, exclude_items : Tensors of shape (E,), optional
        (row, item) pairs removed from the softmax (the query's input items).
    """
    logits = _TimedLogits.apply(queries, items, timer)  # one (B, d) x (d, N) product
    if exclude_rows is not None and len(exclude_rows):
        logits = logits.index_put((exclude_rows, exclude_items),
                                  torch.tensor(-math.inf, dtype=logits.dtype))
    log_partition = torch.logsumexp(logits, dim=1)
    pos = logits[target_rows, target_items]
    expected = torch.zeros(len(queries), dtype=logits.dtype).index_add(
        0, target_rows, target_weights * pos)
    return (log_partition - expected).mean()


def multi_positive_nll(
    pos_logits: torch.Tensor,
    target_rows: torch.Tensor,
    target_weights: torch.Tensor,
    neg_logits: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy of p against a softmax over each row's positives and negatives.

    Parameters
    ----------
    pos_logits : Tensor of shape (P,)
        Logit of each (row, positive) pair, in the order of ``target_rows``.
    target_rows, target_weights : Tensors of shape (P,)
    neg_logits : Tensor of shape (B, K)
        Logits of each row's negatives, already corrected; -inf for removed ones.

    Returns
    -------
    Tensor, scalar: ``mean_rows [logsumexp(pos_row, neg_row) - sum_j p_j pos_j]``.
    """
    n_rows = neg_logits.shape[0]
    with torch.no_grad():  # the shift only keeps exp() finite; the result does not depend on it
        dtype = pos_logits.dtype
        shift = neg_logits.max(dim=1).values if neg_logits.shape[1] else torch.full(
            (n_rows,), -math.inf, dtype=dtype)
        pos_max = torch.full((n_rows,), -math.inf, dtype=dtype).scatter_reduce(
            0, target_rows, pos_logits.detach(), reduce="amax")
        shift = torch.maximum(shift, pos_max)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    neg_sum = torch.exp(neg_logits - shift[:, None]).sum(dim=1)
    pos_sum = torch.zeros(n_rows, dtype=pos_logits.dtype).index_add(
        0, target_rows, torch.exp(pos_logits - shift[target_rows]))
    log_partition = torch.log(neg_sum + pos_sum) + shift
    expected = torch.zeros(n_rows, dtype=pos_logits.dtype).index_add(
        0, target_rows, target_weights * pos_logits)
    return (log_partition - expected).mean()


def mask_accidental_hits(
    neg_logits: torch.Tensor,
    candidates: torch.Tensor,
    known_rows: torch.Tensor,
    known_items: torch.Tensor,
) -> torch.Tensor:
    """Set to -inf the logit of every candidate that is a positive of that row.

    Parameters
    ----------
    neg_logits : Tensor of shape (B, K)
    candidates : Tensor of shape (K,), sorted, unique item indices (shared by the rows)
    known_rows, known_items : Tensors of shape (E,)
        The rows' positives (targets and input items).
    """
    if not len(candidates) or not len(known_items):
        return neg_logits
    where = torch.searchsorted(candidates, known_items).clamp(max=len(candidates) - 1)
    hit = candidates[where] == known_items
    if not bool(hit.any()):
        return neg_logits
    return neg_logits.index_put((known_rows[hit], where[hit]),
                                torch.tensor(-math.inf, dtype=neg_logits.dtype))


def sampled_softmax_loss(
    queries: torch.Tensor,
    target_embeddings: torch.Tensor,
    candidate_embeddings: torch.Tensor,
    candidates: torch.Tensor,
    candidate_log_prob: torch.Tensor,
    target_rows: torch.Tensor,
    target_weights: torch.Tensor,
    known_rows: torch.Tensor,
    known_items: torch.Tensor,
) -> torch.Tensor:
    """Sampled softmax: each row's positives plus shared candidates, logQ-corrected.

    The logit of candidate ``j`` becomes ``psi(x) . V_j - log Q_j`` where ``Q_j``
    is the probability that ``j`` is among the batch's candidates; candidates that
    are positives of a row (accidental hits) are removed from that row.  With every
    item as a candidate (``Q = 1``) this equals :func:`full_softmax_loss`.

    Parameters
    ----------
    queries : Tensor of shape (B, d)
    target_embeddings : Tensor of shape (P, d), embeddings of the target items
    candidate_embeddings : Tensor of shape (K, d)
    candidates : Tensor of shape (K,), sorted unique item indices
    candidate_log_prob : Tensor of shape (K,), ``log Q``
    target_rows, target_weights : Tensors of shape (P,)
    known_rows, known_items : Tensors of shape (E,), every positive of every row
    """
    pos_logits = (queries[target_rows] * target_embeddings).sum(dim=1)
    neg_logits = queries @ candidate_embeddings.T - candidate_log_prob
    neg_logits = mask_accidental_hits(neg_logits, candidates, known_rows, known_items)
    return multi_positive_nll(pos_logits, target_rows, target_weights, neg_logits)


def positives_only_loss(
    queries: torch.Tensor,
    target_embeddings: torch.Tensor,
    target_rows: torch.Tensor,
    target_weights: torch.Tensor,
    n_rows: int,
) -> torch.Tensor:
    """Logistic loss on positives only: ``mean_rows sum_j p_j log(1 + exp(-psi(x) . V_j))``.

    Nothing outside a query's own positives enters its loss, so the loss falls
    by pushing every score up: the folding-prone objective (negatives ``none``).
    """
    pos_logits = (queries[target_rows] * target_embeddings).sum(dim=1)
    per_row = torch.zeros(n_rows, dtype=pos_logits.dtype).index_add(
        0, target_rows, target_weights * F.softplus(-pos_logits))
    return per_row.mean()


def gravity_penalty(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``(1/(M N)) sum_i sum_j <U_i, V_j>^2`` through the Gram matrices, O((M + N) d^2).

    Parameters
    ----------
    queries : Tensor of shape (M, d)
    items : Tensor of shape (N, d)
    """
    m, n = queries.shape[0], items.shape[0]
    return ((queries.T @ queries) * (items.T @ items)).sum() / (m * n)


# ==================================================================== sampling
class _NegativeSampler:
    """Draws each batch's negative candidates and their log inclusion probability."""

    def __init__(self, kind: str, num_negatives: int, item_counts: np.ndarray) -> None:
        self.kind = kind
        self.n_items = len(item_counts)
        self.num_negatives = num_negatives
        if kind == "popularity":
            # Q proportional to training count + 1 (every item can be drawn);
            # the cumulative table makes a draw O(log N), not O(N)
            weights = item_counts + 1.0
            self.q = torch.from_numpy(weights / weights.sum())
            self.cdf = torch.from_numpy(np.cumsum(weights) / weights.sum())
        elif kind == "in-batch":
            total = max(1.0, float(item_counts.sum()))
            self.q = torch.from_numpy(np.maximum(item_counts, 0.5) / total)

    def sample(self, gen: torch.Generator, target_items: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted unique candidates (K,) and ``log Q`` (K,), float32."""
        n = self.n_items
        if self.kind in ("uniform", "hard"):
            draws = self.num_negatives * (HARD_POOL_FACTOR if self.kind == "hard" else 1)
            if draws >= n:
                cand = torch.arange(n)
                return cand, torch.zeros(n)
            cand = torch.unique(torch.randint(n, (draws,), generator=gen))
            # inclusion probability of one item in `draws` uniform draws
            log_q = math.log(-math.expm1(draws * math.log1p(-1.0 / n)))
            return cand, torch.full((len(cand),), log_q)
        if self.kind == "popularity":
            u = torch.rand(self.num_negatives, generator=gen, dtype=torch.float64)
            idx = torch.searchsorted(self.cdf, u).clamp(max=n - 1)
            cand = torch.unique(idx)
            return cand, _log_inclusion(self.q[cand], self.num_negatives)
        if self.kind == "in-batch":
            cand = torch.unique(target_items)
            return cand, _log_inclusion(self.q[cand], len(target_items))
        raise AssertionError(self.kind)


def _log_inclusion(q: torch.Tensor, draws: int) -> torch.Tensor:
    """log P(item drawn at least once in ``draws`` draws) = log(1 - (1 - q)^draws)."""
    q = q.clamp(max=1.0 - 1e-12)
    return torch.log(-torch.expm1(draws * torch.log1p(-q))).to(torch.float32)


# ======================================================================= tower
class _FeatureSchema:
    """Which query features a model uses, and how user features are encoded.

    Categorical columns map their training values to 1..V (0 = unknown);
    numeric columns are standardised with the training mean and standard
    deviation (missing -> 0, the mean).
    """

    def __init__(self, uses_history: bool, categorical: dict[str, np.ndarray],
                 numeric: list[str], mean: np.ndarray, std: np.ndarray) -> None:
        self.uses_history = uses_history
        self.categorical = categorical
        self.numeric = numeric
        self.mean = mean
        self.std = std

    @property
    def uses_user(self) -> bool:
        return bool(self.categorical or self.numeric)

    @classmethod
    def build(cls, frame: pd.DataFrame | None, uses_history: bool) -> _FeatureSchema:
        categorical: dict[str, np.ndarray] = {}
        numeric: list[str] = []
        means, stds = [], []
        if frame is not None:
            for col in frame.columns:
                values = frame[col]
                if pd.api.types.is_numeric_dtype(values) and not isinstance(
                        values.dtype, pd.CategoricalDtype):
                    v = values.to_numpy(dtype=np.float64)
                    finite = v[np.isfinite(v)]
                    numeric.append(str(col))
                    means.append(finite.mean() if len(finite) else 0.0)
                    sd = finite.std() if len(finite) else 1.0
                    stds.append(sd if sd > 0 else 1.0)
                else:
                    categorical[str(col)] = np.unique(values.astype(str).to_numpy()).astype(str)
        return cls(uses_history, categorical, numeric,
                   np.asarray(means, dtype=np.float64), np.asarray(stds, dtype=np.float64))

    def encode(self, frame: pd.DataFrame | None, n_rows: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Integer codes (n, n_categorical) and standardised numbers (n, n_numeric)."""
        if frame is not None:
            n_rows = len(frame)
            missing = [c for c in list(self.categorical) + self.numeric if c not in frame.columns]
            if missing:
                raise RecompareError(f"user features lack column(s): {', '.join(missing)}")
        n_rows = int(n_rows or 0)
        cats = np.zeros((n_rows, len(self.categorical)), dtype=np.int64)
        nums = np.zeros((n_rows, len(self.numeric)), dtype=np.float32)
        if frame is None:
            return cats, nums
        for c, (name, vocab) in enumerate(self.categorical.items()):
            values = frame[name].astype(str).to_numpy().astype(str)
            pos = np.searchsorted(vocab, values).clip(max=max(0, len(vocab) - 1))
            found = (vocab[pos] == values) if len(vocab) else np.zeros(n_rows, bool)
            cats[:, c] = np.where(found, pos + 1, 0)
        for c, name in enumerate(self.numeric):
            v = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
            z = (v - self.mean[c]) / self.std[c]
            nums[:, c] = np.where(np.isfinite(z), z, 0.0)
        return cats, nums

    def to_json(self) -> dict:
        return {"uses_history": self.uses_history, "categorical": list(self.categorical),
                "numeric": self.numeric, "mean": self.mean.tolist(), "std": self.std.tolist()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"vocab_{i}": vocab for i, vocab in enumerate(self.categorical.values())}

    @classmethod
    def from_json(cls, meta: dict, arrays: dict[str, np.ndarray]) -> _FeatureSchema:
        categorical = {name: arrays[f"vocab_{i}"].astype(str)
                       for i, name in enumerate(meta["categorical"])}
        return cls(bool(meta["uses_history"]), categorical, list(meta["numeric"]),
                   np.asarray(meta["mean"], dtype=np.float64),
                   np.asarray(meta["std"], dtype=np.float64))


@dataclass
class _Batch:
    """One batch of queries: the history bag, user features and targets (flattened)."""

    bag_items: torch.Tensor      # (I,) input item indices
    bag_offsets: torch.Tensor    # (B,) start of each row's bag in bag_items
    bag_weights: torch.Tensor    # (I,) interaction values / their sum in the bag
    input_rows: torch.Tensor     # (I,) row of each input item
    input_items: torch.Tensor    # (I,) same as bag_items
    target_rows: torch.Tensor    # (P,)
    target_items: torch.Tensor   # (P,)
    target_weights: torch.Tensor  # (P,) p, summing to 1 per row
    cats: torch.Tensor           # (B, n_categorical)
    nums: torch.Tensor           # (B, n_numeric)

    def __len__(self) -> int:
        return len(self.bag_offsets)

    @classmethod
    def build(cls, users: np.ndarray, inputs: sp.csr_matrix, targets: sp.csr_matrix | None,
              user_cats: np.ndarray, user_nums: np.ndarray) -> _Batch:
        inp = inputs[users]
        n = len(users)
        in_rows = np.repeat(np.arange(n), np.diff(inp.indptr))
        if targets is not None:
            tgt = targets[users]
            t_rows = np.repeat(np.arange(n), np.diff(tgt.indptr))
            t_vals = tgt.data.astype(np.float64)
            row_sum = np.bincount(t_rows, weights=t_vals, minlength=n)
            t_weights = (t_vals / row_sum[t_rows]).astype(np.float32)
            t_items = tgt.indices
        else:
            t_rows = t_items = np.zeros(0, dtype=np.int64)
            t_weights = np.zeros(0, dtype=np.float32)
        items = torch.from_numpy(inp.indices.astype(np.int64))
        # weights of a value-weighted mean: each bag's values divided by their sum
        in_vals = inp.data.astype(np.float64)
        in_sum = np.bincount(in_rows, weights=in_vals, minlength=n)
        bag_weights = (in_vals / np.where(in_sum > 0, in_sum, 1.0)[in_rows]).astype(np.float32)
        return cls(
            bag_items=items,
            bag_offsets=torch.from_numpy(inp.indptr[:-1].astype(np.int64)),
            bag_weights=torch.from_numpy(bag_weights),
            input_rows=torch.from_numpy(in_rows.astype(np.int64)),
            input_items=items,
            target_rows=torch.from_numpy(t_rows.astype(np.int64)),
            target_items=torch.from_numpy(np.asarray(t_items, dtype=np.int64)),
            target_weights=torch.from_numpy(t_weights),
            cats=torch.from_numpy(user_cats[users]),
            nums=torch.from_numpy(user_nums[users]),
        )


class _Tower(nn.Module):
    """Item embeddings V and the query tower psi(x) = MLP([bag(x), features(x)])."""

    def __init__(self, n_items: int, dim: int, hidden: tuple[int, ...], activation: str,
                 dropout: float, schema: _FeatureSchema, tie: bool, normalize: bool,
                 temperature: float, sparse_out: bool, pooling: str = "mean") -> None:
        super().__init__()
        self.pooling = pooling
        self.n_items, self.dim = n_items, dim
        self.schema = schema
        self.tie = tie and schema.uses_history
        self.normalize, self.temperature = normalize, temperature
        self.sparse_out = sparse_out
        self.dropout = dropout
        self.act = torch.tanh if activation == "tanh" else torch.relu
        self.item_out = nn.Parameter(torch.empty(n_items, dim))
        width = 0
        if schema.uses_history:
            if not self.tie:
                self.item_in = nn.Parameter(torch.empty(n_items, dim))
            width += dim
        self.cat_embeddings = nn.ModuleList()
        for vocab in schema.categorical.values():
            size = len(vocab) + 1
            emb_dim = int(min(16, max(2, round(1.6 * size ** 0.56))))
            self.cat_embeddings.append(nn.Embedding(size, emb_dim))
            width += emb_dim
        width += len(schema.numeric)
        sizes = [width, *hidden, dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def sparse_names(self) -> set[str]:
        names = {"item_in"} if (self.schema.uses_history and not self.tie) else set()
        if self.sparse_out:
            names.add("item_out")
        return names

    def reset_parameters(self, gen: torch.Generator) -> None:
        with torch.no_grad():
            self.item_out.normal_(0.0, 1.0 / math.sqrt(self.dim), generator=gen)
            if hasattr(self, "item_in"):
                self.item_in.normal_(0.0, 1.0 / math.sqrt(self.dim), generator=gen)
            for emb in self.cat_embeddings:
                emb.weight.normal_(0.0, 1.0 / math.sqrt(emb.embedding_dim), generator=gen)
            for layer in self.layers:
                bound = math.sqrt(6.0 / (layer.in_features + layer.out_features))  # Glorot
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.zero_()

    def _input_table(self) -> torch.Tensor:
        return self.item_out if self.tie else self.item_in

    def query(self, batch: _Batch, gen: torch.Generator | None) -> torch.Tensor:
        """psi(x) of each row of the batch, Tensor (B, dim); dropout when gen is given."""
        parts = []
        if self.schema.uses_history:
            sparse = "item_in" in self.sparse_names() or (self.tie and self.sparse_out)
            weighted = batch.bag_weights if self.pooling == "weighted" else None
            bag = F.embedding_bag(batch.bag_items, self._input_table(), batch.bag_offsets,
                                  mode="sum" if weighted is not None else "mean",
                                  per_sample_weights=weighted, sparse=sparse)
            parts.append(bag)
        for c, emb in enumerate(self.cat_embeddings):
            parts.append(emb(batch.cats[:, c]))
        if self.schema.numeric:
            parts.append(batch.nums)
        h = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.act(h)
                if gen is not None and self.training and self.dropout > 0:
                    keep = torch.rand(h.shape, generator=gen) >= self.dropout
                    h = h * keep / (1.0 - self.dropout)
        if self.normalize:
            h = F.normalize(h, dim=1) / self.temperature
        return h

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        """Output embeddings of some items, Tensor (len(items), dim)."""
        rows = F.embedding(items, self.item_out, sparse=self.sparse_out)
        return F.normalize(rows, dim=1) if self.normalize else rows

    def item_matrix(self) -> torch.Tensor:
        """All output embeddings V, Tensor (N, dim)."""
        return F.normalize(self.item_out, dim=1) if self.normalize else self.item_out


# ===================================================================== helpers
def _as_hidden(hidden: Any) -> tuple[int, ...]:
    if hidden is None:
        return ()
    if isinstance(hidden, (int, np.integer)):
        return (int(hidden),)
    if isinstance(hidden, str):
        try:
            return tuple(int(h) for h in hidden.split(",") if h.strip())
        except ValueError:
            raise RecompareError(f"hidden must be a comma list of integers, got {hidden!r}") \
                from None
    return tuple(int(h) for h in hidden)


def _jsonable(value: Any) -> Any:
    """Hyperparameters as JSON values (tuples as lists); anything else unchanged."""
    try:
        return json_default(value)
    except TypeError:
        return value


def _torch_generator(seed: int, stream: int) -> torch.Generator:
    """An independent torch generator per (seed, stream): epochs replay exactly on resume."""
    seq = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, stream])
    return torch.Generator().manual_seed(int(seq.generate_state(1, np.uint64)[0] >> 1))


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise RecompareError(f"missing file {path}")
    try:
        return torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt file must give one clear line
        raise RecompareError(f"cannot read {path}: {exc}") from None


def _binary_safe(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Training matrix with non-positive values dropped (they cannot weigh p)."""
    m = sp.csr_matrix(matrix, dtype=np.float32)
    if m.nnz and (m.data <= 0).any():
        m = m.copy()
        m.data[m.data <= 0] = 0
        m.eliminate_zeros()
    m.sort_indices()
    return m


def _clip_per_row(flags: np.ndarray, draws: np.ndarray, indptr: np.ndarray,
                  rows: np.ndarray | None, low: int, high_offset: int) -> np.ndarray:
    """Re-pick ``flags`` per row so that low <= count <= n - high_offset (where n allows).

    Within a row, entries are ranked by ``draws``; the flagged set becomes the
    ``count`` entries with the smallest draws, ``count`` clipped to the bounds.
    Only rows in ``rows`` (None: all) are touched.
    """
    n_rows = len(indptr) - 1
    lengths = np.diff(indptr)
    row_of = np.repeat(np.arange(n_rows), lengths)
    counts = np.bincount(row_of[flags], minlength=n_rows)
    upper = np.maximum(lengths - high_offset, np.minimum(lengths, 1))
    clipped = np.clip(counts, np.minimum(low, lengths), upper)
    if rows is not None:
        touch = np.zeros(n_rows, dtype=bool)
        touch[rows] = True
        clipped = np.where(touch, clipped, counts)
    # rank of each entry within its row by draw: sort by (row, draw)
    order = np.lexsort((draws, row_of))
    rank = np.empty(len(draws), dtype=np.int64)
    rank[order] = np.arange(len(draws)) - np.repeat(indptr[:-1], lengths)
    out = rank < clipped[row_of]
    if rows is not None:
        out = np.where(touch[row_of], out, flags)
    return out


def _mask_history(matrix: sp.csr_matrix, target_fraction: float, history_dropout: float,
                  rng: np.random.Generator) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split every user's items into an input part and a disjoint target part.

    Returns ``(inputs, targets)``, CSR matrices of the shape of ``matrix`` whose
    non-zeros partition those of ``matrix``.  See the module docstring.
    """
    n_rows = matrix.shape[0]
    draws = rng.random(matrix.nnz)
    flags = draws < target_fraction
    is_target = _clip_per_row(flags, draws, matrix.indptr, None, low=1, high_offset=1)
    if history_dropout > 0:
        cold = rng.random(n_rows) < history_dropout
        is_target |= np.repeat(cold, np.diff(matrix.indptr))
    rows = np.repeat(np.arange(n_rows), np.diff(matrix.indptr))

    def part(keep: np.ndarray) -> sp.csr_matrix:
        counts = np.bincount(rows[keep], minlength=n_rows)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return sp.csr_matrix((matrix.data[keep], matrix.indices[keep], indptr),
                             shape=matrix.shape)

    return part(~is_target), part(is_target)


def _normalised_recall(ids: np.ndarray, relevant: sp.csr_matrix, k: int) -> float:
    """Mean over rows of hits@k / min(k, |relevant|), rows without relevant items skipped."""
    relevant = relevant.tocsr()
    scores = []
    for r in range(len(ids)):
        rel = relevant.indices[relevant.indptr[r]:relevant.indptr[r + 1]]
        if len(rel) == 0:
            continue
        hits = np.isin(ids[r], rel).sum()
        scores.append(hits / min(k, len(rel)))
    return float(np.mean(scores)) if scores else 0.0


__all__ = [
    "SoftmaxDNN",
    "full_softmax_loss",
    "gravity_penalty",
    "mask_accidental_hits",
    "multi_positive_nll",
    "positives_only_loss",
    "sampled_softmax_loss",
]
