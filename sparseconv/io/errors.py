"""The exceptions every reader and writer raises for bad input (each names the file).

:class:`InputError` is the base: input the library cannot use (a file, or a value read
from one). The command line maps it -- and only it, with :class:`MissingDependencyError`
and the operating system's file errors -- to exit code 2; any other exception is a fault
in the library (exit 3).
"""
from __future__ import annotations

import os
from typing import Union

from .._optional import MissingDependencyError  # one class for every missing optional package

__all__ = ["InputError", "ScanFormatError", "UnsupportedFormatError", "MissingDependencyError", "not_found"]

PathLike = Union[str, "os.PathLike[str]"]


class InputError(ValueError):
    """Input the library cannot use: a bad file, or a bad value for one (a ``ValueError``)."""


class ScanFormatError(InputError):
    """A file that cannot be read as a scan (corrupt, truncated, empty, wrong size or type,
    a header that declares more than the file holds, an ambiguous layout).

    The message starts with the file's path; ``path`` holds it too.
    """

    def __init__(self, path: PathLike, message: str):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {message}")


class UnsupportedFormatError(ScanFormatError):
    """A file whose extension (or ``format=``) names no format this package reads or writes."""


def not_found(path: PathLike) -> FileNotFoundError:
    """The error for a missing input file, naming it."""
    return FileNotFoundError(f"{os.fspath(path)}: no such file")
