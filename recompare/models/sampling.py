"""Losses and negative samplers of the softmax DNN.

The exact softmax over the catalogue, the sampled softmax with logQ correction and
accidental-hit removal, the positives-only logistic loss (negatives ``none``), the
gravity penalty, and the samplers that draw each batch's candidates with their
inclusion probabilities.  Every loss takes the target distribution ``p`` as flat
(row, item, weight) triples, as :class:`recompare.models.tower.Batch` holds it.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch.nn import functional as F

#: Hard negatives are the top ``num_negatives`` of a uniform pool this many times larger.
HARD_POOL_FACTOR = 4
#: Rows per block of the full-softmax logits product (see :class:`_TimedLogits`).
LOGITS_ROW_BLOCK = 128


class MatmulTimer:
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
        for begin in range(0, queries.shape[0], LOGITS_ROW_BLOCK):
            stop = begin + LOGITS_ROW_BLOCK
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


def _per_row_sum(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Sum of ``values`` per row, Tensor of shape (n_rows,); ``rows`` gives each one's row."""
    return torch.zeros(n_rows, dtype=values.dtype).index_add(0, rows, values)


def _cross_entropy(log_partition: torch.Tensor, pos_logits: torch.Tensor,
                   target_rows: torch.Tensor, target_weights: torch.Tensor) -> torch.Tensor:
    """``mean_rows [log Z_row - sum_j p_j logit_j]``, the cross-entropy of p against the
    softmax whose log-normaliser per row is ``log_partition`` (shape (B,))."""
    expected = _per_row_sum(target_weights * pos_logits, target_rows, len(log_partition))
    return (log_partition - expected).mean()


def full_softmax_loss(
    queries: torch.Tensor,
    items: torch.Tensor,
    target_rows: torch.Tensor,
    target_items: torch.Tensor,
    target_weights: torch.Tensor,
    exclude_rows: torch.Tensor | None = None,
    exclude_items: torch.Tensor | None = None,
    timer: MatmulTimer | None = None,
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
    return _cross_entropy(log_partition, pos, target_rows, target_weights)


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
    pos_sum = _per_row_sum(torch.exp(pos_logits - shift[target_rows]), target_rows, n_rows)
    log_partition = torch.log(neg_sum + pos_sum) + shift
    return _cross_entropy(log_partition, pos_logits, target_rows, target_weights)


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
    return _per_row_sum(target_weights * F.softplus(-pos_logits), target_rows, n_rows).mean()


def gravity_penalty(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``(1/(M N)) sum_i sum_j <U_i, V_j>^2`` through the Gram matrices, O((M + N) d^2).

    Parameters
    ----------
    queries : Tensor of shape (M, d)
    items : Tensor of shape (N, d)
    """
    m, n = queries.shape[0], items.shape[0]
    return ((queries.T @ queries) * (items.T @ items)).sum() / (m * n)


class NegativeSampler:
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
            return cand, log_inclusion(self.q[cand], self.num_negatives)
        if self.kind == "in-batch":
            cand = torch.unique(target_items)
            return cand, log_inclusion(self.q[cand], len(target_items))
        raise AssertionError(self.kind)


def log_inclusion(q: torch.Tensor, draws: int) -> torch.Tensor:
    """log P(item drawn at least once in ``draws`` draws) = log(1 - (1 - q)^draws)."""
    q = q.clamp(max=1.0 - 1e-12)
    return torch.log(-torch.expm1(draws * torch.log1p(-q))).to(torch.float32)
