"""The embedded default: one SQLite file under VAULT_HOME (directory 0700, files 0600).

WAL mode with synchronous=FULL (a rotated refresh token must survive a power cut), a generous
busy timeout, BEGIN IMMEDIATE for every write (read-then-write never meets SQLITE_BUSY half way),
and secure_delete so a purge zeroes the pages it frees.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

from eventsourcing.persistence import IntegrityError, OperationalError, PersistenceError
from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteCursor,
    SQLiteDatastore,
)

from adapters.errors import (
    NotInitialised,
    StoreUnavailable,
    UnsafeFile,
)
from adapters.store.base import Store, Tx, WritesThroughStore, poll_lock
from adapters.store.failures import undecodable_text
from adapters.store.schema import ddl

DB_FILE = "vault.db"
BUSY_TIMEOUT_S = 30


class _PrivatePool(SQLiteConnectionPool):
    """Connections with vault's pragmas; read-only connections for auditors' copies."""

    read_only = False

    def _create_connection(self) -> SQLiteConnection:
        if self.read_only:
            try:
                raw = sqlite3.connect(self.db_name, uri=True, check_same_thread=False,
                                      isolation_level=None, timeout=BUSY_TIMEOUT_S)
            except sqlite3.Error as e:
                raise StoreUnavailable(f"cannot open {self.db_name}: {e}") from None
            raw.row_factory = sqlite3.Row
            return SQLiteConnection(sqlite_conn=raw, max_age=self.max_age)
        conn = super()._create_connection()
        raw = conn._sqlite_conn
        raw.execute("PRAGMA synchronous = FULL")
        raw.execute("PRAGMA secure_delete = ON")
        raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        return conn


class _Datastore(SQLiteDatastore):
    def __init__(self, db_name: str, *, read_only: bool) -> None:
        super().__init__(db_name, lock_timeout=BUSY_TIMEOUT_S, pool_size=2, max_overflow=4)
        self.pool.close()
        pool = _PrivatePool(db_name=db_name, lock_timeout=BUSY_TIMEOUT_S, pool_size=2,
                            max_overflow=4)
        pool.read_only = read_only
        self.pool = pool


def _translate(error: sqlite3.Error) -> Exception:
    undecodable = undecodable_text(error)
    if undecodable:
        return undecodable
    if isinstance(error, sqlite3.IntegrityError):
        return IntegrityError(str(error))
    if isinstance(error, sqlite3.OperationalError):
        return OperationalError(str(error))
    return PersistenceError(str(error))


class SQLiteStore(Store):
    dialect = "sqlite"
    notification_column = "rowid"

    def __init__(self, home: Path, *, read_only: bool = False, create: bool = False) -> None:
        super().__init__()
        self.home = home
        self.path = home / DB_FILE
        self.description = f"{home}"
        self.read_only = read_only
        if create:
            _make_private_dir(home)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        else:
            _check_private_dir(home)
        # '#', '?' and '%' in a path must not end the file name; a name that is not UTF-8 is
        # quoted byte for byte
        quoted = quote(os.fsencode(self.path))
        uri = f"file:{quoted}?{_read_only_mode(self.path)}" if read_only else f"file:{quoted}"
        self.datastore = _Datastore(uri, read_only=read_only)
        self.recorder = _Recorder(self.datastore, store=self)
        self.snapshot_recorder = SQLiteAggregateRecorder(
            self.datastore, events_table_name="stored_snapshots")

    def create_event_tables(self) -> None:
        self.recorder.create_table()
        self.snapshot_recorder.create_table()

    blob_type, int_type = "BLOB", "INTEGER"

    def originator_param(self, originator_id: str) -> Any:
        return UUID(originator_id).hex  # as eventsourcing's SQLite recorder stores it

    def _schema_statements(self) -> list[str]:
        return ddl(blob=self.blob_type, integer=self.int_type)

    def _columns(self, tx: Tx, table: str) -> set[str]:
        return {r["name"] for r in tx.all(f"PRAGMA table_info({table})")}

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Tx]:
        with self.datastore.get_connection(commit=begin != "BEGIN") as conn:
            raw: sqlite3.Connection = conn._sqlite_conn
            try:
                raw.execute(begin)
            except sqlite3.Error as e:
                raise _translate(e) from None
            try:
                yield Tx(raw.cursor())
            except sqlite3.Error as e:
                raw.rollback()
                raise _translate(e) from None
            except BaseException:
                raw.rollback()
                raise
            try:
                raw.commit() if begin != "BEGIN" else raw.rollback()
            except sqlite3.Error as e:
                raw.rollback()
                raise _translate(e) from None

    def write(self, *, long: bool = False):
        return self._transaction("BEGIN IMMEDIATE")

    def read(self):
        return self._transaction("BEGIN")

    def insert_stored_events(self, tx: Tx, stored_events: Sequence[Any]) -> list[int]:
        return list(SQLiteApplicationRecorder._insert_events(
            self.recorder, SQLiteCursor(tx.cursor), stored_events) or [])

    @contextmanager
    def grant_lock(self, grant_id: str, timeout: float) -> Iterator[None]:
        """flock on VAULT_HOME/locks/<grant>.lock: released by the kernel if the process dies."""
        import fcntl

        directory = self.home / "locks"
        directory.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(directory / f"{grant_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)

        def try_lock() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        try:
            poll_lock(try_lock, timeout)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def backup_into(self, target: Path) -> dict[str, tuple[int, str]]:
        """SQLite's online backup API, run inside a read transaction on the same connection: the
        copy and the digests returned (to prove it) are of one snapshot, while others write."""
        from adapters.store.copying import digests_in

        with self._transaction("BEGIN") as tx:
            tx.execute("SELECT COUNT(*) FROM vault_meta")  # the snapshot starts here (WAL)
            destination = sqlite3.connect(target)
            try:
                tx.cursor.connection.backup(destination)
            finally:
                destination.close()
            return digests_in(self, tx)

    def wipe_freed_pages(self) -> str | None:
        """Move the WAL into the database (whose freed pages secure_delete zeroed) and empty it."""
        with self.datastore.get_connection(commit=True) as conn:
            busy, _, _ = conn._sqlite_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            return ("another process is reading the vault, so the write-ahead log still holds "
                    "old pages; they are overwritten as the vault is used, or run any command "
                    "again when it is idle")
        return None

    def close(self) -> None:
        self.datastore.close()

    def holds(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.home.resolve())


class _Recorder(WritesThroughStore, SQLiteApplicationRecorder):
    pass


def _read_only_mode(path: Path) -> str:
    """URI parameters that open the database read-only and still read its write-ahead log.

    A WAL database is read through its -shm index, which SQLite creates if it is missing. Where
    it cannot (read-only media), the file alone is the whole database when there is no log
    (`immutable`); with a log but no index nothing can read it correctly (`immutable` would
    ignore the log and show an older state), so that is refused, saying what to do."""
    if os.access(path.parent, os.W_OK) or not path.exists():
        return "mode=ro"
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    try:
        logged = wal.stat().st_size > 0
    except FileNotFoundError:
        logged = False
    if not logged:
        return "mode=ro&immutable=1"
    if shm.exists():
        return "mode=ro"  # SQLite reads an existing log through an existing index
    raise StoreUnavailable(
        f"{path} cannot be read here: its write-ahead log ({wal.name}) holds the newest "
        f"changes, and its index ({shm.name}) is missing and cannot be created on this "
        "read-only file system. Copy the directory to writable storage (cp -a) and run the "
        "command on the copy, or mount it read-write")


def _make_private_dir(home: Path) -> None:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private_dir(home)


def _check_private_dir(home: Path) -> None:
    try:
        info = home.stat()
    except FileNotFoundError:
        raise NotInitialised(f"no vault at {home} (run `vault init`, or set VAULT_HOME)") from None
    except OSError as e:  # a parent this user cannot search, a name too long ...
        raise StoreUnavailable(f"cannot open the vault directory {home}: {e.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise StoreUnavailable(f"{home} is not a directory")
    if info.st_mode & 0o077:
        raise UnsafeFile(
            f"vault directory {home} is accessible by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 700 {home}"
        )
    # Whoever owns the directory can swap vault.db or roll it back to an older copy: it must be
    # this user's own, root included (root opens a service user's vault as that user).
    _check_own(home, info, "vault directory")
    try:
        db = (home / DB_FILE).stat()
    except FileNotFoundError:
        return
    except OSError as e:
        raise StoreUnavailable(f"cannot open {home / DB_FILE}: {e.strerror}") from None
    _check_own(home / DB_FILE, db, "vault database")


def _check_own(path: Path, info: os.stat_result, what: str) -> None:
    if info.st_uid != os.geteuid():
        raise UnsafeFile(
            f"{what} {path} belongs to user id {info.st_uid}, not to this user "
            f"({os.geteuid()}): run vault as its owner (e.g. runuser -u OWNER -- vault ...), "
            "or chown it if it really is yours")
