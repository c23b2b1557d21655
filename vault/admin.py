"""Administrative use cases: reading the audit log, rebuilding the read models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from adapters.errors import SubjectPurged
from adapters.keyring import AUDIT_KEY_ID
from adapters.store import Changes, ViewChange
from domain.credentials import ClientCredential
from domain.grants import ConsentGrant
from vault.application import VaultCore, use_case
from vault.audit import (
    TrustedCheckpoint,
    decrypt_entry,
    export_checkpoint,
    raise_if_broken,
    verify_log,
)
from vault.errors import BadInput
from vault.projections import client_changes, grant_changes, rotation_changes

Progress = Callable[[int, int], None]


class AdminUseCases(VaultCore):
    @use_case("audit log")
    def audit_log(self, *, limit: int | None = 100, after_seq: int = 0) -> list[dict[str, Any]]:
        """Decrypted entries, oldest first (the last `limit` of them). Verifies the chain first:
        an entry shown from a tampered log would be worse than none."""
        if limit is not None and limit < 1:
            raise BadInput("--limit takes a number >= 1")
        rows = list(self.store.audit_rows())
        raise_if_broken(verify_log(rows, self.store.checkpoint(), self.header.vault_id,
                                   self.header.audit_public_key))
        key = self.keyring.key(AUDIT_KEY_ID)
        selected = [r for r in rows if r.seq > after_seq]
        if limit is not None:
            selected = selected[-limit:]
        entries = []
        for row in selected:
            content = decrypt_entry(key, self.header.vault_id, row)
            entries.append({"seq": row.seq, **content})
        self.audit_record.detail.update({"entries_shown": len(entries)})
        return entries

    def verify_log_extends(self, trusted: TrustedCheckpoint | None = None) -> None:
        """The audit log verifies and (given one) extends a checkpoint exported earlier."""
        raise_if_broken(verify_log(self.store.audit_rows(), self.store.checkpoint(),
                                   self.header.vault_id, self.header.audit_public_key, trusted))

    @use_case("audit checkpoint")
    def export_checkpoint(self, trusted: TrustedCheckpoint | None = None) -> tuple[str, int]:
        """The signed head of a log that verifies (and extends `trusted`, a checkpoint exported
        earlier), with the public key this unlock authenticated (the header's MAC covers it), to
        keep elsewhere as a trusted checkpoint."""
        checkpoint = self.store.checkpoint()
        self.verify_log_extends(trusted)
        assert checkpoint is not None
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
        result: dict[str, int] = {}

        def replay(changes: Changes) -> None:
            views, counts = self.rebuilt_views(progress)
            changes.views.extend(views)
            result.update(counts)
            self.audit_record.detail.update(result)

        self.commit(changes=Changes(clear_views=True, prepare=replay))
        return result

    def _aggregate_ids(self) -> dict[str, list[UUID]]:
        """Every client and grant ever created, found from their creation events' topics."""
        creations = {ClientCredential.Registered.TOPIC: "client",
                     ConsentGrant.Granted.TOPIC: "grant"}
        ids: dict[str, list[UUID]] = {"client": [], "grant": []}
        start = 1
        while True:
            batch = self.recorder.select_notifications(start, 1000, topics=list(creations))
            for n in batch:
                ids[creations[n.topic]].append(n.originator_id)
            if len(batch) < 1000:
                return ids
            start = batch[-1].id + 1
