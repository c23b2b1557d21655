"""Application errors, leaves of the tree drawn in domain/errors.py (each class's exit code and
message prefix come from there); the root, the categories and the exit codes are importable
from here too."""

from __future__ import annotations

from domain.errors import (
    BAD_INPUT,
    CANNOT_UNLOCK,
    FAILED,
    INTEGRITY,
    NOT_FOUND,
    OK,
    BadInput,
    CannotUnlock,
    IntegrityViolation,
    NotFound,
    OperationFailed,
    VaultError,
)

__all__ = [
    "BAD_INPUT",
    "CANNOT_UNLOCK",
    "FAILED",
    "INTEGRITY",
    "NOT_FOUND",
    "OK",
    "AlreadyExists",
    "AmbiguousMailbox",
    "AuditWriteFailed",
    "BadInput",
    "CannotUnlock",
    "Conflict",
    "IntegrityViolation",
    "NotFound",
    "OperationFailed",
    "VaultError",
    "WiringError",
]


class AlreadyExists(OperationFailed):
    pass


class AmbiguousMailbox(BadInput):
    pass


class Conflict(OperationFailed):
    """Another process kept changing the same thing; the command was retried and gave up."""


class AuditWriteFailed(OperationFailed):
    """The audit entry could not be written, so the command did nothing (fail closed)."""


class WiringError(OperationFailed):
    """The application was assembled with something other than vault's encrypted persistence."""
