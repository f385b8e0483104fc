"""Data-parallel helpers: 2 CPU processes (gloo) take the same steps as 1 process with
the same global batch, only rank 0 writes, and the one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recompare.errors import RecompareError
from recompare.models import ddp

GLOBAL_BATCH = 7  # 40 rows: shards of 4 and 3 rows, and a last batch of 5 (3 + 2)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(6, 1, generator=gen, dtype=torch.float64) + 0.1
    return x, y


def _train(ctx: ddp.Distributed, out: str | None = None) -> dict:
    """Three epochs of Adam on a small regression, each process on its shard of the batch."""
    x, y = _data()
    torch.manual_seed(1)
    module = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(),
                                 torch.nn.Linear(4, 1)).double()
    model = ddp.wrap(module, ctx)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for epoch in range(3):
        order = np.random.default_rng([0, epoch]).permutation(len(x))  # same on every rank
        total = 0.0
        for start in range(0, len(order), GLOBAL_BATCH):
            batch = order[start:start + GLOBAL_BATCH]
            rows = torch.from_numpy(ddp.shard(batch, ctx))
            loss = ((model(x[rows]) - y[rows]) ** 2).mean()
            optimizer.zero_grad()
            (loss * ddp.loss_scale(len(rows), len(batch), ctx)).backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        losses.append(ddp.all_mean(total, ctx) * ctx.world_size / len(x))
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    ddp.barrier(ctx)
    if out is not None and ddp.is_main(ctx):
        torch.save({"state": state, "losses": torch.tensor(losses, dtype=torch.float64)}, out)
    return {"state": state, "losses": losses}


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    single = _train(ddp.Distributed())
    out = tmp_path / "two.pt"
    ddp.launch(2, _train, str(out))
    two = torch.load(out, weights_only=True)
    for name, value in single["state"].items():
        torch.testing.assert_close(two["state"][name], value, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(two["losses"].numpy(), single["losses"], rtol=1e-10)
    assert single["losses"][-1] < single["losses"][0]


def test_shards_cover_the_batch_once():
    batch = np.arange(11)
    parts = [ddp.shard(batch, ddp.Distributed(rank=r, world_size=3)) for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == batch.tolist()
    scales = [ddp.loss_scale(len(p), len(batch), ddp.Distributed(rank=0, world_size=3))
              for p in parts]
    assert sum(s * len(p) for s, p in zip(scales, parts)) / 3 == pytest.approx(
        sum(len(p) ** 2 for p in parts) / 11)


def test_failure_in_a_process_is_one_line():
    with pytest.raises(RecompareError, match="a training process failed"):
        ddp.launch(2, _fail)


def _fail(ctx: ddp.Distributed) -> None:
    if ctx.rank == 1:
        raise ValueError("boom on rank 1")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_processes_must_be_positive(bad):
    with pytest.raises(RecompareError, match="processes must be an integer >= 1"):
        ddp.check_processes(bad)


def test_cuda_without_a_gpu_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RecompareError, match="no CUDA GPU"):
        ddp.resolve_device("cuda")
    assert ddp.resolve_device("auto") == "cpu"
    with pytest.raises(RecompareError, match="device must be one of"):
        ddp.resolve_device("tpu")


def test_torchrun_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert ddp.from_environment() is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert ddp.from_environment() == ddp.Distributed(rank=1, world_size=2)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(RecompareError, match="inconsistent"):
        ddp.from_environment()


def test_device_cuda_without_a_gpu_is_refused_by_topk_and_train_wals(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from recompare.cli import main as cli
    from recompare.models.topk import topk_dot

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    items = np.eye(4, dtype=np.float32)
    with pytest.raises(RecompareError, match="no CUDA GPU"):
        topk_dot(items, items, 2, device="cuda")
    ids, _ = topk_dot(items, items, 1, device="auto")  # auto falls back to the CPU
    assert ids[:, 0].tolist() == [0, 1, 2, 3]
    out = tmp_path / "wals"
    result = CliRunner().invoke(cli, ["train-wals", "data/planted", "-o", str(out),
                                      "--device", "cuda"])
    assert result.exit_code == 1 and "no CUDA GPU" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_train_wals_on_cuda_says_the_solver_is_cpu_only(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from recompare.cli import main as cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    out = tmp_path / "wals"
    result = CliRunner().invoke(cli, ["train-wals", "data/planted", "-o", str(out),
                                      "--device", "cuda"])
    assert result.exit_code == 1 and "runs on CPU only" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def _train_sparse(ctx: ddp.Distributed, out: str | None = None) -> dict:
    """Two epochs of a sparse embedding bag (SparseAdam) and a dense head (Adam), gradients
    averaged by ``all_reduce_gradients``; one item table row is never looked up."""
    gen = torch.Generator().manual_seed(0)
    bags = torch.randint(0, 11, (30, 3), generator=gen)  # rows 0..10 of a 12-row table
    y = torch.randn(30, 1, generator=gen, dtype=torch.float64)
    torch.manual_seed(2)
    table = torch.nn.EmbeddingBag(12, 4, mode="mean", sparse=True).double()
    head = torch.nn.Linear(4, 1).double()
    dense_opt = torch.optim.Adam(head.parameters(), lr=0.05)
    sparse_opt = torch.optim.SparseAdam(list(table.parameters()), lr=0.05)
    params = list(table.parameters()) + list(head.parameters())
    for epoch in range(2):
        order = np.random.default_rng([3, epoch]).permutation(len(bags))
        for start in range(0, len(order), 7):
            batch = order[start:start + 7]
            rows = torch.from_numpy(ddp.shard(batch, ctx))
            dense_opt.zero_grad(set_to_none=True)
            sparse_opt.zero_grad(set_to_none=True)
            if len(rows):
                loss = ((head(table(bags[rows])) - y[rows]) ** 2).mean()
                (loss * ddp.loss_scale(len(rows), len(batch), ctx)).backward()
            ddp.all_reduce_gradients(params, ctx)
            dense_opt.step()
            sparse_opt.step()
    state = {**{f"t.{k}": v for k, v in table.state_dict().items()},
             **{f"h.{k}": v for k, v in head.state_dict().items()}}
    if out is not None and ddp.is_main(ctx):
        torch.save(state, out)
    return state


def test_sparse_and_dense_gradients_all_reduced_match_one_process(tmp_path):
    single = _train_sparse(ddp.Distributed())
    out = tmp_path / "two.pt"
    ddp.launch(2, _train_sparse, str(out))
    two = torch.load(out, weights_only=True)
    for name, value in single.items():
        torch.testing.assert_close(two[name], value, rtol=1e-10, atol=1e-12)
    assert not torch.equal(single["t.weight"][:11], _initial_table()[:11])
    torch.testing.assert_close(single["t.weight"][11], _initial_table()[11])  # never looked up


def _initial_table() -> torch.Tensor:
    torch.manual_seed(2)
    return torch.nn.EmbeddingBag(12, 4, mode="mean", sparse=True).double().weight.detach()


# --------------------------------------------------------- train-dnn --processes N
def _train_dnn(dataset, out, *extra: str):
    from click.testing import CliRunner

    from recompare.cli import main

    args = ["train-dnn", str(dataset), "-o", str(out), "--dim", "16", "--hidden", "24,16",
            "--dropout", "0.3", "--validation-fraction", "0", "--threads", "1", *extra]
    return CliRunner().invoke(main, args)


def _batch_with_a_lonely_last_user(data) -> str:
    """A batch size whose last batch holds one user: the second process's shard of it
    is empty, and it must still draw what the first one does."""
    n_active = int((np.diff(data.train.indptr) > 0).sum())
    return str(next(b for b in range(24, n_active) if n_active % b == 1))


def _items(path) -> np.ndarray:
    with np.load(path / "arrays.npz", allow_pickle=False) as arrays:
        return arrays["item_embeddings"]


def _one_process_reference(tiny_split, tmp_path) -> tuple:
    """The data set, a one-process checkpoint after epoch 1 (in ``first``) and the same
    fit run on to epoch 2 in one process (``one``): (data set, checkpoint dir, batch flags)."""
    tiny_split.save(tmp_path / "ds")
    ds, ckpt = tmp_path / "ds", tmp_path / "ckpt"
    batch = ["--batch-size", _batch_with_a_lonely_last_user(tiny_split)]
    first = _train_dnn(ds, tmp_path / "first", "--epochs", "1", *batch, "--checkpoint-dir",
                       str(ckpt))
    assert first.exit_code == 0, first.output
    one = _train_dnn(ds, tmp_path / "one", "--epochs", "2", *batch)
    assert one.exit_code == 0, one.output
    return ds, ckpt, batch


def test_train_dnn_two_processes_match_one_with_the_same_global_batch(tiny_split, tmp_path):
    """One epoch in 2 processes, resumed from a one-process checkpoint (one spawn keeps
    the test short), against the same epoch in one process."""
    import json

    ds, ckpt, batch = _one_process_reference(tiny_split, tmp_path)
    two = _train_dnn(ds, tmp_path / "two", "--epochs", "2", *batch, "--processes", "2",
                     "--resume", str(ckpt))
    assert two.exit_code == 0, two.output
    items_one = _items(tmp_path / "one")
    # summing the shards' gradients changes the float order only: Adam's step
    # normalisation can magnify that on entries near zero, hence the small atol
    np.testing.assert_allclose(_items(tmp_path / "two"), items_one, rtol=1e-5, atol=1e-5)
    assert np.abs(items_one - _items(tmp_path / "first")).max() > 1e-3  # epoch 2 trained
    # the main process rewrote the checkpoint after the distributed epoch
    assert json.loads((ckpt / "checkpoint.json").read_text())["state"]["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "ds", "first", "one", "two"]


@pytest.mark.parametrize("flags, message", [
    (["--processes", "0"], "processes must be an integer >= 1"),
    (["--processes", "2", "--loss", "sampled", "--negatives", "in-batch"], "in-batch"),
])
def test_train_dnn_refuses_bad_process_counts_and_leaves_no_model(tiny_split, tmp_path,
                                                                  flags, message):
    tiny_split.save(tmp_path / "ds")
    result = _train_dnn(tmp_path / "ds", tmp_path / "m", "--epochs", "1", *flags)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_train_dnn_device_cuda_without_a_gpu_is_one_line_error(tiny_split, tmp_path):
    tiny_split.save(tmp_path / "ds")
    result = _train_dnn(tmp_path / "ds", tmp_path / "m", "--device", "cuda")
    assert result.exit_code != 0
    assert "no CUDA GPU" in result.output
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------ train-dnn under torchrun
def _torchrun(*args: str, nproc: int = 2):
    """``torchrun --standalone --nproc-per-node N -m recompare ARGS`` with this tree first on
    the path (torch.distributed.run is torchrun's module)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(nproc), "-m", "recompare", *args]
    return subprocess.run(command, check=False, env=env, cwd=root, capture_output=True,
                          text=True, timeout=600)


def test_train_dnn_under_torchrun_matches_one_process_and_resumes(tiny_split, tmp_path):
    """torchrun with 2 CPU processes resumes a one-process checkpoint for a second epoch
    (one launch keeps the test short): same items as two epochs in one process, the
    checkpoint rewritten by rank 0 and one summary on stdout."""
    import json

    ds, ckpt, batch = _one_process_reference(tiny_split, tmp_path)
    run = _torchrun("train-dnn", str(ds), "-o", str(tmp_path / "two"), "--dim", "16",
                    "--hidden", "24,16", "--dropout", "0.3", "--validation-fraction", "0",
                    "--threads", "1", "--epochs", "2", *batch, "--resume", str(ckpt),
                    "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)  # rank 0's summary alone: rank 1 printed nothing
    assert summary["epochs_run"] == 2 and summary["model"] == str(tmp_path / "two")
    np.testing.assert_allclose(_items(tmp_path / "two"), _items(tmp_path / "one"),
                               rtol=1e-5, atol=1e-5)
    assert json.loads((ckpt / "checkpoint.json").read_text())["state"]["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "ds", "first", "one", "two"]


def test_train_dnn_processes_must_agree_with_torchrun(tiny_split, tmp_path, monkeypatch):
    """An explicit --processes that is not torchrun's WORLD_SIZE is a one-line error,
    before any process group is joined."""
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"),
                        ("MASTER_PORT", str(ddp.free_port()))):
        monkeypatch.setenv(name, value)
    tiny_split.save(tmp_path / "ds")
    result = _train_dnn(tmp_path / "ds", tmp_path / "m", "--epochs", "1", "--processes", "3")
    assert result.exit_code != 0
    assert "--processes 3 under torchrun, whose WORLD_SIZE is 2" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


def test_bench_scale_times_dnn_epochs_without_spark(monkeypatch):
    """``bench scale`` without pyspark/Java: the Spark part gives its one-line reason, the
    DNN part still measures 1 and 2 processes, which train to the same losses."""
    from recompare.bench import scale
    from recompare.models import wals_spark

    def no_spark() -> None:
        raise RecompareError("--engine spark needs pyspark: pip install 'recompare[spark]'")

    monkeypatch.setattr(wals_spark, "require_spark", no_spark)
    result = scale.run("tiny")
    assert "needs pyspark" in result["wals"]["skipped"]
    names = {fig["name"]: fig["value"] for fig in result["figures"]}
    assert names["Spark ALS vs local WALS"].startswith("not run: --engine spark needs pyspark")
    runs = result["dnn"]["runs"]
    assert [runs[n]["processes"] for n in runs] == [1, 2, 1]
    for run in runs.values():
        assert len(run["epoch_seconds"]) == scale.DNN_SIZES["tiny"][-1]
        assert run["seconds_per_epoch"] == np.median(run["epoch_seconds"][1:])
    one, two = runs["1 process"], runs["2 processes"]
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    assert names["DNN seconds per epoch, 2 processes / 1 process (same cores)"] == \
        two["seconds_per_epoch"] / one["seconds_per_epoch"]
