"""Use cases for consent grants: import a refresh token, list, show, revoke (and purge).

A grant is identified by (client, mailbox); a command naming only a mailbox that two clients
share asks for --client.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from adapters.store.changes import Changes
from adapters.store.queries import GrantRow
from domain.credentials import ClientCredential
from domain.expiry import ExpiryThresholds
from domain.grants import ConsentGrant
from domain.identity import NOT_CHECKED_BEFORE, not_checked
from domain.mailboxes import check_mailbox, mailbox_key
from domain.rotation import TokenRotation, rotation_id_for
from domain.scopes import resource_url
from domain.secret_value import SecretValue
from domain.vocabulary import REVOKED
from vault.core import VaultCore, apply_views, use_case
from vault.errors import AlreadyExists, AmbiguousMailbox, NotFound
from vault.listings import GrantListing, grant_listing, refusal_interval, refusal_state, thresholds_of
from vault.projections import client_name_key, grant_changes, grant_removal, rotation_changes

if TYPE_CHECKING:
    from vault.providers import Providers
    from vault.services.clients import ClientService


def _iso(value: Any) -> Any:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class TokenState:
    """A grant's token lineage, never a token: whether a refresh token is held, its generation,
    the access tokens' expiry per resource, and the last failure."""

    refresh_token: str  # "held" or "none"
    generation: int
    refresh_token_issued_at: str | None
    refresh_token_last_used_at: str | None
    last_refresh_at: str | None
    refreshes: int
    access_tokens: dict[str, dict[str, Any]]  # per resource: expires_at, scope
    interrupted_attempt: bool
    last_failure: dict[str, Any] | None  # as the rotation recorded it
    refresh_refused: dict[str, str] | None  # refusal_state, with the interval in force


@dataclass(frozen=True)
class GrantSummary:
    """A grant as `grant show` shows it; `tokens` only where its lineage is shown too."""

    mailbox: str
    client: str
    login: str  # the mail server's user name: the mailbox unless set otherwise
    protocols: list[str]
    scopes: dict[str, list[str]]
    resources: dict[str, str | None]
    indicators: dict[str, str]  # RFC 8707 resource indicator per protocol, where one is sent
    status: str
    status_reason: str | None
    method: str
    granted_at: str | None
    granted_by: str | None
    signed_in: dict[str, Any]  # who signed in, as the ID token said (domain/identity.py)
    probes: dict[str, dict[str, Any]]  # the last probe per protocol
    tokens: TokenState | None = field(default=None, metadata={"omit_if_none": True})


@dataclass(frozen=True)
class RevokedGrant:
    """`provider_revocation`: what was done at the provider, or what is left to do there."""

    mailbox: str
    client: str
    revoked: bool
    purged: bool
    provider_revocation: str


def rotation_summary(rotation: TokenRotation,
                     refresh_refused: dict[str, str] | None = None) -> TokenState:
    failure = rotation.last_failure
    return TokenState(
        refresh_token="held" if rotation.refresh_token is not None else "none",
        generation=rotation.generation,
        refresh_token_issued_at=_iso(rotation.refresh_issued_at),
        refresh_token_last_used_at=_iso(rotation.refresh_last_used_at),
        last_refresh_at=_iso(rotation.last_refresh_at),
        refreshes=rotation.refreshes,
        access_tokens={r: {"expires_at": _iso(a["expires_at"]), "scope": a["scope"]}
                       for r, a in rotation.access.items()},
        interrupted_attempt=bool(rotation.pending),
        last_failure=({**failure, "at": _iso(failure["at"]),
                       "refused_since": _iso(failure.get("refused_since"))}
                      if failure else None),
        refresh_refused=refresh_refused,
    )


def grant_summary(grant: ConsentGrant) -> GrantSummary:
    return GrantSummary(
        mailbox=grant.mailbox, client=grant.client_name, login=grant.sasl_user,
        protocols=grant.protocols,
        scopes=grant.scopes,
        # which resource each token is for: DoD mail scopes may name either of two
        resources={r: resource_url(s) for r, s in grant.scopes.items()},
        indicators=grant.indicators or {},
        status=grant.status, status_reason=grant.status_reason,
        method=grant.method, granted_at=_iso(grant.granted_at),
        granted_by=grant.granted_by,
        signed_in=grant.signed_in or not_checked(NOT_CHECKED_BEFORE),
        probes={p: {**r, "at": _iso(r["at"])} for p, r in grant.probes.items()},
    )


@dataclass(eq=False)
class GrantService:
    core: VaultCore
    clients: ClientService
    providers: Providers

    def thresholds(self) -> ExpiryThresholds:
        return thresholds_of(self.core.reads.settings())

    def refusal_interval(self) -> timedelta:
        return refusal_interval(self.thresholds())

    def grant_row(self, mailbox: str, client: str | None = None) -> GrantRow:
        match = {"mailbox_key": mailbox_key(mailbox.strip())}
        if client:
            match["client_uuid"] = self.clients.client_row(client).client_uuid
        rows = sorted(self.core.reads.rows("view_grants", **match), key=lambda r: r.client_name)
        if not rows:
            under = f" under client {client!r}" if client else ""
            raise NotFound(f"no grant for {mailbox}{under} (see `vault grant list`)")
        if len(rows) > 1:
            raise AmbiguousMailbox(
                f"{mailbox} is granted under several clients "
                f"({', '.join(r.client_name for r in rows)}): add --client NAME"
            )
        row = rows[0]
        self.core.broker.record.subject.update({"client": row.client_name, "mailbox": row.mailbox})
        return row

    def access_valid_until(self, rotation_id: UUID, cutoff: datetime | None) -> str | None:
        """The latest expiry among access tokens issued before `cutoff`: a revoked consent or a
        removed client does not end them at the provider."""
        version = self.core.version_as_of(rotation_id, cutoff)
        if not version:
            return None
        rotation: TokenRotation = self.core.load(rotation_id, version)
        return _iso(max((a["expires_at"] for a in rotation.access.values()), default=None))

    @use_case("grant import")
    def import_grant(
        self, *, client: str, mailbox: str, protocols: tuple[str, ...],
        refresh_token: SecretValue, scopes: tuple[str, ...] | None = None,
        granted_at: datetime | None = None, login: str | None = None,
    ) -> GrantSummary:
        mailbox = check_mailbox(mailbox)
        crow = self.clients.client_row(client)
        self.core.broker.record.subject.update({"client": crow.name, "mailbox": mailbox})
        credential = self.core.load_client(crow.client_uuid)
        now = self.core.now()
        self.core.broker.record.detail.update({"protocols": list(protocols), "method": "import",
                                               **({"login": login} if login else {})})
        existing = self.core.reads.grants_of(crow.client_uuid, mailbox)
        if existing:
            def attempt() -> ConsentGrant:
                grant = self.core.load_grant(existing[0].grant_uuid)
                rotation = self.core.load(grant.rotation_id)
                grant.regrant(now=now, client=credential, protocols=protocols, scopes=scopes,
                              method="import", granted_at=granted_at, granted_by=self.core.who,
                              login=login)
                rotation.reseed(now=now, refresh_token=refresh_token,
                                issued_at=grant.granted_at, source="import")
                self._save_grant(grant, rotation, credential)
                return grant

            grant = self.core.retrying(attempt)
        else:
            grant, rotation, keys = self.new_grant(
                credential, mailbox, protocols, scopes, method="import", granted_at=granted_at,
                refresh_token=refresh_token, login=login)
            self._save_new_grant(grant, rotation, credential, keys)
        return grant_summary(grant)

    def new_grant(
        self, credential: Any, mailbox: str, protocols: tuple[str, ...],
        scopes: tuple[str, ...] | None, *, method: str, granted_at: datetime | None,
        refresh_token: SecretValue | None, signed_in: dict[str, Any] | None = None,
        login: str | None = None,
    ) -> tuple[ConsentGrant, TokenRotation, list]:
        """A new grant, its token lineage and their data keys (one subject: the grant)."""
        grant_id = self.core.new_id()
        grant = ConsentGrant.grant(
            aggregate_id=grant_id, rotation_id=rotation_id_for(grant_id), now=self.core.now(),
            client=credential, mailbox=mailbox, protocols=protocols, scopes=scopes,
            method=method, granted_at=granted_at, granted_by=self.core.who, signed_in=signed_in,
            login=login)
        source = {"import": "import", "app-only": "app-only"}.get(method, "consent")
        rotation = TokenRotation.start(grant_id=grant_id, now=self.core.now(),
                                       refresh_token=refresh_token, issued_at=grant.granted_at,
                                       source=source)
        keys = self.core.new_key_rows(grant.id, grant.id) + self.core.new_key_rows(rotation.id, grant.id)
        return grant, rotation, keys

    def _save_new_grant(self, grant: ConsentGrant, rotation: TokenRotation, credential: Any,
                        keys: list) -> None:
        try:
            self._save_grant(grant, rotation, credential, Changes(keys=keys))
        except IntegrityError:
            # The read model's unique (client, mailbox) let another process through first.
            raise AlreadyExists(f"{grant.mailbox} was granted under {grant.client_name!r} "
                                "meanwhile") from None

    def _save_grant(self, grant: ConsentGrant, rotation: TokenRotation, credential: Any,
                    changes: Changes | None = None) -> None:
        changes = apply_views(changes or Changes(),
                              grant_changes(grant, credential.provider, credential.google_testing),
                              rotation_changes(rotation))
        self.core.commit(grant, rotation, changes=changes)

    @use_case("grant add-app")
    def add_app_grant(self, *, client: str, mailbox: str, protocols: tuple[str, ...],
                      scopes: tuple[str, ...] | None = None,
                      login: str | None = None) -> GrantSummary:
        """Record that an app reaches a mailbox app-only (client credentials): in Exchange, a
        service principal of the Enterprise Application with permission on the mailbox."""
        mailbox = check_mailbox(mailbox)
        crow = self.clients.client_row(client)
        self.core.broker.record.subject.update({"client": crow.name, "mailbox": mailbox})
        self.core.broker.record.detail.update({"protocols": list(protocols), "method": "app-only",
                                               **({"login": login} if login else {})})
        credential = self.core.load_client(crow.client_uuid)
        if self.core.reads.grants_of(crow.client_uuid, mailbox):
            raise AlreadyExists(f"{mailbox} already has a grant under {crow.name!r}")
        grant, rotation, keys = self.new_grant(credential, mailbox, protocols, scopes,
                                               method="app-only", granted_at=None,
                                               refresh_token=None, login=login)
        self._save_new_grant(grant, rotation, credential, keys)
        return grant_summary(grant)

    @use_case("grant list")
    def list_grants(self, client: str | None = None) -> list[GrantListing]:
        rows = self.core.reads.models().grants
        if client:
            uuid = self.clients.client_row(client).client_uuid
            rows = [r for r in rows if r.client_uuid == uuid]
        interval = self.refusal_interval()
        return [grant_listing(r, interval) for r in rows]

    @use_case("grant show")
    def show_grant(self, mailbox: str, *, client: str | None = None) -> GrantSummary:
        row = self.grant_row(mailbox, client)
        grant = self.core.load_grant(row.grant_uuid)
        rotation: TokenRotation = self.core.load(UUID(row.rotation_uuid))
        tokens = rotation_summary(rotation, refusal_state(rotation.refused_since, grant.status,
                                                          self.refusal_interval()))
        return replace(grant_summary(grant), tokens=tokens)

    @use_case("grant set-login")
    def set_login(self, mailbox: str, login: str | None, *,
                  client: str | None = None) -> GrantSummary:
        """The user name the mail server expects for this grant (None: the mailbox)."""
        row = self.grant_row(mailbox, client)
        self.core.broker.record.detail["login"] = login

        def attempt() -> tuple[ConsentGrant, bool]:
            grant = self.core.load_grant(row.grant_uuid)
            changed = grant.set_login(now=self.core.now(), login=login)
            if changed:
                self.core.commit(grant, changes=apply_views(Changes(), grant_changes(
                    grant, row.provider, bool(row.google_testing))))
            return grant, changed

        grant, changed = self.core.retrying(attempt)
        self.core.broker.record.detail["changed"] = changed
        return grant_summary(grant)

    @use_case("grant revoke")
    def revoke(
        self, mailbox: str, *, reason: str, client: str | None = None, purge: bool = False
    ) -> RevokedGrant:
        """Revoke at the provider where it can be done (RFC 7009, Google), then in the vault
        (the grant revoked, its tokens discarded; with `purge`, its data key destroyed)."""
        from adapters.errors import AdapterError
        from adapters.oauth import OAuthFailure

        row = self.grant_row(mailbox, client)
        credential: ClientCredential = self.core.load_client(row.client_uuid)
        rotation: TokenRotation = self.core.load(UUID(row.rotation_uuid))
        at_provider = None
        if credential.endpoints.get("revoke_url") and rotation.refresh_token is not None:
            try:
                self.providers.oauth(credential).revoke(rotation.refresh_token)
                at_provider = "the refresh token was revoked at the provider"
            except (OAuthFailure, AdapterError) as e:
                at_provider = f"revoking at the provider failed ({e}); revoke it there by hand"
        self.core.broker.record.detail["at_provider"] = bool(at_provider and "failed" not in at_provider)
        result = self._revoke_in_vault(row, reason=reason, purge=purge)
        return replace(result, provider_revocation=at_provider) if at_provider else result

    def _revoke_in_vault(self, row: GrantRow, *, reason: str, purge: bool) -> RevokedGrant:
        self.core.broker.record.detail.update({"reason": reason, "purged": purge})

        def attempt() -> ConsentGrant:
            grant = self.core.load_grant(row.grant_uuid)
            rotation = self.core.load(grant.rotation_id)
            now = self.core.now()
            if grant.status != REVOKED or not purge:  # a second revoke is refused
                grant.revoke(now=now, reason=reason, revoked_by=self.core.who)
            # Recorded in the audit entry, which outlives a purge of the grant's own events.
            self.core.broker.record.detail["access_valid_until"] = self.access_valid_until(
                grant.rotation_id, grant.status_changed_at)
            if purge:
                self.core.broker.record.detail["revocation"] = {
                    "at": _iso(grant.status_changed_at), "by": grant.revoked_by,
                    "reason": grant.status_reason}
            rotation.discard_tokens(now=now, reason="grant revoked")
            changes = Changes()
            if purge:
                changes.shred_subjects.append(row.grant_uuid)
                changes.shredded_at = now.isoformat()
                apply_views(changes, grant_removal(row.grant_uuid))
            else:
                apply_views(changes, grant_changes(grant, row.provider,
                                                   bool(row.google_testing)),
                            rotation_changes(rotation))
            self.core.commit(grant, rotation, changes=changes)
            return grant

        grant = self.core.retrying(attempt)
        if purge:
            self.core.keyring.forget([row.grant_uuid, row.rotation_uuid])
            self.core.wipe_freed_pages()
        return RevokedGrant(mailbox=grant.mailbox, client=grant.client_name, revoked=True,
                            purged=purge,
                            provider_revocation=PROVIDER_REVOCATION_ADVICE.get(row.provider, ""))


PROVIDER_REVOCATION_ADVICE = {
    "microsoft": "tokens already issued stay valid until they expire; to cut them off now, "
                 "revoke the user's sessions in Entra ID (Revoke-MgUserSignInSession)",
    "google": "revoke the app's access at https://myaccount.google.com/permissions "
              "(or the Admin console for Workspace)",
    "custom": "revoke the refresh token at the provider if it offers a revocation endpoint",
}


__all__ = ["GrantService", "client_name_key"]
