"""Administrative use cases: reading the audit log, rebuilding the read models."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any
from uuid import UUID

from adapters.errors import IntegrityViolation, SubjectPurged
from adapters.files import starts_with
from adapters.keyring import AUDIT_KEY_ID, ROWS_KEY_ID, SETTINGS_KEY_ID
from adapters.keyslots import seal_header
from adapters.store import AuditRow, Changes, Checkpoint, Head, ViewChange
from domain.credentials import ClientCredential
from domain.grants import ConsentGrant
from vault.audit import (
    CHECKPOINT_FILE_HEADER,
    TrustedCheckpoint,
    decrypt_entry,
    export_checkpoint,
    raise_if_broken,
    verify_log,
)
from vault.core import REQUIRED_SETTINGS, VaultCore, use_case
from vault.errors import BadInput
from vault.projections import client_changes, grant_changes, rotation_changes

Progress = Callable[[int, int], None]
# An exported checkpoint file, which a new export may replace (adapters/files.py)
CHECKPOINT_FILE = {"what": "checkpoint",
                   "written_by_vault": starts_with(CHECKPOINT_FILE_HEADER.encode() + b"\n")}


class AdminUseCases(VaultCore):
    @use_case("audit log")
    def audit_log(self, *, limit: int | None = 100, after_seq: int = 0) -> list[dict[str, Any]]:
        """Decrypted entries, oldest first (the last `limit` of them). Verifies the chain first:
        an entry shown from a tampered log would be worse than none."""
        if limit is not None and limit < 1:
            raise BadInput("--limit takes a number >= 1")
        _, selected = self.verified_audit_rows(lambda row: row.seq > after_seq, last=limit)
        key = self.keyring.key(AUDIT_KEY_ID)
        entries = [{"seq": row.seq, **decrypt_entry(key, self.header.vault_id, row)}
                   for row in selected]
        self.audit_record.detail.update({"entries_shown": len(entries)})
        return entries

    def verified_audit_rows(
        self, select: Callable[[AuditRow], bool] = lambda row: False, *,
        last: int | None = None, trusted: TrustedCheckpoint | None = None,
    ) -> tuple[Checkpoint, list[AuditRow]]:
        """Verify the whole log in one snapshot (and that it extends `trusted`, a checkpoint
        exported earlier); return its signed head and the rows `select` picks (the `last` of
        them), to be decrypted only once the whole log is known sound. One pass, so memory
        grows with what is picked, not with the log."""
        picked: deque[AuditRow] = deque(maxlen=last)

        def picking(rows: Iterable[AuditRow]) -> Iterator[AuditRow]:
            for row in rows:
                try:
                    chosen = select(row)
                except (ValueError, LookupError, TypeError, IntegrityViolation):
                    chosen = False  # not verified yet, and it shows: verify_log says how
                if chosen:
                    picked.append(row)
                yield row

        with self.store.audit_log() as (checkpoint, rows):
            raise_if_broken(verify_log(picking(rows), checkpoint, self.header.vault_id,
                                       self.header.audit_public_key, trusted))
        assert checkpoint is not None  # verify_log reports a missing one
        return checkpoint, list(picked)

    @use_case("audit checkpoint")
    def export_checkpoint(self, trusted: TrustedCheckpoint | None = None) -> tuple[str, int]:
        """The signed head of a log that verifies (and extends `trusted`, a checkpoint exported
        earlier), with the public key this unlock authenticated (the header's MAC covers it), to
        keep elsewhere as a trusted checkpoint."""
        checkpoint, _ = self.verified_audit_rows(trusted=trusted)
        self.audit_record.detail.update({"size": checkpoint.size})
        return (export_checkpoint(self.header.vault_id, self.header.audit_public_key, checkpoint),
                checkpoint.size)

    def rebuilt_views(self, progress: Progress | None = None,
                      load: Callable[[UUID], Any] | None = None) -> tuple[list[ViewChange],
                                                                           dict[str, int]]:
        """The read models as the events give them (every aggregate replayed, by `load` if given;
        purged subjects have none), and how many clients, grants and purged subjects that took."""
        load = load or self.load
        views: list[ViewChange] = []
        ids = self._aggregate_ids()
        total, done, purged = len(ids["client"]) + len(ids["grant"]), 0, 0
        providers: dict[UUID, tuple[str, bool]] = {}
        for kind in ("client", "grant"):
            for aggregate_id in ids[kind]:
                try:
                    if kind == "client":
                        client = load(aggregate_id)
                        views.extend(client_changes(client))
                        providers[client.id] = (client.provider, client.google_testing)
                    else:
                        grant = load(aggregate_id)
                        provider, testing = providers.get(grant.client_id, ("custom", False))
                        views.extend(grant_changes(grant, provider, testing))
                        views.extend(rotation_changes(load(grant.rotation_id)))
                except SubjectPurged:
                    purged += 1
                done += 1
                if progress:
                    progress(done, total)
        return views, {"clients": len(ids["client"]), "grants": len(ids["grant"]),
                       "purged": purged}

    @use_case("admin rebuild-projections")
    def rebuild_projections(self, progress: Progress | None = None) -> dict[str, int]:
        """Clear the read models and replay every aggregate, in one transaction during which
        other writers wait (nothing committed meanwhile can be missed)."""
        return self._rebuild(Changes(), progress)

    def _rebuild(self, changes: Changes, progress: Progress | None = None) -> dict[str, int]:
        result: dict[str, int] = {}

        def replay(changes: Changes) -> None:
            views, counts = self.rebuilt_views(progress)
            changes.views.extend(views)
            result.update(counts)
            self.audit_record.detail.update(result)

        changes.clear_views, changes.prepare = True, replay
        self.commit(changes=changes)
        return result

    def upgrade(self) -> None:
        """Bring a vault from before sealed rows (schema 1) up to date, once, in one transaction:
        columns added, read models rebuilt from the events and sealed, settings and purges sealed
        as they are found, and the header marked (so this never runs again on that vault)."""
        if not self.header.row_macs:
            self._upgrade()

    @use_case("upgrade")
    def _upgrade(self) -> None:
        header = replace(self.header, row_macs=True)
        sealed = seal_header(header, self.root)
        self.audit_record.detail["to"] = "schema 2: sealed read models, settings and purges"
        now = self.now().isoformat()
        keys = [self.keyring.create(key_id, key_id, now) for key_id in (ROWS_KEY_ID,
                                                                         SETTINGS_KEY_ID)]
        self._rebuild(Changes(
            header=(self.header_checksum, sealed), upgrade=True, keys=keys,
            settings=dict(REQUIRED_SETTINGS), settings_version=1,
            heads=[Head(SETTINGS_KEY_ID, 1, self.keyring.head_mac(SETTINGS_KEY_ID, 1))]))
        self.header, self.header_checksum = header, sealed.checksum
        self.keyring.purges_unsealed = False

    def _aggregate_ids(self) -> dict[str, list[UUID]]:
        """Every client and grant ever created, found from their creation events' topics (plain
        text: each subject with a data key must be among them, or a topic was edited to hide
        it)."""
        creations = {ClientCredential.Registered.TOPIC: "client",
                     ConsentGrant.Granted.TOPIC: "grant"}
        ids: dict[str, list[UUID]] = {"client": [], "grant": []}
        start = 1
        while True:
            batch = self.recorder.select_notifications(start, 1000, topics=list(creations))
            for n in batch:
                ids[creations[n.topic]].append(n.originator_id)
            if len(batch) < 1000:
                break
            start = batch[-1].id + 1
        found = {str(i) for kind in ids.values() for i in kind}
        hidden = sorted(row.originator_id for row in self.store.key_rows()
                        if row.wrapped is not None and row.originator_id == row.subject_id
                        and not row.originator_id.startswith("system:")
                        and row.originator_id not in found)
        if hidden:
            raise IntegrityViolation(f"{hidden[0]} has a data key but no creation event: its "
                                     "events were deleted or their type edited outside vault")
        return ids
