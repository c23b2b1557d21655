"""PostgreSQL, for several hosts sharing one vault: VAULT_STORE=postgresql://user@host/db?schema=s.

The header, keyslots and key table live in the database, so every host unlocks the same vault with
its own keyslot. eventsourcing's postgres module does the events (its EXCLUSIVE table lock keeps
notification ids in commit order); vault's tables share the transaction. Every write transaction
takes that lock first, so writers (audit appends included) are serialised as on SQLite.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

from eventsourcing.persistence import OperationalError
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from psycopg.sql import SQL, Identifier

from adapters.errors import StoreUnavailable
from adapters.store.base import Store, Tx, WritesThroughStore, poll_lock
from adapters.store.schema import ddl
from domain.errors import InvalidInput

IDLE_IN_TRANSACTION_TIMEOUT_S = 5  # eventsourcing's default: never hold a transaction idle
LOCK_TIMEOUT_S = 30


def parse_url(url: str) -> dict[str, Any]:
    """VAULT_STORE (or `migrate --to`) as connection settings; a malformed one is bad input."""
    try:
        parts = urlsplit(url)
    except ValueError as e:  # "Invalid IPv6 URL": a '[' without its ']'
        raise InvalidInput(f"VAULT_STORE is not a valid URL ({e})") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise InvalidInput("VAULT_STORE must be a postgresql:// URL")
    query = parse_qs(parts.query)
    schema = query.pop("schema", ["public"])[0]
    if not schema.replace("_", "").isalnum():
        raise InvalidInput("the schema in VAULT_STORE must be letters, digits and _")
    if query:
        raise InvalidInput(
            f"unsupported VAULT_STORE parameter(s): {', '.join(sorted(query))} "
            "(use PG* environment variables such as PGSSLMODE)"
        )
    try:
        port = parts.port
    except ValueError:
        raise InvalidInput("the port in VAULT_STORE is not a number") from None
    # what the URL leaves out stays None: psycopg then omits it, so libpq's PG* variables,
    # ~/.pgpass and defaults apply (an empty password would keep PGPASSWORD from being read)
    return {
        "dbname": unquote(parts.path.lstrip("/")) or None,
        "host": parts.hostname or None,
        "port": port,
        "user": unquote(parts.username or "") or None,
        "password": unquote(parts.password or "") or None,
        "schema": schema,
    }


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a malformed postgresql:// URL)"  # it may hold a password: not shown
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class _Datastore(PostgresDatastore):
    def after_connect_func(self):
        inner = super().after_connect_func()
        search_path = SQL("SET search_path TO {0}").format(Identifier(self.schema))

        def after_connect(conn: Any) -> None:
            inner(conn)
            conn.cursor().execute(search_path)

        return after_connect


class PostgresStore(Store):
    dialect = "postgresql"
    notification_column = "notification_id"

    def __init__(self, url: str) -> None:
        super().__init__()
        params = self.params = parse_url(url)
        self.description = redact_url(url)
        self.schema = params["schema"]
        self.datastore = _Datastore(
            dbname=params["dbname"], host=params["host"], port=params["port"],
            user=params["user"], password=params["password"], schema=self.schema,
            connect_timeout=5, pool_size=2, max_overflow=4,
            idle_in_transaction_session_timeout=IDLE_IN_TRANSACTION_TIMEOUT_S,
            lock_timeout=LOCK_TIMEOUT_S,
        )
        try:  # the recorders look up their composite types, which connects
            self.recorder = _Recorder(self.datastore, store=self)
            self.snapshot_recorder = PostgresAggregateRecorder(
                self.datastore, events_table_name="stored_snapshots")
        except OperationalError:
            self.datastore.close()
            raise StoreUnavailable(self._why_unreachable()) from None

    def create_event_tables(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(Identifier(self.schema)))
        self.recorder.create_table()
        self.snapshot_recorder.create_table()

    blob_type, int_type = "BYTEA", "BIGINT"

    def _schema_statements(self) -> list[str]:
        return ddl(blob=self.blob_type, integer=self.int_type)

    def stored_id(self, aggregate_id: str) -> Any:
        return UUID(aggregate_id)

    def _columns(self, tx: Tx, table: str) -> set[str]:
        return {r["column_name"] for r in tx.all(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ?", (self.schema, table))}

    @contextmanager
    def _transaction(self, commit: bool, long: bool = False,
                     snapshot: bool = False) -> Iterator[Tx]:
        try:
            connection = self.datastore.get_connection()
            conn = connection.__enter__()
        except OperationalError:
            raise StoreUnavailable(self._why_unreachable()) from None
        try:
            with conn.transaction(force_rollback=not commit):
                tx = Tx(conn.cursor(), placeholder="%s",
                        stream_cursor=lambda: conn.cursor(name=f"vault_{next(_cursor_ids)}"))
                if snapshot:
                    tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    tx.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                if commit:
                    if long:
                        tx.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                    for statement in self.recorder.lock_table_statements:
                        tx.cursor.execute(statement)  # one writer at a time, as on SQLite
                yield tx
        except BaseException as e:
            if not connection.__exit__(type(e), e, e.__traceback__):
                raise
        else:
            connection.__exit__(None, None, None)

    @contextmanager
    def grant_lock(self, grant_id: str, timeout: float) -> Iterator[None]:
        """A session-level advisory lock on a connection of its own: no transaction stays open
        across the network call (eventsourcing's 5 s idle-in-transaction timeout would end it),
        and the server releases the lock if this process dies."""
        import psycopg

        key = int.from_bytes(hashlib.sha256(f"vault-grant:{grant_id}".encode()).digest()[:8],
                             "big", signed=True)
        p = self.params
        try:
            conn = psycopg.connect(dbname=p["dbname"], host=p["host"], port=p["port"],
                                   user=p["user"], password=p["password"], autocommit=True,
                                   connect_timeout=5)
        except psycopg.Error:
            raise StoreUnavailable(self._why_unreachable()) from None
        try:
            poll_lock(lambda: conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0],
                      timeout)
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        finally:
            conn.close()

    def _why_unreachable(self) -> str:
        """The pool only says it timed out; one direct attempt tells the admin why."""
        import psycopg

        p = self.params
        try:
            psycopg.connect(dbname=p["dbname"], host=p["host"], port=p["port"], user=p["user"],
                            password=p["password"], connect_timeout=3).close()
        except psycopg.Error as e:
            reason = " ".join(str(e).split())
        else:
            reason = "the connection pool timed out"
        return f"cannot reach the database {self.description}: {reason}"

    def write(self, *, long: bool = False):
        return self._transaction(commit=True, long=long)

    def read(self):
        return self._transaction(commit=False)

    def snapshot(self):
        return self._transaction(commit=False, snapshot=True)

    def after_bulk_load(self, tx: Tx) -> None:
        tx.execute("SELECT setval(pg_get_serial_sequence('stored_events', 'notification_id'), "
                   "COALESCE(MAX(notification_id), 0) + 1, false) FROM stored_events")

    def insert_stored_events(self, tx: Tx, stored_events: Sequence[Any]) -> list[int]:
        self.recorder._insert_stored_events(tx.cursor, stored_events)
        return list(self.recorder._fetch_ids_after_insert_events(tx.cursor, stored_events))

    def close(self) -> None:
        self.datastore.close()


_cursor_ids = itertools.count()


class _Recorder(WritesThroughStore, PostgresApplicationRecorder):
    pass
