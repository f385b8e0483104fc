"""The WALS benchmark script: its generator, and its figures without the peer installed."""
from __future__ import annotations

import sys

import numpy as np

from recompare.bench import wals as bench


def test_powerlaw_matrix_is_binary_heavy_tailed_and_near_the_requested_size():
    m = bench.powerlaw_matrix(2_000, 500, 40_000, seed=3)
    assert m.shape == (2_000, 500)
    assert 0.97 * 40_000 <= m.nnz <= 1.1 * 40_000
    assert np.all(m.data == 1) and m.has_canonical_format
    item_counts = np.sort(np.bincount(m.indices, minlength=500))[::-1]
    assert item_counts[:25].sum() > 0.2 * m.nnz  # the top 5% of items hold a large share
    again = bench.powerlaw_matrix(2_000, 500, 40_000, seed=3)
    assert np.array_equal(m.indices, again.indices)


def test_tiny_run_reports_our_figures_without_the_peer(monkeypatch):
    monkeypatch.setitem(sys.modules, "implicit", None)  # import implicit -> ImportError
    monkeypatch.setitem(sys.modules, "implicit.cpu.als", None)
    messages = []
    result = bench.run("tiny", callback=lambda event: messages.append(event["message"]))
    assert not result["peer_installed"]
    assert result["speed"]["implicit"] == bench.PEER_MISSING
    assert result["quality"]["implicit"] == bench.PEER_MISSING
    assert result["speed"]["ours"]["seconds_per_iteration"] > 0
    assert 0 < result["quality"]["ours"]["recall"] <= 1
    assert len(result["scaling"]["points"]) == len(bench.SCALES["tiny"]["slope"])
    names = [figure["name"] for figure in result["figures"]]
    assert "implicit" in names and "WALS seconds/iteration" in names
    assert messages
