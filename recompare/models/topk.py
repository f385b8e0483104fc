"""Top-k by dot product, in chunks of queries, never a dense queries x items matrix.

The result is exact and deterministic: items are ordered by higher score first,
then lower item index, exactly as a full stable sort of every row would order
them.  ``-inf`` scores mark excluded items; they come last (lowest index first)
and only appear when fewer than k items are allowed.

The work is done in named steps:

1. :func:`prepare_items` lays the item embeddings out once (transposed float32,
   padded to whole blocks).  A server keeps this and answers many queries with it
   (:func:`topk_prepared`); :func:`topk_dot` prepares and searches in one call.
2. Each chunk of query rows is multiplied into one reused float32 buffer (torch's
   BLAS) by :func:`_score_chunk`; seen items are masked by writing ``-inf`` at their
   flat positions (:func:`_mask_seen`).
3. The selection: on large catalogues in two stages (:func:`_select_blocked`): the
   maxima of blocks of 64 items, the k best blocks, then the same step inside their
   items on sub-blocks of 8 (:func:`_select_sub_blocks`), and the top k of the k
   best sub-blocks, with an exact check that sends tied rows to the full-row path.  On small
   catalogues ``torch.topk`` selects k + 1 candidates per row directly
   (:func:`_select`); the (k + 1)-th value tells whether a tie straddles the k-th
   place, and only those rows are redone exactly (:func:`_exact_rows`).

``device="cuda"`` runs the product, masking and selection on a GPU (the items are
copied there once per call); only the k winners per row come back to the host.

torch is imported lazily so that importing this module stays cheap.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._threads import torch_threads
from ..errors import RecompareError

#: bytes of one chunk's score block.  Selection reads the block once from memory
#: whatever its size, while per-chunk overheads shrink with bigger blocks: on a 2-core
#: EPYC, 2,000-row blocks of a 27,000-item catalogue measured fastest (256 MiB here is
#: still far below the 2 GiB budget of the eval bench)
CHUNK_BYTES = 1 << 28

#: items per block of the two-stage selection: the reduction to block maxima is
#: vectorised well from 32 items up, and 64 keeps the candidate set small
#: (k x 64 scores per row); measured 1.5x the bare product against 1.7x for a
#: single torch.topk on a 27,000-item catalogue with 64-dim embeddings
BLOCK = 64


def default_chunk_size(n_items: int) -> int:
    """Query rows per chunk so that one score block takes about :data:`CHUNK_BYTES`."""
    return int(min(8192, max(64, CHUNK_BYTES // (4 * max(1, n_items)))))


@dataclass(frozen=True)
class PreparedItems:
    """Item embeddings laid out once for repeated exact top-k.

    Attributes
    ----------
    matrix : torch.Tensor of shape (dim, width), float32
        The transposed item embeddings; columns past ``n_items`` are zero padding
        up to a whole number of blocks (their scores are set to ``-inf``).
    n_items : int
    block : int
        Items per block of the two-stage selection (0: no padding, no blocks).
    """

    matrix: Any
    n_items: int
    block: int

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def width(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def nbytes(self) -> int:
        return int(self.matrix.numel() * self.matrix.element_size())


def prepare_items(items: np.ndarray, block_size: int = BLOCK) -> PreparedItems:
    """Check and lay out item embeddings once for :func:`topk_prepared`.

    Parameters
    ----------
    items : ndarray of shape (n_items, dim)
    block_size : int
        Items per block of the two-stage selection; 0 = no blocks.

    Returns
    -------
    PreparedItems
    """
    import torch

    items = np.asarray(items)
    if items.ndim != 2:
        raise RecompareError(f"item embeddings must be 2-d, got shape {items.shape}")
    block = int(block_size)
    if block < 0:
        raise RecompareError(f"block_size must be >= 0, got {block_size}")
    if not np.isfinite(items).all():
        raise RecompareError("embeddings contain NaN or infinity; the model diverged")
    n_items = items.shape[0]
    # with blocks, the catalogue is padded to whole blocks by zero item vectors
    width = -(-n_items // block) * block if block else n_items
    matrix = torch.zeros((items.shape[1], width), dtype=torch.float32)
    matrix[:, :n_items] = torch.from_numpy(np.ascontiguousarray(items.T, dtype=np.float32))
    return PreparedItems(matrix=matrix, n_items=n_items, block=block)


def topk_dot(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    exclude: sp.spmatrix | None = None,
    chunk_size: int | None = None,
    threads: int | None = None,
    block_size: int | None = None,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items by ``queries @ items.T`` per row.

    Parameters
    ----------
    queries : ndarray of shape (n_queries, dim)
    items : ndarray of shape (n_items, dim)
    k : int
        1 <= k <= n_items.
    exclude : sparse matrix of shape (n_queries, n_items), optional
        Stored entries (any value) are never recommended (seen items).
    chunk_size : int, optional
        Query rows scored at a time; default :func:`default_chunk_size`.
    threads : int, optional
        torch intra-op threads for the call (restored afterwards); default: unchanged.
    block_size : int, optional
        Items per block of the two-stage selection (see :func:`_select_blocked`);
        default :data:`BLOCK` on catalogues large enough for it to pay, 0 = off.
    device : {"cpu", "cuda", "auto"}
        Where the scores are computed and selected (``"cuda"``: the current GPU).

    Returns
    -------
    item_ids : ndarray of shape (n_queries, k), int64
    scores : ndarray of shape (n_queries, k), float32, descending per row
        (-inf where fewer than k items are allowed).
    """
    queries, items = np.asarray(queries), np.asarray(items)
    if queries.ndim != 2 or items.ndim != 2 or queries.shape[1] != items.shape[1]:
        raise RecompareError(
            f"query embeddings {queries.shape} and item embeddings {items.shape} do not match"
        )
    check_k(k, items.shape[0])
    blocked = None if block_size is None else bool(block_size)
    prepared = prepare_items(items, BLOCK if block_size is None else block_size)
    return topk_prepared(queries, prepared, k, exclude=exclude, chunk_size=chunk_size,
                         threads=threads, blocked=blocked, device=device)


def topk_prepared(
    queries: np.ndarray,
    prepared: PreparedItems,
    k: int,
    exclude: sp.spmatrix | None = None,
    chunk_size: int | None = None,
    threads: int | None = None,
    blocked: bool | None = None,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``queries`` against items laid out by :func:`prepare_items`.

    Same contract and results as :func:`topk_dot`; ``blocked`` None lets the
    catalogue size decide whether the two-stage selection pays, False turns it off.
    On ``device="cuda"`` scores may differ from the CPU's in the last bits (another
    BLAS), so items whose scores nearly tie can swap places.
    """
    queries = np.asarray(queries)
    if queries.ndim != 2 or queries.shape[1] != prepared.dim:
        raise RecompareError(f"query embeddings {queries.shape} and item embeddings "
                             f"{(prepared.n_items, prepared.dim)} do not match")
    check_k(k, prepared.n_items)
    if not np.isfinite(queries).all():
        raise RecompareError("embeddings contain NaN or infinity; the model diverged")
    from .ddp import resolve_device  # one-line errors for a bad name or a missing GPU

    dev = resolve_device(device)
    k, n = int(k), queries.shape[0]
    out_ids = np.empty((n, k), dtype=np.int64)
    out_scores = np.empty((n, k), dtype=np.float32)
    if n == 0:
        return out_ids, out_scores
    seen = seen_pairs(exclude, (n, prepared.n_items))
    chunk = int(chunk_size) if chunk_size else default_chunk_size(prepared.n_items)
    if chunk <= 0:
        raise RecompareError(f"chunk_size must be positive, got {chunk_size}")
    block = _selection_block(prepared, k, blocked)

    import torch

    with torch_threads(threads), torch.inference_mode():
        q_all = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        items = prepared.matrix.to(dev)
        buffer = torch.empty((min(chunk, n), prepared.width), dtype=torch.float32, device=dev)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            padded = _score_chunk(q_all[start:stop].to(dev), prepared, buffer[: stop - start],
                                  items)
            if seen is not None:
                _mask_seen(torch, padded, seen, start, stop)
            scores = padded[:, : prepared.n_items]
            if block:
                vals, ids = _select_blocked(torch, padded, scores, k, block)
            else:
                vals, ids = _select(torch, scores, k, min(k + 1, prepared.n_items))
            out_ids[start:stop] = ids
            out_scores[start:stop] = vals
    return out_ids, out_scores


def check_k(k: Any, n_items: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
        raise RecompareError(f"k must be a positive integer, got {k!r}")
    if k > n_items:
        raise RecompareError(f"k={k} is larger than the catalogue ({n_items} items)")


def seen_pairs(exclude: sp.spmatrix | None, shape: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """The exclusion matrix as int64 (indptr, indices), checked against ``shape``."""
    if exclude is None:
        return None
    if exclude.shape != shape:
        raise RecompareError(f"exclusion matrix has shape {exclude.shape}, expected {shape}")
    exclude = sp.csr_matrix(exclude)
    return exclude.indptr.astype(np.int64), exclude.indices.astype(np.int64)


def _selection_block(prepared: PreparedItems, k: int, blocked: bool | None) -> int:
    """Items per block for the two-stage selection of top-k, 0 for the plain path."""
    block = prepared.block
    if not block or blocked is False:
        return 0
    if blocked is None and prepared.n_items < block * (k + 1) * 4:
        return 0  # small catalogue: one torch.topk per row is cheaper
    if -(-prepared.n_items // block) <= k + 1:
        return 0  # too few blocks for the two-stage selection to skip anything
    return block


def _score_chunk(queries, prepared: PreparedItems, out, items=None):
    """``queries @ items.T`` into ``out`` (rows x width); padding columns get -inf.

    ``items`` is ``prepared.matrix`` already on ``out``'s device (default: itself).
    """
    import torch

    torch.mm(queries, prepared.matrix if items is None else items, out=out)
    if prepared.width > prepared.n_items:
        out[:, prepared.n_items:] = float("-inf")
    return out


def _mask_seen(torch, padded, seen: tuple[np.ndarray, np.ndarray], start: int, stop: int
               ) -> None:
    """Write -inf at the seen items of query rows ``start:stop`` (in place)."""
    indptr, indices = seen
    if indptr[stop] <= indptr[start]:
        return
    counts = np.diff(indptr[start: stop + 1])
    rows = np.repeat(np.arange(stop - start, dtype=np.int64), counts)
    flat = rows * padded.shape[1] + indices[indptr[start]: indptr[stop]]
    padded.view(-1).index_fill_(0, torch.from_numpy(flat).to(padded.device), float("-inf"))

def _select_blocked(torch, padded, scores, k: int, block: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k in two stages: the k blocks with the highest maxima, then the
    top k of their items.

    The top-k items lie in at most k blocks, and each of those blocks has a
    maximum at least the k-th score, so the k blocks with the highest maxima hold
    them all, unless the (k+1)-th block maximum reaches the k-th score found
    (a tie, or fewer than k allowed items).  Those rows, detected exactly, take
    the full-row path.  The reduction to block maxima is one fast vectorised pass
    and the selections run on a few percent of the scores, which brings top-k
    close to the cost of the matrix product itself.
    """
    n_rows, width = padded.shape
    blocks = padded.view(n_rows, width // block, block)
    maxima = blocks.amax(dim=2)
    top_max, top_blocks = torch.topk(maxima, k + 1, dim=1, sorted=True)
    chosen = top_blocks[:, :k]
    # whole blocks copied by row index of the (rows x blocks, block) view: a third of
    # the cost of an element-wise gather with an expanded index
    flat = chosen + torch.arange(n_rows, device=padded.device).unsqueeze(1) * (width // block)
    candidates = padded.view(-1, block).index_select(0, flat.flatten())
    candidates = candidates.view(n_rows, k * block)
    sub = block // 8 if block >= 16 and block % 8 == 0 else 0
    if sub:
        # the same step again inside the candidates, on sub-blocks of ``sub`` items:
        # torch.topk costs about 10 ns per element here, so selecting from k x sub
        # instead of k x block candidates saves more than the extra reduction costs
        vals, pos, top_sub = _select_sub_blocks(torch, candidates, k, sub)
    else:
        vals, pos = torch.topk(candidates, min(k + 1, k * block), dim=1, sorted=True)
    n_candidates = vals.shape[1]
    ids = torch.gather(chosen, 1, pos // block) * block + pos % block
    # rows where an item outside the chosen blocks (or sub-blocks) could reach the
    # k-th score
    unsafe = top_max[:, k] >= vals[:, k - 1]
    if sub:
        unsafe |= top_sub >= vals[:, k - 1]
    if n_candidates > k:
        # ties across the k-th place among the candidates
        unsafe |= vals[:, k - 1] == vals[:, k]
    vals_np = np.ascontiguousarray(vals.cpu().numpy()[:, :k])  # .cpu(): no copy on CPU
    ids_np = np.ascontiguousarray(ids.cpu().numpy()[:, :k])
    redo = torch.nonzero(unsafe).flatten()
    if redo.numel():
        rows = redo.cpu().numpy()
        fixed_vals, fixed_ids = _select(torch, scores[redo], k, min(k + 1, scores.shape[1]))
        vals_np[rows] = fixed_vals
        ids_np[rows] = fixed_ids
    return _order_ties(vals_np, ids_np)


def _select_sub_blocks(torch, candidates, k: int, sub: int):
    """Top k + 1 of each row of ``candidates`` through the k sub-blocks of ``sub``
    items with the highest maxima: (values, positions in the row, the (k+1)-th
    sub-block maximum, which the caller checks against the k-th value)."""
    n_rows, width = candidates.shape
    maxima = candidates.view(n_rows, width // sub, sub).amax(dim=2)
    top_max, top_blocks = torch.topk(maxima, k + 1, dim=1, sorted=True)
    chosen = top_blocks[:, :k]
    flat = chosen + torch.arange(n_rows, device=candidates.device).unsqueeze(1) * (width // sub)
    inner = candidates.view(-1, sub).index_select(0, flat.flatten()).view(n_rows, k * sub)
    vals, pos = torch.topk(inner, min(k + 1, k * sub), dim=1, sorted=True)
    return vals, torch.gather(chosen, 1, pos // sub) * sub + pos % sub, top_max[:, k]


def _select(torch, scores, k: int, n_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of each row of a torch score block, as numpy arrays."""
    vals, ids = torch.topk(scores, n_candidates, dim=1, largest=True, sorted=True)
    if n_candidates > k:
        # a tie across the k-th place: the (k+1)-th candidate equals the k-th, and
        # torch may have kept any of the tied items; redo those rows exactly
        straddle = torch.nonzero(vals[:, k - 1] == vals[:, k]).flatten()
        kth = vals[straddle, k - 1]
        # copies in numpy: cheaper than torch's strided clone on these small blocks
        vals_np = np.ascontiguousarray(vals.cpu().numpy()[:, :k])
        ids_np = np.ascontiguousarray(ids.cpu().numpy()[:, :k])
        if straddle.numel():
            fixed_vals, fixed_ids = _exact_rows(torch, scores[straddle], kth, k)
            rows = straddle.cpu().numpy()
            vals_np[rows] = fixed_vals.cpu().numpy()
            ids_np[rows] = fixed_ids.cpu().numpy()
        return _order_ties(vals_np, ids_np)
    return _order_ties(vals.cpu().numpy(), ids.cpu().numpy())


def _order_ties(vals: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inside the top k, order equal scores by item index (in place)."""
    tied = np.flatnonzero((vals[:, 1:] == vals[:, :-1]).any(axis=1))
    if len(tied):
        order = _row_lexsort(vals[tied], ids[tied])
        ids[tied] = np.take_along_axis(ids[tied], order, 1)
        vals[tied] = np.take_along_axis(vals[tied], order, 1)
    return vals, ids


def _exact_rows(torch, rows, kth, k: int):
    """Top-k of rows whose k-th value is tied: all items above it, then the lowest tied."""
    kth = kth[:, None]
    above = rows > kth
    equal = rows == kth
    missing = k - above.sum(dim=1, keepdim=True)
    chosen = above | (equal & (torch.cumsum(equal, dim=1) <= missing))
    ids = torch.nonzero(chosen)[:, 1].view(len(rows), k)  # row-major: ascending index
    vals = torch.gather(rows, 1, ids)
    # order by descending score; a stable sort keeps ascending index among ties
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, torch.gather(ids, 1, order)


def _row_lexsort(vals: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per-row order by descending value, then ascending id."""
    by_id = np.argsort(ids, axis=1, kind="stable")
    v = np.take_along_axis(vals, by_id, 1)
    by_score = np.argsort(-v, axis=1, kind="stable")
    return np.take_along_axis(by_id, by_score, 1)
