"""Write outputs all-or-nothing: build in a temporary sibling, then rename."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import RecompareError


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` only if the block succeeds.

    Raises :class:`RecompareError` when ``path`` exists and ``overwrite`` is false.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise RecompareError(f"output path {final} already exists; choose another or remove it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", overwrite: bool = True) -> Iterator:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success."""
    final = Path(path)
    if final.exists() and not overwrite:
        raise RecompareError(f"output file {final} already exists; choose another or remove it")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    try:
        with open(tmp, mode) as handle:
            yield handle
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
