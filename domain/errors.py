"""Every error vault raises on purpose: one tree, rooted here (the lowest layer), whose classes carry
the exit code the CLI ends with and the words its one line on stderr starts with.

The CLI's one handler (vault/cli/main.py) prints `vault: <prefix>: <message>` and exits with
`exit_code` (README, "Exit codes"); under `vault expiry --check` every error exits 3 (unknown).
Messages never contain a secret value; they may name clients, mailboxes and scopes.

The tree: each category (second column `exit N`) gives its exit code to every class under it.
`domain` or `adapter` in that column: the class is also a `DomainError` (a refusal by the
domain's rules: its audit entry says "refused", and it stops a `maintain` run or an alert
delivery instead of counting as one failed step) or an `AdapterError` (a failure where vault
meets the world: `refresh` counts it as one grant's failure, an import stops at it instead of
skipping the account), and so is everything under it. The third column names the module that
defines a class, when it is not this one.

VaultError                        exit 1   any error vault raises on purpose: "vault: error: <message>"
├── OperationFailed               exit 1
│   ├── RuleViolation             domain   the current state forbids the command
│   │   ├── ClientRemoved
│   │   ├── GrantNotActive
│   │   └── AccountMismatch                domain/identity.py
│   ├── AlreadyExists                      vault/errors.py
│   ├── Conflict                           vault/errors.py
│   ├── AuditWriteFailed                   vault/errors.py
│   ├── WiringError                        vault/errors.py
│   ├── TokenRefreshFailed                 vault/providers.py
│   ├── GrantUnusable                      vault/providers.py
│   ├── ConsentFailed                      vault/services/consent.py
│   ├── RenewalUnfinished                  vault/services/entra.py
│   ├── AgentRefused                       vault/agent/server.py
│   ├── StoreUnavailable          adapter  adapters/errors.py
│   ├── AuditAppendFailed         adapter  adapters/errors.py
│   ├── ConcurrentChange          adapter  adapters/errors.py
│   │   └── KeysReplaced                   adapters/errors.py
│   ├── LockTimeout               adapter  adapters/errors.py
│   ├── HttpSetupError            adapter  adapters/http.py
│   ├── OAuthFailure              adapter  adapters/oauth.py
│   ├── IdTokenRejected           adapter  adapters/id_token.py
│   ├── OpenIdDiscoveryFailed     adapter  adapters/id_token.py
│   ├── CertificateError          adapter  adapters/certificates.py
│   ├── NotifyFailed              adapter  adapters/notify.py
│   ├── GraphRefused              adapter  adapters/graph_apps.py
│   └── CopyFailed                adapter  adapters/store/copying.py
├── BadInput                      exit 2
│   ├── InvalidInput              domain   a value that cannot be right
│   │   ├── SecretLooksLikeId
│   │   ├── MissingOfflineAccess
│   │   ├── ScopeCloudMismatch
│   │   └── MixedResources
│   ├── AmbiguousMailbox                   vault/errors.py
│   ├── OutputFailed              adapter  adapters/files.py
│   │   └── OutputRefused                  adapters/files.py
│   └── InputUnreadable           adapter  adapters/files.py
├── CannotUnlock                  exit 3
│   ├── UnlockFailed              adapter  adapters/errors.py
│   └── UnsafeFile                adapter  adapters/errors.py
├── NotFound                      exit 4
│   ├── SubjectPurged             adapter  adapters/errors.py
│   └── NotInitialised            adapter  adapters/errors.py
├── IntegrityViolation            exit 5   "vault: integrity violation: <message>"
├── DomainError                            marks the domain's refusals
└── AdapterError                           adapters/errors.py marks failures where vault meets the world

VaultError, AdapterError, BadInput, NotFound and IntegrityViolation are also raised as themselves,
for a failure no narrower class names. The origins stay marks beside the categories because
callers choose by them (see above); the exit code never depends on them.

Outside the tree, the CLI handles what vault does not raise itself: click's usage errors (exit 2)
and aborted prompts (1); a full disk, a read-only file system or a lost database connection found
anywhere in an error's chain (exit 1, naming the store; adapters/store/failures.py);
eventsourcing's PersistenceError (1); OverflowError, a date or number out of range (2); an
interrupt (130); anything else as an internal error (1). Exceptions a module raises and catches
itself (adapters/mail.py's `_Refused` and `_Unexpected`) never reach it and are not part of the
tree; nor are the sandbox's (sandbox/, a separate component), which become HTTP answers.
"""

OK, FAILED, BAD_INPUT, CANNOT_UNLOCK, NOT_FOUND, INTEGRITY = 0, 1, 2, 3, 4, 5


class VaultError(Exception):
    """The root: catching it catches every error vault raises on purpose."""

    exit_code = FAILED
    prefix = "error"  # the CLI's line: f"vault: {prefix}: {message}"


# The categories, one per exit code (README, "Exit codes").

class OperationFailed(VaultError):
    """The command was right but could not be carried out; nothing was changed."""

    exit_code = FAILED


class BadInput(VaultError):
    """What was given (an argument, a value, an input or output file) cannot be used."""

    exit_code = BAD_INPUT


class CannotUnlock(VaultError):
    """The vault cannot be unlocked, or must not be with what is given."""

    exit_code = CANNOT_UNLOCK


class NotFound(VaultError):
    """No such client, grant or vault, or a purged subject."""

    exit_code = NOT_FOUND


class IntegrityViolation(VaultError):
    """Stored data failed authentication: edited, moved, truncated or corrupted."""

    exit_code = INTEGRITY
    prefix = "integrity violation"


# The domain's own: what an admin did wrong, or what the rules forbid, in the admin's words.

class DomainError(VaultError):
    """Marks a refusal by the domain's rules, whatever its exit code."""


class InvalidInput(BadInput, DomainError):
    """The value given cannot be right (a GUID as secret, a malformed scope, ...)."""


class RuleViolation(OperationFailed, DomainError):
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


class ClientRemoved(RuleViolation):
    pass


class GrantNotActive(RuleViolation):
    pass
