"""Timing and memory helpers shared by the benchmarks.

The memory probe here (:func:`measure`) trims the heap and resets the kernel's peak
counter, process-wide: benchmarks only. Library code measures read-only with
:func:`recompare.compare.cost.measure_cost`.
"""
from __future__ import annotations

import contextlib
import gc
import os
import platform
import time
from collections.abc import Iterator

from .._sysmem import release_free_memory
from ..compare.cost import high_water_bytes as peak_rss_bytes
from ..compare.cost import resident_bytes as current_rss_bytes

__all__ = ["best_of", "current_rss_bytes", "machine_info", "measure", "peak_rss_bytes",
           "reset_peak_rss"]


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def measure() -> Iterator[dict]:
    """Measure wall time and the peak RSS increase over the RSS at entry (benchmarks only:
    it calls ``malloc_trim`` and writes ``/proc/self/clear_refs``).

    Yields a dict filled on exit with ``seconds``, ``peak_rss_bytes`` (absolute peak)
    and ``peak_extra_bytes`` (peak minus RSS at entry).
    """
    result: dict = {}
    gc.collect()
    release_free_memory()
    reset_peak_rss()
    base = current_rss_bytes()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result["seconds"] = time.perf_counter() - start
        peak = peak_rss_bytes()
        result["peak_rss_bytes"] = peak
        result["peak_extra_bytes"] = max(0, peak - base)


def machine_info() -> dict:
    """Machine, versions and commit, recorded with every benchmark result."""
    import subprocess

    import numpy
    import scipy

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=os.path.dirname(__file__), timeout=5, check=False,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def best_of(func, repeat: int = 3) -> float:
    """Fastest wall time of ``repeat`` calls (the least noisy estimate on a shared machine)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best
