"""Reports: who did what (the audit log, filtered), what was revoked or retired and until when its
tokens stay valid, and what expires when (for a timeline)."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any
from uuid import UUID

from adapters.errors import SubjectPurged
from adapters.keyring import AUDIT_KEY_ID
from adapters.store import AuditRow
from domain.credentials import ClientCredential
from domain.expiry import due_items, evaluate
from domain.grants import ConsentGrant
from domain.rotation import TokenRotation
from vault.admin import AdminUseCases
from vault.application import use_case
from vault.audit import decrypt_entry
from vault.errors import BadInput
from vault.reports import ReportUseCases


class ReportingUseCases(ReportUseCases, AdminUseCases):
    @use_case("report audit")
    def audit_report(self, *, start: datetime | None = None, end: datetime | None = None,
                     client: str | None = None, mailbox: str | None = None) -> list[dict]:
        """Entries from `start` (inclusive) to `end` (exclusive), of one client or mailbox."""
        if start and end and end <= start:
            raise BadInput("--until is before --since")
        self.audit_record.detail.update({k: v.isoformat() if isinstance(v, datetime) else v
                                         for k, v in (("since", start), ("until", end),
                                                      ("client", client), ("mailbox", mailbox))
                                         if v is not None})

        def in_window(row: AuditRow) -> bool:
            # the plaintext header's time is covered by the chain: no need to decrypt to filter
            at = datetime.fromisoformat(json.loads(row.header)["at"])
            return (start is None or at >= start) and (end is None or at < end)

        _, picked = self.verified_audit_rows(in_window)
        key = self.keyring.key(AUDIT_KEY_ID)
        rows = []
        for row in picked:
            e = decrypt_entry(key, self.header.vault_id, row)
            subject = e.get("subject", {})
            if client and subject.get("client", "").casefold() != client.casefold():
                continue
            if mailbox and subject.get("mailbox", "").casefold() != mailbox.casefold():
                continue
            detail = e.get("detail", {})
            rows.append({
                "seq": row.seq, "at": e["at"], "user": e.get("user"),
                "sudo_user": e.get("sudo_user"), "host": e.get("host"),
                "action": e["action"], "client": subject.get("client"),
                "mailbox": subject.get("mailbox"), "outcome": e["outcome"],
                "revealed": detail.get("revealed"),
                "detail": "; ".join(f"{k}={v}" for k, v in sorted(detail.items())),
            })
        self.audit_record.detail.update({"rows": len(rows)})
        return rows

    @use_case("report revocations")
    def revocation_report(self) -> list[dict[str, Any]]:
        """Every revoked grant and retired or removed credential: when, by whom, why, and until
        when access tokens already handed out stay valid (revoking a consent does not end them)."""
        rows: list[dict[str, Any]] = []
        ids = self._aggregate_ids()
        for client_id in ids["client"]:
            try:
                events = list(self.events.get(client_id))
            except SubjectPurged:
                continue
            name = events[0].name
            for e in events:
                if isinstance(e, ClientCredential.SecretRetired | ClientCredential.Removed):
                    what = ("client removed" if isinstance(e, ClientCredential.Removed)
                            else f"secret {e.ref} retired")
                    rows.append({"kind": "credential", "what": what, "client": name,
                                 "mailbox": None, "at": e.timestamp.isoformat(), "by": e.by,
                                 "reason": e.reason, "access_valid_until": None})
        for grant_id in ids["grant"]:
            try:
                grant: ConsentGrant = self.load(grant_id)
            except SubjectPurged:
                rows.append({"kind": "grant", "what": "grant purged", "client": None,
                             "mailbox": None, "at": None, "by": None, "reason": "purged",
                             "access_valid_until": None})
                continue
            for e in self.events.get(grant_id):
                if isinstance(e, ConsentGrant.Revoked):
                    rows.append({
                        "kind": "grant", "what": "grant revoked", "client": grant.client_name,
                        "mailbox": grant.mailbox, "at": e.timestamp.isoformat(),
                        "by": e.revoked_by, "reason": e.reason,
                        "access_valid_until": self._access_until(grant.rotation_id,
                                                                 e.timestamp)})
        rows.sort(key=lambda r: r["at"] or "")
        self.audit_record.detail["rows"] = len(rows)
        return rows

    def _access_until(self, rotation_id: UUID, revoked_at: datetime) -> str | None:
        """The latest expiry among access tokens issued before the revocation."""
        version = self._version_as_of(rotation_id, revoked_at)
        if not version:
            return None
        rotation: TokenRotation = self.load(rotation_id, version)
        ends = [a["expires_at"] for a in rotation.access.values()]
        return max(ends).isoformat() if ends else None

    @use_case("report expiry")
    def expiry_timeline(self, *, as_of: date | None = None, horizon_days: int = 365) -> dict:
        as_of = as_of or self.now().date()
        secrets, grants = self.expiry_facts()
        t = self.thresholds()
        findings = evaluate(secrets, grants, as_of, t)
        items = [{"kind": i.kind, "client": i.client, "mailbox": i.mailbox,
                  "due": i.due.isoformat(), "days_left": (i.due - as_of).days,
                  "assumed": i.assumed, "ref": i.ref}
                 for i in due_items(secrets, grants, t) if (i.due - as_of).days <= horizon_days]
        return {"as_of": as_of.isoformat(), "horizon_days": horizon_days, "items": items,
                "findings": [f.as_dict() for f in findings]}
