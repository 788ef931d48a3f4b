"""Files written atomically: a crash mid-write never leaves a truncated file in place.

A temporary file or folder is named ``.<final name>.tmp-<host>-<pid>``, so a later start can tell
what a killed writer left behind (:func:`remove_stale_temporaries`) from what a live one is
still writing.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMPORARY_MARK = ".tmp-"


def temporary_sibling(path: str | os.PathLike) -> Path:
    """The name this process writes ``path`` under until it is complete."""
    target = Path(path)
    return target.with_name(f".{target.name}{TEMPORARY_MARK}{socket.gethostname()}-{os.getpid()}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block
    succeeds, removed when it fails."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(target)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _writer_is_gone(host: str, pid: str) -> bool:
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's writer (a shared file system): it may be alive
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders in ``folder`` whose writer, a process of this
    machine, is no longer running (a killed run or dataset generation); return them."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.glob(f".*{TEMPORARY_MARK}*"):
        host, _, pid = entry.name.rpartition(TEMPORARY_MARK)[2].rpartition("-")
        if _writer_is_gone(host, pid):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
