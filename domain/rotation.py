"""TokenRotation: the token lineage of one grant, every refresh attempt and its outcome.

The refresh protocol (docs/architecture.md, "A token") records intent before calling the provider
(RotationStarted) and the outcome after (TokensIssued or RotationFailed). A RotationStarted with
no outcome means a process died in between: the refresh token it used may be spent.
Long-lived (a grant refreshed every 10 minutes writes ~52,000 events a year): snapshotted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from domain import topics
from domain.base import AggregateCreated, VaultAggregate, stable_snapshot
from domain.errors import InvalidInput, RuleViolation
from domain.secret_value import SecretValue

_ROTATION_NAMESPACE = uuid5(NAMESPACE_URL, "urn:vault:token-rotation")


def rotation_id_for(grant_id: UUID) -> UUID:
    """Each grant has exactly one token lineage, found from the grant id alone."""
    return uuid5(_ROTATION_NAMESPACE, grant_id.hex)


class TokenRotation(VaultAggregate):
    TOPIC = topics.TOKEN_ROTATION
    Snapshot = stable_snapshot("vault.TokenRotation.Snapshot")

    class Started(VaultAggregate.Event, AggregateCreated):
        TOPIC = topics.LINEAGE_STARTED
        grant_id: UUID
        refresh_token: SecretValue | None
        issued_at: datetime
        source: str

    class Reseeded(VaultAggregate.Event):
        TOPIC = topics.ROTATION_RESEEDED
        refresh_token: SecretValue | None
        issued_at: datetime
        source: str

        def apply(self, rotation: TokenRotation) -> None:
            rotation.source = self.source
            rotation._seed(self.refresh_token, self.issued_at)

    class RotationStarted(VaultAggregate.Event):
        TOPIC = "vault.TokenRotation.RotationStarted"
        attempt_id: str
        generation: int
        resource: str

        def apply(self, rotation: TokenRotation) -> None:
            rotation.pending = {
                "attempt_id": self.attempt_id, "generation": self.generation,
                "resource": self.resource, "started_at": self.timestamp,
            }

    class TokensIssued(VaultAggregate.Event):
        TOPIC = topics.TOKENS_ISSUED
        attempt_id: str | None
        resource: str
        access_token: SecretValue
        access_expires_at: datetime
        refresh_token: SecretValue | None  # None: the provider kept the old one (Google)
        scope: str

        def apply(self, rotation: TokenRotation) -> None:
            rotation.access[self.resource] = {
                "token": self.access_token, "expires_at": self.access_expires_at,
                "scope": self.scope,
            }
            if rotation.refresh_token is not None:
                rotation.refresh_last_used_at = self.timestamp
            if self.refresh_token is not None:
                rotation.refresh_token = self.refresh_token
                rotation.generation += 1
                rotation.refresh_issued_at = self.timestamp
            rotation.pending = None
            rotation.consecutive_invalid_grant = 0
            rotation.last_failure = None
            rotation.refreshes += 1
            rotation.last_refresh_at = self.timestamp

    class RotationFailed(VaultAggregate.Event):
        TOPIC = "vault.TokenRotation.RotationFailed"
        attempt_id: str | None
        error_class: str
        error_code: str | None
        transient: bool
        invalid_grant: bool
        trace_id: str | None
        correlation_id: str | None

        def apply(self, rotation: TokenRotation) -> None:
            rotation.pending = None
            refused_since = rotation.refused_since  # a transient failure keeps the streak
            if self.invalid_grant and not self.transient:
                rotation.consecutive_invalid_grant += 1
                refused_since = refused_since or self.timestamp
            elif not self.transient:
                rotation.consecutive_invalid_grant = 0
                refused_since = None
            rotation.last_failure = {
                "at": self.timestamp, "error_class": self.error_class,
                "error_code": self.error_code, "transient": self.transient,
                "trace_id": self.trace_id, "correlation_id": self.correlation_id,
                "refused_since": refused_since,
            }

    class TokensDiscarded(VaultAggregate.Event):
        TOPIC = topics.TOKENS_DISCARDED
        reason: str

        def apply(self, rotation: TokenRotation) -> None:
            rotation.refresh_token = None
            rotation.access = {}
            rotation.pending = None

    def __init__(
        self, grant_id: UUID, refresh_token: SecretValue | None, issued_at: datetime, source: str
    ) -> None:
        self.grant_id = grant_id
        self.source = source  # import | consent | app-only
        self.refresh_token: SecretValue | None = None
        self.generation = 0
        self.refresh_issued_at: datetime | None = None
        self.refresh_last_used_at: datetime | None = None
        self.last_refresh_at: datetime | None = None
        self.access: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, Any] | None = None
        self.consecutive_invalid_grant = 0
        self.last_failure: dict[str, Any] | None = None
        self.refreshes = 0
        self._seed(refresh_token, issued_at)

    def _seed(self, refresh_token: SecretValue | None, issued_at: datetime) -> None:
        self.refresh_token = refresh_token
        self.generation += 1
        self.refresh_issued_at = issued_at
        self.refresh_last_used_at = None
        self.access = {}
        self.pending = None
        self.consecutive_invalid_grant = 0
        self.last_failure = None

    @classmethod
    def start(
        cls, *, grant_id: UUID, now: datetime, refresh_token: SecretValue | None,
        issued_at: datetime, source: str,
    ) -> TokenRotation:
        check_seed(refresh_token, source)
        return cls._start(
            cls.Started, rotation_id_for(grant_id), now, grant_id=grant_id,
            refresh_token=refresh_token, issued_at=issued_at, source=source,
        )

    def reseed(
        self, *, now: datetime, refresh_token: SecretValue | None, issued_at: datetime,
        source: str,
    ) -> None:
        check_seed(refresh_token, source)
        self._trigger(
            self.Reseeded, now, refresh_token=refresh_token, issued_at=issued_at, source=source
        )

    # -- queries ----------------------------------------------------------------------------

    def valid_access_token(
        self, resource: str, now: datetime, min_valid: timedelta
    ) -> SecretValue | None:
        """The cached access token for a resource, if it stays valid for at least `min_valid`."""
        cached = self.access.get(resource)
        if cached and cached["expires_at"] - min_valid > now:
            return cached["token"]
        return None

    @property
    def interrupted_attempt(self) -> dict[str, Any] | None:
        """An attempt recorded as started with no outcome: the process died mid-refresh."""
        return self.pending

    @property
    def last_activity_at(self) -> datetime | None:
        """When the refresh token was last issued or redeemed: what idle expiry counts from."""
        moments = [m for m in (self.refresh_issued_at, self.refresh_last_used_at) if m]
        return max(moments) if moments else None

    @property
    def refused_since(self) -> datetime | None:
        """When the provider first refused the refresh token, if every refusal since then was
        followed by no success ("refresh refused once"); None otherwise."""
        if not self.consecutive_invalid_grant or not self.last_failure:
            return None
        # A snapshot taken before this was recorded: the last failure's time (later, so safe).
        return self.last_failure.get("refused_since") or self.last_failure["at"]

    def refusal_counts_from(self, interval: timedelta) -> datetime | None:
        """While refused once: from when a further refusal marks the grant for re-consent."""
        since = self.refused_since
        return since + interval if since is not None else None

    # Office 365 sometimes answers invalid_grant for a passing fault (docs/providers.md), so one
    # refusal proves nothing: a grant is marked broken only by a second refusal in a later attempt
    # at least `interval` after the first (10 minutes unless `vault config set
    # invalid_grant_interval_minutes` says otherwise), never by a retry inside one command.
    def refusal_marks_broken(self, *, now: datetime, attempt_began_at: datetime,
                             interval: timedelta) -> bool:
        """After a refusal was recorded: whether it is the second one, in a separate attempt
        (the first came before this attempt began) at least `interval` after the first."""
        since = self.refused_since
        return since is not None and since < attempt_began_at and now - since >= interval

    # -- commands ---------------------------------------------------------------------------

    def begin_rotation(self, *, now: datetime, attempt_id: str, resource: str) -> None:
        if self.refresh_token is None and self.source != "app-only":
            raise RuleViolation("this grant holds no refresh token; run a new consent")
        self._trigger(
            self.RotationStarted, now, attempt_id=attempt_id, generation=self.generation,
            resource=resource,
        )

    def record_tokens(
        self, *, now: datetime, attempt_id: str | None, resource: str,
        access_token: SecretValue, expires_in: int, refresh_token: SecretValue | None,
        scope: str,
    ) -> None:
        if expires_in <= 0:
            raise InvalidInput("the provider answered an access token that is already expired")
        if refresh_token is not None and refresh_token == self.refresh_token:
            refresh_token = None  # not rotated (Google): keep the one we hold
        self._trigger(
            self.TokensIssued, now, attempt_id=attempt_id, resource=resource,
            access_token=access_token, access_expires_at=now + timedelta(seconds=expires_in),
            refresh_token=refresh_token, scope=scope,
        )

    def record_failure(
        self, *, now: datetime, attempt_id: str | None, error_class: str,
        error_code: str | None, transient: bool, invalid_grant: bool,
        trace_id: str | None = None, correlation_id: str | None = None,
    ) -> None:
        self._trigger(
            self.RotationFailed, now, attempt_id=attempt_id, error_class=error_class,
            error_code=error_code, transient=transient, invalid_grant=invalid_grant,
            trace_id=trace_id, correlation_id=correlation_id,
        )

    def discard_tokens(self, *, now: datetime, reason: str) -> None:
        if self.refresh_token is None and not self.access:
            return
        self._trigger(self.TokensDiscarded, now, reason=reason)


def check_seed(token: SecretValue | None, source: str) -> None:
    if (token is None) != (source == "app-only"):
        raise InvalidInput("a grant has a refresh token unless it is app-only")
    _check_refresh_token(token)


def _check_refresh_token(token: SecretValue | None) -> None:
    if token is None:
        return
    value = token.reveal()
    if len(value) < 8 or any(c.isspace() for c in value):
        raise InvalidInput("the refresh token is too short or contains whitespace")
