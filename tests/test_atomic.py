"""The atomic writer: every shape of output path, crashes between renames, stale temporaries."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from recompare import _atomic
from recompare._atomic import STALE_AFTER_S, atomic_dir, atomic_file, recover
from recompare.cli import main
from recompare.errors import RecompareError

ROOT = Path(__file__).resolve().parents[1]


def _write_dir(path: Path, text: str, overwrite: bool = True) -> None:
    with atomic_dir(path, overwrite=overwrite) as tmp:
        (tmp / "a.txt").write_text(text)


def _write_file(path: Path, text: str, overwrite: bool = True) -> None:
    with atomic_file(path, overwrite=overwrite) as handle:
        handle.write(text)


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def test_new_directory_and_missing_parents(tmp_path):
    out = tmp_path / "x" / "y" / "model"
    _write_dir(out, "one", overwrite=False)
    assert (out / "a.txt").read_text() == "one"
    assert _siblings(out) == []


def test_replace_keeps_nothing_of_the_old_output(tmp_path):
    out = tmp_path / "model"
    _write_dir(out, "one")
    (out / "extra.txt").write_text("old only")
    _write_dir(out, "two")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert (out / "a.txt").read_text() == "two"
    assert _siblings(out) == []


@pytest.mark.parametrize("depth", [0, 1])
def test_parent_is_a_file(tmp_path, depth):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    out = blocker / "sub" / "out" if depth else blocker / "out"
    with pytest.raises(RecompareError, match=r"blocker is a file, not a directory") as info:
        _write_dir(out, "x")
    assert "\n" not in str(info.value) and str(out) in str(info.value)
    with pytest.raises(RecompareError, match="is a file, not a directory"):
        _write_file(out, "x")
    assert blocker.read_text() == "not a directory"


def test_output_is_a_file_where_a_directory_is_written(tmp_path):
    out = tmp_path / "model"
    out.write_text("precious")
    with pytest.raises(RecompareError, match="it is a file and a directory is written here"):
        _write_dir(out, "x", overwrite=True)
    assert out.read_text() == "precious"
    assert _siblings(out) == []


def test_output_is_a_directory_where_a_file_is_written(tmp_path):
    out = tmp_path / "report.md"
    out.mkdir()
    with pytest.raises(RecompareError, match="it is a directory and a file is written here"):
        _write_file(out, "x", overwrite=True)
    assert out.is_dir() and _siblings(out) == []


def test_existing_output_without_overwrite(tmp_path):
    out = tmp_path / "model"
    _write_dir(out, "one")
    with pytest.raises(RecompareError, match="already exists"):
        _write_dir(out, "two", overwrite=False)
    file = tmp_path / "f.txt"
    file.write_text("keep")
    with pytest.raises(RecompareError, match="already exists"):
        _write_file(file, "x", overwrite=False)
    assert (out / "a.txt").read_text() == "one" and file.read_text() == "keep"


def test_no_permission(tmp_path, monkeypatch):
    # the tests may run as root, where chmod does not stop a write: ask the check directly
    monkeypatch.setattr(_atomic.os, "access", lambda *args, **kwargs: False)
    with pytest.raises(RecompareError, match="no permission to write in"):
        _write_dir(tmp_path / "model", "x")
    assert not (tmp_path / "model").exists()


def test_cannot_create_parent(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(RecompareError, match="no permission to create"):
        _write_dir(tmp_path / "a" / "model", "x")


def test_error_in_the_block_leaves_no_trace(tmp_path):
    out = tmp_path / "model"
    _write_dir(out, "one")
    with pytest.raises(KeyError), atomic_dir(out, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("half")
        raise KeyError("boom")
    with pytest.raises(KeyError), atomic_file(tmp_path / "f.txt") as handle:
        handle.write("half")
        raise KeyError("boom")
    assert (out / "a.txt").read_text() == "one"
    assert not (tmp_path / "f.txt").exists()
    assert _siblings(out) == [] and _siblings(tmp_path / "f.txt") == []


def test_failure_between_the_renames_is_rolled_back(tmp_path, monkeypatch):
    out = tmp_path / "model"
    _write_dir(out, "one")
    real_replace = os.replace
    calls = []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(_atomic.os, "replace", flaky)
    with pytest.raises(RecompareError, match="cannot write .*Input/output error"):
        _write_dir(out, "two")
    monkeypatch.setattr(_atomic.os, "replace", real_replace)
    assert len(calls) == 3  # old aside, new in (fails), old back
    assert (out / "a.txt").read_text() == "one"
    assert _siblings(out) == []


def _run_and_die(script: str) -> None:
    """Run ``script`` in a fresh interpreter that is expected to SIGKILL itself."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=False,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def _die_between_the_renames(out: Path) -> None:
    """Replace ``out`` in a subprocess killed (-9) between the two renames of the swap."""
    _run_and_die(f"""
        import os, signal
        from recompare import _atomic
        real, calls = os.replace, []
        def dying(src, dst):
            calls.append(src)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst)
        _atomic.os.replace = dying
        with _atomic.atomic_dir({str(out)!r}, overwrite=True) as tmp:
            (tmp / "a.txt").write_text("two")
    """)


def test_kill_between_the_renames_is_recovered_by_the_next_write(tmp_path):
    out = tmp_path / "model"
    _write_dir(out, "one")
    _die_between_the_renames(out)
    assert not out.exists()  # the crash left the path empty ...
    left = _siblings(out)
    assert any(".old-" in n for n in left) and any(".tmp-" in n for n in left)
    assert recover(out) is not None  # ... until the next run puts the old output back
    assert (out / "a.txt").read_text() == "one"
    assert _siblings(out) == []


def test_next_write_after_a_kill_between_renames(tmp_path):
    out = tmp_path / "model"
    _write_dir(out, "one")
    _die_between_the_renames(out)
    # without --overwrite the restored model is protected again
    with pytest.raises(RecompareError, match="already exists"):
        _write_dir(out, "three", overwrite=False)
    assert (out / "a.txt").read_text() == "one"
    _write_dir(out, "three")
    assert (out / "a.txt").read_text() == "three"
    assert _siblings(out) == []


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_kill_during_the_save_is_cleaned_up_by_the_next_write(tmp_path, kind):
    out = tmp_path / ("model" if kind == "dir" else "out.npz")
    opener = "atomic_dir(path, overwrite=True)" if kind == "dir" else "atomic_file(path, 'wb')"
    body = "(tmp / 'a.txt').write_text('half')" if kind == "dir" else "tmp.write(b'half')"
    _run_and_die(f"""
        import os, signal
        from recompare._atomic import atomic_dir, atomic_file
        path = {str(out)!r}
        with {opener} as tmp:
            {body}
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert not out.exists()
    assert len(_siblings(out)) == 1
    if kind == "dir":
        _write_dir(out, "whole")
        assert (out / "a.txt").read_text() == "whole"
    else:
        _write_file(out, "whole")
        assert out.read_text() == "whole"
    assert _siblings(out) == []


def test_live_writers_temporaries_are_left_alone(tmp_path):
    out = tmp_path / "model"
    mine = tmp_path / f".model.tmp-{os.getpid()}-0123abcd"
    mine.mkdir()
    _write_dir(out, "one")
    assert mine.is_dir()


def test_temporaries_without_a_pid_expire_by_age(tmp_path):
    out = tmp_path / "model"
    old = tmp_path / ".model.tmp-k2j3h4"
    fresh = tmp_path / ".model.tmp-a8s7d6"
    other = tmp_path / ".other.tmp-1-x"  # another output's temporary: never ours to remove
    for entry in (old, fresh, other):
        entry.mkdir()
    stamp = time.time() - STALE_AFTER_S - 60
    os.utime(old, (stamp, stamp))
    _write_dir(out, "one")
    assert not old.exists() and fresh.exists() and other.exists()


def test_cli_output_whose_parent_is_a_file(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker / "data"
    result = CliRunner().invoke(main, ["data", "synth", str(out), "--users", "20",
                                       "--items", "10", "--split", "none"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "blocker is a file" in lines[0], result.output
    assert "Traceback" not in result.output
    assert blocker.read_text() == "x"
