"""Token use cases: hand out access tokens, rotate refresh tokens safely, app-only tokens.

The refresh protocol (docs/architecture.md, "A token"):
1. take the grant's lock, held across the network call (a lock file on SQLite, an advisory lock on
   PostgreSQL; not a database transaction, so other commands keep writing);
2. re-read the TokenRotation: if another process refreshed meanwhile, use its token (single flight);
3. record RotationStarted and commit it before calling the provider;
4. call the token endpoint; record TokensIssued (the new refresh token is committed before the
   access token is handed out) or RotationFailed; a refused refresh token (invalid_grant) leaves
   the grant "refused once", and only a further refusal in a later command, at least the
   configured interval (10 minutes) after the first, marks it broken (at once when the refresh
   token was spent by an interrupted attempt); transient failures are retried with back-off,
   honouring Retry-After, and the error says how often and what tries next;
5. release the lock. A RotationStarted without an outcome, found under the lock, means a process
   died between the provider's answer and the commit: it is reported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from adapters.errors import AdapterError, IntegrityViolation
from adapters.retry import Backoff
from adapters.store.changes import Changes
from adapters.store.queries import GrantRow
from domain.clouds import require_concrete_tenant
from domain.credentials import ClientCredential
from domain.grants import ConsentGrant
from domain.rotation import TokenRotation
from domain.scopes import resource_for
from domain.secret_value import SecretValue
from domain.vocabulary import ACTIVE, MAIL_PROTOCOLS, NEEDS_RECONSENT
from vault.core import VaultCore, apply_views, use_case
from vault.errors import BadInput
from vault.projections import grant_changes, rotation_changes
from vault.providers import GrantUnusable, TokenRefreshFailed

if TYPE_CHECKING:
    from adapters.oauth import Tokens
    from domain.diagnosis import Diagnosis
    from vault.providers import Providers
    from vault.services.clients import ClientService
    from vault.services.grants import GrantService

LOCK_WAIT_S = 120.0
RETRY_BACKOFF = Backoff(attempts=4, cap=30.0, jitter=0.5)  # waits 1, 2, 4 s and a little
RETRY_BUDGET_S = 60.0
DEFAULT_MIN_VALID = timedelta(minutes=5)


# What tries a failed refresh again, said in the error: vault runs no retries of its own later.
NEXT_TRY_TOKEN = "nothing retries it before the next `vault token` call"
NEXT_TRY_ANY = ("nothing retries it before vault next needs a token for it (`vault token`, "
                "`vault refresh`, `vault probe`, `vault maintain`)")
NEXT_TRY_DUE = "the next `vault refresh --due` or `vault maintain` run tries again"
NEXT_TRY_FORCED = ("nothing retries it until `vault refresh` runs again, or a `vault refresh "
                   "--due` / `vault maintain` run finds it due")


@dataclass(frozen=True)
class AccessToken:
    token: SecretValue
    expires_at: datetime
    resource: str
    mailbox: str
    refreshed: bool
    login: str | None = None  # the mail server's user name, where `access_token` gives it
    client: str | None = None  # the grant's client, where `access_token` gives it
    # the protocol's server (host, port), where `access_token` was asked for it and knows it
    server: tuple[str, int] | None = None


@dataclass(frozen=True)
class RefreshOutcome:
    """One resource of one grant: `outcome` refreshed, fresh (its token was still valid) or
    failed; `expires_at` of its access token, or the `error`."""

    mailbox: str
    client: str
    resource: str
    outcome: str
    expires_at: str | None = field(default=None, metadata={"omit_if_none": True})
    error: str | None = field(default=None, metadata={"omit_if_none": True})


@dataclass(eq=False)
class TokenService:
    core: VaultCore
    clients: ClientService
    grants: GrantService
    providers: Providers
    sleep: Callable[[float], None]

    # -- handing out access tokens -----------------------------------------------------------

    @use_case("token")
    def access_token(
        self, mailbox: str, *, client: str | None = None, protocol: str = "imap",
        min_valid: timedelta = DEFAULT_MIN_VALID, server: bool = False,
    ) -> AccessToken:
        """`server`: also where the protocol is served for the grant's client (what `client set-servers`
        recorded, else its cloud's host), for an OAUTHBEARER response."""
        row = self.grants.grant_row(mailbox, client)
        self.core.broker.record.detail.update({"protocol": protocol})
        token = replace(self.usable_token(row, protocol, min_valid, next_try=NEXT_TRY_TOKEN,
                                          reveal=True), login=row.login or row.mailbox,
                    client=row.client_name)
        if not server or protocol not in MAIL_PROTOCOLS:
            return token
        from domain.mail_verdicts import mail_server

        credential: ClientCredential = self.core.load_client(row.client_uuid)
        known = mail_server(credential.profile, credential.mail_servers, protocol)
        return replace(token, server=(known["host"], known["port"]) if known else None)

    def usable_token(self, row: GrantRow, protocol: str,
                     min_valid: timedelta = DEFAULT_MIN_VALID,
                     next_try: str = NEXT_TRY_ANY, *, reveal: bool = False) -> AccessToken:
        """A grant's access token for a protocol, refreshed under the protocol when needed.
        `reveal`: it is handed out (printed), which its audit entry says; only then."""
        if protocol not in row.protocols.split(","):
            raise BadInput(f"the grant of {row.mailbox} covers {row.protocols}, "
                           f"not {protocol}")
        if row.status != ACTIVE:
            state = "needs a new consent" if row.status == NEEDS_RECONSENT else "was revoked"
            raise GrantUnusable(
                f"the grant of {row.mailbox} {state}"
                + (f" ({row.status_reason})" if row.status_reason else "")
                + (f": run `vault consent {row.client_name} --mailbox {row.mailbox} "
                   f"--protocols {row.protocols} --replace`"
                   if row.status == NEEDS_RECONSENT else ""))
        rotation: TokenRotation = self.core.load(UUID(row.rotation_uuid))
        grant: ConsentGrant = self.core.load_grant(row.grant_uuid)
        resource = grant.resource_for(protocol)
        self.core.broker.record.detail["resource"] = resource
        cached = rotation.valid_access_token(resource, self.core.now(), min_valid)
        if cached is not None:
            self.core.broker.record.detail["refreshed"] = False
            self._handed_out(reveal)
            return AccessToken(cached, rotation.access[resource]["expires_at"], resource,
                               row.mailbox, refreshed=False)
        return self._refresh_under_lock(row, resource, min_valid=min_valid, force=False,
                                        next_try=next_try, reveal=reveal)

    def _handed_out(self, reveal: bool) -> None:
        if reveal:
            self.core.broker.record.detail["revealed"] = "access_token"

    def _refresh_under_lock(
        self, row: GrantRow, resource: str, *, min_valid: timedelta, force: bool,
        next_try: str, reveal: bool = False,
    ) -> AccessToken:
        with self.core.store.grant_lock(row.grant_uuid, LOCK_WAIT_S):
            rotation: TokenRotation = self.core.load(UUID(row.rotation_uuid))
            if not force:
                cached = rotation.valid_access_token(resource, self.core.now(), min_valid)
                if cached is not None:  # another process refreshed while we waited
                    self.core.broker.record.detail["refreshed"] = False
                    self._handed_out(reveal)
                    return AccessToken(cached, rotation.access[resource]["expires_at"],
                                       resource, row.mailbox, refreshed=False)
            grant: ConsentGrant = self.core.load_grant(row.grant_uuid)
            credential: ClientCredential = self.core.load_client(row.client_uuid)
            return self._rotate(grant, rotation, credential, resource, row, next_try, reveal)

    def _rotate(self, grant: ConsentGrant, rotation: TokenRotation,
                credential: ClientCredential, resource: str, row: GrantRow,
                next_try: str, reveal: bool = False) -> AccessToken:
        from adapters.oauth import OAuthFailure

        began_at = self.core.now()  # refusals from this command on count as one
        refusal_interval = self.grants.refusal_interval()
        interrupted = rotation.interrupted_attempt
        if interrupted is not None:
            started = interrupted["started_at"].strftime("%Y-%m-%d %H:%M:%S")
            self.core.warnings.append(
                f"a previous refresh of {grant.mailbox} (started {started} UTC) was interrupted "
                "after it may have reached the provider: the refresh token it used may be spent; "
                "vault tries it again")
            self.core.broker.record.detail["interrupted_attempt"] = interrupted["attempt_id"]
        oauth = self.providers.oauth(credential)
        # One token per resource: Microsoft needs the resource's scopes on every refresh; a
        # single-resource grant elsewhere refreshes with the scopes it was granted (RFC 6749),
        # and so does a token for a resource indicator (RFC 8707), which picks the granted
        # scopes that resource takes (naming others is invalid_scope at oidc-provider).
        indicator = grant.indicator(resource)
        scopes = grant.scopes[resource] if indicator is None and (
            credential.profile.is_microsoft or len(grant.scopes) > 1) else []
        waited = 0.0
        attempt = 0
        retried_once = False
        while True:
            attempt += 1
            attempt_id = uuid4().hex
            rotation.begin_rotation(now=self.core.now(), attempt_id=attempt_id, resource=resource)
            self.core.broker.record.detail["step"] = "refresh started"
            self._save_rotation(rotation)
            try:
                tokens = (oauth.client_credentials(" ".join(grant.scopes[resource]))
                          if grant.app_only
                          else oauth.refresh(rotation.refresh_token, scopes, resource=indicator))
            except OAuthFailure as failure:
                d = failure.diagnosis
                rotation.record_failure(
                    now=self.core.now(), attempt_id=attempt_id, error_class=d.name, error_code=d.code,
                    transient=d.transient, invalid_grant=d.invalid_grant, trace_id=d.trace_id,
                    correlation_id=d.correlation_id)
                broken = grant.is_active and d.invalid_grant and (
                    interrupted is not None or rotation.refusal_marks_broken(
                        now=self.core.now(), attempt_began_at=began_at, interval=refusal_interval))
                self.core.broker.record.outcome = "failed"
                self.core.broker.record.detail.update({"step": "refresh failed", "error": d.name,
                                                       "code": d.code})
                changes = apply_views(Changes(), rotation_changes(rotation))
                if broken:
                    grant.mark_broken(now=self.core.now(), reason=f"{d.name} ({d.code})",
                                      error_class=d.name)
                    apply_views(changes, grant_changes(grant, credential.provider,
                                                       credential.google_testing))
                    self.core.commit(rotation, grant, changes=changes)
                else:
                    self.core.commit(rotation, changes=changes)
                delay = None if broken else self._retry_delay(d, attempt, retried_once)
                if delay is not None and waited + delay <= RETRY_BUDGET_S:
                    retried_once = retried_once or d.error_class.retry == "once"
                    waited += delay
                    self.sleep(delay)
                    continue
                raise TokenRefreshFailed(
                    d, broken, grant.mailbox, tries=attempt, waited=waited, next_try=next_try,
                    refused_counts_from=(rotation.refusal_counts_from(refusal_interval)
                                         if grant.is_active else None)) from None
            now = self.core.now()
            rotation.record_tokens(
                now=now, attempt_id=attempt_id, resource=resource,
                access_token=tokens.access_token, expires_in=tokens.expires_in,
                refresh_token=None if grant.app_only else tokens.refresh_token,
                scope=tokens.scope)
            self.core.broker.record.outcome = "ok"
            self.core.broker.record.detail.update({"step": "tokens issued", "refreshed": True,
                                                   "rotated": tokens.refresh_token is not None})
            self.core.broker.record.detail.pop("error", None)
            self.core.broker.record.detail.pop("code", None)
            self._handed_out(reveal)  # the entry this commit seals: the token goes out next
            self._save_rotation(rotation)  # the new refresh token is stored before anything else
            return AccessToken(tokens.access_token, rotation.access[resource]["expires_at"],
                               resource, row.mailbox, refreshed=True)

    def _save_rotation(self, rotation: TokenRotation) -> None:
        self.core.commit(rotation, changes=apply_views(Changes(), rotation_changes(rotation)))

    def _retry_delay(self, d: Diagnosis, attempt: int, retried_once: bool) -> float | None:
        if d.error_class.retry == "once" and not retried_once:
            return 1.0
        if not d.transient:
            return None
        return RETRY_BACKOFF.delay(attempt, d.retry_after)

    # -- refreshing ahead of time -------------------------------------------------------------

    @use_case("refresh")
    def refresh(
        self, mailbox: str | None = None, *, client: str | None = None, due: bool = False,
        everything: bool = False, keepalive_days: int = 14,
        min_valid: timedelta = DEFAULT_MIN_VALID,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> list[RefreshOutcome]:
        """Refresh one grant, every grant, or those due: access tokens about to expire, and
        refresh tokens idle for `keepalive_days` (spread over a few days per grant, so a fleet
        of grants does not come due on the same night)."""
        if sum(map(bool, (mailbox, due, everything))) != 1:
            raise BadInput("name one MAILBOX, or give --due or --all")
        if mailbox:
            rows = [self.grants.grant_row(mailbox, client)]
        else:
            rows = [r for r in self.core.reads.models().grants if r.status == ACTIVE]
        self.core.broker.record.detail.update({"selection": mailbox or ("due" if due else "all")})
        now = self.core.now()
        results: list[RefreshOutcome] = []
        for n, row in enumerate(rows, start=1):
            if progress:
                progress(n, len(rows), row.mailbox)
            with (self.core.broker.item(client=row.client_name, mailbox=row.mailbox)
                  if not mailbox else contextlib.nullcontext()):  # each grant's commits: its own
                results += self._refresh_grant(row, due=due, now=now,
                                               keepalive_days=keepalive_days, min_valid=min_valid)
        self.core.broker.record.detail["grants"] = len({r.mailbox for r in results})
        if any(r.outcome == "failed" for r in results):
            self.core.broker.record.outcome = "failed"
        return results

    def _refresh_grant(self, row: GrantRow, *, due: bool, now: datetime,
                       keepalive_days: int, min_valid: timedelta) -> list[RefreshOutcome]:
        results = []
        grant: ConsentGrant = self.core.load_grant(row.grant_uuid)
        rotation: TokenRotation = self.core.load(grant.rotation_id)
        for resource in grant.scopes:
            if due and not self._is_due(grant, rotation, resource, now, keepalive_days,
                                        min_valid):
                continue
            whose = {"mailbox": row.mailbox, "client": row.client_name, "resource": resource}
            try:
                token = self._refresh_under_lock(row, resource, min_valid=min_valid,
                                                 force=not due,
                                                 next_try=NEXT_TRY_DUE if due else NEXT_TRY_FORCED)
                outcome = RefreshOutcome(**whose,
                                         outcome="refreshed" if token.refreshed else "fresh",
                                         expires_at=token.expires_at.isoformat())
            except IntegrityViolation:
                raise  # tampering is never one grant's failed row: exit 5
            except (TokenRefreshFailed, GrantUnusable, AdapterError) as e:
                outcome = RefreshOutcome(**whose, outcome="failed", error=str(e))
            results.append(outcome)
        return results

    @staticmethod
    def _is_due(grant: ConsentGrant, rotation: TokenRotation, resource: str, now: datetime,
                keepalive_days: int, min_valid: timedelta) -> bool:
        if rotation.valid_access_token(resource, now, min_valid) is None and resource in (
                rotation.access or {}):
            return True  # its cached access token runs out
        if grant.app_only:
            return False
        last = rotation.last_activity_at or grant.granted_at
        spread = int(grant.id.hex[:4], 16) % 3  # the same grant, the same day, every run
        return now - last >= timedelta(days=max(keepalive_days - spread, 1))

    # -- app-only ------------------------------------------------------------------------------

    @use_case("app-token")
    def app_token(self, client: str, *, resource: str = "imap",
                  scopes: tuple[str, ...] | None = None) -> AccessToken:
        """A client-credentials token; not cached (use `grant add-app` to have one cached)."""
        from adapters.oauth import OAuthFailure
        from domain.scopes import plan_app_only

        credential: ClientCredential = self.clients.credential(client)
        if credential.profile.is_microsoft:
            require_concrete_tenant(credential.tenant)

        plan = plan_app_only(credential.profile, (resource,), scopes)
        key = resource_for(plan, resource)
        self.core.broker.record.detail.update({"resource": key})
        try:
            tokens: Tokens = self.providers.oauth(credential).client_credentials(" ".join(plan[key]))
        except OAuthFailure as failure:
            raise TokenRefreshFailed(failure.diagnosis, False, credential.name) from None
        self.core.broker.record.detail["revealed"] = "app_access_token"  # only a token handed out
        return AccessToken(tokens.access_token, self.core.now() + timedelta(seconds=tokens.expires_in),
                           key, credential.name, refreshed=True)

    # -- secrets checked at the provider, revocation at the provider ---------------------------
