"""Every documented file x every damage, through the CLI: one clean line, nothing left behind.

Cases come from :data:`corruption_suite.DOCUMENTED_FILES`. Each (file, damage) runs through the
first command that reads that file; a few spot checks run other readers on the same damages.
The artifacts are built once per module; a case copies only the artifact it damages, and
every other input is the pristine copy, read only.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from corruption_suite import DOCUMENTED_FILES, _edit_json, build_pristine, command_args

from recompare.cli import main

CASES = [(f, damage) for f in DOCUMENTED_FILES for damage in f.damages]

#: (artifact, file, damage, command): the same damage read by another command
SPOT_CHECKS = [
    ("dataset", "train.npz", "truncate", "train-wals"),
    ("dataset", "meta.json", "drop-counts", "export-with-dataset"),
    ("dataset", "items.csv", "drop-column-id", "evaluate"),
    ("dataset", "users.csv", "flip-bytes", "train-wals"),
    ("wals", "arrays.npz", "shape-user_factors", "evaluate"),
    ("wals", "model.json", "unknown-key", "evaluate"),
    ("dnn", "state.pt", "flip-bytes", "evaluate"),
    ("dnn", "model.json", "drop-schema", "evaluate"),
    ("popularity", "model.json", "wrong-type-n_items", "evaluate"),
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    return build_pristine(tmp_path_factory.mktemp("pristine"))


def _documented(artifact: str, name: str):
    return next(f for f in DOCUMENTED_FILES if f.artifact == artifact and f.name == name)


def _run_damaged(documented, damage: str, command: str, pristine: dict[str, Path],
                 tmp_path: Path) -> None:
    """Damage a copy of one file, run ``command`` on it, check the refusal."""
    dirs = dict(pristine)
    dirs[documented.artifact] = tmp_path / documented.artifact
    shutil.copytree(pristine[documented.artifact], dirs[documented.artifact])
    if documented.artifact in ("wals", "dnn", "popularity"):
        dirs["model"] = dirs[documented.artifact]
    target = dirs[documented.artifact] / documented.name
    before = target.read_bytes()
    documented.damages[damage](target)
    damaged = target.read_bytes()
    assert damaged != before, "the damage changed nothing"
    out = tmp_path / "out" / ("result.md" if command == "evaluate" else "result")
    if command.startswith("export"):
        out = out.with_suffix(".npz")
    result = CliRunner().invoke(main, command_args(command, dirs, out))
    assert result.exit_code != 0, f"accepted a damaged file:\n{result.output}"
    assert isinstance(result.exception, SystemExit), f"escaped: {result.exception!r}"
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    assert documented.name in errors[0], f"does not name {documented.name}: {errors[0]}"
    leftovers = sorted(p.name for p in out.parent.iterdir()) if out.parent.exists() else []
    assert leftovers == [], f"partial output left: {leftovers}"
    # nothing existing was changed: the refused file is as the damage left it
    assert sorted(p.name for p in dirs[documented.artifact].iterdir()) == sorted(
        p.name for p in pristine[documented.artifact].iterdir())
    assert target.read_bytes() == damaged


@pytest.mark.parametrize(("documented", "damage"), CASES,
                         ids=[f"{f.artifact}/{f.name}-{d}" for f, d in CASES])
def test_damaged_file_is_refused(documented, damage, pristine, tmp_path):
    _run_damaged(documented, damage, documented.commands[0], pristine, tmp_path)


@pytest.mark.parametrize(("artifact", "name", "damage", "command"), SPOT_CHECKS,
                         ids=["/".join(case) for case in SPOT_CHECKS])
def test_damaged_file_is_refused_by_other_readers(artifact, name, damage, command, pristine,
                                                  tmp_path):
    documented = _documented(artifact, name)
    assert command in documented.commands and damage in documented.damages
    _run_damaged(documented, damage, command, pristine, tmp_path)


def test_every_reader_has_a_case():
    """Each command listed as a reader runs at least one damaged case."""
    ran = {f.commands[0] for f in DOCUMENTED_FILES} | {case[3] for case in SPOT_CHECKS}
    listed = {c for f in DOCUMENTED_FILES for c in f.commands}
    assert listed <= ran, sorted(listed - ran)


# ------------------------------------------------------------------ own files only


@pytest.mark.parametrize("how", ["name-in-model-json", "symlink"])
@pytest.mark.parametrize("artifact", ["wals", "dnn", "popularity"])
def test_model_directory_reads_only_its_own_files(artifact, how, pristine, tmp_path):
    """A model directory cannot make recompare read a file outside itself."""
    model = tmp_path / "model"
    shutil.copytree(pristine[artifact], model)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(model / "arrays.npz", outside / "arrays.npz")
    if how == "symlink":
        (model / "arrays.npz").symlink_to(outside / "arrays.npz")
    else:  # the old WALS loader took this name from model.json
        _edit_json(model / "model.json", lambda obj: obj.update(arrays="../elsewhere/arrays.npz"))
    result = CliRunner().invoke(main, ["evaluate", str(pristine["dataset"]), str(model),
                                       "--k", "5", "--json"])
    assert result.exit_code != 0, f"read a file outside the model directory:\n{result.output}"
    assert isinstance(result.exception, SystemExit), f"escaped: {result.exception!r}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    assert "arrays.npz" in errors[0] or "model.json" in errors[0], errors[0]


def test_data_set_directory_reads_only_its_own_files(pristine, tmp_path):
    """A data set's file that is a link out of its directory is refused."""
    data = tmp_path / "dataset"
    shutil.copytree(pristine["dataset"], data)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(data / "train.npz", outside / "train.npz")
    (data / "train.npz").symlink_to(outside / "train.npz")
    result = CliRunner().invoke(main, ["data", "info", str(data)])
    assert result.exit_code != 0, f"read a file outside the data set:\n{result.output}"
    assert isinstance(result.exception, SystemExit), f"escaped: {result.exception!r}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "train.npz" in errors[0], result.stderr


_OPENED: list[str] | None = None
_HOOKED: list[bool] = []


def _record_open(event: str, args: tuple) -> None:
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(Path(args[0] if not isinstance(args[0], bytes)
                                else args[0].decode(errors="replace")).absolute()))


@pytest.mark.parametrize("artifact", ["wals", "dnn", "popularity"])
def test_no_file_outside_the_directories_is_read(artifact, pristine, tmp_path):
    """Every file that `evaluate` opens under the test's folders is one of its inputs'
    own files (a decoy next to them, named as the old loader allowed, stays unread)."""
    global _OPENED
    root = tmp_path.resolve()
    data, model = root / "dataset", root / "model"
    shutil.copytree(pristine["dataset"], data)
    shutil.copytree(pristine[artifact], model)
    for decoy in ("arrays.npz", "model.json", "state.pt", "train.npz", "meta.json"):
        shutil.copy(model / "arrays.npz", root / decoy)
    if not _HOOKED:  # a hook stays for the life of the process: add it once, record below
        sys.addaudithook(_record_open)
        _HOOKED.append(True)
    _OPENED = []
    try:
        result = CliRunner().invoke(main, ["evaluate", str(data), str(model), "--k", "5",
                                           "--json"])
    finally:
        opened, _OPENED = _OPENED, None
    assert result.exit_code == 0, result.output
    mine = [p for p in opened if Path(p).is_relative_to(root)]
    assert any(Path(p).parent == model for p in mine) and any(
        Path(p).parent == data for p in mine)
    strays = [p for p in mine if Path(p).parent not in (data, model)]
    assert strays == [], strays
