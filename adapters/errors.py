"""Errors raised where vault touches the world, leaves of the tree drawn in domain/errors.py.
None of their messages carries a secret."""

from domain.errors import CannotUnlock, IntegrityViolation, NotFound, OperationFailed, VaultError

# IntegrityViolation is a category of its own (exit 5), defined with the root; it stays importable
# from here, where most of it is raised
__all__ = [
    "AdapterError",
    "AuditAppendFailed",
    "ConcurrentChange",
    "IntegrityViolation",
    "KeysReplaced",
    "LockTimeout",
    "NotInitialised",
    "StoreUnavailable",
    "SubjectPurged",
    "UnlockFailed",
    "UnsafeFile",
]


class AdapterError(VaultError):
    """Marks a failure where vault meets the world (disk, database, network, files), whatever
    its exit code; raised as itself for one no narrower class names."""


class UnlockFailed(CannotUnlock, AdapterError):
    """No keyslot opened with what was given (wrong passphrase or key file), or none was given."""


class SubjectPurged(NotFound, AdapterError):
    """The data key of a subject was destroyed (crypto-shredded): its events cannot be read."""


class UnsafeFile(CannotUnlock, AdapterError):
    """A key file or vault directory that others can read."""


class StoreUnavailable(OperationFailed, AdapterError):
    """The database cannot be reached or opened."""


class NotInitialised(NotFound, AdapterError):
    """There is no vault in this store yet."""


class AuditAppendFailed(OperationFailed, AdapterError):
    """The audit entry could not be appended; the transaction it belonged to was rolled back."""


class ConcurrentChange(OperationFailed, AdapterError):
    """Another process changed the keys or header this command relied on; nothing was changed."""


class KeysReplaced(ConcurrentChange):
    """`key rotate --reencrypt` replaced keys this commit was sealed with (a data key, the row
    seal, the audit keys) since the command unlocked: the commit can be sealed again."""


class LockTimeout(OperationFailed, AdapterError):
    """Another process held the grant's lock for too long."""

