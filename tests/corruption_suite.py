"""Corruption suite, shared part: the damages, the documented files and who reads them.

The tests are in ``tests/test_corruption_cli.py`` (end to end, through the CLI) and
``tests/test_corruption.py`` (the guarded readers directly); both take their cases from here.
A new file type is covered by adding one entry to :data:`DOCUMENTED_FILES`: its format, the
keys, arrays or columns worth damaging, and the commands that read it, the first of which
runs every damage of that file (the others get spot checks in the CLI test).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ------------------------------------------------------------------ damages (shared)


def truncate(path: Path) -> None:
    """Keep the first half of the bytes (a write cut short)."""
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def flip_bytes(path: Path) -> None:
    """Invert 16 bytes in the middle: ASCII becomes invalid UTF-8, zip members fail their CRC."""
    raw = bytearray(path.read_bytes())
    start = max(0, len(raw) // 2 - 8)
    for i in range(start, min(len(raw), start + 16)):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


def drop_json_key(key: str) -> Callable[[Path], None]:
    return lambda path: _edit_json(path, lambda obj: obj.pop(key))


def add_json_key(path: Path) -> None:
    _edit_json(path, lambda obj: obj.update(unexpected_key=1))


def wrong_json_type(key: str) -> Callable[[Path], None]:
    """Replace the value of ``key`` by one of another JSON type."""
    def edit(obj: dict) -> None:
        obj[key] = [] if isinstance(obj[key], str) else "not-the-right-type"
    return lambda path: _edit_json(path, edit)


def _edit_npz(path: Path, edit: Callable[[dict], None]) -> None:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    edit(arrays)
    with open(path, "wb") as handle:  # np.savez(path) would append .npz to a new name
        np.savez(handle, **arrays)


def drop_array(name: str) -> Callable[[Path], None]:
    return lambda path: _edit_npz(path, lambda arrays: arrays.pop(name))


def add_array(path: Path) -> None:
    _edit_npz(path, lambda arrays: arrays.update(unexpected_array=np.zeros(3)))


def object_array(name: str) -> Callable[[Path], None]:
    """Replace ``name`` by an object array (loading it would need unpickling)."""
    def edit(arrays: dict) -> None:
        arrays[name] = np.array([{"payload": 1}, None], dtype=object)
    return lambda path: _edit_npz(path, edit)


def wrong_dtype(name: str) -> Callable[[Path], None]:
    """Same shape, text instead of numbers (or numbers instead of text)."""
    def edit(arrays: dict) -> None:
        value = arrays[name]
        arrays[name] = (np.zeros(value.shape, np.float64) if value.dtype.kind in "US"
                        else value.astype(str))
    return lambda path: _edit_npz(path, edit)


def wrong_shape(name: str) -> Callable[[Path], None]:
    """Drop the last entry along the last axis (or make a scalar a vector)."""
    def edit(arrays: dict) -> None:
        value = arrays[name]
        arrays[name] = np.repeat(value, 2) if value.ndim == 0 else value[..., :-1]
    return lambda path: _edit_npz(path, edit)


def non_finite(name: str) -> Callable[[Path], None]:
    def edit(arrays: dict) -> None:
        value = arrays[name].astype(np.float32, copy=True)
        value.reshape(-1)[:1] = np.nan
        arrays[name] = value
    return lambda path: _edit_npz(path, edit)


def drop_column(column: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        import pandas as pd

        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame.drop(columns=[column]).to_csv(path, index=False)
    return damage


def drop_last_row(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


def _edit_state(path: Path, edit: Callable[[dict], None], inner: str | None = None) -> None:
    import torch

    payload = torch.load(path, weights_only=True)
    edit(payload[inner] if inner else payload)
    torch.save(payload, path)


def drop_tensor(inner: str | None = None) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        _edit_state(path, lambda sd: sd.pop(next(iter(sd))), inner)
    return damage


def add_tensor(inner: str | None = None) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        import torch

        _edit_state(path, lambda sd: sd.update(unexpected=torch.zeros(2)), inner)
    return damage


def reshape_tensor(inner: str | None = None) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        def edit(sd: dict) -> None:
            key = next(k for k, v in sd.items() if getattr(v, "ndim", 0) >= 1)
            sd[key] = sd[key][..., :-1].clone()
        _edit_state(path, edit, inner)
    return damage


# ------------------------------------------------------------------ the documented files


@dataclass(frozen=True)
class DocumentedFile:
    """One file of a saved artifact, what to damage in it, and who reads it."""

    artifact: str          # "dataset", "wals", "dnn", "popularity", "checkpoint"
    name: str              # file name inside the artifact directory (fixed by the format)
    damages: dict[str, Callable[[Path], None]]
    commands: tuple[str, ...]  # keys of command_args; the first runs every damage


def _json_damages(keys: tuple[str, ...], typed: tuple[str, ...]) -> dict:
    out = {"truncate": truncate, "flip-bytes": flip_bytes, "unknown-key": add_json_key}
    out.update({f"drop-{k}": drop_json_key(k) for k in keys})
    out.update({f"wrong-type-{k}": wrong_json_type(k) for k in typed})
    return out


def _npz_damages(arrays: tuple[str, ...], floats: tuple[str, ...] = ()) -> dict:
    out = {"truncate": truncate, "flip-bytes": flip_bytes, "unknown-array": add_array}
    for a in arrays:
        out.update({f"drop-{a}": drop_array(a), f"object-{a}": object_array(a),
                    f"dtype-{a}": wrong_dtype(a), f"shape-{a}": wrong_shape(a)})
    out.update({f"nan-{a}": non_finite(a) for a in floats})
    return out


_SPARSE = ("data", "indices", "indptr", "shape", "format")


def _csv_damages(columns: tuple[str, ...]) -> dict:
    out = {"truncate": truncate, "flip-bytes": flip_bytes, "drop-last-row": drop_last_row}
    out.update({f"drop-column-{c}": drop_column(c) for c in columns})
    return out


def _pt_damages(inner: str | None = None) -> dict:
    return {"truncate": truncate, "flip-bytes": flip_bytes, "drop-tensor": drop_tensor(inner),
            "unknown-tensor": add_tensor(inner), "shape-tensor": reshape_tensor(inner)}


_DATA_READERS = ("data-info", "train-wals", "export-with-dataset", "evaluate")
_MODEL_READERS = ("export", "evaluate")

DOCUMENTED_FILES: list[DocumentedFile] = [
    # the data set layout of docs/data-layout.md
    DocumentedFile("dataset", "meta.json",
                   _json_damages(("format", "version", "counts", "groups", "split",
                                  "user_features"), ("counts", "groups", "split")),
                   _DATA_READERS),
    *(DocumentedFile("dataset", f"{part}.npz", _npz_damages(_SPARSE, ("data",)), _DATA_READERS)
      for part in ("interactions", "timestamps", "train", "test", "foldin", "heldout")),
    # the "group" columns are optional in the format (a data set may group its items but
    # not its users), so dropping one is not damage that a reader could tell
    DocumentedFile("dataset", "users.csv", _csv_damages(("id", "heldout", "feature:age")),
                   _DATA_READERS),
    DocumentedFile("dataset", "items.csv", _csv_damages(("id",)), _DATA_READERS),
    # model directories: model.json + arrays.npz (+ state.pt for the DNN)
    DocumentedFile("wals", "model.json",
                   _json_damages(("kind", "params", "n_users", "n_items", "fingerprint"),
                                 ("params", "n_users")), _MODEL_READERS),
    DocumentedFile("wals", "arrays.npz",
                   _npz_damages(("user_factors", "item_factors", "global_mean"),
                                ("user_factors", "item_factors")), _MODEL_READERS),
    DocumentedFile("dnn", "model.json",
                   _json_damages(("kind", "params", "n_users", "n_items", "schema"),
                                 ("params", "n_items")), _MODEL_READERS),
    DocumentedFile("dnn", "arrays.npz",
                   _npz_damages(("item_embeddings", "query_embeddings"),
                                ("item_embeddings", "query_embeddings")), _MODEL_READERS),
    DocumentedFile("dnn", "state.pt", _pt_damages(), _MODEL_READERS),
    DocumentedFile("popularity", "model.json",
                   _json_damages(("kind", "n_users", "n_items"), ("n_items",)),
                   _MODEL_READERS),
    # a training checkpoint: checkpoint.json + state.pt {"model", "optimizers", ...}
    DocumentedFile("checkpoint", "checkpoint.json",
                   _json_damages(("format", "params", "fingerprint", "state"), ("state",)),
                   ("resume",)),
    DocumentedFile("checkpoint", "state.pt", _pt_damages("model"), ("resume",)),
]
# `recompare export` writes an .npz that no recompare command reads back: nothing to damage.

# ------------------------------------------------------------------ building the artifacts

_DNN = ["--dim", "8", "--hidden", "none", "--epochs", "2", "--batch-size", "32",
        "--patience", "0"]
_WALS = ["--dim", "4", "--iterations", "1"]


def _invoke(args: list[str]):
    from click.testing import CliRunner

    from recompare.cli import main

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, (args, result.output)
    return result


def build_pristine(root: Path) -> dict[str, Path]:
    """Write one of each artifact under ``root``; returns artifact -> directory."""
    from recompare.data.dataset import Dataset
    from recompare.models.baselines import Popularity

    data = root / "dataset"
    _invoke(["data", "synth", str(data), "--users", "80", "--items", "40", "--groups", "2",
             "--interactions-per-user", "8", "--split", "both"])
    if not (data / "timestamps.npz").exists():  # synth data may carry no times: add some
        import scipy.sparse as sp

        ds = Dataset.load(data)
        times = ds.interactions.copy()
        times.data = np.arange(times.nnz, dtype=np.int64) + 1_600_000_000
        sp.save_npz(data / "timestamps.npz", sp.csr_matrix(times))
    _invoke(["train-wals", str(data), "-o", str(root / "wals"), *_WALS])
    _invoke(["train-dnn", str(data), "-o", str(root / "dnn"), *_DNN,
             "--checkpoint-dir", str(root / "checkpoint")])
    Popularity().fit(Dataset.load(data)).save(root / "popularity")
    return {"dataset": data, "wals": root / "wals", "dnn": root / "dnn",
            "popularity": root / "popularity", "checkpoint": root / "checkpoint"}


def command_args(command: str, dirs: dict[str, Path], out: Path) -> list[str] | None:
    """The argument list of one reading command; ``out`` is where it may write."""
    data, model = str(dirs["dataset"]), str(dirs.get("model", dirs["wals"]))
    return {
        "data-info": ["data", "info", data],
        "train-wals": ["train-wals", data, "-o", str(out), *_WALS],
        "export-with-dataset": ["export", str(dirs["wals"]), str(out), "--dataset", data],
        "evaluate": ["evaluate", data, model, "--k", "5", "--report", str(out)],
        "export": ["export", model, str(out)],
        "resume": ["train-dnn", data, "-o", str(out), *_DNN, "--epochs", "3",
                   "--resume", str(dirs["checkpoint"])],
    }[command]
