"""AlertState: the alerts sent about one finding (an expiring secret, an idle token, a failed
probe), so that every finding is announced once per severity, whichever host runs `vault alert`.

Sending is claim-then-send: a host records AlertClaimed (committing it is what makes it the one
host that sends; a second host's claim conflicts on the version and is dropped), sends, then
records AlertSent or AlertFailed. A claim left without an outcome (the host died) expires. After
failed deliveries a finding waits (5 minutes, doubling up to 6 hours) before it is claimed again.
A finding that is gone is recorded as AlertResolved, so that if it comes back it is news again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from domain.base import AggregateCreated, VaultAggregate, stable_snapshot
from domain.expiry import SEVERITY_RANK

_ALERT_NAMESPACE = uuid5(NAMESPACE_URL, "urn:vault:alert")
CLAIM_TIMEOUT = timedelta(minutes=15)
FIRST_RETRY = timedelta(minutes=5)
LONGEST_RETRY = timedelta(hours=6)


def alert_key(subject_id: str, kind: str, ref: str | None) -> str:
    """A finding, named by the random id of the grant or client it concerns (no mailbox or
    client name: the aggregate id derived from it is stored in the clear)."""
    return "|".join((str(subject_id), kind, ref or ""))


def alert_id_for(key: str) -> UUID:
    """One AlertState per finding, found from the finding alone."""
    return uuid5(_ALERT_NAMESPACE, key)


def wait_after_failures(failures: int) -> timedelta:
    """How long a finding waits before another delivery, after `failures` failed in a row."""
    if failures <= 0:
        return timedelta(0)
    return min(FIRST_RETRY * 2 ** min(failures - 1, 16), LONGEST_RETRY)


def should_send(last_severity: str | None, last_sent_at: datetime | None, severity: str,
                now: datetime, resend_after: timedelta) -> bool:
    """New, worsened, or unchanged for longer than `resend_after`."""
    if last_severity is None or last_sent_at is None:
        return True
    if SEVERITY_RANK[severity] > SEVERITY_RANK[last_severity]:
        return True
    return now - last_sent_at >= resend_after


class AlertState(VaultAggregate):
    TOPIC = "vault.AlertState"
    Snapshot = stable_snapshot("vault.AlertState.Snapshot")

    class Opened(VaultAggregate.Event, AggregateCreated):
        TOPIC = "vault.AlertState.Opened"
        key: str

    class AlertClaimed(VaultAggregate.Event):
        TOPIC = "vault.AlertState.AlertClaimed"
        severity: str
        host: str

        def apply(self, state: AlertState) -> None:
            state.claim = {"severity": self.severity, "host": self.host, "at": self.timestamp}

    class AlertSent(VaultAggregate.Event):
        TOPIC = "vault.AlertState.AlertSent"
        severity: str
        channels: list

        def apply(self, state: AlertState) -> None:
            state.claim = None
            state.last_severity = self.severity
            state.last_sent_at = self.timestamp
            state.sent += 1
            state.failures = 0

    class AlertFailed(VaultAggregate.Event):
        TOPIC = "vault.AlertState.AlertFailed"
        error: str

        def apply(self, state: AlertState) -> None:
            state.claim = None
            state.failures += 1
            state.last_failed_at = self.timestamp

    class AlertResolved(VaultAggregate.Event):
        TOPIC = "vault.AlertState.AlertResolved"

        def apply(self, state: AlertState) -> None:
            state.last_severity = None
            state.last_sent_at = None
            state.failures = 0

    def __init__(self, key: str) -> None:
        self.key = key
        self.claim: dict[str, Any] | None = None
        self.last_severity: str | None = None
        self.last_sent_at: datetime | None = None
        self.sent = 0
        self.failures = 0  # failed deliveries since the last one that got through
        self.last_failed_at: datetime | None = None

    @classmethod
    def open(cls, *, key: str, now: datetime) -> AlertState:
        return cls._start(cls.Opened, alert_id_for(key), now, key=key)

    def due(self, severity: str, now: datetime, resend_after: timedelta) -> bool:
        if self.is_being_sent(now):
            return False  # another host is sending it right now
        if self.failures and now - self.last_failed_at < wait_after_failures(self.failures):
            return False  # the channel was down a moment ago: do not hammer it
        return should_send(self.last_severity, self.last_sent_at, severity, now, resend_after)

    def is_being_sent(self, now: datetime) -> bool:
        """Claimed, and the claim has not lapsed (a host that died mid-send leaves one)."""
        return self.claim is not None and now - self.claim["at"] < CLAIM_TIMEOUT

    @property
    def is_open(self) -> bool:
        """Announced, and not since found gone."""
        return self.last_severity is not None

    def claim_for(self, *, now: datetime, severity: str, host: str) -> None:
        self._trigger(self.AlertClaimed, now, severity=severity, host=host)

    def record_sent(self, *, now: datetime, severity: str, channels: list[str]) -> None:
        self._trigger(self.AlertSent, now, severity=severity, channels=channels)

    def record_failed(self, *, now: datetime, error: str) -> None:
        self._trigger(self.AlertFailed, now, error=error[:300])

    def resolve(self, *, now: datetime) -> None:
        self._trigger(self.AlertResolved, now)
