"""Copying a whole vault between stores, byte for byte: backups (a SQLite file, still encrypted),
restores and migrations. Rows are copied as stored — ciphertexts, wrapped keys, the audit chain —
so nothing is decrypted on the way; event order (notification ids) is kept.

Consistency: the source is read in one snapshot (SQLite: one read transaction, or the online
backup API; PostgreSQL: REPEATABLE READ), so a copy taken while others write is a state the vault
was really in. The target is written in one transaction: a copy is whole or absent.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

from eventsourcing.persistence import PersistenceError

from adapters.errors import AdapterError, IntegrityViolation, NotInitialised, StoreUnavailable
from adapters.files import (
    InputUnreadable,
    OutputFailed,
    check_output,
    remove_abandoned,
    replace_checked,
    temporary_prefix,
)
from adapters.store.base import RowMacs, Store, Tx, ViewChange
from adapters.store.lookups import check_identifier
from adapters.store.schema import VIEW_TABLES
from domain.errors import OperationFailed

# Every table of a vault, in a fixed order, each with the columns that order its rows (text
# columns are compared byte-wise on both databases, whatever PostgreSQL's locale).
TABLES: dict[str, tuple[tuple[str, bool], ...]] = {
    "vault_meta": (("key", True),),
    "vault_header": (("id", False),),
    "vault_settings": (("key", True),),
    "vault_keys": (("originator_id", True),),
    "stored_events": (("notification_id", False),),
    "stored_snapshots": (("originator_id", False), ("originator_version", False)),
    "vault_audit": (("seq", False),),
    "vault_audit_checkpoint": (("id", False),),
    "view_clients": (("client_uuid", True),),
    "view_secrets": (("client_uuid", True), ("ref", True)),
    "view_grants": (("grant_uuid", True),),
}
UUID_COLUMNS = {"stored_events": ("originator_id",), "stored_snapshots": ("originator_id",)}
BATCH = 1000


class CopyFailed(OperationFailed, AdapterError):
    """A copy could not be made or does not match its source."""


def _value(value: Any) -> Any:
    """One value as both databases agree on it (PostgreSQL gives memoryview and UUID)."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, UUID):
        return value.hex  # as eventsourcing keeps it in SQLite
    return value


EVENT_COLUMNS = "originator_id, originator_version, topic, state"


def _select(store: Store, table: str) -> str:
    if table == "stored_events":  # SQLite numbers events by rowid, PostgreSQL by a column
        ids = store.notification_column
        return f"SELECT {ids} AS notification_id, {EVENT_COLUMNS} FROM {table} ORDER BY {ids}"
    collate = ' COLLATE "C"' if store.dialect == "postgresql" else ""
    order = ", ".join(c + (collate if text else "") for c, text in TABLES[table])
    return f"SELECT * FROM {table} ORDER BY {order}"


def _rows(store: Store, tx: Tx, table: str) -> Iterator[tuple[list[str], list[tuple[Any, ...]]]]:
    cursor = tx.stream_cursor()
    cursor.execute(_select(store, table))
    # a backup file is input: its column names must be plain identifiers before any SQL uses them
    columns = [check_identifier(d[0]) for d in cursor.description]
    while batch := cursor.fetchmany(BATCH):
        yield columns, [tuple(_value(r[c] if not isinstance(r, tuple) else r[i])
                              for i, c in enumerate(columns)) for r in batch]


class _Digest:
    """(rows, SHA-256 over every column name and value, length-prefixed) of one table. NULLs are
    left out, so a copy into a newer schema (columns added, still empty) matches its source."""

    def __init__(self) -> None:
        self.sha, self.count = hashlib.sha256(), 0

    def add(self, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            self.count += 1
            self.sha.update(b"\0row")
            for column, value in zip(columns, row, strict=True):
                if value is None:
                    continue
                data = value if isinstance(value, bytes) else repr(value).encode()
                for part in (column.encode(), data):
                    self.sha.update(len(part).to_bytes(8, "big") + part)

    def result(self) -> tuple[int, str]:
        return self.count, self.sha.hexdigest()


def digests_in(store: Store, tx: Tx,
               tables: Iterable[str] = TABLES) -> dict[str, tuple[int, str]]:
    """Per table: (rows, digest of every value in order), as `tx` sees them."""
    result = {}
    for table in tables:
        digest = _Digest()
        for columns, rows in _rows(store, tx, table):
            digest.add(columns, rows)
        result[table] = digest.result()
    return result


def table_digests(store: Store) -> dict[str, tuple[int, str]]:
    """`digests_in` one snapshot of the store."""
    with store.snapshot() as tx:
        return digests_in(store, tx)


def view_digests(store: Store, views: list[ViewChange],
                 rows: RowMacs) -> dict[str, tuple[int, str]]:
    """The digests of the read models if they held `views` alone (written and sealed, in the
    store's own schema, in a transaction that is rolled back)."""
    with store.read() as tx:
        store.replace_views(tx, views, rows)
        return digests_in(store, tx, VIEW_TABLES)


def copy_store(source: Store, target: Store) -> dict[str, tuple[int, str]]:
    """Copy every row of `source` into the empty `target` (schema created here). Returns the
    digests of what was read, to compare with the target's (`table_digests`)."""
    if target.is_initialised():
        raise CopyFailed(f"{target.description} already holds a vault: copy into an empty one")
    target.create_schema()
    digests: dict[str, tuple[int, str]] = {}
    with source.snapshot() as src, target.write(long=True) as dst:
        dst.execute("DELETE FROM vault_meta")  # create_schema wrote the target's own
        for table in TABLES:
            digest = _Digest()
            for columns, rows in _rows(source, src, table):
                digest.add(columns, rows)
                if target.dialect == "postgresql":
                    rows = [_with_uuids(table, columns, row) for row in rows]
                names = [target.notification_column if c == "notification_id" else c
                         for c in columns]
                marks = ", ".join("?" for _ in columns)
                dst.executemany(f"INSERT INTO {table} ({', '.join(names)}) "
                                f"VALUES ({marks})", rows)
            digests[table] = digest.result()
        target.after_bulk_load(dst)
    return digests


def written_since(source: Store, copy: Store) -> tuple[int, int]:
    """(events, audit entries) in `source` newer than the newest in `copy`: what a copy of an
    earlier snapshot misses. Every command appends an audit entry, so any change shows."""
    with copy.read() as tx:
        ids = copy.notification_column
        last_event = tx.one(f"SELECT COALESCE(MAX({ids}), 0) AS n FROM stored_events")["n"]
        last_entry = tx.one("SELECT COALESCE(MAX(seq), 0) AS n FROM vault_audit")["n"]
    with source.read() as tx:
        ids = source.notification_column
        events = tx.one(f"SELECT COUNT(*) AS n FROM stored_events WHERE {ids} > ?",
                        (last_event,))["n"]
        entries = tx.one("SELECT COUNT(*) AS n FROM vault_audit WHERE seq > ?",
                         (last_entry,))["n"]
    return events, entries


def _with_uuids(table: str, columns: list[str], row: tuple[Any, ...]) -> tuple[Any, ...]:
    wanted = UUID_COLUMNS.get(table, ())
    return tuple(UUID(v) if c in wanted and v is not None else v for c, v in zip(columns, row,
                                                                               strict=True))


# -- backup files -------------------------------------------------------------------------------

# Temporary copies this process is making, for `discard_unfinished_copies`.
_UNFINISHED: set[Path] = set()


def _temporary_directory(**where: Any) -> Path:
    work = Path(tempfile.mkdtemp(**where))
    _UNFINISHED.add(work)
    return work


def _remove(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    _UNFINISHED.discard(work)


def discard_unfinished_copies() -> None:
    """Remove every temporary copy this process is making: for a process about to be stopped
    (a backup holds the whole vault, still encrypted, and none should be left lying about)."""
    for work in list(_UNFINISHED):
        _remove(work)


SQLITE_MAGIC = b"SQLite format 3\x00"
VAULT_TABLES = {"vault_header", "vault_keys", "stored_events", "vault_audit"}


def is_vault_backup(path: str, head: bytes) -> bool:
    """A SQLite file holding a vault: a backup vault wrote, which a new backup may replace.
    (Opened immutable: nothing is written beside it, and a backup has no write-ahead log.)"""
    if not head.startswith(SQLITE_MAGIC):
        return False
    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error:
        return False
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = "
                                            "'table'")}
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return names >= VAULT_TABLES


BACKUP_FILE = {"what": "vault backup", "written_by_vault": is_vault_backup}


@contextmanager
def staged_backup(source: Store, path: Path,
                  force: bool = False) -> Iterator[tuple[Store, dict[str, tuple[int, str]]]]:
    """A consistent, still encrypted copy of the vault in one SQLite file (mode 0600), written
    in a private directory beside `path`. Yields it, opened, with the digests of the snapshot it
    holds; it replaces `path` only if the block (the proof) completes, else `path` is untouched
    and the copy removed. An existing `path` must be a backup vault wrote, unless `force`
    (never a link, a directory or a device): checked first and again before the rename."""
    from adapters.store.sqlite import DB_FILE, SQLiteStore

    check_output(path, force=force, **BACKUP_FILE)
    directory = path.resolve().parent
    remove_abandoned(directory, "backup")  # copies of backups that were killed
    try:
        work = _temporary_directory(dir=directory, prefix=temporary_prefix("backup"))
    except OSError as e:
        raise OutputFailed(f"cannot write {path}: {e.strerror}") from None
    try:
        staged = SQLiteStore(work, create=True)
        try:
            if isinstance(source, SQLiteStore):
                digests = source.backup_into(work / DB_FILE)
            else:
                digests = copy_store(source, staged)
            os.chmod(work / DB_FILE, 0o600)
            yield staged, digests
        finally:
            staged.close()  # the last connection folds the write-ahead log into the file
        replace_checked(work / DB_FILE, path, force=force, **BACKUP_FILE)
    except OSError as e:
        raise OutputFailed(f"cannot write {path}: {e.strerror}") from None
    finally:
        _remove(work)


def _check_intact(store: Store, path: Path) -> None:
    """SQLite's own check of every page and index: a damaged file is named as such, before any
    query on it fails half way (or an index missing rows makes a copy miss them)."""
    try:
        with store.read() as tx:
            verdict = tx.one("PRAGMA integrity_check(1)")[0]
    except (sqlite3.DatabaseError, PersistenceError) as e:
        verdict = str(e)
    if verdict != "ok":
        raise IntegrityViolation(f"{path} is damaged ({' '.join(verdict.split())[:200]}): "
                                 "restore another backup")


@contextmanager
def open_backup(path: Path) -> Iterator[Store]:
    """A backup file as a store, on a private copy: the file itself is never changed, and needs
    no private directory of its own."""
    from adapters.store.sqlite import DB_FILE, SQLiteStore

    try:
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise CopyFailed(f"{path} is not a vault backup")
    except OSError as e:
        raise InputUnreadable(f"cannot read {path}: {e.strerror}") from None
    remove_abandoned(tempfile.gettempdir(), "restore")  # copies of restores that were killed
    work = _temporary_directory(prefix=temporary_prefix("restore"))
    try:
        try:
            shutil.copyfile(path, work / DB_FILE)
        except OSError as e:
            raise CopyFailed(f"cannot copy {path} to read it: {e.strerror}") from None
        store = SQLiteStore(work, read_only=True)
        try:
            try:
                store.read_header()
            except (sqlite3.DatabaseError, PersistenceError, StoreUnavailable, NotInitialised):
                raise CopyFailed(f"{path} is not a vault backup") from None
            _check_intact(store, path)
            yield store
        finally:
            store.close()
    finally:
        _remove(work)
