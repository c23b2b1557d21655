"""`vault key rotate --reencrypt` (issue 15): revoking a key for real.

A plain `key rotate` gives a new root key and rewraps the data keys, which stay the same: an old
copy of the database plus a removed key file still opens every event written afterwards. This
makes everything new, generation by generation (the header's `key_generation`):

1. **Start** (one transaction): a new root key in every keyslot, every data key rewrapped under
   it; a new audit key and a new Ed25519 signing key. The audit log is *handed over*: entries
   1..N stay sealed and chained as they are (checkpoints exported earlier vouch for them), the
   old audit key is kept as `system:audit@K` to read them (an old copy holds it anyway), and a
   hand-over record naming entry N and its hash is signed by both signing keys, so `audit
   verify --trusted` with a checkpoint from before follows it. The head is re-signed by the new
   key; the old signing key is destroyed (its row overwritten).
2. **Batches** (a transaction each, audited): every subject (a client, a grant with its token
   rotation, the alert states filed under them) gets a fresh data key of the new generation;
   each of its events and snapshots is opened with the old key and sealed with the new one
   (same associated data), opened again to prove it, and its recorded head re-MAC'd (after the
   old MAC is checked). The old wrapped key is overwritten in the same transaction. The
   generation is bound into the new wrap's associated data, so a row cannot claim to be done.
3. **Finish** (one transaction): new keys for the read-model seals and the settings: the read
   models are replayed from the events under the new seal (a row forged with leaked material is
   not carried over), every setting and purge tombstone is checked under the old seal and sealed
   anew, and what a purge left sealed under its destroyed key is deleted.
4. **Proof**: every aggregate loads (decrypts, heads checked) under its new key, the read models
   and settings check, and the audit log verifies across the hand-over.

A kill, a full disk or a lost connection loses at most the batch under way (rolled back); the
next `key rotate --reencrypt` finds the generation unfinished and resumes. Meanwhile other
commands work: one that unlocked before the start is told to run again (the root key changed),
one that started later reads either generation (a key replaced under it is read again), and a
write sealed with a key replaced meanwhile is refused at commit (the head's generation), to be
run again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters import crypto
from adapters.errors import IntegrityViolation
from adapters.keyring import (
    AUDIT_KEY_ID,
    EVENT_FORMAT,
    ROWS_KEY_ID,
    SETTINGS_KEY_ID,
    SIGNING_KEY_ID,
    RowSealer,
    event_aad,
    head_mac,
)
from adapters.keyslots import RootKey, seal_header
from adapters.store.base import (
    CHECKPOINT_UPSERT,
    HANDOVER_KEY,
    KeyRow,
    audit_handovers,
    key_row_of,
    last_audit_row,
    signed_head,
)
from adapters.store.changes import Changes
from vault.audit import checkpoint_message, head_problem, sign_handover
from vault.core import VaultCore

BATCH_SUBJECTS = 50
EVENT_TABLES = ("stored_events", "stored_snapshots")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Reencryption:
    """What `key rotate --reencrypt` did: the generation and root-key term it made (or resumed),
    how much this run re-encrypted, and the proof."""

    generation: int
    root_term: int
    resumed: bool
    subjects: int  # re-encrypted by this run
    events: int  # events and snapshots sealed anew by this run
    batches: int
    handover_at: int  # the last audit entry sealed with the old keys
    aggregates_proven: int
    audit_entries: int


def pending_subjects(rows: list[KeyRow], generation: int) -> list[str]:
    """The subjects with a live data key older than `generation` (the system keys apart)."""
    return sorted({r.subject_id for r in rows if r.wrapped is not None
                   and not r.originator_id.startswith("system:")
                   and (r.generation or 0) < generation})


def unfinished(rows: list[KeyRow], generation: int, proven: bool) -> bool:
    """Whether the vault's current generation still has work: subjects, the seals, or the
    proof (`proven`: vault_meta records it)."""
    return not proven or bool(pending_subjects(rows, generation)) or any(
        r.originator_id in (ROWS_KEY_ID, SETTINGS_KEY_ID) and (r.generation or 0) < generation
        for r in rows)


def _long(changes: Changes) -> None:
    """Marks a long write transaction (PostgreSQL lifts its idle-in-transaction timeout)."""


def proven_key(generation: int) -> str:
    """vault_meta's record that a generation's re-encryption was proven."""
    return f"reencrypt_proven:{generation}"


class Reencryptor:
    def __init__(self, core: VaultCore, progress: Progress | None = None,
                 batch: int = BATCH_SUBJECTS) -> None:
        self.core = core
        self.progress = progress
        self.batch = batch

    # -- 1. start ---------------------------------------------------------------------------

    def start(self, slots: tuple, new_root: RootKey) -> int:
        """The new root key, audit key and signing key, and the audit hand-over, in one
        transaction. Returns the entry the log was handed over at."""
        core, keyring = self.core, self.core.keyring
        header = core.header
        generation = header.key_generation + 1
        now = core.now().isoformat()
        old_audit, old_seed = keyring.key(AUDIT_KEY_ID), keyring.key(SIGNING_KEY_ID)
        new_audit, new_seed = crypto.new_key(), crypto.new_key()
        new_public = bytes(crypto.signing_key(new_seed).verify_key)
        new_header = header._replace(root_term=new_root.term, keyslots=slots,
                                     key_generation=generation, audit_public_key=new_public)
        sealed = seal_header(new_header, new_root)
        with core.store.read() as tx:
            archived = len(audit_handovers(tx))
        old_audit_row = core.store.key_row(AUDIT_KEY_ID)
        archive = keyring.wrapped_row(f"{AUDIT_KEY_ID}@{archived}", f"{AUDIT_KEY_ID}@{archived}",
                                      old_audit, now, old_audit_row.generation or 0, new_root)
        fresh = {AUDIT_KEY_ID: new_audit, SIGNING_KEY_ID: new_seed}

        def rekey(rows: list[KeyRow]) -> list[KeyRow]:
            return [keyring.wrapped_row(r.originator_id, r.subject_id, fresh[r.originator_id],
                                        r.created_at, generation, new_root)
                    if r.originator_id in fresh else
                    keyring.wrapped_row(r.originator_id, r.subject_id, keyring.unwrap(r),
                                        r.created_at, r.generation or 0, new_root)
                    for r in rows]

        handed: list[int] = []

        def hand_over(tx: Any) -> None:
            last, head = last_audit_row(tx), signed_head(tx)
            problem = head_problem(last, head, header.vault_id, header.audit_public_key)
            if problem or last is None:
                raise IntegrityViolation(f"audit log: {problem}; nothing was changed")
            handover = sign_handover(header.vault_id, last.seq, last.entry_hash, old_seed,
                                     new_seed, now)
            tx.execute(core.store.upsert_sql("vault_meta", ["key"], ["value"]),
                       (f"{HANDOVER_KEY}{last.seq:012d}", handover.to_json()))
            signature = crypto.signing_key(new_seed).sign(checkpoint_message(
                header.vault_id, last.seq, last.entry_hash, now)).signature
            tx.execute(CHECKPOINT_UPSERT, (1, last.seq, last.entry_hash, now, signature))
            handed.append(last.seq)

        core.store.commit([], Changes(header=(core.header_checksum, sealed), rekey=rekey,
                                      within=hand_over, keys=[archive],
                                      key_term=new_root.term))
        # From here on this process is the new generation's: its keys, its audit keys.
        core.header, core.header_checksum = new_header, sealed.checksum
        core.root = new_root
        keyring.forget_all()
        keyring.root, keyring.generation = new_root, generation
        core.broker.public_key = new_public
        core.wipe_freed_pages()  # the old wraps and the old signing seed
        return handed[0]

    # -- 2. batches ---------------------------------------------------------------------------

    def run_batches(self) -> tuple[int, int, int]:
        """Every pending subject, `batch` at a time; (subjects, events, batches) done."""
        generation = self.core.header.key_generation
        subjects = pending_subjects(self.core.store.key_rows(), generation)
        total, done, sealed, batches = len(subjects), 0, 0, 0
        if self.progress:
            self.progress(0, total)
        record = self.core.broker.record
        for start in range(0, total, self.batch):
            chunk = subjects[start:start + self.batch]
            counts: list[int] = []
            record.detail.update({"step": "batch", "subjects_done": done + len(chunk),
                                  "subjects": total})
            self.core.commit(changes=Changes(within=lambda tx, chunk=chunk, counts=counts:
                                             counts.append(self._reseal(tx, chunk, generation)),
                                             prepare=_long))
            done, sealed, batches = done + len(chunk), sealed + counts[0], batches + 1
            if self.progress:
                self.progress(done, total)
        return total, sealed, batches

    def _reseal(self, tx: Any, subjects: list[str], generation: int) -> int:
        """In the batch's transaction: each subject's events and snapshots under a new data
        key. Returns how many were sealed anew."""
        keyring, root = self.core.keyring, self.core.root
        sealed = 0
        for subject in subjects:
            rows = [key_row_of(r) for r in tx.all(
                "SELECT * FROM vault_keys WHERE subject_id = ? AND wrapped IS NOT NULL "
                "ORDER BY originator_id", (subject,))]
            rows = [r for r in rows if (r.generation or 0) < generation]
            if not rows:
                continue  # done meanwhile
            new_key = crypto.new_key()
            for row in rows:
                old_key = keyring.unwrap(row)
                if row.head_version is not None and not crypto.same(
                        head_mac(old_key, row.originator_id, row.head_version),
                        row.head_mac or b""):
                    raise IntegrityViolation(f"the recorded head version of {row.originator_id}"
                                             " was forged; nothing was re-encrypted")
                sealed += self._reseal_events(tx, row.originator_id, old_key, new_key)
                new = keyring.wrapped_row(row.originator_id, row.subject_id, new_key,
                                          row.created_at, generation, root)
                mac = (head_mac(new_key, row.originator_id, row.head_version)
                       if row.head_version is not None else row.head_mac)
                tx.execute("UPDATE vault_keys SET wrapped = ?, generation = ?, head_mac = ? "
                           "WHERE originator_id = ? AND wrapped = ?",
                           (new.wrapped, generation, mac, row.originator_id, row.wrapped))
                if tx.cursor.rowcount != 1:
                    raise IntegrityViolation(f"data key of {row.originator_id} changed during "
                                             "its re-encryption")
                keyring.forget([row.originator_id])
        return sealed

    def _reseal_events(self, tx: Any, originator: str, old_key: bytes, new_key: bytes) -> int:
        param = self.core.store.originator_param(originator)
        count = 0
        for table in EVENT_TABLES:
            updates = []
            for r in tx.all(f"SELECT originator_version, topic, state FROM {table} "
                            "WHERE originator_id = ?", (param,)):
                version, topic, blob = r["originator_version"], r["topic"], bytes(r["state"])
                where = f"{table} {originator} version {version}"
                if not blob or blob[0] != EVENT_FORMAT:
                    raise IntegrityViolation(f"{where} has an unknown format")
                aad = event_aad(originator, version, topic)
                plain = crypto.unseal(old_key, blob[1:], aad, where)
                new = crypto.seal(new_key, plain, aad)
                if crypto.unseal(new_key, new, aad, where) != plain:  # proven before it is kept
                    raise IntegrityViolation(f"{where} did not reopen under its new key")
                updates.append((bytes([EVENT_FORMAT]) + new, param, version))
            if updates:  # under the writer lock: nothing else writes them meanwhile
                tx.executemany(f"UPDATE {table} SET state = ? "
                               "WHERE originator_id = ? AND originator_version = ?", updates)
            count += len(updates)
        return count

    # -- 3. finish ------------------------------------------------------------------------------

    def finish(self) -> None:
        """New keys for the read-model seals and the settings' head, in one transaction: the
        read models replayed from the events and sealed with the new key, every setting and
        tombstone checked under the old seal and sealed anew."""
        core, keyring = self.core, self.core.keyring
        generation = core.header.key_generation
        if all((core.store.key_row(k).generation or 0) >= generation
               for k in (ROWS_KEY_ID, SETTINGS_KEY_ID)):
            return
        old_rows = keyring.rows
        old_settings_key = keyring.key(SETTINGS_KEY_ID)
        new_rows_key, new_settings_key = crypto.new_key(), crypto.new_key()
        new_rows = RowSealer(new_rows_key, core.header.vault_id)
        now = core.now().isoformat()

        views: list[Any] = []

        def replay(changes: Changes) -> None:
            """The read models as the events give them, under the writer lock (not re-sealed
            as found: a row forged with leaked material must not get the new seal)."""
            from vault.services.maintenance import rebuilt_views

            views.extend(rebuilt_views(core)[0])

        def reseal(tx: Any) -> None:
            rows = {key_id: key_row_of(tx.one("SELECT * FROM vault_keys WHERE originator_id = ?",
                                              (key_id,)))
                    for key_id in (ROWS_KEY_ID, SETTINGS_KEY_ID)}  # as of now: under the lock
            core.store.replace_views(tx, views, new_rows)
            for r in tx.all("SELECT * FROM vault_settings"):
                row = dict(r)
                old_rows.check("vault_settings", row, "a setting")
                tx.execute("UPDATE vault_settings SET mac = ? WHERE key = ?",
                           (new_rows.mac("vault_settings", row), row["key"]))
            for r in tx.all("SELECT * FROM vault_keys WHERE wrapped IS NULL"):
                row = key_row_of(r)
                if not old_rows.is_tombstone(row):
                    keyring.check_purged(row)  # raises: a key deleted outside vault
                tx.execute("UPDATE vault_keys SET head_mac = ? WHERE originator_id = ?",
                           (new_rows.tombstone(row.originator_id, row.subject_id,
                                               row.shredded_at), row.originator_id))
                # what a purge left sealed under its destroyed key: an old copy of the key table
                # would open it, events written after that copy included
                for table in EVENT_TABLES:
                    tx.execute(f"DELETE FROM {table} WHERE originator_id = ?",
                               (core.store.originator_param(row.originator_id),))
            settings = rows[SETTINGS_KEY_ID]
            if settings.head_version is None or not crypto.same(
                    head_mac(old_settings_key, SETTINGS_KEY_ID, settings.head_version),
                    settings.head_mac or b""):
                raise IntegrityViolation("the settings' recorded version was forged")
            for key_id, key, mac in (
                    (ROWS_KEY_ID, new_rows_key, rows[ROWS_KEY_ID].head_mac),
                    (SETTINGS_KEY_ID, new_settings_key,
                     head_mac(new_settings_key, SETTINGS_KEY_ID, settings.head_version))):
                new = keyring.wrapped_row(key_id, key_id, key, now, generation, core.root)
                tx.execute("UPDATE vault_keys SET wrapped = ?, generation = ?, head_mac = ? "
                           "WHERE originator_id = ? AND wrapped = ?",
                           (new.wrapped, generation, mac, key_id, rows[key_id].wrapped))
                if tx.cursor.rowcount != 1:
                    raise IntegrityViolation(f"{key_id} changed during its re-encryption")

        self.core.broker.record.detail["step"] = "seals"
        core.commit(changes=Changes(within=reseal, prepare=replay))
        keyring.forget([ROWS_KEY_ID, SETTINGS_KEY_ID])
        core.wipe_freed_pages()

    # -- 4. proof -------------------------------------------------------------------------------

    def prove(self) -> tuple[int, int]:
        """Every live aggregate loads under its new key (heads checked), the read models and
        settings check under the new seal, and the audit log verifies across the hand-over.
        Returns (aggregates, audit entries); anything that fails is an IntegrityViolation."""
        from uuid import UUID

        from adapters.errors import SubjectPurged
        from vault.services.audit import AuditService

        core = self.core
        core.keyring.forget_all()
        core.keyring.root = core.root
        loaded = 0
        for row in core.store.key_rows():
            if row.wrapped is None or row.originator_id.startswith("system:"):
                continue
            if (row.generation or 0) != core.header.key_generation:
                raise IntegrityViolation(f"{row.originator_id} is not of generation "
                                         f"{core.header.key_generation} after re-encryption")
            try:
                core.load(UUID(row.originator_id))
            except SubjectPurged:
                continue  # purged meanwhile
            loaded += 1
        core.reads.models()
        core.reads.settings()
        checkpoint, _ = AuditService(core).verified_audit_rows()
        with core.store.write() as tx:
            tx.execute(core.store.upsert_sql("vault_meta", ["key"], ["value"]),
                       (proven_key(core.header.key_generation), core.now().isoformat()))
        return loaded, checkpoint.size
