"""The softmax DNN's query tower, its input features, and its batches.

:class:`FeatureSchema` says which query features a model reads and encodes user
features; :class:`Batch` gathers one batch of queries (history bag, features,
targets) as flat tensors; :class:`QueryTower` holds the item embeddings V and the
MLP psi(x) that maps a query's features to its embedding.

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
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import RecompareError

#: Query features a tower can read, in the order it reads them.
FEATURES = ("history", "user")


def resolve_features(features: str | Sequence[str], has_user: bool) -> tuple[str, ...]:
    """The query features named by ``features`` ("auto", "history,user" or a sequence),
    in :data:`FEATURES` order; ``has_user``: whether the data set has user features.

    ``"auto"`` is the history plus the user features when there are some.  Raises
    :class:`RecompareError` for unknown names, none, or user features that do not exist.
    """
    if isinstance(features, str):
        if features == "auto":
            return ("history", "user") if has_user else ("history",)
        features = [f.strip() for f in features.split(",") if f.strip()]
    feats = tuple(features)
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


def training_user_features(dataset) -> pd.DataFrame | None:
    """The user features of training users only (held-out users' rows dropped): the
    users a model may learn from, so held-out users never shape the vocabulary or the
    numeric mean/std of :class:`FeatureSchema`."""
    frame = dataset.user_features
    if frame is None or dataset.split is None or not len(dataset.split.heldout_users):
        return frame
    keep = np.ones(dataset.n_users, dtype=bool)
    keep[dataset.split.heldout_users] = False
    return frame.iloc[np.flatnonzero(keep)]


class FeatureSchema:
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
    def build(cls, frame: pd.DataFrame | None, uses_history: bool) -> FeatureSchema:
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
    def from_json(cls, meta: dict, arrays: dict[str, np.ndarray]) -> FeatureSchema:
        categorical = {name: arrays[f"vocab_{i}"].astype(str)
                       for i, name in enumerate(meta["categorical"])}
        return cls(bool(meta["uses_history"]), categorical, list(meta["numeric"]),
                   np.asarray(meta["mean"], dtype=np.float64),
                   np.asarray(meta["std"], dtype=np.float64))


@dataclass
class Batch:
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
              user_cats: np.ndarray, user_nums: np.ndarray) -> Batch:
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


class QueryTower(nn.Module):
    """Item embeddings V and the query tower psi(x) = MLP([bag(x), features(x)])."""

    def __init__(self, n_items: int, dim: int, hidden: tuple[int, ...], activation: str,
                 dropout: float, schema: FeatureSchema, tie: bool, normalize: bool,
                 temperature: float, sparse_out: bool, pooling: str = "mean",
                 init_scale: float = 1.0) -> None:
        super().__init__()
        self.pooling = pooling
        self.init_scale = init_scale
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
            std = self.init_scale / math.sqrt(self.dim)
            self.item_out.normal_(0.0, std, generator=gen)
            if hasattr(self, "item_in"):
                self.item_in.normal_(0.0, std, generator=gen)
            for emb in self.cat_embeddings:
                emb.weight.normal_(0.0, 1.0 / math.sqrt(emb.embedding_dim), generator=gen)
            for layer in self.layers:
                bound = math.sqrt(6.0 / (layer.in_features + layer.out_features))  # Glorot
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.zero_()

    def _input_table(self) -> torch.Tensor:
        return self.item_out if self.tie else self.item_in

    def query(self, batch: Batch, gen: torch.Generator | None,
              rows: tuple[torch.Tensor, int] | None = None) -> torch.Tensor:
        """psi(x) of each row of the batch, Tensor (B, dim); dropout when gen is given.

        ``rows`` (data-parallel): the batch is these rows of a global batch of this
        many rows; dropout masks are drawn for the global batch and these rows kept,
        so every process draws what one process would."""
        parts = []
        if self.schema.uses_history:
            bag = F.embedding_bag(batch.bag_items, self._input_table(), batch.bag_offsets,
                                  mode="mean" if self.pooling == "mean" else "sum",
                                  per_sample_weights=self._bag_weights(batch),
                                  sparse=self._sparse_in())
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
                    if rows is None:
                        keep = torch.rand(h.shape, generator=gen) >= self.dropout
                    else:
                        draws = torch.rand((rows[1], h.shape[1]), generator=gen)
                        keep = draws[rows[0]] >= self.dropout
                    h = h * keep / (1.0 - self.dropout)
        if self.normalize:
            h = F.normalize(h, dim=1) / self.temperature
        return h

    def _sparse_in(self) -> bool:
        return "item_in" in self.sparse_names() or (self.tie and self.sparse_out)

    def _bag_weights(self, batch: Batch) -> torch.Tensor | None:
        """Per-item weights of a summed bag: interaction values over their sum
        (``weighted``), or 1/sqrt(|bag|) (``sqrt``: a bag's norm grows with its size,
        as with Mult-DAE's L2-normalised input); None for the plain mean."""
        if self.pooling == "weighted":
            return batch.bag_weights
        if self.pooling == "sqrt":
            ends = torch.cat([batch.bag_offsets[1:], torch.tensor([len(batch.bag_items)])])
            sizes = ends - batch.bag_offsets
            per_bag = sizes.clamp(min=1).to(torch.float32).rsqrt()
            return per_bag.repeat_interleave(sizes)
        return None

    def embedding_penalty(self, batch: Batch) -> torch.Tensor:
        """Sum of squared norms of the item-embedding rows this batch uses (the bag's
        input rows and the targets' output rows), per query: an L2 penalty that reaches
        the item tables, which ``weight_decay`` does not."""
        total = torch.zeros(())
        if self.schema.uses_history and len(batch.bag_items):
            rows = F.embedding(batch.bag_items, self._input_table(), sparse=self._sparse_in())
            total = total + rows.pow(2).sum()
        if len(batch.target_items):
            out = F.embedding(batch.target_items, self.item_out, sparse=self.sparse_out)
            total = total + out.pow(2).sum()
        return total / max(1, len(batch))

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        """Output embeddings of some items, Tensor (len(items), dim)."""
        rows = F.embedding(items, self.item_out, sparse=self.sparse_out)
        return F.normalize(rows, dim=1) if self.normalize else rows

    def item_matrix(self) -> torch.Tensor:
        """All output embeddings V, Tensor (N, dim)."""
        return F.normalize(self.item_out, dim=1) if self.normalize else self.item_out


class EnsembleTower(nn.Module):
    """Several independently trained towers served as one model.

    A query embeds as the concatenation of its members' embeddings divided by their
    number, an item as the concatenation of its members' embeddings, so that a dot
    product is the *mean* of the members' scores: top-k, fold-in, export and the ANN
    index serve an ensemble exactly as they serve one tower of ``dim = members x dim``.
    Only serving goes through this class; each member trains alone (``SoftmaxDNN``).
    """

    def __init__(self, towers: Sequence[QueryTower]) -> None:
        super().__init__()
        self.members = nn.ModuleList(towers)
        self.dim = sum(tower.dim for tower in towers)
        self.n_items = towers[0].n_items
        self.schema = towers[0].schema

    def query(self, batch: Batch, gen: torch.Generator | None = None,
              rows: tuple[torch.Tensor, int] | None = None) -> torch.Tensor:
        """The members' queries side by side, over their number, Tensor (B, dim)."""
        return self.combine_queries([tower.query(batch, gen, rows) for tower in self.members])

    @staticmethod
    def combine_queries(parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """The ensemble's query from its members' (the one place that says how): side by
        side, divided by their number, so that a dot product is the mean member score."""
        return torch.cat(list(parts), dim=1) / len(parts)

    def item_matrix(self) -> torch.Tensor:
        """The members' output embeddings side by side, Tensor (N, dim)."""
        return torch.cat([tower.item_matrix() for tower in self.members], dim=1)


def embed_queries(tower: QueryTower, matrix: sp.csr_matrix, user_cats: np.ndarray,
                  user_nums: np.ndarray, users: np.ndarray | None = None,
                  chunk: int = 4096) -> np.ndarray:
    """Query embeddings from full histories, in eval mode (no dropout).

    Parameters
    ----------
    tower : QueryTower
    matrix : csr_matrix of shape (n_users, n_items)
        The histories the bags are read from.
    user_cats, user_nums : ndarrays from :meth:`FeatureSchema.encode`, one row per user
    users : ndarray of int, optional
        Rows to embed (default: all).

    Returns
    -------
    ndarray of shape (len(users), dim), float32
    """
    users = np.arange(matrix.shape[0]) if users is None else np.asarray(users)
    tower.eval()
    out = np.empty((len(users), tower.dim), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(users), chunk):
            rows = users[start:start + chunk]
            batch = Batch.build(rows, matrix, None, user_cats, user_nums)
            out[start:start + len(rows)] = tower.query(batch, None).numpy()
    tower.train()
    return out


def as_hidden(hidden: Any) -> tuple[int, ...]:
    """Hidden layer sizes as a tuple: from a sequence, an int, ``"600,200"`` or None."""
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


def clip_per_row(flags: np.ndarray, draws: np.ndarray, indptr: np.ndarray,
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


def mask_history(matrix: sp.csr_matrix, target_fraction: float, history_dropout: float,
                  rng: np.random.Generator) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split every user's items into an input part and a disjoint target part.

    Returns ``(inputs, targets)``, CSR matrices of the shape of ``matrix`` whose
    non-zeros partition those of ``matrix``.  See the module docstring.
    """
    n_rows = matrix.shape[0]
    draws = rng.random(matrix.nnz)
    flags = draws < target_fraction
    is_target = clip_per_row(flags, draws, matrix.indptr, None, low=1, high_offset=1)
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
