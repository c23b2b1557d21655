"""AlertState: the alerts sent about one finding (an expiring secret, an idle token, a failed
probe), so that every finding is announced once per severity, whichever host runs `vault alert`.

Sending is claim-then-send: a host records AlertClaimed (committing it is what makes it the one
host that sends; a second host's claim conflicts on the version and is dropped), sends, then
records AlertSent or AlertFailed, each naming the channels (webhook, email) it concerns. A claim
left without an outcome (the host died) expires. Every channel keeps its own record: what it last
delivered, and its failed deliveries in a row, after which it waits (5 minutes, doubling up to 6
hours) before it is tried again, while the other channels go on delivering. A finding that is
gone is recorded as AlertResolved, so that if it comes back it is news again.
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


# The record of deliveries made before vault kept channels apart (events and snapshots of class
# version 1): it stands for every channel that has no record of its own.
ANY_CHANNEL = "*"


def wait_after_failures(failures: int) -> timedelta:
    """How long a channel waits before another delivery, after `failures` failed in a row."""
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
    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict) -> None:
        """Version 1 kept one record for all channels: it stands for each of them now."""
        failures, failed_at = state.pop("failures", 0), state.pop("last_failed_at", None)
        state["channels"] = {}
        if state.get("last_sent_at") is not None or failures:
            state["channels"][ANY_CHANNEL] = {
                "severity": state.get("last_severity"), "sent_at": state.get("last_sent_at"),
                "failures": failures, "failed_at": failed_at, "error": None}

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
            for channel in self.channels:
                state.channels[channel] = {"severity": self.severity, "sent_at": self.timestamp,
                                           "failures": 0, "failed_at": None, "error": None}

    class AlertFailed(VaultAggregate.Event):
        TOPIC = "vault.AlertState.AlertFailed"
        class_version = 2
        error: str
        channels: list

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            """Version 1 was recorded when no channel delivered: it failed on every one."""
            state["channels"] = [ANY_CHANNEL]

        def apply(self, state: AlertState) -> None:
            state.claim = None
            for channel in self.channels:
                record = dict(state.channel(channel))
                record.update(failures=record["failures"] + 1, failed_at=self.timestamp,
                              error=self.error)
                state.channels[channel] = record

    class AlertResolved(VaultAggregate.Event):
        TOPIC = "vault.AlertState.AlertResolved"

        def apply(self, state: AlertState) -> None:
            state.last_severity = None
            state.last_sent_at = None
            state.channels = {}

    def __init__(self, key: str) -> None:
        self.key = key
        self.claim: dict[str, Any] | None = None
        self.last_severity: str | None = None  # announced on some channel
        self.last_sent_at: datetime | None = None
        self.sent = 0
        # per channel: {severity, sent_at} of its last delivery; {failures, failed_at, error}
        # of its failed deliveries since then
        self.channels: dict[str, dict[str, Any]] = {}

    @classmethod
    def open(cls, *, key: str, now: datetime) -> AlertState:
        return cls._start(cls.Opened, alert_id_for(key), now, key=key)

    def channel(self, name: str) -> dict[str, Any]:
        """What `name` delivered and failed to deliver of this finding."""
        return self.channels.get(name) or self.channels.get(ANY_CHANNEL) or {
            "severity": None, "sent_at": None, "failures": 0, "failed_at": None, "error": None}

    def due_on(self, channel: str, severity: str, now: datetime,
               resend_after: timedelta) -> bool:
        """`channel` has not delivered this finding at this severity lately."""
        record = self.channel(channel)
        return should_send(record["severity"], record["sent_at"], severity, now, resend_after)

    def retry_at(self, channel: str) -> datetime | None:
        """When `channel` may be tried again after its failed deliveries (None: it has none)."""
        record = self.channel(channel)
        if not record["failures"]:
            return None
        return record["failed_at"] + wait_after_failures(record["failures"])

    def is_being_sent(self, now: datetime) -> bool:
        """Claimed, and the claim has not lapsed (a host that died mid-send leaves one)."""
        return self.claim is not None and now - self.claim["at"] < CLAIM_TIMEOUT

    @property
    def is_open(self) -> bool:
        """Announced (or tried) on some channel, and not since found gone."""
        return self.last_severity is not None or any(
            record["failures"] for record in self.channels.values())

    def claim_for(self, *, now: datetime, severity: str, host: str) -> None:
        self._trigger(self.AlertClaimed, now, severity=severity, host=host)

    def record_sent(self, *, now: datetime, severity: str, channels: list[str]) -> None:
        self._trigger(self.AlertSent, now, severity=severity, channels=channels)

    def record_failed(self, *, now: datetime, error: str, channels: list[str]) -> None:
        self._trigger(self.AlertFailed, now, error=error[:300], channels=channels)

    def resolve(self, *, now: datetime) -> None:
        self._trigger(self.AlertResolved, now)
