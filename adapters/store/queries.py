"""The read models' rows as vault reads them: one NamedTuple per table (adapters/store/schema.py),
built from a row only once its MAC and versions are checked (vault/reads.py). The lookups the
stores share with the light paths are in lookups.py."""

from __future__ import annotations

from typing import Any, NamedTuple

from adapters.errors import IntegrityViolation


class ClientRow(NamedTuple):
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
    entra_foreign: str | None  # JSON: credentials Entra lists that vault does not hold
    renewal: str | None  # JSON: a renewal through Graph under way (its stage and times)
    registered_at: str
    updated_at: str
    version: int
    mac: bytes | None


class SecretRow(NamedTuple):
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
    entra_expires_on: str | None  # what the last `client sync` read at Entra
    at_entra: int | None  # 1: Entra lists it, 0: no longer, None: never synced
    client_version: int | None
    mac: bytes | None


class GrantRow(NamedTuple):
    """A consent grant's row, with its token rotation's state (view_grants)."""

    grant_uuid: str
    rotation_uuid: str
    client_uuid: str
    client_name: str
    provider: str
    google_testing: int
    mailbox: str
    mailbox_key: str
    login: str | None  # the mail server's user name, where it is not the mailbox
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
    """`row` (a mapping of a read-model table's columns) as its table's row type."""
    try:
        return ROW_TYPES[table](**row)
    except TypeError:
        raise IntegrityViolation(f"a row of {table} has other columns than vault's: the table "
                                 "was altered outside vault") from None


def columns(row: ReadModelRow) -> dict[str, Any]:
    """The row's columns by name (what its MAC covers)."""
    return row._asdict()
