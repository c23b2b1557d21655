"""What a database failure that is not vault's doing means, in one line for the admin: a full
disk, a read-only file system, a PostgreSQL connection that was cut (a server restart, an admin
ending the session). The drivers say "disk I/O error" or "terminating connection due to
administrator command", wrapped by eventsourcing in its own exception classes; the cause is found
anywhere in the exception's chain. Every write is one transaction, so after any of these nothing
was changed."""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from eventsourcing.persistence import PersistenceError

from adapters.errors import IntegrityViolation

CONNECTION_LOST = "the database connection was lost (the server restarted or ended the session)"


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__
                                        else current.__context__)


def _sqlite_reason(error: BaseException, home: Path | None) -> str | None:
    name = getattr(error, "sqlite_errorname", None) or ""
    text = str(error).lower()
    if name == "SQLITE_FULL" or "database or disk is full" in text:
        return "the disk is full"
    if name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return _file_system_reason(home) or "the database file cannot be written (read-only)"
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")) or "disk i/o error" in text or \
            "unable to open database file" in text:
        # SQLite says "disk I/O error" for a write (or a -shm file) that failed: the file
        # system tells why
        return _file_system_reason(home)
    return None


def _file_system_reason(home: Path | None) -> str | None:
    if home is None:
        return None
    try:
        fs = os.statvfs(home)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return "it is on a read-only file system"
    if fs.f_bavail == 0 or fs.f_favail == 0:
        return "the disk is full"
    return None


# SQLSTATE classes: 08 connection exception, 57P operator intervention (shutdown, restart)
_CONNECTION_LOST = ("terminating connection", "server closed the connection",
                    "connection is closed", "consuming input failed", "connection is lost",
                    "ssl connection has been closed", "connection has been lost")


def _postgres_reason(error: BaseException) -> str | None:
    state = getattr(error, "sqlstate", None) or ""
    text = str(error).lower()
    if state == "53100":
        return "the database server's disk is full"
    if state == "25006":
        return "the database is read-only (a standby server?)"
    if state.startswith(("08", "57P")) or any(words in text for words in _CONNECTION_LOST):
        return CONNECTION_LOST
    return None


_UNDECODABLE = re.compile(r"Could not decode to UTF-8 column '([^']*)'")


def undecodable_text(error: BaseException) -> IntegrityViolation | None:
    """SQLite's "Could not decode to UTF-8" (raised by its C decoder, anywhere in the chain):
    vault writes UTF-8 only, so the text was written by someone else."""
    for cause in _chain(error):
        found = _UNDECODABLE.search(str(cause))
        if found:
            return IntegrityViolation(f"the stored text of column {found.group(1)!r} is not "
                                      "UTF-8: the database was edited outside vault or is "
                                      "damaged")
    return None


def explain_store_failure(error: BaseException, store: str,
                          home: Path | None = None) -> str | None:
    """One line saying why the store `store` (its description; `home`: a SQLite store's
    directory, None for PostgreSQL) failed, or None when `error` is no failure of the disk or
    the connection."""
    for cause in _chain(error):
        translated = isinstance(cause, PersistenceError)  # the driver's words, kept as text
        if isinstance(cause, sqlite3.Error) or (translated and home is not None):
            reason = _sqlite_reason(cause, home)
        elif type(cause).__module__.split(".")[0] == "psycopg" or translated:
            reason = _postgres_reason(cause)
        else:
            continue
        if reason:
            again = ", run it again" if reason == CONNECTION_LOST else ""
            return f"{store}: {reason}; nothing was changed{again}"
    return None
