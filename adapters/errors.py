"""Errors raised where vault touches the world. None of their messages carries a secret."""


class AdapterError(Exception):
    pass


class UnlockFailed(AdapterError):
    """No keyslot opened with what was given (wrong passphrase or key file), or none was given."""


class IntegrityViolation(AdapterError):
    """Stored data failed authentication: edited, moved, truncated or corrupted."""


class SubjectPurged(AdapterError):
    """The data key of a subject was destroyed (crypto-shredded): its events cannot be read."""


class UnsafeFile(AdapterError):
    """A key file or vault directory that others can read."""


class StoreUnavailable(AdapterError):
    """The database cannot be reached or opened."""


class NotInitialised(AdapterError):
    """There is no vault in this store yet."""


class AuditAppendFailed(AdapterError):
    """The audit entry could not be appended; the transaction it belonged to was rolled back."""


class ConcurrentChange(AdapterError):
    """Another process changed the keys or header this command relied on; nothing was changed."""


class LockTimeout(AdapterError):
    """Another process held the grant's lock for too long."""
