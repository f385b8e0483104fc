"""A softmax DNN retrieval model in torch: a query tower against static item embeddings.

Training data are query features ``x`` and a probability distribution ``p``
over items the user interacted with.  A query tower maps ``x`` to
``psi(x)`` (an MLP); the logit of item ``j`` is ``psi(x) . V_j``; the loss
compares ``p`` with ``softmax(logits)``, exactly (``loss="full"``) or through
a sample of candidates (``loss="sampled"``).  See ``docs/softmax.md``.

This module holds the estimator (parameters, ``fit``, serving, save/load); the
tower and its features are in :mod:`.tower`, the losses and samplers in
:mod:`.sampling`, and the training steps (masked histories, epochs, validation,
checkpoints) in :mod:`.softmax_training`.  These four are the only modules of
recompare that import torch at module level.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .._atomic import atomic_dir
from .._io import sha256_of
from .._jsonutil import json_default
from .._threads import torch_threads
from ..errors import RecompareError
from .base import (
    MODEL_FILE,
    Callback,
    Recommender,
    clone,
    n_new_users,
    read_saved_model,
    rows_of,
)
from .ddp import Distributed
from .sampling import NegativeSampler
from .softmax_params import (  # noqa: F401 - the allowed values stay importable here
    ACTIVATIONS,
    LOSSES,
    NEGATIVES,
    OPTIMIZERS,
    POOLINGS,
    validate,
)
from .softmax_training import (
    STATE_FILE,
    VALIDATION_K,
    FitRun,
    auto_threads,
    binary_safe,
    comparable_params,
    jsonable,
    make_optimizers,
    resume,
    torch_generator,
    train_epochs,
    validation_holdout,
)
from .tower import (
    EnsembleTower,
    FeatureSchema,
    QueryTower,
    as_hidden,
    embed_queries,
    resolve_features,
    training_user_features,
)

ARRAYS_FILE = "arrays.npz"
#: ``gravity="auto"`` with the full loss (chosen on validation: docs/tuning.md)
AUTO_GRAVITY = 1.0
#: ``average_epochs="auto"`` averages the last ``epochs // AUTO_AVERAGE_SHARE`` epochs: the
#: tail of the run, never its early, near-initial epochs (docs/tuning.md)
AUTO_AVERAGE_SHARE = 4


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
    pooling : {"mean", "weighted", "sqrt"}
        How the history bag is pooled: plain mean of item embeddings, mean
        weighted by interaction value, or sum divided by sqrt(|bag|).
    tie_embeddings : bool
        Use the output item embeddings V as input embeddings of the history bag.
    normalize : bool or "auto"
        L2-normalise query and item embeddings (cosine scores) ...  ``"auto"``: with the
        full loss only (chosen on validation: docs/tuning.md), so that the sampled
        variants, positives-only included, keep their own (dot-product) behaviour.
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
    gravity : float >= 0 or "auto"
        Coefficient of the gravity penalty ``(1/(M N)) sum_i sum_j <U_i, V_j>^2``.
        ``"auto"``: :data:`AUTO_GRAVITY` with the full loss, 0 with a sampled one (so
        that the sampled variants, positives-only included, keep their own behaviour);
        with cosine scores it is multiplied by ``temperature**2``, so that the penalty is
        :data:`AUTO_GRAVITY` times the mean squared *cosine* (the scores ``<U_i, V_j>`` are
        cosines divided by the temperature).
    epochs, batch_size, lr : training length, users per batch, learning rate
    average_epochs : int >= 0 or "auto"
        Return the mean of the weights after each of the last ``average_epochs``
        epochs (all of them when more than ``epochs``) instead of the last epoch's;
        0 keeps the last; ``"auto"``: the last ``epochs // 4``.  Ignored with early
        stopping (the best epoch is restored).
    lr_decay : {"auto", "none", "linear", "cosine"}
        Learning-rate schedule over the ``epochs`` of the run, step by step: constant,
        linear to 0, half a cosine to 0, or ``auto``: constant for the first 200 optimiser
        steps (the initial transient), then linear to 0 (a shorter run keeps ``lr``;
        chosen on validation: docs/tuning.md).
    optimizer : {"adam", "adagrad"}
    weight_decay : float >= 0
        L2 penalty on the dense tower weights (not on embeddings).
    embedding_l2 : float >= 0
        L2 penalty on the item-embedding rows each batch uses (bag inputs and
        targets), per query.
    init_scale : float > 0
        Item embeddings start as N(0, (init_scale / sqrt(dim))^2).
    target_fraction : float in (0, 1)
        Expected share of a user's items that become targets each epoch.
    history_dropout : float in [0, 1)
        Share of examples per epoch whose whole history is hidden (cold training).
    validation_fraction : float in [0, 1)
        Share of each training user's training items held out for validation
        (:func:`recompare.data.validation.validation_split`; the test split is never
        read); 0 disables validation.
    patience : int or None
        Stop after this many epochs without a better validation recall@20 and
        restore the best epoch; None trains all epochs (no early stopping).  The
        old spelling 0 still means None, with a FutureWarning.
    members : int >= 1
        Train this many networks, each alone with its own seed (the first with
        ``random_state``, so ``members=1`` is the single model), and serve the mean of
        their scores: a query and an item embed as their members' embeddings side by side
        (``members x dim`` columns), so serving, fold-in and export are unchanged.
        Training and serving cost ``members`` times as much; on validation carves of
        ml-latest-small, 3 members raise recall@20 by about 6% (docs/tuning.md).
    random_state : int
    threads : int
        torch CPU threads during fit; 0: one thread when a batch is small (under about
        0.5 GFLOP of logits work, e.g. catalogues under ~10k items), torch's setting
        otherwise.  The previous setting is restored after fit.
    """

    kind = "softmax"

    def __init__(
        self,
        dim: int = 128,
        hidden: Sequence[int] = (256,),
        activation: str = "relu",
        dropout: float = 0.5,
        features: str | Sequence[str] = "auto",
        pooling: str = "sqrt",
        tie_embeddings: bool = False,
        normalize: bool | str = "auto",
        temperature: float = 0.1,
        loss: str = "full",
        negatives: str = "uniform",
        num_negatives: int = 256,
        gravity: float | str = "auto",
        epochs: int = 40,
        average_epochs: int | str = 0,
        lr_decay: str = "auto",
        batch_size: int = 32,
        lr: float = 3e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        embedding_l2: float = 0.0,
        init_scale: float = 1.0,
        target_fraction: float = 0.5,
        history_dropout: float = 0.05,
        validation_fraction: float = 0.0,
        patience: int | None = None,
        members: int = 1,
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
        self.average_epochs = average_epochs
        self.lr_decay = lr_decay
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.embedding_l2 = embedding_l2
        self.init_scale = init_scale
        self.target_fraction = target_fraction
        self.history_dropout = history_dropout
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.members = members
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
    def _validate(self, dataset) -> None:
        validate(self, dataset)

    def check(self, dataset) -> tuple[str, ...]:
        """Validate the parameters against ``dataset``; returns the query features used.

        Raises :class:`RecompareError` with one clear line (``fit`` calls it first).
        """
        self._validate(dataset)
        has_user = dataset.user_features is not None and dataset.user_features.shape[1] > 0
        return resolve_features(self.features, has_user)


    def _patience(self) -> int | None:
        """Early-stopping patience, None when off (``patience`` None, or the old 0)."""
        return int(self.patience) if self.patience else None

    # -------------------------------------------------------------- fitting
    def fit(
        self,
        dataset,
        callback: Callback | None = None,
        *,
        checkpoint_dir: str | os.PathLike | None = None,
        resume_from: str | os.PathLike | None = None,
        ctx: Distributed | None = None,
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
        ctx : Distributed, optional
            This process's place in a data-parallel run (:mod:`.ddp`): each process
            trains on its shard of every global batch and only the main process
            writes checkpoints.  None: one process.
        """
        features = self.check(dataset)
        if ctx is not None and ctx.enabled and self.loss == "sampled" \
                and self.negatives == "in-batch":
            raise RecompareError("in-batch negatives are drawn from each process's own "
                                 "batch: use another --negatives with several processes")
        threads = int(self.threads) or auto_threads(self.batch_size, self.dim, dataset.n_items,
                                                    self.loss, self.num_negatives)
        with torch_threads(threads):
            return self._fit(dataset, features, callback, checkpoint_dir, resume_from, ctx)

    def _fit(self, dataset, features, callback, checkpoint_dir, resume_from,
             ctx: Distributed | None = None) -> SoftmaxDNN:
        if self.members > 1:
            return self._fit_members(dataset, features, callback, checkpoint_dir,
                                     resume_from, ctx)
        emit = callback or (lambda event: None)
        start_time = time.perf_counter()
        train = binary_safe(dataset.train)
        run = self._start_run(dataset, train, features)
        if resume_from is not None:
            resume(resume_from, run, comparable_params(self), dataset.fingerprint)
        emit({"stage": "start", "total": self.epochs, "start_epoch": run.state["epoch"],
              "users": len(run.active_users), "items": dataset.n_items,
              "features": list(features), "validation_users": len(run.val_users)})
        stopped_early = train_epochs(self, run, self._patience(), dataset.fingerprint,
                                     checkpoint_dir, emit, ctx)
        self._finish(dataset, train, run, features, stopped_early, start_time)
        emit({"stage": "done", **{k: v for k, v in self.fit_info_.items() if k != "history"}})
        return self

    def member_seed(self, k: int) -> int:
        """The seed of member ``k``: ``random_state`` for the first, then seeds derived
        from (``random_state``, k), so that ensembles of different seeds share no member."""
        if k == 0:
            return int(self.random_state)
        state = np.random.SeedSequence([int(self.random_state) & 0xFFFFFFFF, int(k)])
        return int(state.generate_state(1)[0] >> 1)

    def _fit_members(self, dataset, features, callback, checkpoint_dir, resume_from,
                     ctx: Distributed | None) -> SoftmaxDNN:
        """Train ``members`` single models one after the other, each with its own seed,
        checkpoint folder ``member-K`` and events tagged ``member``; serve their mean
        score (:class:`~.tower.EnsembleTower`).  A resumed ensemble resumes each member
        from its folder; members whose folder does not exist yet start afresh."""
        emit = callback or (lambda event: None)
        start_time = time.perf_counter()
        n = int(self.members)
        fitted: list[SoftmaxDNN] = []
        for k in range(n):
            member = clone(self).set_params(members=1, random_state=self.member_seed(k))
            folder = f"member-{k}"
            resume_k = None
            if resume_from is not None and (k == 0 or (Path(resume_from) / folder).is_dir()):
                resume_k = Path(resume_from) / folder
            member._fit(dataset, features,
                        lambda event, k=k: emit({**event, "member": k, "members": n}),
                        None if checkpoint_dir is None else Path(checkpoint_dir) / folder,
                        resume_k, ctx)
            fitted.append(member)
        first = fitted[0]
        self.schema_ = first.schema_
        self._set_protocols()
        self._remember(dataset)
        self.n_features_ = list(features)
        self.tower_ = EnsembleTower([m.tower_ for m in fitted])
        # the members' cached queries, combined as the tower combines fresh ones
        self.query_embeddings_ = EnsembleTower.combine_queries(
            [torch.from_numpy(m.query_embeddings_) for m in fitted]).numpy()
        self.item_embeddings_ = self.tower_.item_matrix().detach().numpy().copy()
        history = [{**row, "member": k} for k, m in enumerate(fitted)
                   for row in m.fit_info_["history"]]
        self.fit_info_ = {
            **{key: value for key, value in first.fit_info_.items()
               if key not in ("history", "logits_matmul")},
            "epochs_run": sum(m.fit_info_["epochs_run"] for m in fitted),
            "members": [{"seed": self.member_seed(k),
                         **{key: m.fit_info_[key] for key in
                            ("epochs_run", "best_epoch", "best_validation_recall",
                             "stopped_early", "train_seconds")}}
                        for k, m in enumerate(fitted)],
            "train_seconds": time.perf_counter() - start_time,
            "history": history,
        }
        emit({"stage": "done", **{k: v for k, v in self.fit_info_.items() if k != "history"}})
        return self

    def _start_run(self, dataset, train: sp.csr_matrix, features: tuple[str, ...]) -> FitRun:
        """Encode the features, hold out validation items, build and seed the tower."""
        schema = FeatureSchema.build(training_user_features(dataset) if "user" in features else None,
                                     uses_history="history" in features)
        user_cats, user_nums = schema.encode(
            dataset.user_features if schema.uses_user else None, n_rows=dataset.n_users)
        self.schema_ = schema
        self._set_protocols()
        # validation: a random slice of training users' items, never trained on
        val_users, val_target, matrix = validation_holdout(
            dataset, self.validation_fraction, self.random_state)
        tower = self._build_tower(dataset.n_items, schema)
        tower.reset_parameters(torch_generator(self.random_state, 0))
        self.tower_ = tower
        counts = np.asarray((matrix != 0).sum(axis=0)).ravel().astype(np.float64)
        sampler = NegativeSampler(self.negatives if self.loss == "sampled" else "full",
                                  self.num_negatives, counts)
        return FitRun(tower=tower,
                      optimizers=make_optimizers(tower, self.optimizer, self.lr,
                                                 self.weight_decay),
                      sampler=sampler, matrix=matrix,
                      active_users=np.flatnonzero(np.diff(matrix.indptr) > 0),
                      user_cats=user_cats, user_nums=user_nums,
                      val_users=val_users, val_target=val_target)

    def _finish(self, dataset, train: sp.csr_matrix, run: FitRun, features: tuple[str, ...],
                stopped_early: bool, start_time: float) -> None:
        """Restore the best epoch (with early stopping), cache the embeddings, and
        record ``fit_info_``."""
        if run.best_state is not None and self._patience():
            run.tower.load_state_dict(run.best_state)
        elif run.average_state is not None and not self._patience():
            run.tower.load_state_dict(run.average_state)
        self._remember(dataset)
        self.n_features_ = list(features)
        self.query_embeddings_ = embed_queries(run.tower, train, run.user_cats, run.user_nums)
        self.item_embeddings_ = run.tower.item_matrix().detach().numpy().copy()
        state, n_val = run.state, len(run.val_users)
        matmul = run.timer.summary()
        self.fit_info_ = {
            "epochs_run": state["epoch"],
            "best_epoch": state["best_epoch"] or None,
            "best_validation_recall": (state["best_score"]
                                       if state["best_score"] > -math.inf else None),
            "validation": (f"recall@{VALIDATION_K} on {n_val} users (validation carve of "
                           f"the training part)" if n_val else None),
            # what the returned weights were chosen on: early stopping restores the best
            # epoch on validation; otherwise nothing was selected during this fit
            "selected_on": ("validation" if n_val and self._patience() else "none"),
            "stopped_early": stopped_early,
            "features": list(features),
            "train_seconds": time.perf_counter() - start_time,
            "history": run.history,
            **({"logits_matmul": matmul} if matmul else {}),
        }

    def _sparse_output(self) -> bool:
        # sampled losses touch a few item rows per batch: sparse gradients keep the
        # optimiser from visiting the whole catalogue; gravity's gradient is dense
        return self.loss == "sampled" and self.gravity_value() == 0

    def average_window(self) -> int:
        """How many final epochs' weights are averaged (``"auto"`` resolved: the last
        ``epochs // AUTO_AVERAGE_SHARE``; an explicit count is capped at ``epochs``)."""
        if self.average_epochs == "auto":
            return self.epochs // AUTO_AVERAGE_SHARE
        return min(int(self.average_epochs), self.epochs)

    def normalize_value(self) -> bool:
        """Whether scores are cosines (``"auto"`` resolved by the loss: the full one)."""
        if self.normalize == "auto":
            return self.loss == "full"
        return bool(self.normalize)

    def gravity_value(self) -> float:
        """The gravity coefficient in effect (``"auto"`` resolved by the loss)."""
        if self.gravity == "auto":
            if self.loss != "full":
                return 0.0
            scale = float(self.temperature) ** 2 if self.normalize_value() else 1.0
            return AUTO_GRAVITY * scale
        return float(self.gravity)

    def _build_tower(self, n_items: int, schema: FeatureSchema) -> QueryTower | EnsembleTower:
        if self.members > 1:
            return EnsembleTower([clone(self).set_params(members=1)
                                  ._build_tower(n_items, schema)
                                  for _ in range(int(self.members))])
        return QueryTower(n_items, self.dim, as_hidden(self.hidden), self.activation,
                          self.dropout, schema, self.tie_embeddings, self.normalize_value(),
                          self.temperature, sparse_out=self._sparse_output(),
                          pooling=self.pooling, init_scale=self.init_scale)

    # ------------------------------------------------------------ embedding
    def query_embeddings(self, users: np.ndarray | None = None) -> np.ndarray:
        """Query embeddings of training users (full training history + features).

        Returns ndarray of shape (n_users, dim), float32; computed once at the end
        of ``fit``, so that serving a known user is a lookup.
        """
        self._check_fitted()
        return rows_of(self.query_embeddings_, users)

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
        n_new = n_new_users(history, features)
        if history is not None:
            history = sp.csr_matrix(history, dtype=np.float32)
            if history.shape[1] != self.n_items_:
                raise RecompareError(
                    f"history has {history.shape[1]} item columns, the model "
                    f"{self.n_items_} items")
        if history is None:
            history = sp.csr_matrix((n_new, self.n_items_), dtype=np.float32)
        cats, nums = self.schema_.encode(features, n_rows=n_new)
        return embed_queries(self.tower_, history, cats, nums)

    def export_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays for ``recompare export``: item and training-user query embeddings."""
        self._check_fitted()
        return {"item_embeddings": self.item_embeddings_,
                "query_embeddings": self.query_embeddings_}

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``state.pt`` (state_dict), ``arrays.npz`` and ``model.json`` (which records
        the SHA-256 of ``state.pt``: torch does not checksum tensor bytes)."""
        self._check_fitted()
        meta = self._model_json(schema=self.schema_.to_json(), features=self.n_features_)
        meta["params"] = {k: jsonable(v) for k, v in meta["params"].items()}
        with atomic_dir(path, overwrite=overwrite) as tmp:
            torch.save(self.tower_.state_dict(), tmp / STATE_FILE)
            meta["state_sha256"] = sha256_of(tmp / STATE_FILE)
            np.savez(tmp / ARRAYS_FILE, query_embeddings=self.query_embeddings_,
                     item_embeddings=self.item_embeddings_, **self.schema_.arrays())
            (tmp / MODEL_FILE).write_text(json.dumps(meta, indent=2, default=json_default) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SoftmaxDNN:
        """Read a directory written by :meth:`save` through the guarded readers
        (:mod:`.softmax_files`: checked keys and arrays, ``weights_only`` torch load)."""
        from .softmax_files import (
            SAVED_KEYS,
            SAVED_REQUIRED,
            build_tower,
            load_tower_state,
            read_schema,
        )

        # validate_on: models written before validation was carved from training data only
        model, meta = read_saved_model(cls, path, ("hidden", "features"), keys=SAVED_KEYS,
                                       required=SAVED_REQUIRED, retired=("validate_on",))
        schema, data = read_schema(path, meta, model)
        tower = build_tower(path, model, schema)
        load_tower_state(path, meta, tower)
        tower.eval()
        model.schema_ = schema
        model._set_protocols()
        model.tower_ = tower
        model.n_features_ = list(meta.get("features", []))
        if meta["params"].get("validate_on") == "test" and model.fit_info_.get("best_epoch"):
            model.fit_info_.setdefault("selected_on", "test")
        model.query_embeddings_ = data["query_embeddings"]
        model.item_embeddings_ = data["item_embeddings"]
        return model


__all__ = ["SoftmaxDNN"]
