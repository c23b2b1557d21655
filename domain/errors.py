"""Domain exceptions: what an admin did wrong, or what the rules forbid, in the admin's words.

Messages never contain a secret value; they may name clients, mailboxes and scopes.
"""


class DomainError(Exception):
    """Base of every rule the domain enforces."""


class InvalidInput(DomainError):
    """The value given cannot be right (a GUID as secret, a malformed scope, ...)."""


class RuleViolation(DomainError):
    """The value is well-formed but the current state forbids the command."""


class SecretLooksLikeId(InvalidInput):
    def __init__(self) -> None:
        super().__init__(
            "the secret looks like a GUID: that is the Secret ID, not the secret Value "
            "(Microsoft answers AADSTS7000215). In Entra ID > App registrations > "
            "Certificates & secrets, copy the Value column, shown only right after creation."
        )


class MissingOfflineAccess(InvalidInput):
    def __init__(self) -> None:
        super().__init__(
            "Microsoft delegated grants need the 'offline_access' scope: without it no "
            "refresh token is issued and the mailbox must sign in again every hour"
        )


class ScopeCloudMismatch(InvalidInput):
    pass


class MixedResources(InvalidInput):
    pass


class TenantNotConcrete(InvalidInput):
    pass


class ClientRemoved(RuleViolation):
    pass


class GrantNotActive(RuleViolation):
    pass
