"""Application errors, each with the exit code the CLI documents (README, "Exit codes")."""

from __future__ import annotations

OK, FAILED, BAD_INPUT, CANNOT_UNLOCK, NOT_FOUND, INTEGRITY = 0, 1, 2, 3, 4, 5


class VaultError(Exception):
    exit_code = FAILED


class BadInput(VaultError):
    exit_code = BAD_INPUT


class NotFound(VaultError):
    exit_code = NOT_FOUND


class AlreadyExists(VaultError):
    exit_code = FAILED


class AmbiguousMailbox(BadInput):
    pass


class Conflict(VaultError):
    """Another process kept changing the same thing; the command was retried and gave up."""


class AuditWriteFailed(VaultError):
    """The audit entry could not be written, so the command did nothing (fail closed)."""


class WiringError(VaultError):
    """The application was assembled with something other than vault's encrypted persistence."""
