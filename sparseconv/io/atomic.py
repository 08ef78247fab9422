"""Atomic writes: every writer writes a temporary file beside its target and renames it
over the target only once complete, so a failed or interrupted write never leaves a
partial file.

The temporary files being written are kept in :data:`_PENDING` so that a signal handler
(the command line installs one for SIGTERM and SIGINT) can remove them with
:func:`remove_partial_files` before the process exits.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from typing import Iterator, List, Set, Union

__all__ = ["atomic_write", "partial_files", "remove_partial_files", "PART_SUFFIX"]

PathLike = Union[str, "os.PathLike[str]"]

#: The suffix of the temporary file beside the target (hidden: ``.NAME.XXXX.part``).
PART_SUFFIX = ".part"

_PENDING: Set[str] = set()
_LOCK = threading.Lock()


def partial_files() -> List[str]:
    """Temporary files of writes now in progress (in this process)."""
    with _LOCK:
        return sorted(_PENDING)


def remove_partial_files() -> List[str]:
    """Delete the temporary files of every write in progress; return their paths."""
    with _LOCK:
        pending = sorted(_PENDING)
        _PENDING.clear()
    for tmp in pending:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return pending


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path`` for writing; rename it over ``path`` on success.

    On any exception (``KeyboardInterrupt`` and ``SystemExit`` included) the temporary
    file is removed and ``path`` is left untouched (absent or as it was). The final file
    gets the usual permissions (``0o666`` less the umask).
    """
    p = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{p}: output directory {folder} does not exist")
    if os.path.isdir(p):
        raise IsADirectoryError(f"{p}: is a directory")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(p)}.", suffix=PART_SUFFIX)
    with _LOCK:
        _PENDING.add(tmp)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        with _LOCK:
            _PENDING.discard(tmp)
