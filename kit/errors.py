"""Errors a user can act on, each with the exit code the design gives it.

The CLI prints a KitError's message (no traceback) and exits with its code.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_WAITING = 3
EXIT_DENIED = 4


class KitError(Exception):
    """A problem the user can fix; `exit_code` follows DESIGN section 6."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(KitError):
    """A manifest, parameter, scenario or option that is wrong (exit 2)."""

    exit_code = EXIT_INVALID


class PermissionDenied(KitError):
    """A principal lacks an entitlement (exit 4)."""

    exit_code = EXIT_DENIED


class NotFound(InvalidInput):
    """A run, step, workflow or file the user named does not exist (exit 2)."""


class NoSpace(KitError):
    """The disk is full: what failed, and what to free (exit 1)."""

    @classmethod
    def writing(cls, where: object) -> NoSpace:
        return cls(
            f"no space left on the device writing {where}: free some space (`kit gc` deletes old runs "
            "and leftover temporary files), then run the command again"
        )


def is_no_space(exc: BaseException) -> bool:
    """Whether an error is a full disk (ENOSPC, or a library's message saying so)."""
    import errno

    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "no space left" in str(exc).lower()
