"""The command line's exit codes and which errors count as bad input.

Only the errors in :data:`BAD_INPUT` -- the library's :class:`~sparseconv.io.InputError`
(a bad file or a bad value for one), :class:`CliError`, a missing optional package, and
the operating system's file errors -- exit with :data:`EXIT_BAD_INPUT`; any other
exception is a fault in the library and exits with :data:`EXIT_INTERNAL`.
"""
from __future__ import annotations

from ..io.errors import InputError, MissingDependencyError

__all__ = ["CliError", "BAD_INPUT", "EXIT_OK", "EXIT_CHECK_FAILED", "EXIT_USAGE", "EXIT_BAD_INPUT", "EXIT_INTERNAL",
           "EXIT_INTERRUPTED", "EXIT_TERMINATED"]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2  # bad arguments ...
EXIT_BAD_INPUT = 2  # ... or bad input: the same code
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C): 128 + 2
EXIT_TERMINATED = 143  # SIGTERM: 128 + 15


class CliError(Exception):
    """A user-facing error of the command line: printed as one line, exit code 2 (or ``code``)."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


#: Exceptions that mean bad input or arguments (exit 2), not a fault in the library.
BAD_INPUT = (CliError, InputError, MissingDependencyError, FileNotFoundError, PermissionError, IsADirectoryError,
             NotADirectoryError, FileExistsError)
