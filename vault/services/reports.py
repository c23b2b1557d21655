"""Reports: status, expiry findings, history, the expiry thresholds setting; who did what (the
audit log, filtered), what was revoked or retired and until when its tokens stay valid, and what
expires when (for a timeline).

Status and expiry read the read models only (never replay aggregates), so they stay fast with
10,000 grants. History replays one subject's events, which is what event sourcing is for: what
was true on a given day, and who changed it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from adapters.errors import IntegrityViolation, SubjectPurged
from adapters.store import AuditRow
from domain.credentials import ClientCredential
from domain.expiry import (
    ExpiryThresholds,
    Finding,
    due_items,
    evaluate,
)
from domain.grants import ConsentGrant
from domain.secret_value import SecretValue
from vault.audit import actor_name, decrypt_entry
from vault.core import VaultCore, use_case
from vault.errors import BadInput, NotFound
from vault.listings import (
    Due,
    ExpiryReport,
    Status,
    expiry_facts,
    expiry_of,
    extended,
    renewal_facts,
    status_of,
)
from vault.reads import THRESHOLDS_KEY
from vault.services.clients import client_summary
from vault.services.grants import grant_summary, rotation_summary

if TYPE_CHECKING:
    from vault.services.audit import AuditService
    from vault.services.clients import ClientService
    from vault.services.grants import GrantService

_EVENT_META = {"originator_id", "originator_version", "timestamp", "originator_topic"}
# a purge's audit entry: (kind, what, the detail that keeps the facts of the revocation/removal)
_PURGES = {"grant revoke": ("grant", "grant revoked", "revocation"),
           "client remove": ("credential", "client removed", "removal")}


def redact(value: Any) -> Any:
    """Event data for display: secrets redacted, ids and times as text."""
    if isinstance(value, SecretValue):
        return "<redacted>"
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


@dataclass(frozen=True)
class EventLine:
    """One stored event as `history` shows it (secrets redacted)."""

    version: int
    at: str
    event: str
    data: dict[str, Any]


def describe_event(event: Any) -> EventLine:
    return EventLine(
        version=event.originator_version, at=event.timestamp.isoformat(),
        event=type(event).__name__,
        data={k: redact(v) for k, v in vars(event).items() if k not in _EVENT_META})


@dataclass(frozen=True)
class History:
    """A client's or a grant's events up to a moment, and its state then (None before it
    existed)."""

    kind: str
    subject: str
    as_of: str | None
    total_events: int
    events: list[EventLine]
    state: Any


@dataclass(frozen=True)
class AuditReportRow:
    """One audit entry as `report audit` shows it."""

    seq: int
    at: str
    user: str | None
    sudo_user: str | None
    host: str | None
    action: str
    client: str | None
    mailbox: str | None
    outcome: str
    revealed: str | None
    detail: str


@dataclass(frozen=True)
class Revocation:
    """A revoked grant, or a retired or removed credential: when, by whom, why, and until when
    the access tokens already handed out stay valid."""

    kind: str
    what: str
    client: str | None
    mailbox: str | None
    at: str
    by: str | None
    reason: str | None
    access_valid_until: str | None


@dataclass(frozen=True)
class Timeline:
    """`report expiry`: what comes due within the horizon, and the findings as of a date."""

    as_of: str
    horizon_days: int
    items: list[TimelineItem]
    findings: list[Finding]


@dataclass(frozen=True)
class Config:
    """The settings every host of the vault shares."""

    expiry_thresholds: ExpiryThresholds


TimelineItem = extended(Due, "TimelineItem", "Something dated that stops working, and the "
                        "secret or certificate (`ref`) for a credential's expiry, and where its "
                        "date comes from (`source`: entered or assumed).",
                        ref="str | None", source="str | None")


@dataclass(eq=False)
class ReportService:
    core: VaultCore
    clients: ClientService
    grants: GrantService
    audit: AuditService

    # -- thresholds (read by `thresholds()`, in GrantUseCases) ----------------------------------

    @use_case("config show")
    def show_config(self) -> Config:
        return Config(expiry_thresholds=self.grants.thresholds())

    @use_case("config set")
    def set_threshold(self, key: str, value: int) -> Config:
        """Also the repair of thresholds edited or deleted outside vault: they are not trusted,
        so the others start again from their defaults, and the admin is told."""
        self.core.broker.record.subject.update({"setting": key})
        self.core.broker.record.detail.update({"value": value})
        try:
            current = self.grants.thresholds()
        except IntegrityViolation as e:
            current = ExpiryThresholds()
            self.core.broker.record.detail["replaced"] = str(e)
            self.core.warnings.append(f"{e}: the other thresholds are back at their defaults "
                                      "(see `vault config show`)")
        try:
            updated = current.with_changes(**{key: value})
        except (ValueError, TypeError) as e:
            raise BadInput(str(e)) from None
        self.core.commit(changes=self.core.settings_changes({THRESHOLDS_KEY: json.dumps(
            {k: v for k, v in updated.as_dict().items()
             if v != getattr(ExpiryThresholds(), k)}, sort_keys=True)}))
        return Config(expiry_thresholds=updated)

    # -- facts from the read models ----------------------------------------------------------

    # -- use cases ---------------------------------------------------------------------------

    @use_case("expiry")
    def expiry(self, *, as_of: date | None = None, within: int | None = None) -> ExpiryReport:
        as_of = as_of or self.core.now().date()
        report = expiry_of(self.core.reads.models(), self.grants.thresholds(), as_of, within)
        self.core.broker.record.detail.update({"as_of": report.as_of,
                                               "findings": len(report.findings)})
        return report

    @use_case("status")
    def status(self) -> Status:
        return status_of(self.core.reads.models(), self.grants.thresholds(), self.core.now().date())

    @use_case("history")
    def history(
        self, subject: str, *, client: str | None = None, as_of: date | datetime | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        """`as_of`: a date means the end of that UTC day; a date-time that very instant
        (events recorded at it included), never cut to its day."""
        if limit < 1:
            raise BadInput("--limit takes a number >= 1")
        cutoff = _history_cutoff(as_of)
        if "@" in subject and self._has_grant(subject, client):
            return self._grant_history(subject, client, cutoff, as_of, limit)
        try:
            row = self.clients.client_row(subject)
        except NotFound:
            if "@" in subject:
                raise NotFound(f"no grant or client named {subject!r}") from None
            raise
        self.core.broker.record.subject.update({"client": row.name})
        client_id = UUID(row.client_uuid)
        version = self.core.version_as_of(client_id, cutoff)
        events = self.core.events_up_to(client_id, version) if version else []
        state = client_summary(self.core.load(client_id, version)) if version else None
        return History(kind="client", subject=row.name, as_of=_iso_or_none(as_of),
                       total_events=len(events),
                       events=[describe_event(e) for e in events[-limit:]], state=state)

    def _has_grant(self, mailbox: str, client: str | None) -> bool:
        try:
            self.grants.grant_row(mailbox, client)
        except NotFound:
            return False
        return True

    def _grant_history(self, mailbox: str, client: str | None, cutoff: datetime | None,
                       as_of: date | datetime | None, limit: int) -> History:
        row = self.grants.grant_row(mailbox, client)
        grant_id, rotation_id = UUID(row.grant_uuid), UUID(row.rotation_uuid)
        g_version = self.core.version_as_of(grant_id, cutoff)
        r_version = self.core.version_as_of(rotation_id, cutoff)
        grant_events = self.core.events_up_to(grant_id, g_version) if g_version else []
        rotation_events = self.core.events_up_to(rotation_id, r_version, limit) if r_version else []
        merged = sorted(grant_events + rotation_events, key=lambda e: e.timestamp)
        state = None
        if g_version:
            state = grant_summary(self.core.load(grant_id, g_version))
            if r_version:
                state = dataclasses.replace(state, tokens=rotation_summary(self.core.load(
                    rotation_id, r_version)))
        return History(kind="grant", subject=f"{row.mailbox} ({row.client_name})",
                       as_of=_iso_or_none(as_of),
                       total_events=len(grant_events) + (r_version or 0),
                       events=[describe_event(e) for e in merged[-limit:]], state=state)

    @use_case("report audit")
    def audit_report(self, *, start: datetime | None = None, end: datetime | None = None,
                     client: str | None = None, mailbox: str | None = None
                     ) -> list[AuditReportRow]:
        """Entries from `start` (inclusive) to `end` (exclusive), of one client or mailbox."""
        if start and end and end <= start:
            raise BadInput("--until is before --since")
        self.core.broker.record.detail.update({k: v.isoformat() if isinstance(v, datetime) else v
                                               for k, v in (("since", start), ("until", end),
                                                            ("client", client), ("mailbox", mailbox))
                                               if v is not None})

        def in_window(row: AuditRow) -> bool:
            # the plaintext header's time is covered by the chain: no need to decrypt to filter
            at = datetime.fromisoformat(json.loads(row.header)["at"])
            return (start is None or at >= start) and (end is None or at < end)

        _, picked = self.audit.verified_audit_rows(in_window)
        key_for = self.audit.audit_keys()
        rows = []
        for row in picked:
            e = decrypt_entry(key_for(row.seq), self.core.header.vault_id, row)
            subject = e.get("subject", {})
            if client and subject.get("client", "").casefold() != client.casefold():
                continue
            if mailbox and subject.get("mailbox", "").casefold() != mailbox.casefold():
                continue
            detail = e.get("detail", {})
            rows.append(AuditReportRow(
                seq=row.seq, at=e["at"], user=e.get("user"), sudo_user=e.get("sudo_user"),
                host=e.get("host"), action=e["action"], client=subject.get("client"),
                mailbox=subject.get("mailbox"), outcome=e["outcome"],
                revealed=detail.get("revealed"),
                detail="; ".join(f"{k}={v}" for k, v in sorted(detail.items()))))
        self.core.broker.record.detail.update({"rows": len(rows)})
        return rows

    @use_case("report revocations")
    def revocation_report(self) -> list[Revocation]:
        """Every revoked grant and retired or removed credential: when, by whom, why, and until
        when access tokens already handed out stay valid (revoking a consent does not end them).
        Purged subjects come from their purge's audit entry, which outlives their events."""
        rows: list[Revocation] = []
        ids = self.core.aggregate_ids()
        purged = 0
        for grant_id in ids["grant"]:
            try:
                grant: ConsentGrant = self.core.load(grant_id)
            except SubjectPurged:
                purged += 1
                continue
            for e in self.core.events_up_to(grant_id, grant.version):
                if isinstance(e, ConsentGrant.Revoked):
                    rows.append(Revocation(
                        kind="grant", what="grant revoked", client=grant.client_name,
                        mailbox=grant.mailbox, at=e.timestamp.isoformat(), by=e.revoked_by,
                        reason=e.reason, access_valid_until=self.grants.access_valid_until(
                            grant.rotation_id, e.timestamp)))
        for client_id in ids["client"]:
            try:
                client: ClientCredential = self.core.load(client_id)
                events = self.core.events_up_to(client_id, client.version)
            except SubjectPurged:
                purged += 1
                continue
            for e in events:
                if isinstance(e, ClientCredential.SecretRetired):
                    ends = client.secret(e.ref)["expires_on"]
                    # retiring it in vault does not delete it in the app registration
                    what = (f"secret {e.ref} retired; the provider accepts it until "
                            + (f"{ends} unless it is deleted there" if ends
                               else "it is deleted there"))
                elif isinstance(e, ClientCredential.Removed):
                    what = "client removed"
                else:
                    continue
                rows.append(Revocation(
                    kind="credential", what=what, client=client.name, mailbox=None,
                    at=e.timestamp.isoformat(), by=e.by, reason=e.reason,
                    access_valid_until=None))
        if purged:
            rows += self._purge_rows()
        # a client is removed once its grants are revoked: theirs are its tokens
        rows = [dataclasses.replace(row, access_valid_until=max(
                    (g.access_valid_until for g in rows if g.kind == "grant"
                     and g.access_valid_until and g.at <= row.at
                     and (g.client or "").casefold() == (row.client or "").casefold()),
                    default=None))
                if row.kind == "credential" and row.what.startswith("client removed") else row
                for row in rows]
        rows.sort(key=lambda r: r.at or "")
        self.core.broker.record.detail["rows"] = len(rows)
        return rows

    def _purge_rows(self) -> list[Revocation]:
        key_for = self.audit.audit_keys()
        vault_id = self.core.header.vault_id

        def is_purge(row: AuditRow) -> bool:
            e = decrypt_entry(key_for(row.seq), vault_id, row)
            return (e["action"] in _PURGES and e["outcome"] == "ok"
                    and e.get("detail", {}).get("purged") is True)

        rows = []
        for row in self.audit.verified_audit_rows(is_purge)[1]:
            e = decrypt_entry(key_for(row.seq), vault_id, row)
            kind, what, facts_key = _PURGES[e["action"]]
            detail, subject = e["detail"], e.get("subject", {})
            facts = detail.get(facts_key) or {}  # entries written before 2026-12 lack them
            rows.append(Revocation(
                kind=kind, what=f"{what}, purged {e['at'][:10]}", client=subject.get("client"),
                mailbox=subject.get("mailbox"), at=facts.get("at") or e["at"],
                by=facts.get("by") or actor_name(e),
                reason=facts.get("reason") or detail.get("reason"),
                access_valid_until=detail.get("access_valid_until")))
        return rows

    @use_case("report expiry")
    def expiry_timeline(self, *, as_of: date | None = None, horizon_days: int = 365
                        ) -> Timeline:
        as_of = as_of or self.core.now().date()
        models = self.core.reads.models()
        secrets, grants = expiry_facts(models)
        t = self.grants.thresholds()
        findings = evaluate(secrets, grants, as_of, t, renewals=renewal_facts(models))
        items = [TimelineItem(kind=i.kind, client=i.client, mailbox=i.mailbox,
                              due=i.due.isoformat(), days_left=(i.due - as_of).days,
                              assumed=i.assumed, ref=i.ref, source=i.source)
                 for i in due_items(secrets, grants, t) if (i.due - as_of).days <= horizon_days]
        return Timeline(as_of=as_of.isoformat(), horizon_days=horizon_days, items=items,
                        findings=findings)


def _history_cutoff(as_of: date | datetime | None) -> datetime | None:
    """The first instant not shown: the next UTC midnight after a date, just after a moment."""
    if as_of is None:
        return None
    if isinstance(as_of, datetime):
        moment = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
        return moment.astimezone(UTC) + timedelta(microseconds=1)
    return datetime.combine(as_of + timedelta(days=1), time.min, tzinfo=UTC)


def _iso_or_none(value: date | datetime | None) -> str | None:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    return value.isoformat() if value else None
