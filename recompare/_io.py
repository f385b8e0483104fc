"""Guarded readers: the one way recompare reads its own documented files.

Every reader turns any damage to the file it reads (missing, truncated, flipped bytes, wrong
types, missing or unknown keys, object arrays, wrong dtypes or shapes, non-finite values) into a
single-line :class:`RecompareError` of the form ``cannot read <what> <path>: <problem>``.
File names are fixed by the caller's format and go through :func:`own_file`, so a data set or
model directory can never make recompare read a file outside itself.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RecompareError

TypeSpec = type | tuple[type, ...]


def _fail(path: Path, what: str, problem: object) -> RecompareError:
    text = " ".join(str(problem).split()) or "unreadable"
    return RecompareError(f"cannot read {what} {path}: {text}")


def own_file(directory: str | os.PathLike, name: str) -> Path:
    """The path of the documented file ``name`` inside ``directory``.

    Refuses names that are not a single plain file name (separators, ``.``, ``..``, absolute
    paths) and names that resolve, through symbolic links, outside ``directory``. The file
    itself need not exist.
    """
    root = Path(directory)
    bad = (not isinstance(name, str) or name in {"", ".", ".."} or "/" in name
           or "\\" in name or "\0" in name or os.sep in name
           or (os.altsep is not None and os.altsep in name))
    if bad:
        raise RecompareError(f"{root}: refusing to read {name!r}: not a plain file name")
    path = root / name
    inside = root.resolve()
    target = path.resolve()
    if target != inside and inside not in target.parents:
        raise RecompareError(f"{root}: refusing to read {name}: it points outside the "
                             f"directory (to {target})")
    return path


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.exists():
        raise RecompareError(f"cannot read {what} {path}: the file is missing")
    if not path.is_file():
        raise RecompareError(f"cannot read {what} {path}: not a regular file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _fail(path, what, exc.strerror or exc) from None


def _type_name(spec: TypeSpec) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "an object", type(None): "null"}
    kinds = spec if isinstance(spec, tuple) else (spec,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _has_type(value: Any, spec: TypeSpec) -> bool:
    kinds = spec if isinstance(spec, tuple) else (spec,)
    if isinstance(value, bool):  # JSON true is not a number
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, kinds)


def check_keys(mapping: Any, required: Mapping[str, TypeSpec],
               optional: Mapping[str, TypeSpec] | None = None, *, path: Path, what: str,
               where: str = "", allow_unknown: bool = False) -> dict:
    """Check a JSON object's keys and value types; ``where`` names a nested object."""
    optional = optional or {}
    label = f"{where}: " if where else ""
    if not isinstance(mapping, dict):
        raise _fail(path, what, f"{label}expected a JSON object, found {type(mapping).__name__}")
    for key, spec in required.items():
        if key not in mapping:
            raise _fail(path, what, f"{label}missing key '{key}'")
    for key, value in mapping.items():
        spec = required.get(key, optional.get(key))
        if spec is None:
            if allow_unknown:
                continue
            raise _fail(path, what, f"{label}unknown key '{key}'")
        if not _has_type(value, spec):
            raise _fail(path, what, f"{label}'{key}' must be {_type_name(spec)}, "
                                    f"found {json.dumps(value)[:40]}")
    return mapping


def read_json(path: str | os.PathLike, required: Mapping[str, TypeSpec],
              optional: Mapping[str, TypeSpec] | None = None, *, what: str,
              allow_unknown: bool = False) -> dict:
    """Parse a JSON object and check its top-level keys.

    Parameters
    ----------
    path : path of the file
    required, optional : key -> type (or tuple of types) of its value; ``int`` values are
        accepted where ``float`` is asked, booleans only where ``bool`` is.
    what : what the file is, for the message (``"model description"``).
    allow_unknown : accept keys that are in neither mapping (open-ended provenance).

    Returns
    -------
    dict, the parsed object (nested values are the caller's to check, see :func:`check_keys`).
    """
    file = Path(path)
    raw = _read_bytes(file, what)
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _fail(file, what, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise _fail(file, what, f"not valid JSON ({exc.msg}, line {exc.lineno} "
                                f"column {exc.colno})") from None
    except RecursionError:
        raise _fail(file, what, "JSON nested too deeply") from None
    return check_keys(parsed, required, optional, path=file, what=what,
                      allow_unknown=allow_unknown)


@dataclass(frozen=True)
class ArraySpec:
    """What one named array of an ``.npz`` must look like.

    Attributes
    ----------
    kinds : accepted ``dtype.kind`` letters: ``"f"`` float, ``"iu"`` integers, ``"b"`` bool,
        ``"U"`` text. Object arrays (``"O"``) can never be read (no unpickling).
    shape : the shape, one entry per axis: an int (exact), a str (a named dimension, equal
        wherever the name recurs in the same file or in the ``dims`` given) or None (any).
        None instead of a tuple: any shape.
    finite : refuse NaN and infinity (float arrays).
    required : the array must be present.
    """

    kinds: str
    shape: tuple[int | str | None, ...] | None = None
    finite: bool = True
    required: bool = True


def _check_array(name: str, array: np.ndarray, spec: ArraySpec, dims: dict[str, int],
                 file: Path, what: str) -> None:
    if array.dtype.kind not in spec.kinds:
        raise _fail(file, what, f"array '{name}' has dtype {array.dtype}, expected kind "
                                f"'{spec.kinds}'")
    if spec.shape is not None:
        if array.ndim != len(spec.shape):
            raise _fail(file, what, f"array '{name}' has {array.ndim} dimensions, expected "
                                    f"{len(spec.shape)}")
        for axis, (size, want) in enumerate(zip(array.shape, spec.shape)):
            if isinstance(want, str):
                want = dims.setdefault(want, size)
                label = f"{want} ({spec.shape[axis]})"
            else:
                label = str(want)
            if want is not None and size != want:
                raise _fail(file, what, f"array '{name}' has shape {array.shape}, axis {axis} "
                                        f"should be {label}")
    if spec.finite and array.dtype.kind in "fc" and not np.isfinite(array).all():
        raise _fail(file, what, f"array '{name}' holds NaN or infinite values")


def read_npz(path: str | os.PathLike, spec: Mapping[str, ArraySpec], *, what: str,
             dims: dict[str, int] | None = None, allow_unknown: bool = False
             ) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` (never unpickling) and check it against ``spec``.

    ``dims`` maps named dimensions to known sizes (``{"n_items": 1682}``); sizes first seen
    in this file are added to it, so the caller can compare them with other files.
    Returns a dict of the arrays, read fully into memory.
    """
    file = Path(path)
    dims = {} if dims is None else dims
    if not file.exists():
        raise RecompareError(f"cannot read {what} {file}: the file is missing")
    if not file.is_file():
        raise RecompareError(f"cannot read {what} {file}: not a regular file")
    try:
        archive = np.load(file, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise _fail(file, what, "a single .npy array, not an .npz archive")
        with archive:
            arrays = {name: archive[name] for name in archive.files}
    except RecompareError:
        raise
    except ValueError as exc:
        text = str(exc)
        if "Object arrays" in text:
            problem = "holds an object array, which would need unpickling"
        elif "pickled data" in text:
            problem = "not an .npz archive (damaged, or pickled data)"
        else:
            problem = f"damaged ({text})"
        raise _fail(file, what, problem) from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
            NotImplementedError) as exc:
        raise _fail(file, what, f"damaged or not an .npz archive ({exc})") from None
    for name, array_spec in spec.items():
        if name not in arrays:
            if array_spec.required:
                raise _fail(file, what, f"missing array '{name}'")
            continue
        _check_array(name, arrays[name], array_spec, dims, file, what)
    unknown = sorted(set(arrays) - set(spec))
    if unknown and not allow_unknown:
        raise _fail(file, what, f"unknown array '{unknown[0]}'")
    return arrays


_SPARSE_SPEC = {
    "data": ArraySpec("fiub", (None,), finite=True),
    "indices": ArraySpec("iu", (None,)),
    "indptr": ArraySpec("iu", (None,)),
    "shape": ArraySpec("iu", (2,)),
    "format": ArraySpec("USa", ()),
}


def read_sparse_npz(path: str | os.PathLike, *, what: str,
                    shape: tuple[int, int] | None = None, kinds: str = "f"):
    """Read a CSR matrix written by ``scipy.sparse.save_npz`` and check its structure.

    Parameters
    ----------
    shape : the expected (n_rows, n_cols), or None for any.
    kinds : accepted ``dtype.kind`` of the values (``"f"`` interactions, ``"i"`` times).

    Returns
    -------
    scipy.sparse.csr_matrix
    """
    import scipy.sparse as sp

    file = Path(path)
    arrays = read_npz(file, _SPARSE_SPEC, what=what)
    fmt = arrays["format"].item()
    fmt = fmt.decode("ascii", "replace") if isinstance(fmt, bytes) else str(fmt)
    if fmt != "csr":
        raise _fail(file, what, f"holds a '{fmt}' matrix, expected 'csr'")
    data, indices, indptr = arrays["data"], arrays["indices"], arrays["indptr"]
    if data.dtype.kind not in kinds:
        raise _fail(file, what, f"values have dtype {data.dtype}, expected kind '{kinds}'")
    n_rows, n_cols = (int(v) for v in arrays["shape"])
    if shape is not None and (n_rows, n_cols) != tuple(shape):
        raise _fail(file, what, f"matrix is {n_rows} x {n_cols}, expected "
                                f"{shape[0]} x {shape[1]}")
    problem = None
    if n_rows < 0 or n_cols < 0:
        problem = f"negative shape {n_rows} x {n_cols}"
    elif len(indptr) != n_rows + 1:
        problem = f"indptr has {len(indptr)} entries for {n_rows} rows"
    elif len(data) != len(indices):
        problem = f"{len(data)} values but {len(indices)} column indices"
    elif indptr[0] != 0 or indptr[-1] != len(indices) or (np.diff(indptr) < 0).any():
        problem = "indptr is not a valid row index"
    elif len(indices) and (indices.min() < 0 or indices.max() >= n_cols):
        problem = f"a column index is outside 0..{n_cols - 1}"
    if problem:
        raise _fail(file, what, problem)
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))


def read_csv_table(path: str | os.PathLike, required_columns: Iterable[str], *, what: str,
                   n_rows: int | None = None, text_columns: Iterable[str] = ("id",)):
    """Read a comma-separated UTF-8 table with a header, as recompare writes it.

    ``text_columns`` are read as strings, and no value is turned into NaN (empty stays "").
    Refuses a missing required column, or a row count other than ``n_rows``.
    Returns a pandas DataFrame.
    """
    import pandas as pd

    file = Path(path)
    raw = _read_bytes(file, what)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(file, what, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        frame = pd.read_csv(io.BytesIO(raw), dtype={c: str for c in text_columns},
                            keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise _fail(file, what, f"not a valid CSV table ({exc})") from None
    missing = [c for c in required_columns if c not in frame.columns]
    if missing:
        raise _fail(file, what, f"missing column '{missing[0]}'")
    if n_rows is not None and len(frame) != n_rows:
        raise _fail(file, what, f"has {len(frame)} rows, expected {n_rows}")
    return frame


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, to record next to a file whose format has no checksum."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_torch_state(path: str | os.PathLike, *, what: str, required: Iterable[str] = (),
                     sha256: str | None = None) -> dict:
    """Load a torch file with ``weights_only=True`` (no unpickling of code).

    The top level must be a dict holding the ``required`` keys. torch does not checksum
    tensor bytes, so a flipped byte inside a tensor loads silently: writers should record
    :func:`sha256_of` the file and pass it here as ``sha256``. Shapes are checked by
    ``load_state_dict`` of the caller, whose error should go through :func:`refuse`.
    """
    import torch

    file = Path(path)
    raw = _read_bytes(file, what)
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise _fail(file, what, "checksum mismatch: the file was damaged or replaced")
    try:
        payload = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise _fail(file, what, f"damaged torch file ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict):
        raise _fail(file, what, f"expected a dict of tensors, found {type(payload).__name__}")
    for key in required:
        if key not in payload:
            raise _fail(file, what, f"missing entry '{key}'")
    return payload


def check_state_dict(state: Any, reference: Mapping[str, Any], *, path: str | os.PathLike,
                     what: str, where: str = "") -> dict:
    """Check a loaded torch ``state_dict`` against the one a freshly built module has.

    The names must be the same, and every tensor must have the reference's shape and dtype
    and hold finite values, so that ``load_state_dict`` of the caller cannot fail and the
    model it fills cannot compute NaN from damaged weights. ``where`` names a nested entry
    (``"entry 'model'"``). Returns ``state``.
    """
    import torch

    file = Path(path)
    label = f"{where}: " if where else ""
    if not isinstance(state, dict):
        raise _fail(file, what, f"{label}expected a dict of tensors, found "
                                f"{type(state).__name__}")
    missing = [name for name in reference if name not in state]
    if missing:
        raise _fail(file, what, f"{label}missing tensor '{missing[0]}'")
    unknown = [name for name in state if name not in reference]
    if unknown:
        raise _fail(file, what, f"{label}unknown tensor '{unknown[0]}'")
    for name, want in reference.items():
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise _fail(file, what, f"{label}'{name}' is a {type(tensor).__name__}, "
                                    "not a tensor")
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            raise _fail(file, what, f"{label}tensor '{name}' is {tensor.dtype} "
                                    f"{tuple(tensor.shape)}, expected {want.dtype} "
                                    f"{tuple(want.shape)}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise _fail(file, what, f"{label}tensor '{name}' holds NaN or infinite values")
    return state


def refuse(path: str | os.PathLike, what: str, problem: object) -> RecompareError:
    """The error for a file that parsed but does not fit (for checks done by the caller)."""
    return _fail(Path(path), what, problem)
