"""ConsentGrant: one mailbox's consent under one client, identified by (client, mailbox).

It records what was granted (protocols, scopes per resource), how and by whom, and whether the
grant still works (active, needs-reconsent, revoked). Its tokens live in its TokenRotation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from domain.base import AggregateCreated, VaultAggregate, stable_snapshot
from domain.clouds import require_concrete_tenant
from domain.credentials import ClientCredential, check_plausible_date
from domain.errors import ClientRemoved, GrantNotActive, InvalidInput, RuleViolation
from domain.identity import NOT_CHECKED_APP_ONLY, NOT_CHECKED_IMPORT, not_checked
from domain.mailboxes import check_login, check_mailbox
from domain.scopes import (
    MAIL,
    indicators_for,
    plan_app_only,
    plan_scopes,
    resource_for,
    with_indicators,
)
from domain.vocabulary import ACTIVE, GRANT_METHODS, NEEDS_RECONSENT, REVOKED


class ConsentGrant(VaultAggregate):
    TOPIC = "vault.ConsentGrant"
    Snapshot = stable_snapshot("vault.ConsentGrant.Snapshot")
    class_version = 4  # snapshots: version 1 had no signed_in, 2 no login, 3 no indicators

    @staticmethod
    def upcast_v1_v2(state: dict) -> None:
        state["signed_in"] = None

    @staticmethod
    def upcast_v2_v3(state: dict) -> None:
        state["login"] = None

    @staticmethod
    def upcast_v3_v4(state: dict) -> None:
        state["indicators"] = None

    class Granted(VaultAggregate.Event, AggregateCreated):
        TOPIC = "vault.ConsentGrant.Granted"
        class_version = 3
        client_id: UUID
        client_name: str
        mailbox: str
        protocols: list
        scopes: dict
        method: str
        granted_at: datetime
        granted_by: str
        rotation_id: UUID
        signed_in: dict | None  # who signed in at the provider (domain/identity.py)
        indicators: dict | None  # RFC 8707 resource indicator per protocol, where one is sent

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            """Version 1 did not check who signed in: None reads as "not checked"."""
            state["signed_in"] = None

        @staticmethod
        def upcast_v2_v3(state: dict) -> None:
            state["indicators"] = None

    class Regranted(VaultAggregate.Event):
        TOPIC = "vault.ConsentGrant.Regranted"
        class_version = 3
        protocols: list
        scopes: dict
        method: str
        granted_at: datetime
        granted_by: str
        signed_in: dict | None
        indicators: dict | None

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            state["signed_in"] = None

        @staticmethod
        def upcast_v2_v3(state: dict) -> None:
            state["indicators"] = None

        def apply(self, grant: ConsentGrant) -> None:
            grant.protocols = self.protocols
            grant.scopes = self.scopes
            grant.method = self.method
            grant.granted_at = self.granted_at
            grant.granted_by = self.granted_by
            grant.signed_in = self.signed_in
            grant.indicators = self.indicators
            grant._set_status(ACTIVE, None, self.timestamp)
            grant.probes = {}  # probes of the earlier consent say nothing about this one

    class ProbeRecorded(VaultAggregate.Event):
        TOPIC = "vault.ConsentGrant.ProbeRecorded"
        protocol: str
        outcome: str
        latency_ms: int | None
        greeting: str | None
        diagnosis: str | None

        def apply(self, grant: ConsentGrant) -> None:
            grant.probes[self.protocol] = {
                "outcome": self.outcome, "latency_ms": self.latency_ms,
                "greeting": self.greeting, "diagnosis": self.diagnosis, "at": self.timestamp,
            }

    class LoginSet(VaultAggregate.Event):
        """The user name the mail server expects in SASL, where it is not the mailbox (None:
        the mailbox again)."""

        TOPIC = "vault.ConsentGrant.LoginSet"
        login: str | None

        def apply(self, grant: ConsentGrant) -> None:
            grant.login = self.login

    class MarkedBroken(VaultAggregate.Event):
        TOPIC = "vault.ConsentGrant.MarkedBroken"
        reason: str
        error_class: str | None

        def apply(self, grant: ConsentGrant) -> None:
            grant._set_status(NEEDS_RECONSENT, self.reason, self.timestamp)

    class Revoked(VaultAggregate.Event):
        TOPIC = "vault.ConsentGrant.Revoked"
        reason: str
        revoked_by: str

        def apply(self, grant: ConsentGrant) -> None:
            grant._set_status(REVOKED, self.reason, self.timestamp)
            grant.revoked_by = self.revoked_by

    def __init__(
        self, client_id: UUID, client_name: str, mailbox: str, protocols: list, scopes: dict,
        method: str, granted_at: datetime, granted_by: str, rotation_id: UUID,
        signed_in: dict | None, indicators: dict | None,
    ) -> None:
        self.client_id = client_id
        self.client_name = client_name
        self.mailbox = mailbox
        self.protocols = protocols
        self.scopes = scopes
        self.method = method
        self.granted_at = granted_at
        self.granted_by = granted_by
        self.rotation_id = rotation_id
        self.signed_in = signed_in
        self.indicators = indicators
        self.login: str | None = None  # None: the mailbox
        self.status = ACTIVE
        self.status_reason: str | None = None
        self.status_changed_at: datetime | None = None
        self.revoked_by: str | None = None
        self.probes: dict[str, dict[str, Any]] = {}

    def _set_status(self, status: str, reason: str | None, when: datetime) -> None:
        self.status = status
        self.status_reason = reason
        self.status_changed_at = when

    @classmethod
    def grant(
        cls, *, aggregate_id: UUID, rotation_id: UUID, now: datetime, client: ClientCredential,
        mailbox: str, protocols: tuple[str, ...], scopes: tuple[str, ...] | None, method: str,
        granted_at: datetime | None, granted_by: str, signed_in: dict[str, Any] | None = None,
        login: str | None = None,
    ) -> ConsentGrant:
        """`signed_in`: what the consent proved about who signed in (domain/identity.py);
        imports and app-only grants record that nobody was checked. `login`: the mail server's
        user name, where it is not the mailbox."""
        if client.is_removed:
            raise ClientRemoved(f"client {client.name!r} was removed")
        if method not in GRANT_METHODS:
            raise InvalidInput(f"unknown consent method {method!r}")
        plan = grant_plan(client, protocols, scopes, method)
        granted_at = _check_granted_at(granted_at, now)
        grant = cls._start(
            cls.Granted, aggregate_id, now, client_id=client.id, client_name=client.name,
            mailbox=check_mailbox(mailbox), protocols=list(protocols), scopes=plan.scopes,
            method=method, granted_at=granted_at, granted_by=granted_by, rotation_id=rotation_id,
            signed_in=_signed_in(method, signed_in), indicators=plan.indicators or None,
        )
        if login is not None:
            grant.set_login(now=now, login=login)
        return grant

    def resource_for(self, protocol: str) -> str:
        """The key of the token (in `scopes`, and the rotation's cache) a protocol uses."""
        return resource_for(self.scopes, protocol, self.indicators)

    def indicator(self, resource: str) -> str | None:
        """The RFC 8707 resource indicator a token request for `resource` names, if any."""
        return resource if resource in (self.indicators or {}).values() else None

    @property
    def sasl_user(self) -> str:
        """Who the mail server is told logs in (XOAUTH2's user, OAUTHBEARER's a=)."""
        return self.login or self.mailbox

    def set_login(self, *, now: datetime, login: str | None) -> bool:
        """The mail server's user name for this grant (None or the mailbox: the mailbox).
        False when it already was."""
        wanted = None if login is None else check_login(login)
        if wanted == self.mailbox:
            wanted = None
        if wanted == self.login:
            return False
        self._trigger(self.LoginSet, now, login=wanted)
        return True

    @property
    def is_active(self) -> bool:
        return self.status == ACTIVE

    @property
    def app_only(self) -> bool:
        return self.method == "app-only"

    def regrant(
        self, *, now: datetime, client: ClientCredential, protocols: tuple[str, ...],
        scopes: tuple[str, ...] | None, method: str, granted_at: datetime | None,
        granted_by: str, signed_in: dict[str, Any] | None = None, login: str | None = None,
    ) -> None:
        """A new consent for a grant that was revoked or broke; an active grant is refused.
        `login`: a new login name; None keeps the one it has."""
        if self.is_active:
            raise RuleViolation(
                f"{self.mailbox} already has an active grant under {self.client_name!r}; "
                "revoke it first to replace it"
            )
        if client.is_removed:
            raise ClientRemoved(f"client {client.name!r} was removed")
        plan = grant_plan(client, protocols, scopes, method)
        self._trigger(
            self.Regranted, now, protocols=list(protocols), scopes=plan.scopes, method=method,
            granted_at=_check_granted_at(granted_at, now), granted_by=granted_by,
            signed_in=_signed_in(method, signed_in), indicators=plan.indicators or None,
        )
        if login is not None:
            self.set_login(now=now, login=login)

    def record_probe(self, *, now: datetime, protocol: str, outcome: str,
                     latency_ms: int | None, greeting: str | None,
                     diagnosis: str | None) -> None:
        if protocol not in self.protocols:
            raise InvalidInput(f"the grant of {self.mailbox} does not cover {protocol}")
        self._trigger(self.ProbeRecorded, now, protocol=protocol, outcome=outcome,
                      latency_ms=latency_ms, greeting=(greeting or "")[:200] or None,
                      diagnosis=(diagnosis or "")[:500] or None)

    def mark_broken(self, *, now: datetime, reason: str, error_class: str | None = None) -> None:
        if not self.is_active:
            raise GrantNotActive(f"the grant of {self.mailbox} is already {self.status}")
        self._trigger(self.MarkedBroken, now, reason=reason, error_class=error_class)

    def revoke(self, *, now: datetime, reason: str, revoked_by: str) -> None:
        if self.status == REVOKED:
            raise GrantNotActive(f"the grant of {self.mailbox} is already revoked")
        if not reason.strip():
            raise InvalidInput("a revocation needs a reason (--reason)")
        self._trigger(self.Revoked, now, reason=reason.strip(), revoked_by=revoked_by)


class GrantPlan(NamedTuple):
    """What a grant asks for: scopes grouped by the token they go into (keyed by resource, or
    by resource indicator), and the RFC 8707 indicator of each protocol that has one."""

    scopes: dict[str, list[str]]
    indicators: dict[str, str]

    def first(self) -> str:
        """The token a consent's code redeems for (mail's where the grant has mail)."""
        return MAIL if MAIL in self.scopes else next(iter(self.scopes))


def grant_plan(client: ClientCredential, protocols: tuple[str, ...],
               scopes: tuple[str, ...] | None, method: str) -> GrantPlan:
    if method == "app-only":
        if client.profile.is_microsoft:
            require_concrete_tenant(client.tenant)
        if client.auth_method == "none":
            raise InvalidInput(f"client {client.name!r} is public: app-only access needs a "
                               "secret or certificate")
        return GrantPlan(plan_app_only(client.profile, protocols, scopes), {})
    plan = plan_scopes(client.profile, protocols, scopes or tuple(client.scopes) or None)
    indicators = indicators_for(client.resources, protocols)
    return GrantPlan(with_indicators(plan, indicators, protocols), indicators)


def _signed_in(method: str, signed_in: dict[str, Any] | None) -> dict[str, Any]:
    if signed_in is not None:
        return signed_in
    if method == "import":
        return not_checked(NOT_CHECKED_IMPORT)
    if method == "app-only":
        return not_checked(NOT_CHECKED_APP_ONLY)
    return not_checked("no ID token was checked")


def _check_granted_at(granted_at: datetime | None, now: datetime) -> datetime:
    if granted_at is None:
        return now
    if granted_at > now:
        raise InvalidInput("--granted-at lies in the future")
    check_plausible_date(granted_at.date(), "--granted-at")
    return granted_at
