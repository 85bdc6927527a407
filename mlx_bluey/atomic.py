"""Writes that are all-or-nothing: a temporary name in the same directory, then a rename.

A process killed at any instant leaves the previous file or directory, or the new one, never a
half-written one in its place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes it private; this is an ordinary file
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_directory(target: Path):
    """Yield an empty work directory; when the block succeeds it becomes `target`.

    An existing `target` is first renamed aside and removed only once the new one is in place.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    aside = target.parent / f".{target.name}.old-{os.getpid()}"
    try:
        yield work
        work.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary directory
        if target.exists():
            os.replace(target, aside)
        os.replace(work, target)
    finally:
        for leftover in (work, aside):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
