"""The cached-token path of `vault token`, kept light: mail clients call it for every connection.

It handles exactly one case: the embedded SQLite store, a key-file unlock, and an access token
still valid for --min-valid. It reads the header, unlocks, finds the grant in the read model
(checking the row's MAC) with the stores' own lookups (adapters/store/lookups.py), decrypts the
newest events of its TokenRotation (checking the recorded head version), writes the audit entry
through the audit broker (once the signed head proves the log), and prints. It imports no
eventsourcing, click or HTTP code. Anything else (a refresh, a passphrase, PostgreSQL,
an error of any kind) returns None, and the full CLI runs the same command from the start with
everything it needs, errors and messages included.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from typing import Any

from domain import topics
from domain.vocabulary import ACTIVE, PROTOCOLS, TOKEN_FORMATS
from vault.render.tokens import render_token

GLOBAL_OPTIONS = {"--home", "--key-file", "--keyslot", "--ca-file"}
TOKEN_OPTIONS = {"--client", "--protocol", "--format", "--min-valid"}
EVENTS_SCANNED = 64


def _parse(args: list[str]) -> dict[str, str] | None:
    """`[global options] token MAILBOX [options]`, or None for anything else."""
    options: dict[str, str] = {}
    positional: list[str] = []
    i, seen_command = 0, False
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            name, _, value = arg.partition("=")
            allowed = TOKEN_OPTIONS if seen_command else GLOBAL_OPTIONS
            if name not in allowed:
                return None
            if not value:
                if i + 1 >= len(args):
                    return None
                value = args[i + 1]
                i += 1
            options[name] = value
        elif not seen_command:
            if arg != "token":
                return None
            seen_command = True
        else:
            positional.append(arg)
        i += 1
    if not seen_command or len(positional) != 1:
        return None
    options["mailbox"] = positional[0]
    return options


def _decode(data: bytes) -> dict[str, Any]:
    """eventsourcing's JSON transcoding, for the few types a TokensIssued event holds."""
    from domain.secret_value import SecretValue

    def hook(obj: dict[str, Any]) -> Any:
        if len(obj) == 2 and "_type_" in obj and "_data_" in obj:
            kind, value = obj["_type_"], obj["_data_"]
            if kind == "secret":
                return SecretValue(value)
            if kind == "datetime_iso":
                return datetime.fromisoformat(value)
            return value
        return obj

    return json.loads(data, object_hook=hook)


def cached_token(args: list[str]) -> str | None:
    """The command's whole output when the cached path applies, else None (run the full CLI)."""
    options = _parse(args)
    if options is None or os.environ.get("VAULT_STORE"):
        return None
    from adapters.keyslots import key_file_from_environment

    key_file = options.get("--key-file") or key_file_from_environment()
    protocol = options.get("--protocol", "imap")
    fmt = options.get("--format", "token")
    try:
        min_valid = timedelta(seconds=int(options.get("--min-valid", "300")))
        slot_id = int(options["--keyslot"]) if "--keyslot" in options else None
    except ValueError:
        return None
    if not key_file or protocol not in PROTOCOLS or fmt not in TOKEN_FORMATS or \
            not 0 <= min_valid.total_seconds() <= 3000:
        return None
    home = options.get("--home") or os.environ.get("VAULT_HOME")
    if home is None:
        from platformdirs import user_data_dir

        home = user_data_dir("vault", appauthor=False)
    elif home.startswith("~"):
        home = os.path.expanduser(home)
        if home.startswith("~"):  # ~name of no known user: the full CLI says so
            return None
    db = os.path.join(home, "vault.db")
    if not _own_private_home(home, db):
        return None  # the full CLI says what is wrong with it
    try:
        conn = sqlite3.connect(db, isolation_level=None, timeout=30)  # a path, never a URI
    except sqlite3.Error:
        return None
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA synchronous = FULL")
        return _serve(conn, key_file, slot_id, options, protocol, fmt, min_valid)
    except Exception:  # noqa: BLE001 - any surprise: the full CLI does it properly
        return None
    finally:
        conn.close()


def _own_private_home(home: str, db_file: str) -> bool:
    """The vault directory and its database exist, are this user's own, and the directory is
    private (the full CLI's checks, without their messages)."""
    try:
        directory, db = os.stat(home), os.stat(db_file)
    except OSError:  # missing, or a directory this user cannot search
        return False
    uid = os.geteuid()
    return (stat.S_ISDIR(directory.st_mode) and stat.S_ISREG(db.st_mode)
            and not directory.st_mode & 0o077 and directory.st_uid == uid and db.st_uid == uid)


def _serve(conn: sqlite3.Connection, key_file: str, slot_id: int | None,
           options: dict[str, str], protocol: str, fmt: str, min_valid: timedelta) -> str | None:
    from adapters import crypto
    from adapters.keyring import AUDIT_KEY_ID, ROWS_KEY_ID, SIGNING_KEY_ID, Keyring, event_aad
    from adapters.keyslots import SealedHeader, read_key_file, unlock
    from adapters.store import lookups
    from adapters.store.base import Tx, append_audit, key_row_of
    from vault.audit import AuditBroker, os_actor

    tx = Tx(conn.cursor())
    header_row = lookups.header_row(tx)
    sealed = SealedHeader(header_row["body"], header_row["checksum"], header_row["mac"])
    header = sealed.parse()
    root, _ = unlock(header, read_key_file(key_file), slot_id)
    sealed.verify_mac(root)

    keyring = Keyring(None, root, header.vault_id)  # type: ignore[arg-type] - keys loaded here
    keyring.load(key_row_of(r) for r in lookups.key_rows(tx, ROWS_KEY_ID, AUDIT_KEY_ID,
                                                         SIGNING_KEY_ID))
    rows_sealer = keyring.rows  # every row used is one vault wrote
    match = {"mailbox_key": options["mailbox"].strip().casefold()}
    if "--client" in options:
        clients = lookups.view_rows(tx, "view_clients", name_key=options["--client"].casefold())
        if len(clients) != 1 or not rows_sealer.valid("view_clients", clients[0]):
            return None
        match["client_uuid"] = clients[0]["client_uuid"]
    rows = lookups.view_rows(tx, "view_grants", **match)
    if len(rows) != 1 or not rows_sealer.valid("view_grants", rows[0]):
        return None
    grant = rows[0]  # its columns, checked; not a GrantRow, whose dataclass this path never builds
    if grant["status"] != ACTIVE or protocol not in grant["protocols"].split(","):
        return None
    resource = json.loads(grant["resources"])[protocol]
    rotation_id = grant["rotation_uuid"]

    (key_row,) = [key_row_of(r) for r in lookups.key_rows(tx, rotation_id)]
    keyring.load([key_row])
    head = keyring.verified_head(rotation_id, key_row)
    events = lookups.newest_events(tx, rotation_id, EVENTS_SCANNED)
    if not events or events[0]["originator_version"] < head or \
            events[0]["originator_version"] != grant["rotation_version"]:
        return None
    found = None
    for event in events:
        topic = event["topic"]
        if topic in (topics.TOKENS_DISCARDED, topics.ROTATION_RESEEDED, topics.LINEAGE_STARTED):
            return None
        if topic != topics.TOKENS_ISSUED:
            continue
        blob = bytes(event["state"])
        state = _decode(crypto.unseal(
            keyring.key(rotation_id), blob[1:],
            event_aad(rotation_id, event["originator_version"], topic), "stored event"))
        if state["resource"] == resource:
            found = state
            break
    now = datetime.now(UTC)
    if found is None or found["access_expires_at"] - min_valid <= now:
        return None

    def append(sealer: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            append_audit(Tx(conn.cursor()), sealer)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    broker = AuditBroker(vault_id=header.vault_id, public_key=header.audit_public_key,
                         actor=os_actor(), clock=lambda: now, keys=keyring.key, append=append)

    def hand_out() -> str:
        broker.record.subject.update({"client": grant["client_name"], "mailbox": grant["mailbox"]})
        broker.record.detail.update({"protocol": protocol, "revealed": "access_token",
                                     "resource": resource, "refreshed": False})
        return render_token(fmt, token=found["access_token"].reveal(), mailbox=grant["mailbox"],
                            expires_at=found["access_expires_at"], resource=resource,
                            refreshed=False)

    return broker.run("token", hand_out)
