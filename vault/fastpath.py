"""The light paths of the `vault` command, for what is called often and must start fast: the
cached `vault token` (mail clients call it for every connection) and the plain listings
`vault status`, `vault expiry` and `vault grant list` (monitoring, cron, scripts).

They handle exactly one case: the embedded SQLite store, a key-file unlock, a vault at the
current schema, the commands' plain forms (table or JSON, no other option) and, for the token,
an access token still valid for --min-valid. They read the header, unlock, check every row
they use as the full CLI does (the stores' own reads, adapters/store/base.py `Reads`, and the
read side, vault/reads.py), compute with the same code (vault/listings.py), write the audit
entry through the audit broker (once the signed head proves the log), and return the whole
output, which vault/entry.py prints. They import no eventsourcing, click, HTTP code or
aggregate. Anything else (a refresh, a passphrase, PostgreSQL, an option they do not take, an
error of any kind) returns None before anything is written, and the full CLI runs the same
command from the start with everything it needs, errors and messages included.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from domain import topics
from domain.vocabulary import ACTIVE, EXPIRY_FORMATS, LISTING_FORMATS, PROTOCOLS, TOKEN_FORMATS
from vault.lightargs import parse

EVENTS_SCANNED = 64


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


def light_output(args: list[str]) -> str | None:
    """The command's whole output when a light path applies, else None (run the full CLI)."""
    parsed = parse(args)
    if parsed is None or os.environ.get("VAULT_STORE"):
        return None
    command, options, positional = parsed
    from adapters.keyslots import key_file_from_environment

    key_file = options.get("--key-file") or key_file_from_environment()
    try:
        slot_id = int(options["--keyslot"]) if "--keyslot" in options else None
    except ValueError:
        return None
    if not key_file:
        return None
    home = options["--home"] if "--home" in options else os.environ.get("VAULT_HOME")
    if home == "":
        return None  # the full CLI says what an empty name means
    if home is None:
        from platformdirs import user_data_dir

        home = user_data_dir("vault", appauthor=False)
    elif home.startswith("~"):
        home = os.path.expanduser(home)
        if home.startswith("~"):  # ~name of no known user: the full CLI says so
            return None
    # absolute: SQLite reads a name that starts with "file:" as a URI, which could name
    # another file than the one whose privacy is checked here
    db = os.path.abspath(os.path.join(home, "vault.db"))
    if not _own_private_home(home, db):
        return None  # the full CLI says what is wrong with it
    try:
        conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    except sqlite3.Error:
        return None
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA secure_delete = ON")  # as the store's own connections
        if command == ("token",):
            return _token(conn, key_file, slot_id, options, positional[0])
        return _listing(conn, key_file, slot_id, command, options)
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


def _unlock(db: Any, key_file: str, slot_id: int | None) -> tuple[Any, Any]:
    """The header (checksum, then its MAC under the root key) and a keyring holding the keys
    of the read-model seals and the audit log; other keys are read when first used."""
    from adapters.keyring import AUDIT_KEY_ID, ROWS_KEY_ID, SIGNING_KEY_ID, Keyring
    from adapters.keyslots import SealedHeader, read_key_file, unlock
    from adapters.store import lookups
    from adapters.store.base import key_row_of

    with db.read() as tx:
        header_row = lookups.header_row(tx)
        sealed = SealedHeader(header_row["body"], header_row["checksum"], header_row["mac"])
        header = sealed.parse()
        root, _ = unlock(header, read_key_file(key_file), slot_id)
        sealed.verify_mac(root)
        keyring = Keyring(db, root, header.vault_id, header.key_generation)
        keyring.load(key_row_of(r) for r in lookups.key_rows(tx, ROWS_KEY_ID, AUDIT_KEY_ID,
                                                             SIGNING_KEY_ID))
    return header, keyring


def _broker(conn: sqlite3.Connection, header: Any, keyring: Any, now: datetime) -> Any:
    """The audit broker, appending each entry in a write transaction of its own."""
    from adapters.store.base import Tx, append_audit
    from vault.audit import AuditBroker, os_actor

    def append(sealer: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            append_audit(Tx(conn.cursor()), sealer)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    return AuditBroker(vault_id=header.vault_id, public_key=header.audit_public_key,
                       actor=os_actor(), clock=lambda: now, keys=keyring.key, append=append)


def _connection(conn: sqlite3.Connection) -> Any:
    """The stores' own reads (adapters/store/base.py `Reads`) over this one connection."""
    from adapters.store.base import Reads, Tx

    class Connection(Reads):
        @contextlib.contextmanager
        def read(self) -> Iterator[Tx]:
            conn.execute("BEGIN")
            try:
                yield Tx(conn.cursor())
            finally:
                conn.execute("ROLLBACK")

    return Connection()


def _token(conn: sqlite3.Connection, key_file: str, slot_id: int | None,
           options: dict[str, str], mailbox: str) -> str | None:
    from adapters import crypto
    from adapters.keyring import event_aad
    from adapters.store import lookups
    from adapters.store.base import Tx, key_row_of
    from vault.render.tokens import render_token

    protocol = options.get("--protocol", "imap")
    fmt = options.get("--format", "token")
    min_valid = timedelta(seconds=int(options.get("--min-valid", "300")))
    host, port = options.get("--host"), int(options["--port"]) if "--port" in options else None
    if protocol not in PROTOCOLS or fmt not in TOKEN_FORMATS or \
            not 0 <= min_valid.total_seconds() <= 3000 or \
            (port is not None and not 1 <= port <= 65535) or \
            ((host or port) and fmt != "oauthbearer"):
        return None
    if fmt == "oauthbearer" and not (host and port):
        return None  # the client's server: its aggregate knows it, the read model does not
    header, keyring = _unlock(_connection(conn), key_file, slot_id)
    tx = Tx(conn.cursor())
    rows_sealer = keyring.rows  # every row used is one vault wrote
    match = {"mailbox_key": mailbox.strip().casefold()}
    if "--client" in options:
        clients = lookups.view_rows(tx, "view_clients", name_key=options["--client"].casefold())
        if len(clients) != 1 or not rows_sealer.valid("view_clients", clients[0]):
            return None
        match["client_uuid"] = clients[0]["client_uuid"]
    rows = lookups.view_rows(tx, "view_grants", **match)
    if len(rows) != 1 or not rows_sealer.valid("view_grants", rows[0]):
        return None
    grant = rows[0]  # its columns, checked; not a GrantRow, whose dataclass this path never builds
    if grant["status"] != ACTIVE or protocol not in grant["protocols"].split(",") or \
            "login" not in grant:  # an earlier schema's: the full CLI upgrades it
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
    broker = _broker(conn, header, keyring, now)

    def hand_out() -> str:
        broker.record.subject.update({"client": grant["client_name"], "mailbox": grant["mailbox"]})
        broker.record.detail.update({"protocol": protocol, "revealed": "access_token",
                                     "resource": resource, "refreshed": False})
        return render_token(fmt, token=found["access_token"].reveal(), mailbox=grant["mailbox"],
                            login=grant["login"] or grant["mailbox"],
                            expires_at=found["access_expires_at"], resource=resource,
                            refreshed=False, host=host, port=port) + "\n"

    return broker.run("token", hand_out)


def _listing(conn: sqlite3.Connection, key_file: str, slot_id: int | None,
             command: tuple[str, ...], options: dict[str, str]) -> str | None:
    """`status`, `expiry` or `grant list`, as the full CLI computes and prints them: the read
    models checked as a listing checks them, the settings as every reader checks them."""
    from vault.listings import (
        expiry_of,
        grant_listing,
        refusal_interval,
        status_of,
        thresholds_of,
    )
    from vault.reads import ReadSide
    from vault.render.listings import expiry_table, grant_list_table, status_table
    from vault.render.tables import emit, plain_output

    given = options.get("--format", "table")
    if given not in (EXPIRY_FORMATS if command == ("expiry",) else LISTING_FORMATS) or \
            given == "prometheus" or not plain_output():
        return None  # click refuses it; prometheus wins over --json; a terminal: rich measures
    fmt = "json" if "--json" in options else given
    db = _connection(conn)
    header, keyring = _unlock(db, key_file, slot_id)
    if not header.row_macs:
        return None  # a vault from before sealed rows: the full CLI upgrades it first
    reads = ReadSide(db, keyring)
    now = datetime.now(UTC)
    broker = _broker(conn, header, keyring, now)
    models = reads.models()
    thresholds = thresholds_of(reads.settings())
    detail: dict[str, Any] = {}
    if command == ("status",):
        data, render = status_of(models, thresholds, now.date()), status_table
    elif command == ("expiry",):
        data, render = expiry_of(models, thresholds, now.date()), expiry_table
        detail = {"as_of": data.as_of, "findings": len(data.findings)}
    else:
        interval = refusal_interval(thresholds)
        data, render = [grant_listing(r, interval) for r in models.grants], grant_list_table
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        emit(data, fmt, render)

    def shown() -> str:  # only once everything above held: a failure writes no entry here
        broker.record.detail.update(detail)
        return out.getvalue()

    return broker.run(" ".join(command), shown)
