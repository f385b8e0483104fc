"""The garbage collector's state, always put back.

With torch loaded, a full collection walks some 300,000 long-lived objects (about
0.25 s on one core).  Cost and latency measurements collect before each measured step,
so that a step does not pay for earlier garbage; :func:`frozen_heap` makes those
collections cheap without changing what they free.
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Run the body with the objects alive at its start left out of collections.

    Collects once, then :func:`gc.freeze`: what is alive now (modules, the data set) is
    moved out of the collector's generations, and the objects the body creates are
    collected as usual.  :func:`gc.unfreeze` on exit, also when the body raises.  When
    something is frozen already (the caller's own freeze, or an enclosing call), the
    body runs as it is and the caller's freeze is left alone.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
