"""The guarded readers of recompare._io against every kind of damage, and own_file.

The end-to-end suite (each documented file x damage x command, through the CLI) is in
tests/corruption_suite.py and uses the same damage helpers.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from corruption_suite import (
    DOCUMENTED_FILES,
    add_array,
    add_json_key,
    drop_array,
    drop_column,
    drop_json_key,
    drop_last_row,
    flip_bytes,
    non_finite,
    object_array,
    truncate,
    wrong_dtype,
    wrong_json_type,
    wrong_shape,
)

from recompare._io import (
    ArraySpec,
    own_file,
    read_csv_table,
    read_json,
    read_npz,
    read_sparse_npz,
    read_torch_state,
    sha256_of,
)
from recompare.errors import RecompareError


def refused(call, path: Path, match: str) -> str:
    """Run ``call``; it must raise one line naming ``path`` and matching ``match``."""
    with pytest.raises(RecompareError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message, message
    assert re.search(match, message, re.IGNORECASE), message
    return message


# ------------------------------------------------------------------ own_file


@pytest.mark.parametrize("name", ["../other/arrays.npz", "sub/arrays.npz", "/etc/passwd",
                                  "..", ".", "", "a\\b"])
def test_own_file_refuses_names_that_are_not_plain(tmp_path, name):
    with pytest.raises(RecompareError, match="not a plain file name"):
        own_file(tmp_path, name)


def test_own_file_refuses_links_out_of_the_directory(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    secret = tmp_path / "other.npz"
    secret.write_bytes(b"x")
    (model / "arrays.npz").symlink_to(secret)
    with pytest.raises(RecompareError, match="points outside the directory"):
        own_file(model, "arrays.npz")


def test_own_file_accepts_its_own_files(tmp_path):
    (tmp_path / "real.npz").write_bytes(b"x")
    (tmp_path / "alias.npz").symlink_to(tmp_path / "real.npz")
    assert own_file(tmp_path, "alias.npz") == tmp_path / "alias.npz"
    assert own_file(tmp_path, "not-yet.json") == tmp_path / "not-yet.json"


# ------------------------------------------------------------------ JSON

REQUIRED = {"kind": str, "n_users": int, "params": dict}
OPTIONAL = {"score": float, "note": (str, type(None))}


@pytest.fixture
def model_json(tmp_path) -> Path:
    path = tmp_path / "model.json"
    path.write_text('{"kind": "wals", "n_users": 3, "params": {"factors": 4}, "score": 1}')
    return path


def test_read_json_accepts_a_good_file(model_json):
    meta = read_json(model_json, REQUIRED, OPTIONAL, what="model description")
    assert meta["params"] == {"factors": 4} and meta["score"] == 1


@pytest.mark.parametrize(("damage", "match"), [
    (truncate, "not valid JSON"),
    (flip_bytes, "not UTF-8"),
    (drop_json_key("n_users"), "missing key 'n_users'"),
    (add_json_key, "unknown key 'unexpected_key'"),
    (wrong_json_type("kind"), "'kind' must be a string"),
    (wrong_json_type("n_users"), "'n_users' must be an integer"),
])
def test_read_json_refuses_damage(model_json, damage, match):
    damage(model_json)
    refused(lambda: read_json(model_json, REQUIRED, OPTIONAL, what="model description"),
            model_json, match)


@pytest.mark.parametrize(("text", "match"), [
    ('[1, 2]', "expected a JSON object"),
    ('{"kind": "w", "n_users": true, "params": {}}', "'n_users' must be an integer"),
    ('{"kind": "w", "n_users": 1.5, "params": {}}', "'n_users' must be an integer"),
    ('{"kind": "w", "n_users": 1, "params": {}, "score": "high"}', "'score' must be a number"),
    ("", "not valid JSON"),
    ("[" * 100_000, "nested too deeply|not valid JSON"),
])
def test_read_json_refuses_wrong_shapes(tmp_path, text, match):
    path = tmp_path / "meta.json"
    path.write_text(text)
    refused(lambda: read_json(path, REQUIRED, OPTIONAL, what="data set description"),
            path, match)


def test_read_json_missing_and_directory(tmp_path):
    refused(lambda: read_json(tmp_path / "meta.json", REQUIRED, what="x"),
            tmp_path / "meta.json", "missing")
    (tmp_path / "dir.json").mkdir()
    refused(lambda: read_json(tmp_path / "dir.json", REQUIRED, what="x"),
            tmp_path / "dir.json", "not a regular file")


def test_read_json_allow_unknown(model_json):
    add_json_key(model_json)
    meta = read_json(model_json, REQUIRED, OPTIONAL, what="x", allow_unknown=True)
    assert meta["unexpected_key"] == 1


# ------------------------------------------------------------------ dense .npz

SPEC = {
    "user_factors": ArraySpec("f", ("n_users", "factors")),
    "item_factors": ArraySpec("f", ("n_items", "factors")),
    "global_mean": ArraySpec("f", ()),
    "codes": ArraySpec("iu", (None,)),
    "item_weight": ArraySpec("f", ("n_items",), required=False),
}


@pytest.fixture
def arrays_npz(tmp_path) -> Path:
    path = tmp_path / "arrays.npz"
    rng = np.random.default_rng(0)
    np.savez(path, user_factors=rng.random((5, 3), dtype=np.float32),
             item_factors=rng.random((7, 3), dtype=np.float32),
             global_mean=np.float32(0.5), codes=np.arange(4))
    return path


def test_read_npz_accepts_a_good_file_and_reports_dims(arrays_npz):
    dims = {"n_items": 7}
    arrays = read_npz(arrays_npz, SPEC, what="model arrays", dims=dims)
    assert arrays["user_factors"].shape == (5, 3) and "item_weight" not in arrays
    assert dims == {"n_items": 7, "n_users": 5, "factors": 3}


@pytest.mark.parametrize(("damage", "match"), [
    (truncate, "damaged or not an .npz"),
    (flip_bytes, "damaged"),
    (drop_array("item_factors"), "missing array 'item_factors'"),
    (add_array, "unknown array 'unexpected_array'"),
    (object_array("codes"), "object array"),
    (wrong_dtype("user_factors"), "'user_factors' has dtype <U"),
    (wrong_shape("item_factors"), r"'item_factors' has shape \(7, 2\), axis 1 should be 3"),
    (wrong_shape("global_mean"), "'global_mean' has 1 dimensions, expected 0"),
    (non_finite("user_factors"), "'user_factors' holds NaN"),
])
def test_read_npz_refuses_damage(arrays_npz, damage, match):
    damage(arrays_npz)
    refused(lambda: read_npz(arrays_npz, SPEC, what="model arrays"), arrays_npz, match)


def test_read_npz_checks_named_dims_against_the_caller(arrays_npz):
    refused(lambda: read_npz(arrays_npz, SPEC, what="model arrays", dims={"n_users": 6}),
            arrays_npz, r"axis 0 should be 6 \(n_users\)")


def test_read_npz_refuses_what_is_not_an_archive(tmp_path):
    single = tmp_path / "single.npz"
    with open(single, "wb") as handle:
        np.save(handle, np.zeros(3))
    refused(lambda: read_npz(single, SPEC, what="x"), single, "not an .npz archive")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(os.urandom(64))
    refused(lambda: read_npz(garbage, SPEC, what="x"), garbage, "not an .npz archive|damaged")
    refused(lambda: read_npz(tmp_path / "none.npz", SPEC, what="x"), tmp_path / "none.npz",
            "missing")


# ------------------------------------------------------------------ sparse .npz


@pytest.fixture
def train_npz(tmp_path) -> Path:
    path = tmp_path / "train.npz"
    matrix = sp.random(6, 5, density=0.5, format="csr", dtype=np.float32, random_state=0)
    sp.save_npz(path, matrix)
    return path


def test_read_sparse_npz_round_trip(train_npz):
    matrix = read_sparse_npz(train_npz, what="training matrix", shape=(6, 5))
    assert (matrix != sp.load_npz(train_npz)).nnz == 0 and matrix.format == "csr"


@pytest.mark.parametrize(("damage", "match"), [
    (truncate, "damaged"),
    (flip_bytes, "damaged"),
    (drop_array("indptr"), "missing array 'indptr'"),
    (add_array, "unknown array"),
    (object_array("data"), "object array"),
    (wrong_dtype("data"), "'data' has dtype"),
    (wrong_dtype("format"), "'format' has dtype"),
    (wrong_shape("indptr"), "indptr has 6 entries for 6 rows"),
    (wrong_shape("shape"), r"'shape' has shape \(1,\)"),
    (non_finite("data"), "NaN"),
])
def test_read_sparse_npz_refuses_damage(train_npz, damage, match):
    damage(train_npz)
    refused(lambda: read_sparse_npz(train_npz, what="training matrix"), train_npz, match)


def _rewrite(path: Path, **changes) -> None:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays.update(changes)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


@pytest.mark.parametrize(("change", "match"), [
    ({"format": np.array("csc")}, "'csc' matrix, expected 'csr'"),
    ({"shape": np.array([6, 2])}, "column index is outside"),
    ({"indptr": np.array([0, 1, 0, 2, 3, 4, 99])}, "indptr is not a valid row index"),
    ({"data": np.ones(3, np.float32)}, "values but"),
])
def test_read_sparse_npz_refuses_inconsistent_structure(train_npz, change, match):
    _rewrite(train_npz, **change)
    refused(lambda: read_sparse_npz(train_npz, what="training matrix"), train_npz, match)


def test_read_sparse_npz_checks_shape_and_value_kind(train_npz):
    refused(lambda: read_sparse_npz(train_npz, what="m", shape=(6, 4)), train_npz,
            "6 x 5, expected 6 x 4")
    refused(lambda: read_sparse_npz(train_npz, what="times", kinds="iu"), train_npz,
            "values have dtype float32")


# ------------------------------------------------------------------ CSV


@pytest.fixture
def items_csv(tmp_path) -> Path:
    path = tmp_path / "items.csv"
    path.write_text("index,id,group,info:title\n0,007,en,A\n1,x2,,\"B, the sequel\"\n2,3,fr,C\n")
    return path


def test_read_csv_table_keeps_ids_as_text(items_csv):
    frame = read_csv_table(items_csv, ["index", "id"], what="item table", n_rows=3)
    assert list(frame["id"]) == ["007", "x2", "3"] and frame["group"][1] == ""


@pytest.mark.parametrize(("damage", "match"), [
    (truncate, "has 1 rows, expected 3|not a valid CSV"),
    (flip_bytes, "not UTF-8"),
    (drop_column("id"), "missing column 'id'"),
    (drop_last_row, "has 2 rows, expected 3"),
])
def test_read_csv_table_refuses_damage(items_csv, damage, match):
    damage(items_csv)
    refused(lambda: read_csv_table(items_csv, ["index", "id"], what="item table", n_rows=3),
            items_csv, match)


@pytest.mark.parametrize(("text", "match"), [
    ("", "not a valid CSV"),
    ('index,id\n0,"unterminated\n', "not a valid CSV"),
])
def test_read_csv_table_refuses_unparseable(tmp_path, text, match):
    path = tmp_path / "users.csv"
    path.write_text(text)
    refused(lambda: read_csv_table(path, ["id"], what="user table"), path, match)


# ------------------------------------------------------------------ torch state


@pytest.fixture
def state_pt(tmp_path) -> Path:
    torch = pytest.importorskip("torch")  # a declared dependency: this only guards the import
    path = tmp_path / "state.pt"
    torch.save({"model": {"w": torch.ones(2, 3)}, "optimizers": []}, path)
    return path


def test_read_torch_state_accepts_a_state(state_pt):
    payload = read_torch_state(state_pt, what="checkpoint state", required=("model",))
    assert tuple(payload["model"]["w"].shape) == (2, 3)


@pytest.mark.parametrize(("damage", "match"), [(truncate, "damaged torch file"),
                                               (flip_bytes, "damaged torch file")])
def test_read_torch_state_refuses_damage(state_pt, damage, match):
    damage(state_pt)
    refused(lambda: read_torch_state(state_pt, what="checkpoint state"), state_pt, match)


class _Payload:
    """Not a tensor: loading it needs unpickling arbitrary code."""


def test_read_torch_state_refuses_pickled_objects_and_wrong_layout(state_pt):
    import torch

    torch.save({"model": _Payload()}, state_pt)
    refused(lambda: read_torch_state(state_pt, what="state"), state_pt, "damaged torch file")
    torch.save([torch.ones(1)], state_pt)
    refused(lambda: read_torch_state(state_pt, what="state"), state_pt, "expected a dict")
    torch.save({"optimizers": []}, state_pt)
    refused(lambda: read_torch_state(state_pt, what="state", required=("model",)), state_pt,
            "missing entry 'model'")


# ------------------------------------------------------------------ the suite's file list


def test_every_file_of_the_data_set_layout_is_in_the_corruption_suite():
    layout = (Path(__file__).resolve().parents[1] / "docs" / "data-layout.md").read_text()
    tree = layout.split("```", 2)[1]
    documented = set(re.findall(r"^\s+([\w.-]+\.(?:json|npz|csv))\s", tree, re.MULTILINE))
    listed = {f.name for f in DOCUMENTED_FILES if f.artifact == "dataset"}
    assert documented and documented == listed


def test_every_suite_entry_has_damages_and_readers():
    for entry in DOCUMENTED_FILES:
        assert {"truncate", "flip-bytes"} <= set(entry.damages), entry.name
        assert entry.commands, entry.name


def test_read_torch_state_checks_a_recorded_checksum(state_pt):
    digest = sha256_of(state_pt)
    assert read_torch_state(state_pt, what="state", sha256=digest)["optimizers"] == []
    raw = bytearray(state_pt.read_bytes())
    raw[-100] ^= 0x01  # one bit: torch itself may not notice
    state_pt.write_bytes(bytes(raw))
    refused(lambda: read_torch_state(state_pt, what="state", sha256=digest), state_pt,
            "checksum mismatch")
