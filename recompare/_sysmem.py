"""Process memory housekeeping shared by the solvers and the benchmarks."""
from __future__ import annotations


def release_free_memory() -> None:
    """Best-effort ``malloc_trim(0)`` (glibc): return freed heap memory to the system,
    so that a later measurement sees its own allocations as an RSS increase instead
    of reusing memory freed by earlier work."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
