"""The store contract both databases implement, and the SQL they share.

One write path: `commit(stored_events, changes)` inserts events, wrapped data keys, read-model
changes and the audit entry in a single transaction, so a command either happens, is projected
and is audited, or nothing happens at all.
"""

from __future__ import annotations

import contextlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from uuid import UUID

from adapters.errors import (
    AuditAppendFailed,
    ConcurrentChange,
    IntegrityViolation,
    KeysReplaced,
    LockTimeout,
    NotInitialised,
    SubjectPurged,
)
from adapters.keyslots import SealedHeader
from adapters.store import lookups
from adapters.store.lookups import check_identifier
from adapters.store.schema import ADDED_COLUMNS, SCHEMA_VERSION, VIEW_KEYS, VIEW_TABLES

if TYPE_CHECKING:
    from pathlib import Path

    from adapters.store.changes import Changes


class Tx:
    """A cursor in a transaction; SQL uses `?` placeholders on every database."""

    def __init__(self, cursor: Any, placeholder: str = "?",
                 stream_cursor: Callable[[], Any] | None = None) -> None:
        self.cursor = cursor
        self.placeholder = placeholder
        # a cursor that fetches as it goes (PostgreSQL: server-side), for whole-table reads
        self.stream_cursor = stream_cursor or (lambda: cursor)

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Tx:
        self.cursor.execute(self._sql(sql), tuple(params))
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.cursor.executemany(self._sql(sql), [tuple(r) for r in rows])

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).cursor.fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.execute(sql, params).cursor.fetchall())


class KeyRow(NamedTuple):
    originator_id: str
    subject_id: str
    term: int
    wrapped: bytes | None
    created_at: str
    shredded_at: str | None = None
    head_version: int | None = None
    head_mac: bytes | None = None
    # the key generation (`key rotate --reencrypt` gives every subject a new data key, of the
    # header's generation); None: the first, 0, of a vault from before generations
    generation: int | None = None


class Upsert(NamedTuple):
    table: str
    key: dict[str, Any]
    values: dict[str, Any]


class Update(NamedTuple):
    table: str
    key: dict[str, Any]
    values: dict[str, Any]


class Delete(NamedTuple):
    table: str
    key: dict[str, Any]


ViewChange = Upsert | Update | Delete


class AuditRow(NamedTuple):
    seq: int
    prev_hash: bytes
    header: str
    nonce: bytes
    ciphertext: bytes
    entry_hash: bytes


class Checkpoint(NamedTuple):
    size: int
    head_hash: bytes
    signed_at: str
    signature: bytes


class AuditAppender(ABC):
    """Seals one audit entry once its place in the chain is known (inside the transaction)."""

    @abstractmethod
    def check_head(self, last: AuditRow | None, head: Checkpoint | None) -> None:
        """Refuse (IntegrityViolation) unless `last` is the entry the signed `head` covers: an
        append must never extend, and so re-sign, a log that was cut or rewritten. Both None
        only for the first entry of a new vault."""

    @abstractmethod
    def seal(self, seq: int, prev_hash: bytes | None) -> AuditRow:
        """`prev_hash` is None for the first entry (the appender starts the chain)."""

    @abstractmethod
    def sign(self, size: int, head_hash: bytes) -> Checkpoint: ...


class Head(NamedTuple):
    """The newest version of an aggregate, authenticated: deleting its last events shows."""

    originator_id: str
    version: int
    mac: bytes
    generation: int = 0  # of the data key the events were sealed with: still the row's


class RowMacs(Protocol):
    """What seals the plain rows (adapters/keyring.py RowSealer)."""

    def mac(self, table: str, row: dict[str, Any]) -> bytes: ...

    def check(self, table: str, row: dict[str, Any], what: str) -> None: ...

    def tombstone(self, originator_id: str, subject_id: str, shredded_at: str | None) -> bytes: ...


LOCK_POLL_S = 0.02


def poll_lock(try_lock: Callable[[], bool], timeout: float) -> None:
    """Take a grant's lock through a call that never blocks (flock LOCK_NB on SQLite,
    pg_try_advisory_lock on PostgreSQL), tried again every 20 ms; LockTimeout after `timeout`
    seconds."""
    deadline = time.monotonic() + timeout
    while not try_lock():
        if time.monotonic() >= deadline:
            raise LockTimeout(f"another process has been refreshing this grant for "
                              f"over {timeout:.0f} s")
        time.sleep(LOCK_POLL_S)


class WritesThroughStore:
    """Mixed into eventsourcing's application recorder (before it): the events the application
    saves go through the store's one transactional path, with the changes it passes along."""

    def __init__(self, datastore: Any, *, store: Store) -> None:
        super().__init__(datastore)  # eventsourcing's recorder, next in the MRO
        self.store = store

    def insert_events(self, stored_events: Sequence[Any], **kwargs: Any) -> Sequence[int] | None:
        from adapters.store.changes import Changes

        return self.store.commit(stored_events, kwargs.get("changes") or Changes())


class Reads:
    """The reads of the key table, the settings and the read models, each in a transaction of
    its own. Every store has them; so has the light read path over its one SQLite connection
    (vault/fastpath.py), which needs only `read()`."""

    def read(self) -> contextlib.AbstractContextManager[Tx]:
        """A transaction that always ends in a rollback: what is written in it is only seen
        inside it (both databases allow writes in it)."""
        raise NotImplementedError

    def snapshot(self) -> contextlib.AbstractContextManager[Tx]:
        """A read transaction in which every query sees the same committed state (for copies).
        SQLite's read transactions already do (WAL)."""
        return self.read()

    def root_term(self) -> int:
        with self.read() as tx:
            return self._root_term(tx)

    def _root_term(self, tx: Tx) -> int:
        row = tx.one("SELECT body FROM vault_header WHERE id = 1")
        return int(json.loads(row["body"])["root_term"])

    def drop_snapshots(self, originator_id: str) -> None:
        """Delete an aggregate's snapshots (it loads from its events alone until the next)."""
        with self.write() as tx:
            tx.execute("DELETE FROM stored_snapshots WHERE originator_id = ?",
                       (self.originator_param(originator_id),))

    def originator_param(self, originator_id: str) -> Any:
        """An aggregate id as eventsourcing's tables hold it (a SQL parameter)."""
        return UUID(originator_id)

    def key_row(self, originator_id: str) -> KeyRow | None:
        with self.read() as tx:
            found = lookups.key_rows(tx, originator_id)
        return key_row_of(found[0]) if found else None

    def key_rows(self) -> list[KeyRow]:
        with self.read() as tx:
            return [key_row_of(r) for r in tx.all("SELECT * FROM vault_keys ORDER BY originator_id")]

    def settings(self, key_id: str) -> tuple[list[dict[str, Any]], KeyRow | None]:
        """Every settings row (MAC included, to be checked by the reader) and the key row
        `key_id` whose head records the settings' version, from one snapshot."""
        with self.snapshot() as tx:
            rows = [dict(r) for r in tx.all("SELECT * FROM vault_settings ORDER BY key")]
            key = tx.one("SELECT * FROM vault_keys WHERE originator_id = ?", (key_id,))
        return rows, key_row_of(key) if key is not None else None

    def view_rows(self, table: str, aggregates_of: Callable[[dict[str, Any]], list[str]],
                  **equal: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Whole rows of a read model (MAC included, to be checked by the reader) whose columns
        equal the values given, and the newest stored version of each aggregate `aggregates_of`
        names for them (by the hex of its id), from one snapshot: another process committing
        meanwhile must not make a row look older than its events."""
        with self.snapshot() as tx:
            rows = lookups.view_rows(tx, table, **equal)
            ids = [a for row in rows for a in aggregates_of(row)]
            return rows, self._newest(tx, ids) if ids else {}

    def _newest(self, tx: Tx, aggregate_ids: list[str] | None = None) -> dict[str, int]:
        """The newest stored version of each aggregate (of every one, without ids), by the hex
        of its id."""
        where = ("" if aggregate_ids is None else
                 f"WHERE originator_id IN ({', '.join('?' for _ in aggregate_ids)}) ")
        return {str(r["originator_id"]).replace("-", ""): r["v"] for r in tx.all(
            f"SELECT originator_id, MAX(originator_version) AS v FROM stored_events {where}"
            "GROUP BY originator_id", [self.stored_id(a) for a in aggregate_ids or ()])}

    def stored_id(self, aggregate_id: str) -> Any:
        """An aggregate id as stored_events holds it (SQLite: hex text; PostgreSQL: uuid)."""
        from uuid import UUID  # here: the cached-token path has no use for uuid (nor platform)

        return UUID(aggregate_id).hex

    def read_side(self) -> dict[str, Any]:
        """Everything a listing must check, from one snapshot: every read-model row, the subjects
        of the key table, and each aggregate's newest stored version."""
        with self.snapshot() as tx:
            side: dict[str, Any] = {t: [dict(r) for r in tx.all(f"SELECT * FROM {t}")]
                                    for t in VIEW_TABLES}
            # the key table without its keys: who has one, and the purges (with their tombstone)
            side["live"] = [(r["originator_id"], r["subject_id"]) for r in tx.all(
                "SELECT originator_id, subject_id FROM vault_keys WHERE wrapped IS NOT NULL")]
            side["purged"] = [key_row_of(r) for r in tx.all(
                "SELECT * FROM vault_keys WHERE wrapped IS NULL")]
            side["newest"] = self._newest(tx)
        return side


class Store(Reads, ABC):
    """A vault's database: eventsourcing's recorders plus vault's own tables."""

    dialect: str
    description: str
    notification_column: str  # what numbers stored_events in commit order
    blob_type: str
    int_type: str

    def __init__(self) -> None:
        self.recorder: Any = None
        self.snapshot_recorder: Any = None
        self._column_cache: dict[str, set[str]] = {}

    # -- transactions (per database) -------------------------------------------------------

    @abstractmethod
    def write(self, *, long: bool = False) -> contextlib.AbstractContextManager[Tx]:
        """A write transaction; writers are serialised (SQLite BEGIN IMMEDIATE; PostgreSQL, the
        events table's EXCLUSIVE lock, which eventsourcing takes anyway), so no two can deadlock.
        `long`: the transaction may wait on other work (PostgreSQL lifts its idle timeout)."""

    @abstractmethod
    def read(self) -> contextlib.AbstractContextManager[Tx]: ...

    def after_bulk_load(self, tx: Tx) -> None:
        """After rows were inserted with their own ids (a restore): keep the id sequence ahead."""

    @abstractmethod
    def insert_stored_events(self, tx: Tx, stored_events: Sequence[Any]) -> list[int]: ...

    @abstractmethod
    def create_event_tables(self) -> None: ...

    @abstractmethod
    def _schema_statements(self) -> list[str]: ...

    @abstractmethod
    def grant_lock(self, grant_id: str, timeout: float) -> contextlib.AbstractContextManager[None]:
        """A lock per grant, held across a token refresh's network call, shared by every process
        (and host, on PostgreSQL). It is not a database transaction: other commands keep writing.
        Raises LockTimeout after `timeout` seconds."""

    def wipe_freed_pages(self) -> str | None:
        """After a purge or a keyslot change: make freed pages unreadable where the store can.
        Returns a warning for the admin when it could not."""
        return None

    def close(self) -> None:
        pass

    def holds(self, path: Path) -> bool:
        """Whether `path` is among the store's own files (replacing one would pull the database
        from under open connections)."""
        return False

    # -- schema ------------------------------------------------------------------------------

    def create_schema(self) -> None:
        self.create_event_tables()
        with self.write() as tx:
            for statement in self._schema_statements():
                tx.execute(statement)
            tx.execute(self.upsert_sql("vault_meta", ["key"], ["value"]),
                       ("schema_version", SCHEMA_VERSION))

    def change_marker(self, tx: Tx | None = None) -> tuple[int, str]:
        """(the newest event's position, the header's checksum): it differs once anyone
        committed an event (any change to a client or grant) or a new header (a key
        rotation, a keyslot change). Audit entries and read-model rows are not counted.
        Read in `tx` when given (in a write transaction: as of now, and until its commit)."""
        sql = (f"SELECT (SELECT MAX({self.notification_column}) FROM stored_events) AS newest, "
               "(SELECT checksum FROM vault_header WHERE id = 1) AS checksum")
        if tx is None:
            with self.read() as tx:
                row = tx.one(sql)
        else:
            row = tx.one(sql)
        return (row["newest"] or 0, row["checksum"] or "")

    def schema_is_current(self) -> bool:
        """Whether the tables are the current schema's (vault_meta says so: it is not sealed,
        and need not be: a wrong answer makes vault rebuild its read models, or fail their
        checks and say so)."""
        with self.read() as tx:
            row = tx.one("SELECT value FROM vault_meta WHERE key = 'schema_version'")
        return row is not None and row["value"] == SCHEMA_VERSION

    def is_initialised(self) -> bool:
        """Whether a vault lives here (a header whose vault left no other trace is refused)."""
        try:
            self.read_header()
        except NotInitialised:
            return False
        return True

    def is_missing_table(self, error: Exception) -> bool:
        text = str(error).lower()
        return "no such table" in text or "does not exist" in text

    def upsert_sql(self, table: str, key_cols: list[str], value_cols: list[str]) -> str:
        return upsert_sql(table, key_cols, value_cols)

    # -- header ------------------------------------------------------------------------------

    def read_header(self) -> SealedHeader:
        try:
            with self.read() as tx:
                row = tx.one("SELECT body, checksum, mac FROM vault_header WHERE id = 1")
                remains = row is None and any(
                    tx.one(f"SELECT 1 FROM {table} LIMIT 1") is not None
                    for table in ("vault_keys", "vault_audit", "stored_events", "vault_settings",
                                  *VIEW_TABLES))
        except Exception as e:
            if self.is_missing_table(e):
                raise NotInitialised(f"no vault in {self.description}; run `vault init`") from None
            raise
        if remains:
            raise IntegrityViolation(
                f"the vault in {self.description} holds data but no header: the header was "
                "deleted; restore a backup (`vault init` would not bring it back)")
        if row is None:
            raise NotInitialised(f"no vault in {self.description}; run `vault init`")
        return SealedHeader(body=row["body"], checksum=row["checksum"], mac=row["mac"])

    def _write_header(self, tx: Tx, expected_checksum: str | None, sealed: SealedHeader) -> None:
        if expected_checksum is None:
            tx.execute("INSERT INTO vault_header (id, body, checksum, mac) VALUES (1, ?, ?, ?)",
                       (sealed.body, sealed.checksum, sealed.mac))
            return
        tx.execute("UPDATE vault_header SET body = ?, checksum = ?, mac = ? "
                   "WHERE id = 1 AND checksum = ?",
                   (sealed.body, sealed.checksum, sealed.mac, expected_checksum))
        if tx.cursor.rowcount != 1:
            raise ConcurrentChange("the vault's keyslots changed since this command unlocked it "
                                   "(another key command?); nothing was changed, run it again")

    # -- the one write path ------------------------------------------------------------------

    def commit(self, stored_events: Sequence[Any], changes: Changes) -> list[int]:
        with self.write(long=changes.prepare is not None) as tx:
            return self.commit_in(tx, stored_events, changes)

    def commit_in(self, tx: Tx, stored_events: Sequence[Any], changes: Changes) -> list[int]:
        if changes.prepare is not None:
            changes.prepare(changes)
        if changes.header is not None:
            self._write_header(tx, *changes.header)
        if changes.upgrade:
            self._upgrade(tx, _sealer(changes), changes.settings, changes.settings_version)
            changes.settings = {}
        elif changes.add_columns:
            self.add_columns(tx)
            tx.execute(self.upsert_sql("vault_meta", ["key"], ["value"]),
                       ("schema_version", SCHEMA_VERSION))
        if changes.rekey is not None:
            self._rekey(tx, changes.rekey)
        if changes.within is not None:
            changes.within(tx)

        if changes.keys and changes.key_term != self._root_term(tx):
            raise ConcurrentChange("the root key was rotated since this command unlocked the "
                                   "vault; nothing was changed, run it again")
        if changes.rows_generation is not None and (
                changes.views or changes.settings or changes.shred_subjects):
            row = tx.one("SELECT generation FROM vault_keys WHERE originator_id = ?",
                         (ROWS_KEY_ID,))
            if row is not None and (row["generation"] or 0) != changes.rows_generation:
                raise KeysReplaced("the vault's row seals were replaced (key rotate "
                                       "--reencrypt) since this command unlocked it; nothing "
                                       "was changed, run it again")
        for row in changes.keys:  # a derived aggregate's key is its subject's: still current?
            if row.subject_id != row.originator_id:
                subject = tx.one("SELECT generation FROM vault_keys WHERE originator_id = ? AND "
                                 "wrapped IS NOT NULL", (row.subject_id,))
                if subject is not None and (subject["generation"] or 0) != (row.generation or 0):
                    raise ConcurrentChange(
                        "the vault's data keys were replaced (key rotate --reencrypt) since "
                        "this command read them; nothing was changed, run it again")
        self._insert_keys(tx, changes.keys)
        ids = self.insert_stored_events(tx, stored_events) if stored_events else []
        for head in changes.heads:
            tx.execute("UPDATE vault_keys SET head_version = ?, head_mac = ? "
                       "WHERE originator_id = ? AND wrapped IS NOT NULL "
                       "AND COALESCE(generation, 0) = ?",
                       (head.version, head.mac, head.originator_id, head.generation))
            if tx.cursor.rowcount != 1:
                live = tx.one("SELECT 1 AS live FROM vault_keys WHERE originator_id = ? AND "
                              "wrapped IS NOT NULL", (head.originator_id,))
                if live:  # its events were sealed with a data key replaced meanwhile
                    raise KeysReplaced(
                        "the vault's data keys were replaced (key rotate --reencrypt) since "
                        "this command read them; nothing was changed, run it again")
                raise SubjectPurged(f"{head.originator_id} was purged meanwhile; nothing changed")
        for subject in changes.shred_subjects:
            for r in tx.all("SELECT originator_id FROM vault_keys WHERE subject_id = ?",
                            (subject,)):
                self._tombstone(tx, _sealer(changes), r["originator_id"], subject,
                                changes.shredded_at)
        if changes.clear_views:
            self.replace_views(tx, changes.views, _sealer(changes))
        else:
            for change in changes.views:
                self._apply_view_change(tx, change, _sealer(changes))
        for key, value in changes.settings.items():
            self._write_setting(tx, _sealer(changes), key, value, changes.settings_version)
        if changes.audit is not None:
            self._append_audit(tx, changes.audit)
        return ids

    def _rekey(self, tx: Tx, rekey: Callable[[list[KeyRow]], list[KeyRow]]) -> None:
        """Rewrap every live key under the writer lock, so no purge or new key slips between."""
        live = [key_row_of(r) for r in tx.all(
            "SELECT * FROM vault_keys WHERE wrapped IS NOT NULL ORDER BY originator_id")]
        for old, new in zip(live, rekey(live), strict=True):
            tx.execute("UPDATE vault_keys SET term = ?, wrapped = ?, generation = ? "
                       "WHERE originator_id = ? AND term = ? AND wrapped IS NOT NULL",
                       (new.term, new.wrapped, new.generation, old.originator_id, old.term))
            if tx.cursor.rowcount != 1:
                raise ConcurrentChange(f"data key of {old.originator_id} changed meanwhile")

    def _insert_keys(self, tx: Tx, rows: list[KeyRow]) -> None:
        tx.executemany(
            "INSERT INTO vault_keys (originator_id, subject_id, term, wrapped, created_at, "
            "generation) VALUES (?, ?, ?, ?, ?, ?)",
            [(r.originator_id, r.subject_id, r.term, r.wrapped, r.created_at, r.generation)
             for r in rows],
        )

    def replace_views(self, tx: Tx, views: list[ViewChange], rows: RowMacs) -> None:
        """Empty the read models and write `views` (a rebuild) in `tx`."""
        for table in VIEW_TABLES:
            tx.execute(f"DELETE FROM {table}")
        for change in views:
            self._apply_view_change(tx, change, rows)

    def _apply_view_change(self, tx: Tx, change: ViewChange, rows: RowMacs) -> None:
        """Apply one change to a read model, sealing each row it leaves with a MAC computed from
        what vault means the row to hold (never read back, so nothing the database does on its
        own, a trigger say, is sealed). A row only partly changed is checked first: sealing an
        edited row again would make the edit look like vault's."""
        table = check_identifier(change.table)
        where = " AND ".join(f"{check_identifier(k)} = ?" for k in change.key)
        params = list(change.key.values())
        if isinstance(change, Delete):
            tx.execute(f"DELETE FROM {table} WHERE {where}", params)
            return
        columns = self._columns_of(tx, table) - {"mac"}
        given = {**change.key, **change.values}
        if isinstance(change, Upsert) and given.keys() >= columns:
            existing = []  # the whole row is given: what it replaces does not matter
        else:
            existing = [dict(r) for r in tx.all(f"SELECT * FROM {table} WHERE {where}", params)]
        if not existing:
            if isinstance(change, Update):
                return
            row = {**dict.fromkeys(columns), **given}  # what a new row is not given is NULL
            keys = list(change.key)
            sql = self.upsert_sql(table, keys, [*(c for c in row if c not in keys), "mac"])
            tx.execute(sql, [*change.key.values(), *(v for c, v in row.items() if c not in keys),
                             rows.mac(table, row)])
            return
        primary = VIEW_KEYS[table]
        for old in existing:
            rows.check(table, old, f"a row of {table}")
            row = {**{c: old[c] for c in columns}, **change.values}
            sets = ", ".join(f"{check_identifier(k)} = ?" for k in change.values)
            tx.execute(f"UPDATE {table} SET {sets}, mac = ? WHERE "
                       + " AND ".join(f"{k} = ?" for k in primary),
                       [*change.values.values(), rows.mac(table, row),
                        *(old[k] for k in primary)])

    def _write_setting(self, tx: Tx, rows: RowMacs, key: str, value: str,
                       version: int | None) -> None:
        if version is None:
            raise ValueError("settings are written with their version")
        row = {"key": key, "value": value, "version": version}
        tx.execute(self.upsert_sql("vault_settings", ["key"], ["value", "version", "mac"]),
                   (key, value, version, rows.mac("vault_settings", row)))

    @staticmethod
    def _tombstone(tx: Tx, rows: RowMacs, originator_id: str, subject_id: str,
                   shredded_at: str | None) -> None:
        tx.execute("UPDATE vault_keys SET wrapped = NULL, head_version = NULL, head_mac = ?, "
                   "shredded_at = ? WHERE originator_id = ?",
                   (rows.tombstone(originator_id, subject_id, shredded_at), shredded_at,
                    originator_id))

    def add_columns(self, tx: Tx) -> None:
        """Columns newer schema versions added, where they are missing."""
        self._column_cache.clear()
        for table, column, kind in ADDED_COLUMNS:
            if column not in self._columns(tx, table):
                tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} "
                           + kind.format(blob=self.blob_type, int=self.int_type))

    @abstractmethod
    def _columns(self, tx: Tx, table: str) -> set[str]: ...

    def _columns_of(self, tx: Tx, table: str) -> set[str]:
        if table not in self._column_cache:
            self._column_cache[table] = self._columns(tx, table)
        return self._column_cache[table]

    def _upgrade(self, tx: Tx, rows: RowMacs, settings: dict[str, str], version: int) -> None:
        """A vault from before sealed rows: its settings and purges are sealed as they are found
        (they were as editable then as any row), with `settings` where it had none; the read
        models are rebuilt by the caller."""
        self.add_columns(tx)
        found = {r["key"]: r["value"] for r in tx.all("SELECT key, value FROM vault_settings")}
        for key, value in {**settings, **found}.items():
            self._write_setting(tx, rows, key, value, version)
        for r in tx.all("SELECT * FROM vault_keys WHERE wrapped IS NULL"):
            self._tombstone(tx, rows, r["originator_id"], r["subject_id"], r["shredded_at"])
        tx.execute(self.upsert_sql("vault_meta", ["key"], ["value"]),
                   ("schema_version", SCHEMA_VERSION))

    def _append_audit(self, tx: Tx, appender: AuditAppender) -> None:
        append_audit(tx, appender)

    # -- keys --------------------------------------------------------------------------------

    # -- settings, views, audit (reads) ------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.read() as tx:
            return [dict(r) for r in tx.all(sql, params)]

    @contextlib.contextmanager
    def audit_log(self) -> Iterator[tuple[Checkpoint | None, Iterator[AuditRow], list[str]]]:
        """The signed head, every entry, oldest first, and the audit key hand-overs (JSON), as
        one snapshot sees them: a command appending meanwhile (another host's `maintain`, a
        `vault token`) must not make a sound log look truncated. Rows are fetched as they are
        read, never all at once."""
        with self.snapshot() as tx:
            yield signed_head(tx), _audit_rows(tx), audit_handovers(tx)


HANDOVER_KEY = "audit_handover:"  # vault_meta keys: audit_handover:<size, 12 digits>
ROWS_KEY_ID = "system:rows"  # adapters/keyring.py's (not imported: it imports this module)


def audit_handovers(tx: Tx) -> list[str]:
    """The audit key hand-overs (`key rotate --reencrypt`), as stored: JSON, oldest first.
    Each is signed by both its keys (vault/audit.py Handover), so the plain row needs no MAC."""
    return [r["value"] for r in tx.all("SELECT key, value FROM vault_meta ORDER BY key")
            if r["key"].startswith(HANDOVER_KEY)]


def _audit_rows(tx: Tx, batch: int = 2000) -> Iterator[AuditRow]:
    cursor = tx.stream_cursor()
    cursor.execute("SELECT * FROM vault_audit ORDER BY seq")
    while rows := cursor.fetchmany(batch):
        for r in rows:
            yield _audit_row(r)


def _sealer(changes: Changes) -> RowMacs:
    if changes.rows is None:
        raise ValueError("read-model rows and settings are written only with a row sealer")
    return changes.rows


def _typed(table: str, r: Any, kinds: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """A stored row's values, each of the type vault wrote (blobs as bytes): SQLite keeps what
    it is given whatever the column says, and anyone can give it anything."""
    values = {}
    for column, allowed in kinds.items():
        try:
            value = r[column]
        except (IndexError, KeyError):
            # a column a newer schema adds, read before this vault's upgrade added it
            if (table, column) not in _ADDED or type(None) not in allowed:
                raise
            value = None
        if isinstance(value, memoryview):
            value = bytes(value)
        if not isinstance(value, allowed) or isinstance(value, bool):
            raise IntegrityViolation(f"a row of {table} holds a {type(value).__name__} in "
                                     f"{column}: it was edited outside vault")
        values[column] = value
    return values


_TEXT, _INT, _BLOB, _NONE = (str,), (int,), (bytes,), (type(None),)
_ADDED = {(table, column) for table, column, _ in ADDED_COLUMNS}
_KEY_ROW = {"originator_id": _TEXT, "subject_id": _TEXT, "term": _INT,
            "wrapped": _BLOB + _NONE, "created_at": _TEXT, "shredded_at": _TEXT + _NONE,
            "head_version": _INT + _NONE, "head_mac": _BLOB + _NONE,
            "generation": _INT + _NONE}
_AUDIT_ROW = {"seq": _INT, "prev_hash": _BLOB, "header": _TEXT, "nonce": _BLOB,
              "ciphertext": _BLOB, "entry_hash": _BLOB}
_CHECKPOINT = {"size": _INT, "head_hash": _BLOB, "signed_at": _TEXT, "signature": _BLOB}


def key_row_of(r: Any) -> KeyRow:
    """A vault_keys row as a KeyRow, its values' types checked."""
    return KeyRow(**_typed("vault_keys", r, _KEY_ROW))


def _audit_row(r: Any) -> AuditRow:
    return AuditRow(**_typed("vault_audit", r, _AUDIT_ROW))


def upsert_sql(table: str, key_cols: list[str], value_cols: list[str]) -> str:
    cols = [check_identifier(c) for c in key_cols + value_cols]
    placeholders = ", ".join("?" for _ in cols)
    updates = ", ".join(f"{c} = excluded.{c}" for c in value_cols) or None
    conflict = (f"DO UPDATE SET {updates}" if updates else "DO NOTHING")
    return (f"INSERT INTO {check_identifier(table)} ({', '.join(cols)}) "
            f"VALUES ({placeholders}) ON CONFLICT ({', '.join(key_cols)}) {conflict}")


CHECKPOINT_UPSERT = upsert_sql("vault_audit_checkpoint", ["id"],
                               ["size", "head_hash", "signed_at", "signature"])


def signed_head(tx: Tx) -> Checkpoint | None:
    r = tx.one("SELECT * FROM vault_audit_checkpoint WHERE id = 1")
    return Checkpoint(**_typed("vault_audit_checkpoint", r, _CHECKPOINT)) if r is not None else None


def append_audit(tx: Tx, appender: AuditAppender) -> None:
    """Append one audit entry after the last one and re-sign the head, inside `tx` (whose
    writer lock serialises appenders), once the last entry is proven to be the one the signed
    head covers. Any failure fails the whole transaction."""
    append_audit_entries(tx, [appender])


def append_audit_entries(tx: Tx, appenders: Sequence[AuditAppender],
                         known: tuple[AuditRow, Checkpoint] | None = None,
                         ) -> tuple[AuditRow, Checkpoint]:
    """`append_audit` for several entries in one transaction: the head is checked once, each
    entry chained to the one before, and the head signed once, over the last. Returns the last
    entry and the signed head written. `known` is what such a call of this process returned
    last: while the log still ends exactly there (every byte of the entry and of the head), it
    is the head this process checked and signed itself, and its signature is not verified
    again (a group of the agent's entries costs one signature, not two)."""
    try:
        _check_audit_keys(tx, appenders[0])
        last, head = last_audit_row(tx), signed_head(tx)
        if known is None or (last, head) != known:
            appenders[0].check_head(last, head)
        seq, prev = (last.seq, last.entry_hash) if last else (0, None)
        for appender in appenders:
            row = appender.seal(seq + 1, prev)
            tx.execute(
                "INSERT INTO vault_audit (seq, prev_hash, header, nonce, ciphertext, entry_hash) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (row.seq, row.prev_hash, row.header, row.nonce, row.ciphertext, row.entry_hash),
            )
            seq, prev = row.seq, row.entry_hash
        cp = appenders[-1].sign(seq, prev)
        tx.execute(CHECKPOINT_UPSERT, (1, cp.size, cp.head_hash, cp.signed_at, cp.signature))
        return row, cp
    except (IntegrityViolation, ConcurrentChange):
        raise  # tampering (exit 5), or keys replaced meanwhile: nothing is done
    except Exception as e:
        raise AuditAppendFailed(f"audit entry not written: {type(e).__name__}") from e


def last_audit_row(tx: Tx) -> AuditRow | None:
    r = tx.one("SELECT * FROM vault_audit ORDER BY seq DESC LIMIT 1")
    return _audit_row(r) if r else None


def _check_audit_keys(tx: Tx, appender: AuditAppender) -> None:
    """An appender holding the audit keys of before a hand-over (`key rotate --reencrypt`
    committed since its command unlocked the vault) is told to run again: its entry would be
    sealed and signed with keys the log no longer uses."""
    expected = getattr(appender, "public_key", None)
    row = tx.one("SELECT body FROM vault_header WHERE id = 1") if expected else None
    if row is None:
        return
    try:
        current = bytes.fromhex(json.loads(row["body"])["audit_public_key"])
    except (ValueError, KeyError, TypeError):
        return  # the header's own check says what is wrong with it
    if current != expected:
        raise KeysReplaced("the vault's audit keys were replaced (key rotate --reencrypt) "
                               "since this command unlocked it; nothing was changed, run it "
                               "again")
