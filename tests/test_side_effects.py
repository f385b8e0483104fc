"""The library leaves the process as it found it.

Importing recompare and fitting every model family (WALS with both solvers and a thread
pool, the softmax DNN, the baselines) must not change torch's thread counts, call the
allocator's tuning knobs (``mallopt``, ``malloc_trim``) or reset the kernel's peak-RSS
counter (``/proc/self/clear_refs``): a service embedding recompare inherits all of those.
"""
from __future__ import annotations

import builtins
import ctypes
import importlib
import io
import os

import numpy as np
import pytest
import torch

ALLOCATOR_CALLS = ("mallopt", "malloc_trim")


class _Recorder:
    """Patches the ways the library could reach the allocator or clear_refs; logs them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        real_cdll, real_open, real_os_open = ctypes.CDLL, builtins.open, os.open
        recorder = self

        class RecordingCDLL:
            def __init__(self, name, *args, **kwargs):
                self._lib = real_cdll(name, *args, **kwargs)

            def __getattr__(self, attr):
                if attr in ALLOCATOR_CALLS:
                    return lambda *args: recorder.calls.append(f"{attr}{args}") or 0
                return getattr(self._lib, attr)

        def recording_open(file, *args, **kwargs):
            if "clear_refs" in str(file):
                recorder.calls.append(f"open({file})")
            return real_open(file, *args, **kwargs)

        def recording_os_open(path, *args, **kwargs):
            if "clear_refs" in str(path):
                recorder.calls.append(f"os.open({path})")
            return real_os_open(path, *args, **kwargs)

        monkeypatch.setattr(ctypes, "CDLL", RecordingCDLL)
        monkeypatch.setattr(builtins, "open", recording_open)
        monkeypatch.setattr(io, "open", recording_open)
        monkeypatch.setattr(os, "open", recording_os_open)


def test_the_recorder_sees_what_it_looks_for(monkeypatch):
    """The patches catch both kinds of call (so the test below can fail)."""
    recorder = _Recorder(monkeypatch)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: only the open is checked
        recorder.calls.append("malloc_trim(0,)")
    with pytest.raises(OSError), open("/nonexistent-dir/clear_refs", "w"):
        pass
    assert recorder.calls == ["malloc_trim(0,)", "open(/nonexistent-dir/clear_refs)"]


@pytest.fixture(scope="module")
def tiny():
    from recompare.data.splits import split
    from recompare.data.synth import planted

    return split(planted(n_users=200, n_items=120, n_groups=2, seed=0), kind="random", seed=0)


def _fit_everything(data) -> None:
    import scipy.sparse as sp

    from recompare.data.validation import validation_split
    from recompare.models.baselines import Popularity, RandomEmbeddings
    from recompare.models.softmax import SoftmaxDNN
    from recompare.models.wals import WALS

    val = validation_split(data, 0.2, 0)  # selection never reads test
    for solver in ("cg", "cholesky"):
        model = WALS(dim=8, iterations=3, solver=solver, threads=2, patience=1)
        model.fit(val, validation=val.split.test)
        model.embed_new_users(sp.csr_matrix(data.train[:5]))
        model.objective(data)
    dnn = SoftmaxDNN(dim=8, hidden=(16,), epochs=2, batch_size=64, threads=2, random_state=0)
    dnn.fit(data)
    dnn.recommend(np.arange(5), k=5)
    for baseline in (Popularity(), Popularity(by_group=True), RandomEmbeddings()):
        baseline.fit(data).recommend(np.arange(5), k=5)


def test_import_and_fit_leave_threads_and_allocator_alone(monkeypatch, tiny):
    recorder = _Recorder(monkeypatch)
    previous = torch.get_num_threads()
    # a setting no library default would restore to by accident
    odd = 3 if previous != 3 else 2
    torch.set_num_threads(odd)
    try:
        interop = torch.get_num_interop_threads()
        for name in ("recompare", "recompare.models.wals", "recompare.models.wals_solver",
                     "recompare.models.softmax", "recompare.models.baselines"):
            importlib.import_module(name)
        _fit_everything(tiny)
        assert torch.get_num_threads() == odd
        assert torch.get_num_interop_threads() == interop
    finally:
        torch.set_num_threads(previous)
    assert recorder.calls == []


def test_threads_are_restored_when_fit_fails(tiny):
    from recompare.models.wals import WALS

    def interrupt(event: dict) -> None:
        if event["stage"] == "iteration":  # inside the solver's thread settings
            raise KeyboardInterrupt

    before = torch.get_num_threads()
    with pytest.raises(KeyboardInterrupt):
        WALS(dim=4, iterations=3, threads=2).fit(tiny, callback=interrupt)
    assert torch.get_num_threads() == before


def test_frozen_heap_still_collects_the_body_garbage_and_unfreezes():
    import gc
    import weakref

    from recompare._gc import frozen_heap

    class Node:
        pass

    assert gc.get_freeze_count() == 0
    with frozen_heap():
        assert gc.get_freeze_count() > 0  # what was alive at the start is out of the passes
        cycle = Node()
        cycle.self = cycle
        ref = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert ref() is None  # garbage made in the body is collected as usual
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    with pytest.raises(KeyboardInterrupt), frozen_heap():
        raise KeyboardInterrupt
    assert gc.get_freeze_count() == 0


def test_frozen_heap_leaves_the_callers_freeze_alone():
    import gc

    from recompare._gc import frozen_heap

    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with frozen_heap():
            pass
        assert gc.get_freeze_count() == frozen  # not unfrozen under the caller
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("enabled", [True, False])
def test_timed_queries_pause_the_collector_and_put_it_back(enabled):
    import gc

    from recompare.evaluate.latency import _time_queries

    seen = []
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        _time_queries(lambda user: seen.append(gc.isenabled()), np.arange(3), warmup=1)
        assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [enabled, False, False, False]  # the warm-up call runs as it is
