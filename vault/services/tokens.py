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
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from adapters.errors import AdapterError, IntegrityViolation
from adapters.oauth import ClientAuth, OAuthClient, OAuthFailure, Tokens
from adapters.retry import Backoff
from adapters.store import Changes
from domain.clouds import require_concrete_tenant
from domain.credentials import CERTIFICATE, ClientCredential
from domain.diagnosis import Diagnosis
from domain.grants import ACTIVE, ConsentGrant
from domain.rotation import TokenRotation
from domain.scopes import resource_for
from domain.secret_value import SecretValue
from vault.core import VaultCore, apply_views, use_case
from vault.errors import BadInput, VaultError
from vault.projections import grant_changes, rotation_changes
from vault.services.grants import GrantUseCases

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


class TokenRefreshFailed(VaultError):
    """The provider refused the refresh (or stayed unreachable); the message says why, how often
    vault tried, and what happens next."""

    def __init__(self, diagnosis: Diagnosis, broken: bool, mailbox: str, *, tries: int = 1,
                 waited: float = 0.0, refused_counts_from: datetime | None = None,
                 next_try: str | None = None) -> None:
        text = f"{mailbox}: {diagnosis.message()}"
        if tries > 1:
            text += f" (tried {tries} times, {waited:.0f} s of back-off)"
        if broken:
            text += " - the grant is now marked for re-consent"
        elif refused_counts_from is not None:
            text += (" - refresh refused once: a further refusal from "
                     f"{refused_counts_from.strftime('%Y-%m-%d %H:%M')} UTC on marks the grant "
                     "for re-consent" + (f"; {next_try}" if next_try else ""))
        elif diagnosis.transient and next_try:
            text += f"; {next_try}"
        super().__init__(text)
        self.diagnosis = diagnosis
        self.broken = broken


class GrantUnusable(VaultError):
    pass


@dataclass(frozen=True)
class AccessToken:
    token: SecretValue
    expires_at: datetime
    resource: str
    mailbox: str
    refreshed: bool


def client_auth(credential: ClientCredential, secret: SecretValue | None = None) -> ClientAuth:
    """How this client authenticates at the token endpoint, with its current credential."""
    method = credential.auth_method
    if method == "none":
        return ClientAuth(credential.client_id, "none")
    current = credential.current_secret()
    if current is None and secret is None:
        what = "certificate" if method == "private_key_jwt" else "secret"
        raise GrantUnusable(f"client {credential.name!r} holds no active {what}")
    if method == "private_key_jwt":
        assert current is not None and current["kind"] == CERTIFICATE
        return ClientAuth(credential.client_id, method, private_key_pem=current["value"],
                          thumbprint_sha1=current["secret_id"],
                          thumbprint_sha256=current.get("thumbprint_sha256"))
    return ClientAuth(credential.client_id, method, secret=secret or current["value"])


class TokenUseCases(GrantUseCases, VaultCore):
    http_factory: Callable[[], Any] | None = None
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def http(self):
        if self.http_factory is not None:
            return self.http_factory()
        from adapters.http import http_client

        return http_client()

    def oauth(self, credential: ClientCredential, secret: SecretValue | None = None) -> OAuthClient:
        endpoints = dict(credential.endpoints)
        http = self.http()
        if not endpoints.get("token_url") and endpoints.get("issuer"):
            from adapters.oauth import discover

            endpoints.update({k: v for k, v in discover(http, endpoints["issuer"]).items() if v})
        return OAuthClient(http, endpoints, client_auth(credential, secret))

    # -- handing out access tokens -----------------------------------------------------------

    @use_case("token")
    def access_token(
        self, mailbox: str, *, client: str | None = None, protocol: str = "imap",
        min_valid: timedelta = DEFAULT_MIN_VALID,
    ) -> AccessToken:
        row = self.grant_row(mailbox, client)
        self.audit_record.detail.update({"protocol": protocol})
        return self.usable_token(row, protocol, min_valid, next_try=NEXT_TRY_TOKEN, reveal=True)

    def usable_token(self, row: dict[str, Any], protocol: str,
                     min_valid: timedelta = DEFAULT_MIN_VALID,
                     next_try: str = NEXT_TRY_ANY, *, reveal: bool = False) -> AccessToken:
        """A grant's access token for a protocol, refreshed under the protocol when needed.
        `reveal`: it is handed out (printed), which its audit entry says; only then."""
        if protocol not in row["protocols"].split(","):
            raise BadInput(f"the grant of {row['mailbox']} covers {row['protocols']}, "
                           f"not {protocol}")
        if row["status"] != "active":
            state = "needs a new consent" if row["status"] == "needs-reconsent" else "was revoked"
            raise GrantUnusable(
                f"the grant of {row['mailbox']} {state}"
                + (f" ({row['status_reason']})" if row["status_reason"] else "")
                + (f": run `vault consent {row['client_name']} --mailbox {row['mailbox']} "
                   f"--protocols {row['protocols']} --replace`"
                   if row["status"] == "needs-reconsent" else ""))
        rotation: TokenRotation = self.load(UUID(row["rotation_uuid"]))
        grant: ConsentGrant = self.load_grant(row["grant_uuid"])
        resource = resource_for(grant.scopes, protocol)
        self.audit_record.detail["resource"] = resource
        cached = rotation.valid_access_token(resource, self.now(), min_valid)
        if cached is not None:
            self.audit_record.detail["refreshed"] = False
            self._handed_out(reveal)
            return AccessToken(cached, rotation.access[resource]["expires_at"], resource,
                               row["mailbox"], refreshed=False)
        return self._refresh_under_lock(row, resource, min_valid=min_valid, force=False,
                                        next_try=next_try, reveal=reveal)

    def _handed_out(self, reveal: bool) -> None:
        if reveal:
            self.audit_record.detail["revealed"] = "access_token"

    def _refresh_under_lock(
        self, row: dict[str, Any], resource: str, *, min_valid: timedelta, force: bool,
        next_try: str, reveal: bool = False,
    ) -> AccessToken:
        with self.store.grant_lock(row["grant_uuid"], LOCK_WAIT_S):
            rotation: TokenRotation = self.load(UUID(row["rotation_uuid"]))
            if not force:
                cached = rotation.valid_access_token(resource, self.now(), min_valid)
                if cached is not None:  # another process refreshed while we waited
                    self.audit_record.detail["refreshed"] = False
                    self._handed_out(reveal)
                    return AccessToken(cached, rotation.access[resource]["expires_at"],
                                       resource, row["mailbox"], refreshed=False)
            grant: ConsentGrant = self.load_grant(row["grant_uuid"])
            credential: ClientCredential = self.load_client(row["client_uuid"])
            return self._rotate(grant, rotation, credential, resource, row, next_try, reveal)

    def _rotate(self, grant: ConsentGrant, rotation: TokenRotation,
                credential: ClientCredential, resource: str, row: dict[str, Any],
                next_try: str, reveal: bool = False) -> AccessToken:
        began_at = self.now()  # refusals from this command on count as one
        refusal_interval = self.refusal_interval()
        interrupted = rotation.interrupted_attempt
        if interrupted is not None:
            started = interrupted["started_at"].strftime("%Y-%m-%d %H:%M:%S")
            self.warnings.append(
                f"a previous refresh of {grant.mailbox} (started {started} UTC) was interrupted "
                "after it may have reached the provider: the refresh token it used may be spent; "
                "vault tries it again")
            self.audit_record.detail["interrupted_attempt"] = interrupted["attempt_id"]
        oauth = self.oauth(credential)
        # One token per resource: Microsoft needs the resource's scopes on every refresh; a
        # single-resource grant elsewhere refreshes with the scopes it was granted (RFC 6749).
        scopes = grant.scopes[resource] if (credential.profile.is_microsoft
                                            or len(grant.scopes) > 1) else []
        waited = 0.0
        attempt = 0
        retried_once = False
        while True:
            attempt += 1
            attempt_id = uuid4().hex
            rotation.begin_rotation(now=self.now(), attempt_id=attempt_id, resource=resource)
            self.audit_record.detail["step"] = "refresh started"
            self._save_rotation(rotation)
            try:
                tokens = (oauth.client_credentials(" ".join(grant.scopes[resource]))
                          if grant.app_only
                          else oauth.refresh(rotation.refresh_token, scopes))
            except OAuthFailure as failure:
                d = failure.diagnosis
                rotation.record_failure(
                    now=self.now(), attempt_id=attempt_id, error_class=d.name, error_code=d.code,
                    transient=d.transient, invalid_grant=d.invalid_grant, trace_id=d.trace_id,
                    correlation_id=d.correlation_id)
                broken = grant.is_active and d.invalid_grant and (
                    interrupted is not None or rotation.refusal_marks_broken(
                        now=self.now(), attempt_began_at=began_at, interval=refusal_interval))
                self.audit_record.outcome = "failed"
                self.audit_record.detail.update({"step": "refresh failed", "error": d.name,
                                                 "code": d.code})
                changes = apply_views(Changes(), rotation_changes(rotation))
                if broken:
                    grant.mark_broken(now=self.now(), reason=f"{d.name} ({d.code})",
                                      error_class=d.name)
                    apply_views(changes, grant_changes(grant, credential.provider,
                                                       credential.google_testing))
                    self.commit(rotation, grant, changes=changes)
                else:
                    self.commit(rotation, changes=changes)
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
            now = self.now()
            rotation.record_tokens(
                now=now, attempt_id=attempt_id, resource=resource,
                access_token=tokens.access_token, expires_in=tokens.expires_in,
                refresh_token=None if grant.app_only else tokens.refresh_token,
                scope=tokens.scope)
            self.audit_record.outcome = "ok"
            self.audit_record.detail.update({"step": "tokens issued", "refreshed": True,
                                             "rotated": tokens.refresh_token is not None})
            self.audit_record.detail.pop("error", None)
            self.audit_record.detail.pop("code", None)
            self._handed_out(reveal)  # the entry this commit seals: the token goes out next
            self._save_rotation(rotation)  # the new refresh token is stored before anything else
            return AccessToken(tokens.access_token, rotation.access[resource]["expires_at"],
                               resource, row["mailbox"], refreshed=True)

    def _save_rotation(self, rotation: TokenRotation) -> None:
        self.commit(rotation, changes=apply_views(Changes(), rotation_changes(rotation)))

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
    ) -> list[dict[str, Any]]:
        """Refresh one grant, every grant, or those due: access tokens about to expire, and
        refresh tokens idle for `keepalive_days` (spread over a few days per grant, so a fleet
        of grants does not come due on the same night)."""
        if sum(map(bool, (mailbox, due, everything))) != 1:
            raise BadInput("name one MAILBOX, or give --due or --all")
        if mailbox:
            rows = [self.grant_row(mailbox, client)]
        else:
            rows = [r for r in self.read_models().grants if r["status"] == ACTIVE]
        self.audit_record.detail.update({"selection": mailbox or ("due" if due else "all")})
        now = self.now()
        results: list[dict[str, Any]] = []
        for n, row in enumerate(rows, start=1):
            if progress:
                progress(n, len(rows), row["mailbox"])
            with (self.audit_item(client=row["client_name"], mailbox=row["mailbox"])
                  if not mailbox else contextlib.nullcontext()):  # each grant's commits: its own
                results += self._refresh_grant(row, due=due, now=now,
                                               keepalive_days=keepalive_days, min_valid=min_valid)
        self.audit_record.detail["grants"] = len({r["mailbox"] for r in results})
        if any(r["outcome"] == "failed" for r in results):
            self.audit_record.outcome = "failed"
        return results

    def _refresh_grant(self, row: dict[str, Any], *, due: bool, now: datetime,
                       keepalive_days: int, min_valid: timedelta) -> list[dict[str, Any]]:
        results = []
        grant: ConsentGrant = self.load_grant(row["grant_uuid"])
        rotation: TokenRotation = self.load(grant.rotation_id)
        for resource in grant.scopes:
            if due and not self._is_due(grant, rotation, resource, now, keepalive_days,
                                        min_valid):
                continue
            outcome = {"mailbox": row["mailbox"], "client": row["client_name"],
                       "resource": resource}
            try:
                token = self._refresh_under_lock(row, resource, min_valid=min_valid,
                                                 force=not due,
                                                 next_try=NEXT_TRY_DUE if due else NEXT_TRY_FORCED)
                outcome.update(outcome="refreshed" if token.refreshed else "fresh",
                               expires_at=token.expires_at.isoformat())
            except IntegrityViolation:
                raise  # tampering is never one grant's failed row: exit 5
            except (TokenRefreshFailed, GrantUnusable, AdapterError) as e:
                outcome.update(outcome="failed", error=str(e))
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
        credential: ClientCredential = self._client(client)
        if credential.profile.is_microsoft:
            require_concrete_tenant(credential.tenant)
        from domain.scopes import plan_app_only

        plan = plan_app_only(credential.profile, (resource,), scopes)
        key = resource_for(plan, resource)
        self.audit_record.detail.update({"resource": key})
        try:
            tokens: Tokens = self.oauth(credential).client_credentials(" ".join(plan[key]))
        except OAuthFailure as failure:
            raise TokenRefreshFailed(failure.diagnosis, False, credential.name) from None
        self.audit_record.detail["revealed"] = "app_access_token"  # only a token handed out
        return AccessToken(tokens.access_token, self.now() + timedelta(seconds=tokens.expires_in),
                           key, credential.name, refreshed=True)

    # -- secrets checked at the provider, revocation at the provider ---------------------------

    @use_case("client rotate-secret")
    def rotate_secret_verified(
        self, name: str, *, secret: SecretValue, verify_for: float = 180.0, **kwargs: Any
    ) -> dict[str, Any]:
        """Check a new secret at the token endpoint (client credentials) before it replaces the
        old one. A new Microsoft secret can take a minute or two to work: retried until
        `verify_for` seconds have passed. Nothing changes if it never works."""
        credential: ClientCredential = self._client(name)
        credential.check_rotates_secrets()  # before a secret is tried at the provider
        scope = self._verification_scope(credential)
        waited, delay = 0.0, 5.0
        while True:
            try:
                self.oauth(credential, secret=secret).client_credentials(scope)
                break
            except OAuthFailure as failure:
                d = failure.diagnosis
                retryable = d.name in ("secret_invalid", "app_or_tenant_not_found") or d.transient
                if not retryable or waited + delay > verify_for:
                    raise TokenRefreshFailed(d, False, credential.name) from None
                waited += delay
                self.sleep(delay)
        self.audit_record.detail["verified"] = True
        return {**self.rotate_secret(name, secret=secret, **kwargs), "verified": True}

    @staticmethod
    def _verification_scope(credential: ClientCredential) -> str:
        if credential.profile.is_microsoft:
            require_concrete_tenant(credential.tenant)
            return f"{credential.profile.graph_resource}.default"
        if credential.scopes:
            return " ".join(credential.scopes)
        raise BadInput("--verify needs the client's app-only scopes (client add --scopes)")

    @use_case("grant revoke")
    def revoke_everywhere(
        self, mailbox: str, *, reason: str, client: str | None = None, purge: bool = False
    ) -> dict[str, Any]:
        """Revoke at the provider where it can be done (RFC 7009, Google), then in the vault."""
        row = self.grant_row(mailbox, client)
        credential: ClientCredential = self.load_client(row["client_uuid"])
        rotation: TokenRotation = self.load(UUID(row["rotation_uuid"]))
        at_provider = None
        if credential.endpoints.get("revoke_url") and rotation.refresh_token is not None:
            try:
                self.oauth(credential).revoke(rotation.refresh_token)
                at_provider = "the refresh token was revoked at the provider"
            except (OAuthFailure, AdapterError) as e:
                at_provider = f"revoking at the provider failed ({e}); revoke it there by hand"
        self.audit_record.detail["at_provider"] = bool(at_provider and "failed" not in at_provider)
        result = self.revoke_grant(mailbox, reason=reason, client=client, purge=purge)
        if at_provider:
            result["provider_revocation"] = at_provider
        return result
