"""What a keyless writer can do to the database must never be vouched for (issue 9, items 1-4, 6).

Each test edits the database as someone with write access but no key would, then checks that the
next command refuses with exit 5 instead of extending, showing or acting on what was edited.
"""

from __future__ import annotations

import pytest

from tests.conftest import Harness, add_client, import_grant
from vault.audit import entry_hash


def _verify(h: Harness):
    return h.run("audit", "verify", VAULT_KEY_FILE=None)


@pytest.fixture
def used(vault: Harness) -> Harness:
    add_client(vault)
    import_grant(vault)
    for _ in range(4):
        vault.ok("status")
    return vault


# -- 1. appends extend only a proven log ---------------------------------------------------------

def _recompute_chain_without(h: Harness, seq: int) -> None:
    """Delete entry `seq`, renumber the later ones and recompute every hash after it: a chain
    that is consistent, but no longer the one the head was signed over."""
    rows = h.sql("SELECT seq, prev_hash, header, nonce, ciphertext, entry_hash FROM vault_audit "
                 "ORDER BY seq")
    h.sql("DELETE FROM vault_audit WHERE seq >= ?", (seq,))
    prev = bytes(rows[seq - 2][5])
    for old in rows[seq:]:
        new_seq = old[0] - 1
        digest = entry_hash(new_seq, prev, old[2], bytes(old[3]), bytes(old[4]))
        h.sql("INSERT INTO vault_audit (seq, prev_hash, header, nonce, ciphertext, entry_hash) "
              "VALUES (?, ?, ?, ?, ?, ?)", (new_seq, prev, old[2], bytes(old[3]),
                                            bytes(old[4]), digest))
        prev = digest


@pytest.mark.parametrize("cut", ["tail", "all entries", "entries and head", "middle, rechained"])
def test_an_append_never_re_signs_a_cut_log(used: Harness, cut: str) -> None:
    size = used.sql("SELECT MAX(seq) FROM vault_audit")[0][0]
    if cut == "tail":
        used.sql("DELETE FROM vault_audit WHERE seq > ?", (size - 3,))
    elif cut == "all entries":
        used.sql("DELETE FROM vault_audit")
    elif cut == "entries and head":
        used.sql("DELETE FROM vault_audit")
        used.sql("DELETE FROM vault_audit_checkpoint")
    else:
        _recompute_chain_without(used, 3)
    assert _verify(used).code == 5
    for args in (("status",), ("client", "list"), ("token", "help@contoso.com")):
        refused = used.run(*args)
        assert refused.code == 5, (args, refused.text)
        assert "audit log" in refused.err and "Traceback" not in refused.text
    if cut == "tail":
        assert f"entries {size - 2}-{size} were deleted" in refused.err
    # nothing was appended or re-signed: the cut is still there for verify to see
    assert _verify(used).code == 5
    assert used.sql("SELECT COUNT(*) FROM vault_audit")[0][0] < size


def test_the_cached_token_path_refuses_a_cut_log_too(used: Harness) -> None:
    from tests.conftest import record_refreshes

    app = used.app()
    try:
        record_refreshes(app, "help@contoso.com", 1)
    finally:
        app.close()
    assert used.ok("token", "help@contoso.com").out.startswith("AT-RT-000000")
    before = used.sql("SELECT MAX(seq) FROM vault_audit")[0][0]
    used.sql("DELETE FROM vault_audit WHERE seq = ?", (before,))
    refused = used.run("token", "help@contoso.com")
    assert refused.code == 5 and refused.out == ""
    assert used.sql("SELECT MAX(seq) FROM vault_audit")[0][0] == before - 1


# -- 2. nothing a keyless writer can edit decides anything unseen ---------------------------------

def _newest_event(h: Harness, aggregate: str) -> tuple:
    stored = aggregate.replace("-", "") if h.kind == "sqlite" else aggregate
    return h.sql("SELECT originator_id, originator_version, topic, state FROM stored_events "
                 "WHERE originator_id = ? ORDER BY originator_version DESC LIMIT 1",
                 (stored,))[0]


def _grant(h: Harness, column: str = "grant_uuid") -> str:
    return h.sql(f"SELECT {column} FROM view_grants")[0][0]


def test_an_edited_topic_is_never_imported(used: Harness) -> None:
    """eventsourcing imports the module a topic names: a keyless writer must not choose it."""
    import sys

    sys.modules.pop("this", None)
    oid, version, _, _ = _newest_event(used, _grant(used))
    topic = {"sqlite": "this:s", "postgresql": "this:d"}[used.kind]  # eventsourcing caches it
    used.sql("UPDATE stored_events SET topic = ? WHERE originator_id = ? AND "
             "originator_version = ?", (topic, oid, version))
    result = used.run("grant", "show", "help@contoso.com")
    assert result.code == 5 and "Beautiful is better" not in result.text
    assert "this" not in sys.modules


def test_an_event_copied_into_the_snapshots_is_refused(used: Harness) -> None:
    oid, version, topic, state = _newest_event(used, _grant(used, "rotation_uuid"))
    used.sql("INSERT INTO stored_snapshots (originator_id, originator_version, topic, state) "
             "VALUES (?, ?, ?, ?)", (oid, version, topic, state))
    result = used.run("grant", "show", "help@contoso.com")
    assert result.code == 5 and "internal error" not in result.err, result.text


def test_edited_settings_are_refused_not_obeyed(used: Harness) -> None:
    used.ok("config", "set", "microsoft_idle_warning_days", "60")
    lowered = used.sql("SELECT value FROM vault_settings")[0][0]
    used.sql("UPDATE vault_settings SET value = ?", (lowered.replace("60", "74"),))
    assert used.run("config", "show").code == 5
    check = used.run("expiry", "--check")
    assert check.code == 3 and "integrity" in check.err  # UNKNOWN, never OK
    used.sql("DELETE FROM vault_settings")  # the default is not what the admin set either
    assert used.run("config", "show").code == 5
    used.ok("config", "set", "microsoft_idle_warning_days", "60")  # the repair
    assert "60" in used.ok("config", "show").out


@pytest.mark.parametrize("edit", [
    "UPDATE view_grants SET status = 'revoked'",
    "UPDATE view_grants SET rt_last_used_at = '2099-01-01T00:00:00+00:00'",
    "UPDATE view_secrets SET expires_on = '2099-12-31'",
    "UPDATE view_clients SET name = 'other', name_key = 'other'",
    "DELETE FROM view_grants",
    "DELETE FROM view_secrets",
])
def test_an_edited_read_model_row_is_exit_5_until_rebuilt(used: Harness, edit: str) -> None:
    used.sql(edit)
    for args in (("status",), ("expiry",), ("grant", "list"), ("client", "list")):
        result = used.run(*args)
        assert result.code == 5, (args, result.text)
    used.ok("admin", "rebuild-projections")
    assert used.ok("status").code == 0
    assert "help@contoso.com" in used.ok("grant", "list").out


def test_a_row_without_its_subject_is_exit_5(used: Harness) -> None:
    """The grant's data key deleted (its view row left): nothing can be rebuilt from it."""
    grant = _grant(used)
    used.sql("DELETE FROM vault_keys WHERE originator_id = ?", (grant,))
    for args in (("status",), ("grant", "show", "help@contoso.com"),
                 ("admin", "rebuild-projections")):
        assert used.run(*args).code == 5, args


def test_a_looked_up_row_is_checked_too(used: Harness) -> None:
    used.sql("UPDATE view_clients SET tenant = 'fabrikam.com'")
    assert used.run("client", "show", "jira").code == 5
    used.sql("UPDATE view_grants SET protocols = 'imap,smtp,graph'")
    assert used.run("token", "help@contoso.com", "--protocol", "graph").code == 5


# -- 3. history checks what every other reader checks --------------------------------------------

def test_deleted_newest_events_are_caught_by_every_reader(used: Harness) -> None:
    used.ok("grant", "revoke", "help@contoso.com", "--reason", "left")
    oid, version, _, _ = _newest_event(used, _grant(used))
    used.sql("DELETE FROM stored_events WHERE originator_id = ? AND originator_version = ?",
             (oid, version))
    for args in (("history", "help@contoso.com"), ("status",), ("grant", "show",
                                                                "help@contoso.com"),
                 ("history", "help@contoso.com", "--as-of", "2099-01-01")):
        result = used.run(*args)
        assert result.code == 5, (args, result.text)


# -- 4. tampering is exit 5, always ----------------------------------------------------------------

@pytest.mark.parametrize("which", ["first", "middle", "all"])
def test_deleted_events_are_integrity_violations(used: Harness, which: str) -> None:
    used.ok("client", "rotate-secret", "jira", "--secret-stdin", input="Second~secret-value-0002")
    used.ok("client", "set-servers", "jira", "--imap", "imap.example.com:993/implicit")
    client = used.sql("SELECT client_uuid FROM view_clients")[0][0]
    stored = client.replace("-", "") if used.kind == "sqlite" else client
    where = {"first": "originator_version = 1", "middle": "originator_version = 2",
             "all": "1 = 1"}[which]
    used.sql(f"DELETE FROM stored_events WHERE originator_id = ? AND {where}", (stored,))
    for args in (("client", "show", "jira"), ("history", "jira")):
        result = used.run(*args)
        assert result.code == 5 and "internal error" not in result.err, (args, result.text)


def test_a_forged_purge_is_not_a_purge(used: Harness) -> None:
    grant = _grant(used)
    used.sql("UPDATE vault_keys SET wrapped = NULL WHERE originator_id = ?", (grant,))
    assert used.run("grant", "show", "help@contoso.com").code == 5
    assert used.run("status").code == 5


def test_a_real_purge_stays_exit_4_and_cannot_be_copied(used: Harness) -> None:
    add_client(used, "other", "Other~secret-value-0123456789")
    used.ok("client", "remove", "other", "--reason", "gone", "--purge")
    other, _, _, _ = _newest_event(used, used.sql(
        "SELECT originator_id FROM vault_keys WHERE wrapped IS NULL")[0][0])
    assert used.ok("status").code == 0  # the tombstone proves the purge
    # the tombstone belongs to its own row: moved onto another subject, it proves nothing
    tomb = used.sql("SELECT head_mac, shredded_at FROM vault_keys WHERE wrapped IS NULL")[0]
    grant = _grant(used)
    used.sql("UPDATE vault_keys SET wrapped = NULL, head_mac = ?, shredded_at = ? "
             "WHERE originator_id = ?", (bytes(tomb[0]), tomb[1], grant))
    assert used.run("grant", "show", "help@contoso.com").code == 5
    del other


def test_a_bumped_key_term_is_an_edit_not_a_rotation(used: Harness) -> None:
    grant = _grant(used)
    used.sql("UPDATE vault_keys SET term = term + 1 WHERE originator_id = ?", (grant,))
    for _ in range(2):  # not "run it again" forever
        result = used.run("grant", "show", "help@contoso.com")
        assert result.code == 5, result.text


def test_a_deleted_header_is_tampering_not_an_empty_store(used: Harness) -> None:
    used.sql("DELETE FROM vault_header")
    for args in (("status",), ("audit", "verify")):
        result = used.run(*args, VAULT_KEY_FILE=None) if args[0] == "audit" else used.run(*args)
        assert result.code == 5 and "header was deleted" in result.err, (args, result.text)
    again = used.run("init", "--kdf", "interactive", VAULT_PASSPHRASE="another passphrase 1",
                     VAULT_KEY_FILE=None)
    assert again.code == 5


def test_refresh_reports_tampering_as_exit_5_not_a_failed_row(used: Harness) -> None:
    """A middle event of the token lineage deleted: only loading it shows."""
    from tests.conftest import record_refreshes

    app = used.app()
    try:
        record_refreshes(app, "help@contoso.com", 3)
    finally:
        app.close()
    rotation = _grant(used, "rotation_uuid")
    stored = rotation.replace("-", "") if used.kind == "sqlite" else rotation
    used.sql("DELETE FROM stored_events WHERE originator_id = ? AND originator_version = 2",
             (stored,))
    for args in (("refresh", "--all"), ("maintain", "--probe-every", "0")):
        result = used.run(*args)
        assert result.code == 5, (args, result.text)


def test_a_restored_backup_with_an_invalid_utf8_byte_is_damaged(sqlite_vault: Harness,
                                                                tmp_path) -> None:
    import sqlite3

    add_client(sqlite_vault)
    backup = tmp_path / "vault.backup"
    sqlite_vault.ok("backup", str(backup))
    conn = sqlite3.connect(backup)
    with conn:
        conn.execute("UPDATE view_clients SET tenant = CAST(X'FF61' AS TEXT)")
    conn.close()
    target = Harness("sqlite", tmp_path / "restored", None, sqlite_vault.key_file)
    result = target.run("restore", str(backup))
    assert result.code == 5 and "internal error" not in result.err, result.text


def test_the_cached_token_path_serves_only_rows_vault_sealed(sqlite_vault: Harness,
                                                             sandbox) -> None:
    """The light path reads the read model too: an edited row sends it to the full CLI."""
    from tests.conftest import add_sandbox_client
    from tests.consent import SANDBOX_MAILBOX as MAILBOX
    from tests.consent import sandbox_consent

    add_sandbox_client(sqlite_vault, sandbox)
    add_sandbox_client(sqlite_vault, sandbox, name="other")
    for client in ("demo", "other"):
        sandbox_consent(sqlite_vault, sandbox, client=client)
    assert sqlite_vault.cached_token(MAILBOX, "--client", "demo") is not None
    # a keyless writer swaps the clients' names: `--client demo` would reach other's grant
    sqlite_vault.sql("UPDATE view_clients SET name_key = 'x' WHERE name_key = 'demo'")
    sqlite_vault.sql("UPDATE view_clients SET name_key = 'demo' WHERE name_key = 'other'")
    assert sqlite_vault.cached_token(MAILBOX, "--client", "demo") is None
    assert sqlite_vault.run("token", MAILBOX, "--client", "demo").code == 5


# -- 6. the audit log says what happened ---------------------------------------------------------

def test_a_failed_token_is_not_recorded_as_revealed(vault: Harness, sandbox) -> None:
    import json
    from datetime import UTC, datetime, timedelta

    from tests.conftest import add_sandbox_client
    from tests.consent import SANDBOX_MAILBOX as MAILBOX
    from tests.consent import sandbox_consent as consent
    from tests.consent import sandbox_fail_next as fail_next
    from vault.services.tokens import TokenRefreshFailed

    add_sandbox_client(vault, sandbox)
    consent(vault, sandbox)
    assert vault.ok("token", MAILBOX).out
    fail_next(sandbox, 7000222)
    later = datetime.now(UTC) + timedelta(hours=3)  # the access token has expired
    with vault.app(clock=lambda: later) as app, pytest.raises(TokenRefreshFailed):
        app.tokens.access_token(MAILBOX)
    entries = json.loads(vault.ok("audit", "log", "--limit", "3", "--json").out)
    handed, attempt = entries[0], entries[1:]  # the refresh: its start, then its failure
    assert (handed["action"], handed["detail"].get("revealed")) == ("token", "access_token")
    assert [e["detail"]["step"] for e in attempt] == ["refresh started", "refresh failed"]
    assert attempt[-1]["outcome"] == "failed"
    assert not any("revealed" in e["detail"] for e in attempt)


# -- a vault from before sealed rows is upgraded once, in place or when restored ------------------

def _as_before_sealed_rows(h: Harness) -> None:
    """Turn a vault into what the previous schema (1) left on disk: no MAC or version columns,
    no purge tombstones, no keys for rows and settings, a header without the marker."""

    from adapters.keyslots import seal_header

    with h.app() as app:
        sealed = seal_header(app.core.header._replace(row_macs=False), app.core.root)
    h.sql("UPDATE vault_header SET body = ?, checksum = ?, mac = ?",
          (sealed.body, sealed.checksum, sealed.mac))
    from adapters.store.schema import ADDED_COLUMNS

    for table, column, _ in ADDED_COLUMNS:
        h.sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    h.sql("UPDATE vault_keys SET head_mac = NULL WHERE wrapped IS NULL")
    h.sql("DELETE FROM vault_keys WHERE originator_id IN ('system:rows', 'system:settings')")
    h.sql("UPDATE vault_meta SET value = '1' WHERE key = 'schema_version'")


def test_a_vault_from_before_sealed_rows_is_upgraded_once(used: Harness, tmp_path) -> None:
    import json

    add_client(used, "old", "Other~secret-value-0123456789")
    used.ok("client", "remove", "old", "--reason", "gone", "--purge")
    used.ok("config", "set", "microsoft_idle_warning_days", "60")
    before = json.loads(used.ok("status", "--json").out)
    _as_before_sealed_rows(used)
    after = json.loads(used.ok("status", "--json").out)
    assert after["grants"] == before["grants"] and after["clients"] == before["clients"]
    assert '"microsoft_idle_warning_days": 60' in used.ok("config", "show", "--json").out
    assert used.run("history", "old").code == 4  # the purge is still a purge
    actions = [e["action"] for e in json.loads(used.ok("audit", "log", "--json").out)]
    assert actions.count("upgrade") == 1
    used.ok("status")
    assert [e["action"] for e in json.loads(used.ok("audit", "log", "--json").out)].count(
        "upgrade") == 1
    used.ok("audit", "verify")
    # from now on its rows are sealed like any other vault's
    used.sql("UPDATE view_grants SET status = 'revoked'")
    assert used.run("status").code == 5


def test_a_backup_from_before_sealed_rows_restores_and_upgrades(sqlite_vault: Harness,
                                                                tmp_path) -> None:
    add_client(sqlite_vault)
    import_grant(sqlite_vault)
    add_client(sqlite_vault, "old", "Other~secret-value-0123456789")
    sqlite_vault.ok("client", "remove", "old", "--reason", "gone", "--purge")
    _as_before_sealed_rows(sqlite_vault)
    backup = tmp_path / "old.backup"
    import shutil

    shutil.copyfile(sqlite_vault.home / "vault.db", backup)  # as the old `vault backup` left it
    target = Harness("sqlite", tmp_path / "restored", None, sqlite_vault.key_file)
    target.ok("restore", str(backup))
    assert "help@contoso.com" in target.ok("grant", "list").out
    assert target.run("history", "old").code == 4  # the purge is still a purge
    target.ok("audit", "verify")
    target.sql("UPDATE view_grants SET status = 'revoked'")
    assert target.run("status").code == 5


def _as_schema_2(h: Harness) -> None:
    """Turn a vault into what schema 2 left on disk: no login column, every read-model row
    sealed over the columns it had then."""
    h.sql("ALTER TABLE view_grants DROP COLUMN login")
    with h.app() as app:
        sealer = app.core.keyring.rows
        names = [r[1] for r in h.sql("PRAGMA table_info(view_grants)")] if h.kind == "sqlite" \
            else [r[0] for r in h.sql("SELECT column_name FROM information_schema.columns WHERE "
                                      "table_name = 'view_grants' AND table_schema = "
                                      "current_schema() ORDER BY ordinal_position")]
        for values in h.sql("SELECT * FROM view_grants"):
            row = dict(zip(names, values, strict=True))
            row["mac"] = None
            h.sql("UPDATE view_grants SET mac = ? WHERE grant_uuid = ?",
                  (sealer.mac("view_grants", {k: v for k, v in row.items() if k != "mac"}),
                   row["grant_uuid"]))
    h.sql("UPDATE vault_meta SET value = '2' WHERE key = 'schema_version'")


def test_a_vault_of_schema_2_gets_the_login_column_once(used: Harness) -> None:
    import json

    before = json.loads(used.ok("status", "--json").out)
    _as_schema_2(used)
    assert used.light("status", "--json") is None  # left to the full CLI, which upgrades
    assert json.loads(used.ok("status", "--json").out) == before
    used.ok("grant", "set-login", "help@contoso.com", "helpdesk")
    shown = json.loads(used.ok("grant", "show", "help@contoso.com", "--json").out)
    assert shown["login"] == "helpdesk"
    used.ok("grant", "list")
    used.ok("audit", "verify")
    assert [e["action"] for e in json.loads(used.ok("audit", "log", "--json").out)].count(
        "upgrade") == 1
    used.sql("UPDATE view_grants SET login = 'mallory'")  # sealed like every other column
    assert used.run("grant", "list").code == 5


# -- 7. removing a keyslot is not revocation -------------------------------------------------------

def test_key_remove_says_it_revokes_nothing_and_it_is_true(sqlite_vault: Harness,
                                                           tmp_path) -> None:
    """The removed key file plus an earlier copy still opens a secret written after removal."""
    import shutil

    from adapters.keyslots import read_key_file
    from adapters.store import open_store
    from vault.bootstrap import unlock_store

    spare = tmp_path / "spare.key"
    sqlite_vault.ok("key", "add-keyfile", str(spare))
    early = tmp_path / "early-copy"
    shutil.copytree(sqlite_vault.home, early)
    removed = sqlite_vault.ok("key", "remove", "3")
    assert "not revocation" in removed.out and "vault key rotate" in removed.out
    add_client(sqlite_vault, "later", "Written~after-the-removal-01")
    current = open_store(sqlite_vault.home, None)
    try:
        later = current.view_rows("view_clients", lambda row: [], name="later")[0][0]
        row = current.key_row(later["client_uuid"])
    finally:
        current.close()
    old = unlock_store(open_store(early, None), lambda header: read_key_file(str(spare)))
    try:
        assert len(old.keyring.unwrap(row)) == 32  # a client's key, made after the removal
    finally:
        old.close()


# -- what a red-team pass found -------------------------------------------------------------------

def _trigger(h: Harness) -> None:
    """A trigger that puts a revoked grant's row back to active as soon as vault writes it."""
    if h.kind == "sqlite":
        h.sql("CREATE TRIGGER keep_active AFTER UPDATE OF status ON view_grants "
              "WHEN NEW.status <> 'active' BEGIN UPDATE view_grants SET status = 'active', "
              "status_reason = NULL WHERE grant_uuid = NEW.grant_uuid; END")
    else:
        h.sql("CREATE FUNCTION keep_active() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
              "NEW.status := 'active'; NEW.status_reason := NULL; RETURN NEW; END $$")
        h.sql("CREATE TRIGGER keep_active BEFORE UPDATE ON view_grants FOR EACH ROW "
              "EXECUTE FUNCTION keep_active()")


def test_what_a_trigger_writes_is_never_sealed(used: Harness) -> None:
    """Rows are sealed from what vault means them to hold: a row the database changed on its own
    fails its MAC at the next read (here, within the revocation's own transaction)."""
    _trigger(used)
    revoke = used.run("grant", "revoke", "help@contoso.com", "--reason", "compromised")
    assert revoke.code == 5 and "view_grants" in revoke.err
    assert used.run("grant", "show", "help@contoso.com").code == 0  # nothing was changed
    if used.kind == "sqlite":  # a trigger on the last row a commit writes: caught on reading
        used.sql("DROP TRIGGER keep_active")
        used.sql("CREATE TRIGGER stamp AFTER UPDATE OF rotation_version ON view_grants BEGIN "
                 "UPDATE view_grants SET status = 'active' WHERE grant_uuid = NEW.grant_uuid; "
                 "END")
        used.ok("grant", "revoke", "help@contoso.com", "--reason", "compromised")
        for args in (("status",), ("grant", "list"), ("expiry", "--check")):
            result = used.run(*args)
            assert result.code in (3, 5) and "integrity" in result.err, (args, result.text)


def test_a_command_that_unlocked_before_a_key_rotation_still_works(vault: Harness,
                                                                   tmp_path) -> None:
    from adapters.keyslots import Passphrase
    from domain.secret_value import SecretValue
    from tests.conftest import PASSPHRASE, record_refreshes

    add_client(vault)
    import_grant(vault)
    early = vault.app()  # unlocked before the rotation, like a refresh waiting on its provider
    try:
        early.grants.show_grant("help@contoso.com")  # what it has read and unwrapped before the call
        with vault.app() as rotating:
            rotating.keys.rotate_root_key([Passphrase(SecretValue(PASSPHRASE))])
        record_refreshes(early, "help@contoso.com", 1)  # its commit seals rows as before
        assert early.reports.status().grants[0].mailbox == "help@contoso.com"
    finally:
        early.close()
    assert vault.ok("token", "help@contoso.com").out.startswith("AT-RT-000000")
    vault.ok("status")


def _row(h: Harness) -> dict:
    columns = [c for c in ("grant_uuid", "status", "status_reason", "status_changed_at",
                           "grant_version", "rotation_version", "rt_present", "access_expires",
                           "mac")]
    return dict(zip(columns, h.sql(f"SELECT {', '.join(columns)} FROM view_grants")[0],
                    strict=True))


def test_an_older_copy_of_a_row_put_back_decides_nothing(used: Harness) -> None:
    from tests.conftest import record_refreshes

    app = used.app()
    try:
        record_refreshes(app, "help@contoso.com", 1)
    finally:
        app.close()
    before = _row(used)  # active, with a cached access token
    used.ok("grant", "revoke", "help@contoso.com", "--reason", "left")
    sets = ", ".join(f"{c} = ?" for c in before if c != "grant_uuid")
    used.sql(f"UPDATE view_grants SET {sets}",
             tuple(bytes(v) if isinstance(v, memoryview) else v
                   for c, v in before.items() if c != "grant_uuid"))
    for args in (("token", "help@contoso.com"), ("grant", "show", "help@contoso.com"),
                 ("status",)):
        result = used.run(*args)
        assert result.code == 5 and result.out == "", (args, result.text)


@pytest.mark.parametrize("deleted", ["view_clients", "view_grants"])
def test_a_deleted_row_never_frees_a_name_or_a_client(used: Harness, deleted: str) -> None:
    used.sql(f"DELETE FROM {deleted}")
    if deleted == "view_clients":
        used.sql("DELETE FROM view_secrets")
        again = used.run("client", "add", "jira", "--provider", "microsoft", "--tenant",
                         "contoso.com", "--client-id", "11111111-2222-3333-4444-555555555555",
                         "--secret-stdin", input="Abc~defghijklmnopqrstuvwxyz0123")
    else:
        again = used.run("grant", "import", "--client", "jira", "--mailbox",
                         "help@contoso.com", "--protocols", "imap", "--refresh-token-stdin",
                         input="M.R3_BAY.refresh-token-9876543210")
        purge = used.run("client", "remove", "jira", "--reason", "unused?", "--purge")
        assert purge.code == 5, purge.text  # its grants are still there
    assert again.code == 5, again.text
    used.ok("admin", "rebuild-projections")  # the repair still works
    assert "help@contoso.com" in used.ok("grant", "list").out


def test_an_older_settings_row_put_back_is_refused(used: Harness) -> None:
    used.ok("config", "set", "microsoft_idle_warning_days", "60")
    saved = used.sql("SELECT key, value, version, mac FROM vault_settings")[0]
    used.ok("config", "set", "microsoft_idle_warning_days", "40")
    used.sql("UPDATE vault_settings SET value = ?, version = ?, mac = ?",
             (saved[1], saved[2], bytes(saved[3])))
    assert used.run("config", "show").code == 5
    assert used.run("expiry", "--check").code == 3


def test_an_edited_topic_cannot_hide_a_grant(used: Harness) -> None:
    used.ok("grant", "revoke", "help@contoso.com", "--reason", "left")
    grant = _grant(used)
    stored = grant.replace("-", "") if used.kind == "sqlite" else grant
    used.sql("UPDATE stored_events SET topic = 'vault.ConsentGrant.Regranted' "
             "WHERE originator_id = ? AND originator_version = 1", (stored,))
    for args in (("report", "revocations"), ("admin", "rebuild-projections")):
        result = used.run(*args)
        assert result.code == 5, (args, result.text)


@pytest.mark.parametrize("edit", [
    "UPDATE vault_keys SET term = 'abc' WHERE originator_id = (SELECT grant_uuid FROM "
    "view_grants)",
    "UPDATE vault_keys SET subject_id = 'zzz' WHERE originator_id = (SELECT rotation_uuid "
    "FROM view_grants)",
    "UPDATE stored_events SET originator_version = 1.5 WHERE originator_version = 1 AND "
    "topic = 'vault.ConsentGrant.Granted'",
    "UPDATE stored_events SET state = 'plain text' WHERE topic = 'vault.ConsentGrant.Granted'",
    "UPDATE stored_events SET topic = CAST(X'FF61' AS TEXT) WHERE "
    "topic = 'vault.ConsentGrant.Granted'",
    "UPDATE vault_audit SET prev_hash = 'text' WHERE seq = (SELECT MAX(seq) FROM vault_audit)",
    "UPDATE view_grants SET mac = 'text'",
])
def test_a_value_of_the_wrong_type_is_an_integrity_violation(sqlite_vault: Harness,
                                                             edit: str) -> None:
    """SQLite stores whatever it is given, whatever the column's type."""
    add_client(sqlite_vault)
    import_grant(sqlite_vault)
    sqlite_vault.sql(edit)
    codes = []
    for args in (("status",), ("grant", "show", "help@contoso.com"),
                 ("history", "help@contoso.com"), ("alert",)):
        result = sqlite_vault.run(*args, VAULT_WEBHOOK_URL="http://127.0.0.1:9/hook")
        assert "internal error" not in result.err and "Traceback" not in result.text, (
            args, result.text)
        codes.append(result.code)
    assert 5 in codes and set(codes) <= {0, 1, 5}, codes  # 1: alert's receiver is not there


def test_control_characters_in_a_csv_report_are_shown_not_sent(vault: Harness) -> None:
    add_client(vault)
    import_grant(vault)
    vault.ok("grant", "revoke", "help@contoso.com", "--reason", "left\x1b]0;owned\x07\x1b[2J")
    for kind in ("audit", "revocations"):
        out = vault.ok("report", kind, "--format", "csv").out
        assert "\x1b" not in out and "\x07" not in out and "\\x1b" in out, kind


def test_a_store_with_data_but_no_header_keys_or_log_is_no_empty_store(used: Harness) -> None:
    for table in ("vault_header", "vault_keys", "vault_audit", "vault_audit_checkpoint"):
        used.sql(f"DELETE FROM {table}")
    assert used.run("status").code == 5
    again = used.run("init", "--kdf", "interactive", VAULT_PASSPHRASE="another passphrase 1",
                     VAULT_KEY_FILE=None)
    assert again.code == 5
