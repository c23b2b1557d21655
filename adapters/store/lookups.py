"""The lookups the stores share with the cached-token path (vault/fastpath.py), kept apart from
the row types (queries.py): building those dataclasses would add about 3 ms of CPU to every
cached `vault token`, a mail client's each connection."""

from __future__ import annotations

from typing import Any

Tx = Any  # adapters.store.base.Tx: a cursor whose statements take `?` placeholders


def check_identifier(name: str) -> str:
    """A table or column name vault itself chose (never one from input)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"bad SQL identifier {name!r}")
    return name


def header_row(tx: Tx) -> Any:
    return tx.one("SELECT body, checksum, mac FROM vault_header WHERE id = 1")


def key_rows(tx: Tx, *originators: str) -> list[Any]:
    """The key rows of the given originators (unchecked: see adapters.store.base.key_row_of)."""
    marks = ", ".join("?" for _ in originators)
    return tx.all(f"SELECT * FROM vault_keys WHERE originator_id IN ({marks})", originators)


def view_rows(tx: Tx, table: str, **equal: Any) -> list[dict[str, Any]]:
    """The rows of a read-model table whose columns equal the values given (unchecked)."""
    where = " AND ".join(f"{check_identifier(c)} = ?" for c in equal)
    sql = f"SELECT * FROM {check_identifier(table)}" + (f" WHERE {where}" if where else "")
    return [dict(r) for r in tx.all(sql, tuple(equal.values()))]


def newest_events(tx: Tx, originator_id: str, limit: int) -> list[Any]:
    """The newest `limit` stored events of an aggregate (SQLite's hex ids), newest first."""
    return tx.all("SELECT originator_version, topic, state FROM stored_events "
                  "WHERE originator_id = ? ORDER BY originator_version DESC LIMIT ?",
                  (originator_id.replace("-", ""), limit))
