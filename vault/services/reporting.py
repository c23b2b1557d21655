"""Reports: who did what (the audit log, filtered), what was revoked or retired and until when its
tokens stay valid, and what expires when (for a timeline)."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from adapters.errors import SubjectPurged
from adapters.keyring import AUDIT_KEY_ID
from adapters.store import AuditRow
from domain.credentials import ClientCredential
from domain.expiry import due_items, evaluate
from domain.grants import ConsentGrant
from vault.audit import actor_name, decrypt_entry
from vault.core import use_case
from vault.errors import BadInput
from vault.services.audit import AdminUseCases
from vault.services.reports import ReportUseCases

# a purge's audit entry: (kind, what, the detail that keeps the facts of the revocation/removal)
_PURGES = {"grant revoke": ("grant", "grant revoked", "revocation"),
           "client remove": ("credential", "client removed", "removal")}


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
        when access tokens already handed out stay valid (revoking a consent does not end them).
        Purged subjects come from their purge's audit entry, which outlives their events."""
        rows: list[dict[str, Any]] = []
        ids = self._aggregate_ids()
        purged = 0
        for grant_id in ids["grant"]:
            try:
                grant: ConsentGrant = self.load(grant_id)
            except SubjectPurged:
                purged += 1
                continue
            for e in self.events_up_to(grant_id, grant.version):
                if isinstance(e, ConsentGrant.Revoked):
                    rows.append({"kind": "grant", "what": "grant revoked",
                                 "client": grant.client_name, "mailbox": grant.mailbox,
                                 "at": e.timestamp.isoformat(), "by": e.revoked_by,
                                 "reason": e.reason, "access_valid_until":
                                 self.access_valid_until(grant.rotation_id, e.timestamp)})
        for client_id in ids["client"]:
            try:
                client: ClientCredential = self.load(client_id)
                events = self.events_up_to(client_id, client.version)
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
                rows.append({"kind": "credential", "what": what, "client": client.name,
                             "mailbox": None, "at": e.timestamp.isoformat(), "by": e.by,
                             "reason": e.reason, "access_valid_until": None})
        if purged:
            rows += self._purge_rows()
        for row in rows:  # a client is removed once its grants are revoked: theirs are its tokens
            if row["kind"] == "credential" and row["what"].startswith("client removed"):
                row["access_valid_until"] = max(
                    (g["access_valid_until"] for g in rows if g["kind"] == "grant"
                     and g["access_valid_until"] and g["at"] <= row["at"]
                     and (g["client"] or "").casefold() == row["client"].casefold()),
                    default=None)
        rows.sort(key=lambda r: r["at"] or "")
        self.audit_record.detail["rows"] = len(rows)
        return rows

    def _purge_rows(self) -> list[dict[str, Any]]:
        key = self.keyring.key(AUDIT_KEY_ID)
        vault_id = self.header.vault_id

        def is_purge(row: AuditRow) -> bool:
            e = decrypt_entry(key, vault_id, row)
            return (e["action"] in _PURGES and e["outcome"] == "ok"
                    and e.get("detail", {}).get("purged") is True)

        rows = []
        for row in self.verified_audit_rows(is_purge)[1]:
            e = decrypt_entry(key, vault_id, row)
            kind, what, facts_key = _PURGES[e["action"]]
            detail, subject = e["detail"], e.get("subject", {})
            facts = detail.get(facts_key) or {}  # entries written before 2026-12 lack them
            rows.append({"kind": kind, "what": f"{what}, purged {e['at'][:10]}",
                         "client": subject.get("client"), "mailbox": subject.get("mailbox"),
                         "at": facts.get("at") or e["at"], "by": facts.get("by") or actor_name(e),
                         "reason": facts.get("reason") or detail.get("reason"),
                         "access_valid_until": detail.get("access_valid_until")})
        return rows

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
