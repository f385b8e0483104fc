"""Write outputs all-or-nothing: build in a temporary sibling, then rename.

Protocol for an output ``DIR/NAME``
-----------------------------------
1. Check the shape of the path (parent a directory we may write in, ``NAME`` of the expected
   kind) and refuse with one line otherwise.
2. Tidy up after a killed run (:func:`recover`): if ``NAME`` is missing but a backup
   ``.NAME.old-<pid>-<tag>`` of a dead process exists, that backup is the last complete output
   and is renamed back to ``NAME``; then temporaries ``.NAME.tmp-<pid>-<tag>`` and backups of
   dead processes are removed.
3. Build the new output in ``.NAME.tmp-<pid>-<tag>``.
4. A new name is one rename. Replacing a directory is two: ``NAME -> .NAME.old-...`` then
   ``tmp -> NAME``, then the backup is deleted. A crash between the two renames leaves no
   ``NAME`` but a complete backup, which step 2 of the next write (or :func:`recover`)
   restores; an error in between is rolled back at once. Files are replaced by a single
   ``os.replace``, which never leaves the path empty.

Stale means: the pid in the name is not a running process on this machine. Temporaries whose
name carries no pid (written by older versions) are stale once older than
:data:`STALE_AFTER_S`. A live writer's temporaries are never touched, so two processes writing
the same path do not destroy each other's work (the last rename wins).
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import RecompareError

STALE_AFTER_S = 24 * 3600
"""Age after which a temporary without an owning pid in its name counts as stale."""

_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?P<role>tmp|old)-(?P<rest>.*)$")


def _sibling(final: Path, role: str) -> Path:
    return final.with_name(f".{final.name}.{role}-{os.getpid()}-{secrets.token_hex(4)}")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(entry: Path, rest: str) -> bool:
    pid_text = rest.split("-", 1)[0]
    if pid_text.isdigit():
        return not _pid_alive(int(pid_text))
    try:
        age = time.time() - entry.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > STALE_AFTER_S


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()


def _leftovers(final: Path) -> list[tuple[Path, str, bool]]:
    """``(path, role, stale)`` of the temporaries and backups next to ``final``."""
    found = []
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return found
    for entry in entries:
        match = _SIBLING.match(entry.name)
        if match and match["name"] == final.name:
            found.append((entry, match["role"], _is_stale(entry, match["rest"])))
    return found


def recover(path: str | os.PathLike) -> Path | None:
    """Finish what a killed write to ``path`` left behind; returns a restored backup's path.

    When ``path`` is missing and a dead writer's backup of it exists, the newest such backup
    is renamed back to ``path``. Then the dead writers' temporaries and backups are removed.
    """
    final = Path(path)
    leftovers = _leftovers(final)
    restored = None
    if not os.path.lexists(final):
        backups = [e for e, role, stale in leftovers if role == "old" and stale]
        if backups:
            newest = max(backups, key=lambda e: e.lstat().st_ctime)
            os.replace(newest, final)
            restored = newest
    for entry, _role, stale in leftovers:
        if stale and entry != restored:
            _remove(entry)
    return restored


def _check_parent(final: Path) -> None:
    """Create the parent directories of ``final``, or refuse with one line."""
    parent = final.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise RecompareError(
                    f"cannot write {final}: {ancestor} is a file, not a directory; "
                    "choose another output path or move that file away")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise RecompareError(
            f"cannot write {final}: no permission to create {parent}; "
            "choose an output path in a directory you can write to") from None
    except OSError as exc:
        raise RecompareError(f"cannot write {final}: cannot create {parent} "
                             f"({exc.strerror or exc})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RecompareError(
            f"cannot write {final}: no permission to write in {parent}; "
            "choose an output path in a directory you can write to")


def _prepare(final: Path, want_dir: bool, overwrite: bool) -> None:
    _check_parent(final)
    try:
        recover(final)
    except OSError as exc:
        raise RecompareError(f"cannot write {final}: cannot tidy up after an earlier run "
                             f"({exc.strerror or exc})") from None
    if not os.path.lexists(final):
        return
    if want_dir and not final.is_dir():
        raise RecompareError(f"cannot write {final}: it is a file and a directory is written "
                             "here; remove it or choose another output path")
    if not want_dir and final.is_dir():
        raise RecompareError(f"cannot write {final}: it is a directory and a file is written "
                             "here; remove it or choose another output path")
    if not overwrite:
        kind = "path" if want_dir else "file"
        raise RecompareError(f"output {kind} {final} already exists; choose another or remove "
                             "it (or pass --overwrite)")


def _os_error(final: Path, exc: OSError) -> RecompareError:
    return RecompareError(f"cannot write {final}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` only if the block succeeds.

    Raises :class:`RecompareError` when ``path`` exists and ``overwrite`` is false, or when
    the path cannot be written (see the module docstring for the protocol).
    """
    final = Path(path)
    _prepare(final, want_dir=True, overwrite=overwrite)
    tmp = _sibling(final, "tmp")
    try:
        tmp.mkdir()
    except OSError as exc:
        raise _os_error(final, exc) from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        _install_dir(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _os_error(final, exc) from None


def _install_dir(tmp: Path, final: Path) -> None:
    if not os.path.lexists(final):
        os.replace(tmp, final)
        return
    old = _sibling(final, "old")
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)  # roll back: the old output stays in place
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", overwrite: bool = True) -> Iterator:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success."""
    final = Path(path)
    _prepare(final, want_dir=False, overwrite=overwrite)
    tmp = _sibling(final, "tmp")
    try:
        # closed below, after the block: the rename must follow the close
        handle = open(tmp, mode.replace("w", "x"))  # noqa: SIM115
    except OSError as exc:
        raise _os_error(final, exc) from None
    try:
        yield handle
    except BaseException:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(tmp, final)
    except OSError as exc:
        with contextlib.suppress(OSError):
            handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise _os_error(final, exc) from None
