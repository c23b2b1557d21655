"""The read side: every read-model row and setting vault shows or decides on, checked before
use (its MAC, and that it was projected from the newest stored events), then typed
(adapters/store/queries.py). What fails a check is an IntegrityViolation (exit 5), never a guess."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from adapters.errors import IntegrityViolation
from adapters.keyring import SETTINGS_KEY_ID, Keyring, forged_purge
from adapters.store.base import Reads
from adapters.store.queries import ClientRow, GrantRow, SecretRow, typed_row
from adapters.store.schema import VIEW_TABLES
from domain.mailboxes import mailbox_key

# Settings every vault holds from its start (init writes them): their absence is an edit.
THRESHOLDS_KEY = "expiry_thresholds"
T = TypeVar("T")
REQUIRED_SETTINGS = {THRESHOLDS_KEY: "{}"}


class ReadSide:
    def __init__(self, store: Reads, keyring: Keyring) -> None:
        self.store = store
        self.keyring = keyring

    def _checked(self, read: Callable[[], T]) -> T:
        """A check that failed because the seals' keys were replaced meanwhile (the last step of
        `key rotate --reencrypt`) is made again with the new ones; any other failure stands."""
        try:
            return read()
        except IntegrityViolation:
            if not self.keyring.seals_refreshed():
                raise
            return read()

    def rows(self, table: str, **equal: Any) -> list[Any]:
        return self._checked(lambda: self._rows(table, **equal))

    def models(self) -> ReadModels:
        return self._checked(self._models)

    def settings(self) -> dict[str, str]:
        return self._checked(self._settings)

    def _rows(self, table: str, **equal: Any) -> list[Any]:
        """The read-model rows whose columns equal the values given, each checked: its MAC, and
        that it was projected from the newest stored events (an older copy of a row put back is
        as much an edit as a changed one)."""
        sealer = self.keyring.rows  # the key first: one replaced after it is read again
        rows, newest = self.store.view_rows(
            table, lambda row: [aggregate for _, aggregate in _projected_from(table, row)],
            **equal)
        _check_sealed(sealer, table, rows)
        for row in rows:
            _check_projected(table, row, newest)
        return [typed_row(table, row) for row in rows]

    def _models(self) -> ReadModels:
        """Every read-model row, for a listing, from one snapshot: each row checked, and the rows
        checked against the key table and the events, so that neither a deleted row nor deleted
        events can hide a subject from status, expiry or alerts."""
        sealer = self.keyring.rows  # the key first: one replaced after it is read again
        side = self.store.read_side()
        for table in VIEW_TABLES:
            _check_sealed(sealer, table, side[table])
        for key in side["purged"]:
            if not sealer.is_tombstone(key):
                raise forged_purge(key.originator_id)
        live = {originator for originator, _ in side["live"]}
        known = {o.replace("-", "") for o in live} | {
            k.originator_id.replace("-", "") for k in side["purged"]}
        newest = side["newest"]
        strays = [o for o in newest if o not in known]
        if strays:
            raise IntegrityViolation(f"events of {strays[0]} have no data key: the key table "
                                     "was edited")
        clients = {r["client_uuid"]: r for r in side["view_clients"]}
        grants = {r["grant_uuid"]: r for r in side["view_grants"]}
        subjects = {originator for originator, subject in side["live"]
                    if originator == subject and not originator.startswith("system:")}
        missing = subjects - clients.keys() - grants.keys()
        if missing:
            raise IntegrityViolation(
                f"{sorted(missing)[0]} has a data key but no read-model row: the row was deleted "
                "outside vault; run `vault admin rebuild-projections`")
        for table, rows in (("view_clients", clients), ("view_grants", grants)):
            for row in rows.values():
                _check_projected(table, row, newest, live)
        active: dict[str, int] = dict.fromkeys(clients, 0)
        for row in side["view_secrets"]:
            owner = clients.get(row["client_uuid"])
            if owner is None or row["client_version"] != owner["version"]:
                raise IntegrityViolation(
                    f"secret {row['ref']} of {row['client_uuid']} does not match its client's "
                    "read-model row; run `vault admin rebuild-projections`")
            active[row["client_uuid"]] += row["retired_at"] is None
        for uuid, count in active.items():
            if count != clients[uuid]["active_secrets"]:
                raise IntegrityViolation(
                    f"{_row_name('view_clients', clients[uuid])} counts "
                    f"{clients[uuid]['active_secrets']} active secrets, its secret rows {count}: "
                    "rows were deleted outside vault; run `vault admin rebuild-projections`")
        return ReadModels(
            clients=[typed_row("view_clients", r)
                     for r in sorted(clients.values(), key=lambda r: r["name_key"])],
            secrets=[typed_row("view_secrets", r) for r in sorted(side["view_secrets"], key=lambda r: (
                clients[r["client_uuid"]]["name_key"], r["ref"]))],
            grants=[typed_row("view_grants", r) for r in sorted(
                grants.values(), key=lambda r: (r["mailbox_key"], r["client_name"]))])

    def grants_of(self, client_uuid: str, mailbox: str | None = None) -> list[GrantRow]:
        """A client's grant rows (of one mailbox), from a checked listing, for the decisions that
        create or destroy: a row deleted outside vault must not make a mailbox look free to grant
        again, or a client look unused to purge."""
        key = mailbox_key(mailbox) if mailbox is not None else None
        return [r for r in self.models().grants if r.client_uuid == client_uuid
                and key in (None, r.mailbox_key)]

    def _settings(self) -> dict[str, str]:
        """The shared settings, each row checked, and all of the version the settings' recorded
        head names: an older copy of a row put back, or a setting every vault has deleted
        (deleting a lowered threshold must not quietly bring back the default), is refused."""
        sealer = self.keyring.rows  # the key first: one replaced after it is read again
        rows, key = self.store.settings(SETTINGS_KEY_ID)
        version = self.keyring.verified_head(SETTINGS_KEY_ID, key)
        repair = "; set it again with `vault config set`"
        for row in rows:
            if not sealer.valid("vault_settings", row):
                raise IntegrityViolation(f"the setting {row['key']} was edited outside vault"
                                         + repair)
            if row["version"] != version:
                raise IntegrityViolation(f"the setting {row['key']} is from version "
                                         f"{row['version']} of the settings, not {version}: an "
                                         "older copy was put back" + repair)
        settings = {row["key"]: row["value"] for row in rows}
        missing = REQUIRED_SETTINGS.keys() - settings.keys()
        if missing:
            raise IntegrityViolation(f"the setting {sorted(missing)[0]} was deleted outside "
                                     "vault" + repair)
        return settings


class ReadModels(NamedTuple):
    """The read models as one listing sees them: checked rows, in display order."""

    clients: list[ClientRow]
    secrets: list[SecretRow]
    grants: list[GrantRow]


def _check_sealed(sealer: Any, table: str, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if not sealer.valid(table, row):
            sealer.check(table, row, _row_name(table, row))  # says which, and raises


def _projected_from(table: str, row: dict[str, Any]) -> list[tuple[str, str]]:
    """(version column, aggregate id) of each aggregate a read-model row was projected from."""
    if table == "view_clients":
        return [("version", row["client_uuid"])]
    if table == "view_grants":
        return [("grant_version", row["grant_uuid"]), ("rotation_version", row["rotation_uuid"])]
    return []  # a secret's row: checked against its client's


def _check_projected(table: str, row: dict[str, Any], newest: dict[str, int],
                     live: set[str] | None = None) -> None:
    """The row was projected from the newest stored events of its aggregates (and, for a
    listing, each has its data key)."""
    for column, aggregate in _projected_from(table, row):
        if live is not None and aggregate not in live:
            raise IntegrityViolation(f"{_row_name(table, row)} has no data key (or was "
                                     "purged): the row or the key table was edited outside vault")
        stored = newest.get(aggregate.replace("-", ""), 0)
        if row[column] != stored:
            raise IntegrityViolation(
                f"{_row_name(table, row)} was projected from version {row[column]} of "
                f"{aggregate}, whose events end at version {stored}: "
                + ("its newest events were deleted" if isinstance(row[column], int)
                   and row[column] > stored else
                   "an older copy of the row was put back, or it is stale; run `vault admin "
                   "rebuild-projections`"))


def _row_name(table: str, row: dict[str, Any]) -> str:
    """How an error names a row (its values are shown through the CLI's escaping)."""
    if table == "view_grants":
        return f"the read-model row of {row.get('mailbox')} ({row.get('client_name')})"
    if table == "view_clients":
        return f"the read-model row of client {row.get('name')}"
    return f"a row of {table}"
