"""Stores: the embedded SQLite default, or PostgreSQL when VAULT_STORE=postgresql://..."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.store.base import (
    AuditAppender,
    AuditRow,
    Checkpoint,
    Delete,
    Head,
    KeyRow,
    Store,
    Tx,
    Update,
    Upsert,
    ViewChange,
)

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "AuditAppender", "AuditRow", "Checkpoint", "Delete", "Head", "KeyRow", "Store", "Tx",
    "Update", "Upsert", "ViewChange", "open_store",
]


def open_store(
    home: Path, store_url: str | None, *, create: bool = False, read_only: bool = False
) -> Store:
    """The one place that picks a database: PostgreSQL if a URL is given, else SQLite in home."""
    if store_url:
        from adapters.store.postgres import PostgresStore  # psycopg only when asked for

        return PostgresStore(store_url)
    from adapters.store.sqlite import SQLiteStore

    return SQLiteStore(home, create=create, read_only=read_only)
