"""Thread settings that are always put back.

The library never leaves the importing process with a different thread count: every
change goes through :func:`torch_threads`, which restores the previous value on exit,
even when the body raises.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the body with torch's intra-op thread count set to ``threads``.

    ``threads`` of ``None`` or ``0`` keeps the current setting. Yields the count in
    effect inside the body; the previous count is restored on exit.
    """
    import torch

    previous = torch.get_num_threads()
    wanted = int(threads) if threads else previous
    if wanted != previous:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
