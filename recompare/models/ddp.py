"""Data-parallel training helpers on ``torch.distributed`` (gloo on CPU, nccl on GPU).

The DNN trains data-parallel the standard way: N processes, each holding a full
copy of the model, each computing the gradient of its shard of every global
batch; ``DistributedDataParallel`` averages the gradients, so every process
takes the same optimiser step.  These helpers keep the result equal to one
process with the same global batch:

* :func:`shard` gives process ``r`` the rows ``r, r + N, ...`` of a global
  batch of users (every process sees the same global order, drawn from the
  same seed);
* :func:`loss_scale` turns each shard's mean loss into its share of the
  global mean, so that DDP's average of the gradients is the gradient of the
  global mean even when the shards differ in size (the last batch);
* only the main process (rank 0) writes checkpoints and the saved model
  (:func:`is_main`), through the atomic writers, after a :func:`barrier`.

Processes are started by ``torchrun --nproc-per-node N`` (which sets ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) or by :func:`launch`, which
spawns them with ``torch.multiprocessing`` on a free local port.
"""
from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import RecompareError

DEVICES = ("cpu", "cuda", "auto")
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in a data-parallel run.

    Attributes
    ----------
    rank : int
        0 .. world_size - 1; 0 is the main process.
    world_size : int
        Number of processes (1: not distributed).
    device : str
        ``"cpu"`` or ``"cuda:<local rank>"``.
    """

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def check_processes(processes: Any) -> int:
    """``--processes N``: a positive integer, else a one-line error."""
    if isinstance(processes, bool) or not isinstance(processes, (int, np.integer)) \
            or processes < 1:
        raise RecompareError(f"processes must be an integer >= 1, got {processes!r}")
    return int(processes)


def resolve_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``auto`` -> the torch device type to use.

    Raises
    ------
    RecompareError
        For an unknown name, or ``cuda`` on a machine without a usable GPU.
    """
    import torch

    if device not in DEVICES:
        raise RecompareError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        raise RecompareError("--device cuda: no CUDA GPU is available to torch here; use "
                             "--device cpu or auto")
    if device == "auto":
        return "cuda" if available else "cpu"
    return device


def backend_for(device_type: str) -> str:
    """The collective backend: nccl for GPUs, gloo for CPUs."""
    return "nccl" if device_type == "cuda" else "gloo"


def from_environment() -> Distributed | None:
    """The process group described by torchrun's variables, or None outside torchrun."""
    if not all(name in os.environ for name in _TORCHRUN_VARS):
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise RecompareError("torchrun's RANK and WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise RecompareError(f"inconsistent torchrun variables: RANK={rank}, WORLD_SIZE={world}")
    return Distributed(rank=rank, world_size=world)


@contextlib.contextmanager
def process_group(rank: int, world_size: int, device_type: str = "cpu",
                  init_method: str | None = None) -> Iterator[Distributed]:
    """Join (and on exit leave) the default process group of ``world_size`` processes.

    ``init_method`` None reads torchrun's environment (``env://``).  A GPU run
    pins process ``rank`` to GPU ``LOCAL_RANK % device_count`` (torchrun's local
    rank; ``rank`` when that is not set).
    """
    import torch
    import torch.distributed as dist

    device = "cpu"
    if device_type == "cuda":
        index = int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count()
        torch.cuda.set_device(index)
        device = f"cuda:{index}"
    dist.init_process_group(backend_for(device_type), init_method=init_method or "env://",
                            rank=rank, world_size=world_size)
    try:
        yield Distributed(rank=rank, world_size=world_size, device=device)
    finally:
        dist.destroy_process_group()


def shard(batch: np.ndarray, ctx: Distributed) -> np.ndarray:
    """This process's rows of a global batch: ``batch[rank::world_size]``."""
    return batch[ctx.rank::ctx.world_size] if ctx.enabled else batch


def loss_scale(n_local: int, n_global: int, ctx: Distributed) -> float:
    """Factor that turns a shard's mean loss into its share of the global mean.

    DDP averages gradients over the ``N`` processes, so each shard's mean loss
    is weighted by ``N n_local / n_global``: the average is then exactly the
    gradient of the mean over the global batch.
    """
    if not ctx.enabled:
        return 1.0
    return ctx.world_size * n_local / max(1, n_global)


def is_main(ctx: Distributed | None) -> bool:
    """True in the process that writes files (rank 0, or any non-distributed run)."""
    return ctx is None or ctx.rank == 0


def barrier(ctx: Distributed | None) -> None:
    """Wait for every process (no-op outside a process group)."""
    if ctx is not None and ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def all_mean(value: float, ctx: Distributed | None) -> float:
    """Mean of a float over the processes (e.g. the epoch loss); itself when alone."""
    if ctx is None or not ctx.enabled:
        return float(value)
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / ctx.world_size


def wrap(module, ctx: Distributed):
    """``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` when distributed.

    Gradients are averaged over the processes during ``backward``; the same
    module is returned unchanged in a single-process run.
    """
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [int(ctx.device.split(":")[1])] if ctx.device.startswith("cuda") else None
    return DistributedDataParallel(module, device_ids=ids)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for the rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(processes: int, target: Callable[..., Any], *args: Any,
           device_type: str = "cpu") -> None:
    """Run ``target(ctx, *args)`` in ``processes`` fresh processes joined in one group.

    ``target`` must be importable (a module-level function): the processes are
    started with the ``spawn`` method.  Blocks until all finish; an exception in
    any of them ends the others and surfaces here as one :class:`RecompareError`.
    """
    import torch.multiprocessing as mp

    processes = check_processes(processes)
    init = f"tcp://127.0.0.1:{free_port()}"
    try:
        mp.spawn(_entry, args=(processes, device_type, init, target, args),
                 nprocs=processes, join=True)
    except mp.ProcessRaisedException as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise RecompareError(f"a training process failed: {lines[-1] if lines else exc}") \
            from None
    except mp.ProcessExitedException as exc:
        raise RecompareError(f"a training process died: {exc}") from None


def _entry(rank: int, world_size: int, device_type: str, init: str,
           target: Callable[..., Any], args: tuple) -> None:
    import torch

    # each process gets an equal share of the cores, not all of them
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    with process_group(rank, world_size, device_type, init_method=init) as ctx:
        target(ctx, *args)


def all_reduce_gradients(parameters, ctx: Distributed | None) -> None:
    """Average the gradients of ``parameters`` over the processes, in place.

    The explicit form of what DDP does in ``backward``, for models trained through
    several methods rather than one ``forward``.  Dense gradients are summed by one
    all-reduce each.  Sparse ones (embedding tables with ``sparse=True``) are
    gathered instead: every process ends up with the uncoalesced union of all
    shards' rows, which a sparse optimiser then coalesces, exactly as it would one
    process's gradient of the whole batch.  A parameter that got no gradient in some
    process counts as zero there; one that got none anywhere keeps ``None`` (the
    optimiser skips it, as with one process).
    """
    if ctx is None or not ctx.enabled:
        return
    import torch
    import torch.distributed as dist

    params = [p for p in parameters if p.requires_grad]
    device = torch.device(ctx.device)
    # per parameter: how many processes have a gradient, how many a sparse one
    flags = torch.tensor([[p.grad is not None, p.grad is not None and p.grad.is_sparse]
                          for p in params], dtype=torch.int32, device=device).reshape(-1, 2)
    dist.all_reduce(flags)
    for param, (count, sparse) in zip(params, flags.tolist()):
        if not count:
            continue
        if sparse:
            param.grad = _gathered_sparse(param.grad, param) / ctx.world_size
            continue
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad)
        param.grad.div_(ctx.world_size)


def _gathered_sparse(grad, param):
    """The concatenation over the processes of a sparse COO gradient of ``param``
    (rows of an embedding table), not coalesced.

    A process whose gradient is None sends no rows; sizes are exchanged first so
    the padded all-gathers have one shape.
    """
    import torch
    import torch.distributed as dist

    world = dist.get_world_size()
    if grad is None:
        indices = torch.zeros((1, 0), dtype=torch.int64, device=param.device)
        values = param.new_zeros((0, *param.shape[1:]))
    else:
        indices, values = grad._indices(), grad._values()
    size = torch.tensor([indices.shape[1]], dtype=torch.int64, device=indices.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    pad = longest - indices.shape[1]
    idx = torch.nn.functional.pad(indices, (0, pad))
    val = torch.cat([values, values.new_zeros((pad, *values.shape[1:]))])
    all_idx = [torch.empty_like(idx) for _ in range(world)]
    all_val = [torch.empty_like(val) for _ in range(world)]
    dist.all_gather(all_idx, idx)
    dist.all_gather(all_val, val)
    keep = [int(s.item()) for s in sizes]
    return torch.sparse_coo_tensor(
        torch.cat([i[:, :n] for i, n in zip(all_idx, keep)], dim=1),
        torch.cat([v[:n] for v, n in zip(all_val, keep)]), param.shape,
        check_invariants=False)  # rows of valid gradients; saying so also keeps ranks quiet
