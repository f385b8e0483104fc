"""GPU paths: run by ``make test-gpu`` (``pytest -m gpu``) on a machine with a CUDA GPU.

Deselected by default (``-m "not gpu"`` in pyproject.toml).  Selected on a machine
without a GPU they fail rather than skip, so a green ``make test-gpu`` always means
the GPU code ran.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recompare.models import ddp
from recompare.models.topk import topk_dot

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_gpu():
    assert torch.cuda.is_available(), "make test-gpu needs a CUDA GPU visible to torch"


@pytest.mark.parametrize("n_items", [300, 5000])  # the plain and the two-stage selection
def test_topk_on_cuda_matches_cpu(n_items):
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((500, 16)).astype(np.float32)
    items = rng.standard_normal((n_items, 16)).astype(np.float32)
    seen = sp.random(500, n_items, density=0.02, format="csr", random_state=1)
    cpu_ids, cpu_scores = topk_dot(queries, items, 10, exclude=seen)
    gpu_ids, gpu_scores = topk_dot(queries, items, 10, exclude=seen, device="cuda")
    np.testing.assert_allclose(gpu_scores, cpu_scores, rtol=1e-4, atol=1e-4)
    # a different BLAS may swap items whose scores agree to float precision only
    assert (gpu_ids == cpu_ids).mean() > 0.99
    assert not np.isin(gpu_ids[0], seen[0].indices).any()


def test_evaluate_on_cuda_matches_cpu(tiny_split):
    from recompare.evaluate.protocols import evaluate
    from recompare.models.baselines import Popularity
    from recompare.models.wals import WALS

    for model in (Popularity().fit(tiny_split), WALS(iterations=2, dim=8).fit(tiny_split)):
        for protocol in ("weak", "strong"):
            cpu = evaluate(model, tiny_split, protocol, (10,), folding=False)
            gpu = evaluate(model, tiny_split, protocol, (10,), folding=False, device="cuda")
            assert gpu["metrics"] == pytest.approx(cpu["metrics"], abs=0.02)


def test_resolve_device_picks_the_gpu():
    assert ddp.resolve_device("auto") == "cuda"
    assert ddp.resolve_device("cuda") == "cuda"
