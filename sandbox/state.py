"""What the sandbox remembers, in memory only: its one app registration, the codes and tokens it
issued, and the switches tests turn (queued failures, forged ID tokens, slow device polling)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.oidc import new_signing_key

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
    client_id: str = SANDBOX_CLIENT_ID
    secret: str = SANDBOX_SECRET
    lock: threading.Lock = field(default_factory=threading.Lock)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshGrant] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[tuple[int, int | None]] = field(default_factory=list)  # (AADSTS, HTTP)
    revoked_users: set[str] = field(default_factory=set)
    certificates: list[Any] = field(default_factory=list)  # cryptography x509 certificates
    slow_downs: int = 0  # answer this many device-code polls with slow_down (RFC 8628)
    device_ttl: float = 900.0  # seconds a device code stays valid (then: expired_token)
    access_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)  # for the Graph API
    signing_key: Any = field(default_factory=new_signing_key)  # RS256, for ID tokens
    mail_attributes: dict[str, str] = field(default_factory=dict)  # user -> `email` claim
    forge_id_tokens: list[str] = field(default_factory=list)  # oidc.FORGERIES, one per ID token
    clock: Callable[[], float] = time.time  # what ID tokens are stamped with (tests move it)
    assertions: list[dict[str, str]] = field(default_factory=list)  # headers of accepted ones
    stats: dict[str, int] = field(default_factory=lambda: {"token": 0, "refresh_token": 0,
                                                           "authorization_code": 0,
                                                           "client_credentials": 0})
