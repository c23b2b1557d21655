"""Administrative use cases: reading the audit log, rebuilding the read models."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from adapters.errors import ConcurrentChange, IntegrityViolation
from adapters.files import starts_with
from adapters.store import AuditRow, Checkpoint
from adapters.store.base import audit_handovers
from vault.audit import (
    CHECKPOINT_FILE_HEADER,
    Handover,
    TrustedCheckpoint,
    audit_key_ids,
    decrypt_entry,
    export_checkpoint,
    raise_if_broken,
    verify_log,
)
from vault.core import VaultCore, use_case
from vault.errors import BadInput

# An exported checkpoint file, which a new export may replace (adapters/files.py)
CHECKPOINT_FILE = {"what": "checkpoint",
                   "written_by_vault": starts_with(CHECKPOINT_FILE_HEADER.encode() + b"\n")}


def _actor() -> Any:
    return field(default=None, metadata={"omit_if_none": True})


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """An entry of the audit log, decrypted: its fields in the order the entry stores them
    (sorted). Who acted is what vault.audit.os_actor recorded: entries written before it
    recorded `uid` have none, and `sudo_user` is there only under sudo; an agent's entries
    name who asked it (`via` "agent", `peer_uid`, `peer_user`, `peer_pid`)."""

    seq: int
    action: str
    at: str
    detail: dict[str, Any]  # what the use case recorded: its own keys
    host: str | None = _actor()
    outcome: str
    pid: int | None = _actor()
    subject: dict[str, str]  # client, mailbox
    sudo_user: str | None = _actor()
    uid: int | None = _actor()
    user: str | None = _actor()
    # who asked the agent (vault/agent/server.py), where it handed the token out
    via: str | None = _actor()
    peer_uid: int | None = _actor()
    peer_user: str | None = _actor()
    peer_pid: int | None = _actor()

    @classmethod
    def of(cls, seq: int, content: dict[str, Any]) -> AuditEntry:
        # a key a later vault version may add is not one this version shows
        return cls(seq=seq, **{k: v for k, v in content.items() if k in _ENTRY_FIELDS})


_ENTRY_FIELDS = {f.name for f in fields(AuditEntry)} - {"seq"}


@dataclass(frozen=True)
class ExportedCheckpoint:
    """The signed head of the audit log as a checkpoint file's text, and how many entries it
    covers."""

    text: str
    size: int


@dataclass(eq=False)
class AuditService:
    core: VaultCore

    @use_case("audit log")
    def audit_log(self, *, limit: int | None = 100, after_seq: int = 0) -> list[AuditEntry]:
        """Decrypted entries, oldest first (the last `limit` of them). Verifies the chain first:
        an entry shown from a tampered log would be worse than none."""
        if limit is not None and limit < 1:
            raise BadInput("--limit takes a number >= 1")
        _, selected = self.verified_audit_rows(lambda row: row.seq > after_seq, last=limit)
        key_for = self.audit_keys()
        entries = [AuditEntry.of(row.seq, decrypt_entry(key_for(row.seq),
                                                        self.core.header.vault_id, row))
                   for row in selected]
        self.core.broker.record.detail.update({"entries_shown": len(entries)})
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

        with self.core.store.audit_log() as (checkpoint, rows, handovers):
            report = verify_log(picking(rows), checkpoint, self.core.header.vault_id,
                                self.core.header.audit_public_key, trusted,
                                [Handover.from_json(h) for h in handovers])
        if not report.ok and self.core.store.read_header().checksum != self.core.header_checksum:
            raise ConcurrentChange("the vault's keys were replaced (key rotate --reencrypt) "
                                   "since this command unlocked it; run it again")
        raise_if_broken(report)
        assert checkpoint is not None  # verify_log reports a missing one
        return checkpoint, list(picked)

    def audit_keys(self) -> Callable[[int], bytes]:
        """The audit key that opens entry `seq` (its generation's: see Handover)."""
        with self.core.store.read() as tx:
            handovers = [Handover.from_json(h) for h in audit_handovers(tx)]
        key_id = audit_key_ids(handovers)
        return lambda seq: self.core.keyring.key(key_id(seq))

    @use_case("audit checkpoint")
    def export_checkpoint(self, trusted: TrustedCheckpoint | None = None) -> ExportedCheckpoint:
        """The signed head of a log that verifies (and extends `trusted`, a checkpoint exported
        earlier), with the public key this unlock authenticated (the header's MAC covers it), to
        keep elsewhere as a trusted checkpoint."""
        checkpoint, _ = self.verified_audit_rows(trusted=trusted)
        self.core.broker.record.detail.update({"size": checkpoint.size})
        return ExportedCheckpoint(export_checkpoint(self.core.header.vault_id,
                                                    self.core.header.audit_public_key, checkpoint),
                                  checkpoint.size)
