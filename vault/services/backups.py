"""Backup, restore and migration, each proven: the copy holds the same rows as the snapshot it
was taken from (per-table counts and digests), its audit log verifies, and it unlocks with the
same key to the same state (every aggregate decrypts to an equal object; purged ones stay
purged). Nothing is decrypted to be copied."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from adapters.errors import IntegrityViolation, SubjectPurged
from adapters.store import Store
from adapters.store.copying import (
    TABLES,
    CopyFailed,
    copy_store,
    open_backup,
    staged_backup,
    table_digests,
    view_digests,
    written_since,
)
from adapters.store.schema import VIEW_TABLES
from vault.audit import Handover, raise_if_broken, verify_log
from vault.core import VaultCore, use_case
from vault.errors import BadInput

if TYPE_CHECKING:
    from vault.bootstrap import Vault
    from vault.services.maintenance import MaintenanceService


@dataclass(frozen=True, kw_only=True)
class BackupProof:
    """What proves a copy (backup, migration, restore): where it went (`file` or `to`), its rows
    per table, its verified audit entries, its aggregates (and how many of them are purged), the
    read models that were not what its events give (`stale`), and `warnings` for the admin when
    the copy's read models were rebuilt."""

    file: str | None = field(default=None, metadata={"omit_if_none": True})
    to: str | None = field(default=None, metadata={"omit_if_none": True})
    tables: dict[str, int]
    audit_entries: int
    aggregates: int
    purged: int
    stale: list[str]
    warnings: list[str] | None = field(default=None, metadata={"omit_if_none": True})


def aggregate_states(app: VaultCore, loaded: dict[UUID, Any] | None = None) -> dict[UUID, Any]:
    """Every aggregate as it loads (decrypted) from the app's store; the aggregates themselves
    are kept in `loaded`, if given."""
    states: dict[UUID, Any] = {}
    for row in app.store.query("SELECT DISTINCT originator_id FROM stored_events"):
        aggregate_id = UUID(str(row["originator_id"]))  # hex on SQLite, a UUID on PostgreSQL
        try:
            aggregate = app.load(aggregate_id)
        except SubjectPurged:
            states[aggregate_id] = "purged"
            continue
        states[aggregate_id] = (type(aggregate).__name__, aggregate.version, vars(aggregate))
        if loaded is not None:
            loaded[aggregate_id] = aggregate
    return states


def _as_in_source(source: VaultCore, aggregate_id: UUID, state: Any) -> bool:
    """The source had this state at the copy's version (it may have moved on since: a backup is
    taken while others write)."""
    try:
        if state == "purged":  # shredding is final: the source cannot read it either
            source.load(aggregate_id)
            return False
        _, version, fields = state
        return vars(source.load(aggregate_id, version)) == fields
    except SubjectPurged:
        return True  # purged (in the source) after the copy was taken


def _verify_audit(store: Store) -> int:
    header = store.read_header().parse()
    with store.audit_log() as (checkpoint, rows, handovers):
        report = verify_log(rows, checkpoint, header.vault_id, header.audit_public_key,
                            handovers=[Handover.from_json(h) for h in handovers])
    raise_if_broken(report)
    return report.entries


def stale_read_models(app: Vault, stored: dict[str, tuple[int, str]],
                      loaded: dict[UUID, Any] | None = None) -> list[str]:
    """The read-model tables whose rows (`stored`: their digests) are not what the app's events
    give (aggregates in `loaded` are not loaded again). They are plain rows, derived, editable
    without the key: edited outside vault, or written by a vault version that projected
    differently. Either way the events are the truth, and a copy rebuilds the rows from them."""
    core = app.core
    if not core.header.row_macs:
        return list(VIEW_TABLES)  # from before sealed rows: upgraded (and rebuilt) when restored
    known = loaded or {}
    views, _ = app.maintenance.rebuilt_views(
        load=lambda i: known[i] if i in known else core.load(i))
    rebuilt = view_digests(core.store, views, core.keyring.rows)
    return [t for t in VIEW_TABLES if rebuilt[t] != stored[t]]


STALE_VIEWS = ("its read models ({}) were not what its events give (edited outside vault, or "
               "written by another vault version)")


def prove_copy(source: VaultCore, target: Store,
               digests: dict[str, tuple[int, str]]) -> tuple[BackupProof, Vault]:
    """The copy in `target` equals the snapshot `digests` describe, verifies, and unlocks (with
    the source's key) to the source's state; the proof also names the read models that are not
    what the events give (`stale`). Returns the proof and the unlocked copy (which now owns
    `target`). Raises IntegrityViolation otherwise."""
    from vault.bootstrap import Vault, unlock_store

    copied = table_digests(target)
    different = [t for t in TABLES if copied[t] != digests[t]]
    if different:
        raise IntegrityViolation(f"the copy differs from its source in {', '.join(different)}")
    entries = _verify_audit(target)
    copy = Vault(unlock_store(target, lambda header: source.unlock_material))
    try:
        loaded: dict[UUID, Any] = {}
        states = aggregate_states(copy.core, loaded)
        different = [aggregate_id for aggregate_id, state in states.items()
                     if not _as_in_source(source, aggregate_id, state)]
        if different:
            raise IntegrityViolation(f"{len(different)} aggregate(s) of the copy do not unlock "
                                     f"to their state in the source (e.g. {different[0]})")
        stale = stale_read_models(copy, copied, loaded)  # in the copy's schema, not a file's
    except BaseException:
        copy.close()
        raise
    return BackupProof(tables={t: count for t, (count, _) in copied.items()},
                       audit_entries=entries, aggregates=len(states),
                       purged=sum(1 for s in states.values() if s == "purged"),
                       stale=stale), copy


def rebuild_if_stale(copy: MaintenanceService, proof: BackupProof, what: str) -> BackupProof:
    """A copy that becomes a vault (restore, migrate) gets its read models from its events (a
    copy of a vault from before sealed rows is upgraded, which rebuilds them); the proof then
    says so."""
    if not copy.core.header.row_macs:
        copy.upgrade()
        return replace(proof, stale=list(VIEW_TABLES), warnings=[
            f"{what}: written by an earlier vault version, before read models and settings were "
            "sealed; upgraded, read models rebuilt from the events"])
    if proof.stale:
        copy.rebuild_projections()
        return replace(proof, warnings=[f"{what}: " + STALE_VIEWS.format(", ".join(proof.stale))
                                        + "; rebuilt from the events"])
    return proof


@dataclass(eq=False)
class BackupService:
    core: VaultCore

    @use_case("backup")
    def backup(self, path: Path, force: bool = False) -> BackupProof:
        """A consistent, still encrypted copy in one file (SQLite's online backup API, or a
        REPEATABLE READ snapshot of PostgreSQL), proven before it replaces `path`."""
        if self.core.store.holds(path):
            raise BadInput(f"{path} is inside the vault's home {self.core.store.description}: write "
                           "backups elsewhere")
        try:
            with staged_backup(self.core.store, path, force) as (staged, digests):
                proof, copy = prove_copy(self.core, staged, digests)
                copy.close()
            if proof.stale:  # the backup holds the events; a restore rebuilds from them
                self.core.warnings.append(
                    "this vault: " + STALE_VIEWS.format(", ".join(proof.stale))
                    + "; run `vault admin rebuild-projections` (a restore rebuilds them anyway)")
        except IntegrityViolation as e:
            raise IntegrityViolation(f"{e}; the unproven copy was discarded and {path} was "
                                     "left as it was") from None
        self.core.broker.record.detail.update({"file": str(path), "events": proof.tables[
            "stored_events"], "audit_entries": proof.audit_entries,
            "stale_read_models": proof.stale})
        return replace(proof, file=str(path))

    @use_case("migrate")
    def migrate(self, target: Store) -> BackupProof:
        """Copy every event, in order, with keys, audit log and read models, into the empty
        `target`; then prove it, and that the source did not move on meanwhile. The source is
        left as it was."""
        self.core.broker.record.detail["to"] = target.description
        if self.core.store.dialect == target.dialect and self.core.store.description == target.description:
            raise CopyFailed("the target is the vault's own store")
        digests = copy_store(self.core.store, target)
        proof, copy = prove_copy(self.core, target, digests)
        try:  # unlike a backup (a point in time), the target replaces the source: lose nothing
            events, entries = written_since(self.core.store, target)
            if not (events or entries):
                proof = rebuild_if_stale(copy.maintenance, proof, "the source")
        finally:
            copy.close()
        if events or entries:
            raise CopyFailed(f"{events} event(s) / {entries} audit entries were written to the "
                             "source during the copy: stop every writer (vault maintain timers, "
                             "vault token users), empty the target and run migrate again")
        self.core.broker.record.detail.update({"events": proof.tables["stored_events"],
                                               "rebuilt_read_models": proof.stale})
        return replace(proof, to=target.description)

    @use_case("restore")
    def record_restore(self, path: Path, proof: BackupProof) -> None:
        """The restore, in the restored vault's own audit log (after its read models are
        rebuilt, if they had to be, by a use case of their own)."""
        self.core.broker.record.detail.update({"file": str(path), "events": proof.tables[
            "stored_events"], "audit_entries": proof.audit_entries,
            "rebuilt_read_models": proof.stale})


def restore(path: Path, open_target: Callable[[], Store], material_source) -> BackupProof:
    """Restore the backup at `path` into an empty store (opened only once the backup has
    unlocked with the given key and its audit log verified). The copy is one transaction, then
    proven, its read models rebuilt from its events if they differ, and recorded in the restored
    vault's own audit log. If the proof fails (exit 5), the unproven copy is left for inspection:
    empty the target before trying again."""
    from vault.bootstrap import unlock_store

    with open_backup(path) as stored:
        _verify_audit(stored)
        source = unlock_store(stored, material_source)
        target = open_target()
        try:
            digests = copy_store(stored, target)
        except BaseException:
            target.close()
            raise
        try:
            proof, restored = prove_copy(source, target, digests)
        except IntegrityViolation as e:
            target.close()
            raise IntegrityViolation(f"{e}; {target.description} now holds this unproven copy: "
                                     "inspect it, then empty it before restoring again") from None
    try:
        proof = rebuild_if_stale(restored.maintenance, proof, "the backup")
        restored.backups.record_restore(path, proof)
    finally:
        restored.close()
    return replace(proof, file=str(path))
