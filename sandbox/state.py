"""What the sandbox remembers, in memory only: its app registrations (directory.py: the one
`vault sandbox` prints, and any a test adds, e.g. a separate management app), the codes and tokens
it issued, and the switches tests turn (queued failures, forged ID tokens, slow device polling,
throttled Graph calls, the clock)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.directory import HOME_TENANT, TWO_YEARS, Application, PasswordCredential, new_secret_text
from sandbox.oidc import new_signing_key, tenant_id

SANDBOX_CLIENT_ID = "5a1db0c0-0000-4000-8000-00000000c11e"
SANDBOX_SECRET = "Sandbox~Secret.Value-not-for-real-use-0123"
PASSWORD = "sandbox"
ACCESS_TTL = 3600


@dataclass
class RefreshGrant:
    user: str
    scopes: list[str]
    revoked: bool = False


@dataclass
class SandboxState:
    client_id: str = SANDBOX_CLIENT_ID  # the app registration `vault sandbox` prints
    applications: dict[str, Application] = field(default_factory=dict)  # by appId
    lock: threading.Lock = field(default_factory=threading.Lock)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshGrant] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[tuple[int, int | None]] = field(default_factory=list)  # (AADSTS, HTTP)
    revoked_users: set[str] = field(default_factory=set)
    slow_downs: int = 0  # answer this many device-code polls with slow_down (RFC 8628)
    device_ttl: float = 900.0  # seconds a device code stays valid (then: expired_token)
    access_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)  # for the Graph API
    signing_key: Any = field(default_factory=new_signing_key)  # RS256, for ID tokens
    mail_attributes: dict[str, str] = field(default_factory=dict)  # user -> `email` claim
    forge_id_tokens: list[str] = field(default_factory=list)  # oidc.FORGERIES, one per ID token
    # What ID tokens are stamped with, and what credential dates, secret propagation and proofs
    # of possession are measured on (tests move it, or advance() it).
    clock: Callable[[], float] = time.time
    graph_throttle: int = 0  # answer this many Graph calls with 429
    graph_retry_after: str = "2"  # ... and this Retry-After (Graph's examples have fractions)
    assertions: list[dict[str, str]] = field(default_factory=list)  # headers of accepted ones
    refused_proofs: list[str] = field(default_factory=list)  # why each addKey proof failed
    # Graph application actions to hold ({action: "before" | "after"} doing it): the request
    # waits, `held` set, until `release` is set (a test kills the caller meanwhile); one held
    # before is then answered 503 and not done
    holds: dict[str, str] = field(default_factory=dict)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    stats: dict[str, int] = field(default_factory=lambda: {"token": 0, "refresh_token": 0,
                                                           "authorization_code": 0,
                                                           "client_credentials": 0})

    def __post_init__(self) -> None:
        if self.client_id not in self.applications:
            self.add_application(self.client_id, SANDBOX_SECRET)

    @property
    def application(self) -> Application:
        """The app registration `vault sandbox` prints."""
        return self.applications[self.client_id]

    @property
    def secret(self) -> str:
        """The primary app's first secret (the one `vault sandbox` prints)."""
        passwords = self.application.passwords
        return passwords[0].secret if passwords else ""

    @secret.setter
    def secret(self, value: str) -> None:
        """The app registration now has only this secret (made now, for two years)."""
        now = self.clock()
        self.application.passwords[:] = [PasswordCredential(value, now, now + TWO_YEARS)]

    @property
    def certificates(self) -> list[Any]:
        """The primary app's certificates (cryptography x509 ones): append to register one."""
        return self.application.certificates

    def add_application(self, app_id: str | None = None, secret: str | None = None,
                        tenant: str = HOME_TENANT, display_name: str = "vault sandbox",
                        roles: set[str] | None = None) -> Application:
        """Registers an app (a made-up appId and secret unless given) in `tenant`."""
        now = self.clock()
        app = Application(app_id or str(uuid.uuid4()), display_name=display_name,
                          tenant=tenant_id(tenant), roles=set(roles or ()))
        app.passwords.append(PasswordCredential(secret or new_secret_text(), now,
                                                now + TWO_YEARS))
        with self.lock:
            self.applications[app.app_id] = app
        return app

    def advance(self, seconds: float) -> None:
        """Moves the clock forward (a propagation delay passed, a secret expired)."""
        before = self.clock
        self.clock = lambda: before() + seconds
