"""The read models' rows as vault reads them: one dataclass per table (adapters/store/schema.py),
built from a row only once its MAC and versions are checked (vault/reads.py), and the lookups
the cached-token path (vault/fastpath.py) shares with the stores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.errors import IntegrityViolation

Tx = Any  # adapters.store.base.Tx: a cursor whose statements take `?` placeholders


@dataclass(frozen=True)
class ClientRow:
    """A client's row (view_clients)."""

    client_uuid: str
    name: str
    name_key: str
    provider: str
    cloud: str
    tenant: str | None
    client_id: str
    auth_method: str
    status: str
    google_testing: int
    active_secrets: int
    registered_at: str
    updated_at: str
    version: int
    mac: bytes | None


@dataclass(frozen=True)
class SecretRow:
    """A client secret's or certificate's row (view_secrets)."""

    client_uuid: str
    ref: str
    kind: str
    secret_id: str | None
    created_on: str | None
    expires_on: str | None
    added_at: str
    retired_at: str | None
    is_current: int
    client_version: int | None
    mac: bytes | None


@dataclass(frozen=True)
class GrantRow:
    """A consent grant's row, with its token rotation's state (view_grants)."""

    grant_uuid: str
    rotation_uuid: str
    client_uuid: str
    client_name: str
    provider: str
    google_testing: int
    mailbox: str
    mailbox_key: str
    protocols: str
    resources: str
    status: str
    status_reason: str | None
    status_changed_at: str | None
    method: str
    granted_at: str
    granted_by: str
    rt_present: int | None
    rt_generation: int | None
    rt_issued_at: str | None
    rt_last_used_at: str | None
    last_refresh_at: str | None
    refreshes: int | None
    access_expires: str | None
    last_error: str | None
    pending_attempt: int | None
    refused_since: str | None
    probes: str | None
    updated_at: str
    grant_version: int | None
    rotation_version: int | None
    mac: bytes | None


ROW_TYPES: dict[str, type] = {"view_clients": ClientRow, "view_secrets": SecretRow,
                              "view_grants": GrantRow}
ReadModelRow = ClientRow | SecretRow | GrantRow


def typed_row(table: str, row: Any) -> Any:
    """`row` (a mapping of a read-model table's columns) as its table's dataclass."""
    try:
        return ROW_TYPES[table](**row)
    except TypeError:
        raise IntegrityViolation(f"a row of {table} has other columns than vault's: the table "
                                 "was altered outside vault") from None


def columns(row: ReadModelRow) -> dict[str, Any]:
    """The row's columns by name (what its MAC covers)."""
    return dict(vars(row))


# -- lookups shared by the stores and the cached-token path --------------------------------


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
