"""Read-side use cases: status, expiry findings, history, and the expiry thresholds setting.

Status and expiry read the read models only (never replay aggregates), so they stay fast with
10,000 grants. History replays one subject's events, which is what event sourcing is for: what
was true on a given day, and who changed it.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from adapters.errors import IntegrityViolation
from domain.expiry import (
    ExpiryThresholds,
    GrantFacts,
    SecretFacts,
    due_items,
    evaluate,
)
from domain.secret_value import SecretValue
from vault.core import THRESHOLDS_KEY, ReadModels, VaultCore, use_case
from vault.errors import BadInput, NotFound
from vault.services.clients import client_summary
from vault.services.grants import (
    GrantUseCases,
    grant_listing,
    grant_summary,
    rotation_summary,
)

_EVENT_META = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def _date(value: str | None) -> date | None:
    if not value:
        return None
    return (datetime.fromisoformat(value).astimezone(UTC).date() if "T" in value
            else date.fromisoformat(value))


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


def describe_event(event: Any) -> dict[str, Any]:
    return {
        "version": event.originator_version, "at": event.timestamp.isoformat(),
        "event": type(event).__name__,
        "data": {k: redact(v) for k, v in vars(event).items() if k not in _EVENT_META},
    }


class ReportUseCases(GrantUseCases, VaultCore):
    # -- thresholds (read by `thresholds()`, in GrantUseCases) ----------------------------------

    @use_case("config show")
    def show_config(self) -> dict[str, Any]:
        return {"expiry_thresholds": self.thresholds().as_dict()}

    @use_case("config set")
    def set_threshold(self, key: str, value: int) -> dict[str, Any]:
        """Also the repair of thresholds edited or deleted outside vault: they are not trusted,
        so the others start again from their defaults, and the admin is told."""
        self.audit_record.subject.update({"setting": key})
        self.audit_record.detail.update({"value": value})
        try:
            current = self.thresholds()
        except IntegrityViolation as e:
            current = ExpiryThresholds()
            self.audit_record.detail["replaced"] = str(e)
            self.warnings.append(f"{e}: the other thresholds are back at their defaults "
                                 "(see `vault config show`)")
        try:
            updated = current.with_changes(**{key: value})
        except (ValueError, TypeError) as e:
            raise BadInput(str(e)) from None
        self.commit(changes=self.settings_changes({THRESHOLDS_KEY: json.dumps(
            {k: v for k, v in updated.as_dict().items()
             if v != getattr(ExpiryThresholds(), k)}, sort_keys=True)}))
        return {"expiry_thresholds": updated.as_dict()}

    # -- facts from the read models ----------------------------------------------------------

    def expiry_facts(
        self, models: ReadModels | None = None
    ) -> tuple[list[SecretFacts], list[GrantFacts]]:
        models = models or self.read_models()
        clients = {c["client_uuid"]: c for c in models.clients}
        secrets = [
            SecretFacts(client=c["name"], provider=c["provider"], ref=r["ref"],
                        secret_id=r["secret_id"], created_on=_date(r["created_on"]),
                        expires_on=_date(r["expires_on"]), kind=r["kind"])
            for r in models.secrets
            if r["retired_at"] is None and (c := clients[r["client_uuid"]])["status"] == "active"
        ]
        grants = []
        for r in models.grants:
            if r["status"] == "revoked":
                continue
            activity = [d for d in (_date(r["rt_issued_at"]), _date(r["rt_last_used_at"])) if d]
            grants.append(GrantFacts(
                client=r["client_name"], mailbox=r["mailbox"], provider=r["provider"],
                status=r["status"], status_reason=r["status_reason"],
                status_changed_on=_date(r["status_changed_at"]),
                granted_on=_date(r["granted_at"]) or date.min,
                last_activity_on=max(activity) if activity else None,
                google_testing=bool(r["google_testing"]), app_only=r["method"] == "app-only",
                protocols=r["protocols"],
            ))
        return secrets, grants

    # -- use cases ---------------------------------------------------------------------------

    @use_case("expiry")
    def expiry(self, *, as_of: date | None = None, within: int | None = None) -> dict[str, Any]:
        as_of = as_of or self.now().date()
        if within is not None and within < 0:
            raise BadInput("--within takes a number of days >= 0")
        secrets, grants = self.expiry_facts()
        findings = evaluate(secrets, grants, as_of, self.thresholds(), within)
        self.audit_record.detail.update({"as_of": as_of.isoformat(), "findings": len(findings)})
        return {"as_of": as_of.isoformat(), "findings": [f.as_dict() for f in findings]}

    @use_case("status")
    def status(self) -> dict[str, Any]:
        today = self.now().date()
        t = self.thresholds()
        models = self.read_models()
        secrets, grants = self.expiry_facts(models)
        findings = evaluate(secrets, grants, today, t)
        items = due_items(secrets, grants, t)
        clients = self.client_listing(models)
        due_by_client = {}
        for item in items:
            if item.mailbox is None:
                due_by_client.setdefault(item.client, item)
        for c in clients:
            item = due_by_client.get(c["name"])
            c["next_due"] = item.due.isoformat() if item else None
            c["next_due_assumed"] = bool(item and item.assumed)
            c["days_left"] = (item.due - today).days if item else None
        interval = timedelta(minutes=t.invalid_grant_interval_minutes)
        grant_rows = [grant_listing(r, interval) for r in models.grants]
        idle_due = {(i.client, i.mailbox): i for i in items if i.kind == "refresh_token_idle"}
        for g, facts in zip(grant_rows, self._facts_for(grant_rows, grants), strict=True):
            last = facts.last_activity_on if facts else None
            g["idle_days"] = (today - last).days if last else None
            item = idle_due.get((g["client"], g["mailbox"]))
            g["refresh_token_due"] = item.due.isoformat() if item else None
        upcoming = [i for i in items if i.due >= today]
        nxt = upcoming[0] if upcoming else None
        counts = {s: sum(1 for f in findings if f.severity == s)
                  for s in ("critical", "warning", "info")}
        return {
            "as_of": today.isoformat(), "clients": clients, "grants": grant_rows,
            "next_expiry": ({"kind": nxt.kind, "client": nxt.client, "mailbox": nxt.mailbox,
                             "due": nxt.due.isoformat(), "days_left": (nxt.due - today).days,
                             "assumed": nxt.assumed} if nxt else None),
            "findings": counts,
        }

    @staticmethod
    def _facts_for(rows: list[dict[str, Any]], facts: list[GrantFacts]) -> list[GrantFacts | None]:
        by_key = {(f.client, f.mailbox): f for f in facts}
        return [by_key.get((r["client"], r["mailbox"])) for r in rows]

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
            row = self.client_row(subject)
        except NotFound:
            if "@" in subject:
                raise NotFound(f"no grant or client named {subject!r}") from None
            raise
        self.audit_record.subject.update({"client": row["name"]})
        client_id = UUID(row["client_uuid"])
        version = self.version_as_of(client_id, cutoff)
        events = self.events_up_to(client_id, version) if version else []
        state = client_summary(self.load(client_id, version)) if version else None
        return {"kind": "client", "subject": row["name"], "as_of": _iso_or_none(as_of),
                "total_events": len(events), "events": [describe_event(e) for e in
                                                       events[-limit:]],
                "state": state}

    def _has_grant(self, mailbox: str, client: str | None) -> bool:
        try:
            self.grant_row(mailbox, client)
        except NotFound:
            return False
        return True

    def _grant_history(self, mailbox: str, client: str | None, cutoff: datetime | None,
                       as_of: date | datetime | None, limit: int) -> dict[str, Any]:
        row = self.grant_row(mailbox, client)
        grant_id, rotation_id = UUID(row["grant_uuid"]), UUID(row["rotation_uuid"])
        g_version = self.version_as_of(grant_id, cutoff)
        r_version = self.version_as_of(rotation_id, cutoff)
        grant_events = self.events_up_to(grant_id, g_version) if g_version else []
        rotation_events = self.events_up_to(rotation_id, r_version, limit) if r_version else []
        merged = sorted(grant_events + rotation_events, key=lambda e: e.timestamp)
        state = None
        if g_version:
            state = grant_summary(self.load(grant_id, g_version))
            if r_version:
                state["tokens"] = rotation_summary(self.load(rotation_id, r_version))
        return {"kind": "grant", "subject": f"{row['mailbox']} ({row['client_name']})",
                "as_of": _iso_or_none(as_of),
                "total_events": len(grant_events) + (r_version or 0),
                "events": [describe_event(e) for e in merged[-limit:]], "state": state}


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
