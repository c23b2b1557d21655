"""Backup -> restore on a new home, and SQLite -> PostgreSQL migration: the same `status`,
`history` and a passing `audit verify`; a backup taken while another process writes is
consistent; what is wrong is refused before anything is written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import (
    PASSPHRASE,
    PG_SERVER,
    Harness,
    _pg_connect,
    add_client,
    import_grant,
    make_harness,
    record_refreshes,
)
from tests.support import ROOT


def _history(h: Harness) -> None:
    """Two clients, three grants: one refreshed past a snapshot, one revoked, one purged."""
    add_client(h, "jira")
    add_client(h, "crm", "Crm~secret-value-0123456789abcdef")
    import_grant(h, "help@contoso.com", "jira")
    import_grant(h, "sales@contoso.com", "crm")
    import_grant(h, "old@contoso.com", "crm")
    with h.app() as app:
        record_refreshes(app, "help@contoso.com", 25)
    h.ok("grant", "revoke", "sales@contoso.com", "--reason", "left the company")
    h.ok("grant", "revoke", "old@contoso.com", "--reason", "gdpr erasure", "--purge")
    h.ok("client", "rotate-secret", "jira", "--secret-stdin", "--overlap",
         input="Jira~second-secret-0123456789ab")


def _views(h: Harness) -> dict[str, str]:
    """What an admin sees, minus the moment it was asked."""
    return {
        "status": h.ok("status", "--json").out,
        "history help": h.ok("history", "help@contoso.com", "--json", "--limit", "100").out,
        "history jira": h.ok("history", "jira", "--json").out,
        "history sales": h.ok("history", "sales@contoso.com", "--json").out,
        "grants": h.ok("grant", "list", "--json").out,
        "expiry": h.ok("expiry", "--json").out,
    }


def _audit_actions(h: Harness) -> list[str]:
    return [e["action"] for e in json.loads(h.ok("audit", "log", "--json",
                                                 "--limit", "1000").out)]


def _new_home(tmp_path: Path, request, kind: str = "sqlite", name: str = "restored") -> Harness:
    h = make_harness(kind, tmp_path / name, request)
    (tmp_path / name).mkdir(exist_ok=True)
    return Harness(h.kind, h.home, h.store_url, tmp_path / "service.key", h.schema,
                   h.pg_database)


def test_backup_then_restore_on_a_new_home_is_the_same_vault(vault: Harness, tmp_path: Path,
                                                             request) -> None:
    _history(vault)
    before = _views(vault)
    backup = tmp_path / "vault.backup"
    result = json.loads(vault.ok("backup", str(backup), "--json").out)
    assert oct(backup.stat().st_mode & 0o777) == "0o600"
    assert result["purged"] == 2 and result["tables"]["stored_events"] > 30
    for secret in (b"Abc~defghijklmnopqrstuvwxyz", b"M.R3_BAY.refresh-token", b"RT-000024"):
        assert secret not in backup.read_bytes()  # still encrypted

    restored = _new_home(tmp_path, request)
    out = restored.ok("restore", str(backup)).out
    assert "restored into" in out and "unlocks to the same state" in out
    assert _views(restored) == before
    assert restored.ok("audit", "verify").code == 0
    actions = _audit_actions(restored)
    assert actions[:actions.index("restore") + 1] == [*_audit_actions_before_backup(vault),
                                                      "restore"]
    # the restored vault works: a token is served from the restored cache, a new grant is added
    assert restored.ok("token", "help@contoso.com").out.strip() == "AT-RT-000024-access"
    import_grant(restored, "new@contoso.com", "jira")
    assert len(json.loads(restored.ok("grant", "list", "--json").out)) == 3


def _audit_actions_before_backup(h: Harness) -> list[str]:
    actions = _audit_actions(h)
    return actions[:actions.index("backup")]


def test_sqlite_to_postgresql_migration_is_proven(sqlite_vault: Harness, tmp_path: Path,
                                                  request) -> None:
    _history(sqlite_vault)
    before = _views(sqlite_vault)
    target = _new_home(tmp_path, request, "postgresql")
    result = json.loads(sqlite_vault.ok("migrate", "--to", target.store_url, "--json").out)
    assert result["aggregates"] == 8 and result["purged"] == 2  # 2 clients, 3 grants, 3 lineages
    assert result["tables"]["stored_events"] == int(sqlite_vault.sql(
        "SELECT COUNT(*) FROM stored_events")[0][0])
    assert _views(target) == before
    assert target.ok("audit", "verify").code == 0
    order = target.sql("SELECT notification_id FROM stored_events ORDER BY notification_id")
    assert [r[0] for r in order] == list(range(1, len(order) + 1))  # every event, in order
    import_grant(target, "new@contoso.com", "jira")  # the sequence continues after the copy
    assert target.ok("admin", "rebuild-projections").code == 0
    assert _views(target)["history help"] == before["history help"]
    # and back again: PostgreSQL -> a new SQLite home
    home = tmp_path / "back-home"
    target.ok("migrate", "--to", str(home))
    back = Harness("sqlite", home, None, target.key_file)
    assert _views(back)["status"] == _views(target)["status"]


def test_a_backup_taken_while_another_process_writes_is_consistent(vault: Harness,
                                                                   tmp_path: Path,
                                                                   request) -> None:
    add_client(vault, "jira")
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.workers", "rotate", str(vault.home),
         vault.store_url or "", str(vault.key_file), "jira", "120", "w"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    sizes: list[int] = []
    try:
        while int(vault.sql("SELECT COUNT(*) FROM stored_events")[0][0]) < 5:
            assert writer.poll() is None, writer.communicate()
        for n in range(4):
            backup = tmp_path / f"during-{n}.backup"
            result = json.loads(vault.ok("backup", str(backup), "--json").out)
            sizes.append(result["tables"]["stored_events"])
            restored = _new_home(tmp_path, request, name=f"r{n}")
            restored.ok("restore", str(backup))  # proves rows, audit chain and state
            shown = json.loads(restored.ok("client", "show", "jira", "--json").out)
            assert len(shown["secrets"]) == sizes[-1] - 1  # Registered + one per secret
    finally:
        _, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    assert len(set(sizes)) > 1 and max(sizes) < 122, sizes  # taken while it wrote


def test_a_migration_the_source_outran_is_not_reported_proven(vault: Harness, tmp_path: Path,
                                                              request) -> None:
    from adapters.store.schema import ddl

    add_client(vault, "jira")
    target = _new_home(tmp_path, request, "postgresql")
    view_secrets = next(s for s in ddl(blob="BYTEA", integer="BIGINT") if " view_secrets (" in s)
    with _pg_connect(target.pg_database) as conn:
        conn.execute(f"CREATE SCHEMA {target.schema}")
        conn.execute(f"SET search_path TO {target.schema}")
        conn.execute(view_secrets)
        with conn.transaction():
            # the copy writes the tables in turn, its snapshot of the source taken: it waits here
            conn.execute("LOCK TABLE view_secrets IN ACCESS EXCLUSIVE MODE")
            migrate = vault.spawn("migrate", "--to", target.store_url)
            deadline = time.monotonic() + 60
            while not conn.execute("SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND "
                                   "relation = 'view_secrets'::regclass").fetchone()[0]:
                assert migrate.poll() is None and time.monotonic() < deadline, \
                    migrate.communicate()
                time.sleep(0.02)
            vault.ok("client", "rotate-secret", "jira", "--secret-stdin", "--overlap",
                     input="Jira~second-secret-0123456789ab")
        _, err = migrate.communicate(timeout=120)
    assert migrate.returncode == 1, err
    assert "1 event(s) / 1 audit entries were written to the source during the copy" in err, err
    assert "empty the target and run migrate again" in err


def test_what_the_url_leaves_out_comes_from_the_pg_variables(sqlite_vault: Harness,
                                                             tmp_path: Path, request,
                                                             monkeypatch) -> None:
    from adapters.store.postgres import PostgresStore

    server = urlsplit(PG_SERVER)
    target = _new_home(tmp_path, request, "postgresql")
    for name, value in (("PGHOST", server.hostname), ("PGPORT", str(server.port or 5432)),
                        ("PGUSER", server.username or "postgres"),
                        ("PGDATABASE", target.pg_database), ("PGPASSWORD", "pw-from-the-env")):
        monkeypatch.setenv(name, value)
    url = f"postgresql:///?schema={target.schema}"
    store = PostgresStore(url)
    try:
        with store.datastore.get_connection() as conn:
            assert conn.execute("SELECT current_database()").fetchone() == {
                "current_database": target.pg_database}
            assert conn.info.password == "pw-from-the-env"  # reached libpq (trust ignores it)
    finally:
        store.close()
    add_client(sqlite_vault, "jira")
    sqlite_vault.ok("migrate", "--to", url)
    assert json.loads(target.ok("client", "show", "jira", "--json").out)["name"] == "jira"
    assert not any("pw-from-the-env" in text for text in sqlite_vault.outputs)


def test_what_is_wrong_is_refused_before_anything_is_written(sqlite_vault: Harness,
                                                             tmp_path: Path, request) -> None:
    _history(sqlite_vault)
    backup = tmp_path / "vault.backup"
    sqlite_vault.ok("backup", str(backup))

    into_a_vault = sqlite_vault.run("restore", str(backup))
    assert into_a_vault.code == 1 and "already holds a vault" in into_a_vault.err

    not_a_backup = tmp_path / "notes.txt"
    not_a_backup.write_text("hello")
    target = _new_home(tmp_path, request)
    result = target.run("restore", str(not_a_backup))
    assert result.code == 1 and "is not a vault backup" in result.err
    missing = target.run("restore", str(tmp_path / "missing.backup"))
    assert missing.code == 2 and "cannot read" in missing.err, missing.text
    damaged = tmp_path / "damaged.backup"
    data = backup.read_bytes()
    middle = len(data) // 2 // 4096 * 4096  # one page in the middle of the file overwritten
    damaged.write_bytes(data[:middle] + b"\xff" * 4096 + data[middle + 4096:])
    result = target.run("restore", str(damaged))
    assert result.code == 5 and "is damaged" in result.err, result.text

    wrong_key = tmp_path / "other.key"
    other = _new_home(tmp_path, request, name="other")
    other.ok("init", "--no-passphrase", "--key-file", str(wrong_key), VAULT_KEY_FILE=None)
    result = target.run("restore", str(backup), VAULT_KEY_FILE=str(wrong_key))
    assert result.code == 3, result.text
    assert not (target.home / "vault.db").exists() or target.run("status").code == 4

    import sqlite3

    tampered = tmp_path / "tampered.backup"
    tampered.write_bytes(backup.read_bytes())
    conn = sqlite3.connect(tampered)
    with conn:
        conn.execute("UPDATE vault_audit SET ciphertext = zeroblob(length(ciphertext)) "
                     "WHERE seq = 2")
    conn.close()  # the last connection folds its write-ahead log into the file
    result = target.run("restore", str(tampered))
    assert result.code == 5 and "integrity" in result.err
    assert target.run("status").code == 4  # nothing was restored

    with_password = sqlite_vault.run("migrate", "--to", "postgresql://u:hunter2@db/x")
    assert with_password.code == 2 and "hunter2" not in with_password.text
    itself = sqlite_vault.run("migrate", "--to", str(sqlite_vault.home))
    assert itself.code == 1 and "own store" in itself.err
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    readable = sqlite_vault.run("migrate", "--to", str(shared))
    assert readable.code == 2 and "chmod 700" in readable.err and "mode 0700" in readable.err
    assert list(shared.iterdir()) == []
    for text in (into_a_vault.text, result.text):
        assert "Traceback" not in text


def test_a_backup_with_edited_read_models_restores_what_its_events_say(
        sqlite_vault: Harness, tmp_path: Path, request) -> None:
    """Read models are plain rows, editable without the key (or written by a vault version
    that projected differently): a restore rebuilds them from the events and says so."""
    import sqlite3

    _history(sqlite_vault)
    before = _views(sqlite_vault)
    backup = tmp_path / "vault.backup"
    sqlite_vault.ok("backup", str(backup))
    edits = ("UPDATE view_grants SET status = 'active' WHERE mailbox = 'sales@contoso.com'",
             "UPDATE view_grants SET mailbox = 'ceo@contoso.com' "
             "WHERE mailbox = 'help@contoso.com'",
             "UPDATE view_secrets SET expires_on = '2099-12-31'",
             # a file's triggers do not come along: rows are copied into vault's own schema
             "CREATE TRIGGER keep AFTER INSERT ON view_grants BEGIN UPDATE view_grants "
             "SET status = 'active' WHERE grant_uuid = NEW.grant_uuid; END")
    for n, edit in enumerate(edits):
        edited = tmp_path / f"edited-{n}.backup"
        edited.write_bytes(backup.read_bytes())
        conn = sqlite3.connect(edited)  # no key needed: the read models are plain rows
        with conn:
            conn.execute(edit)
            conn.execute("UPDATE view_grants SET status = 'active'")
        conn.close()
        target = _new_home(tmp_path, request, name=f"restored-{n}")
        result = target.ok("restore", str(edited))
        assert "read models rebuilt from the events" in result.out
        assert "were not what its events give" in result.err and "view_grants" in result.err
        assert _views(target) == before  # the truth, not the edit
        assert "admin rebuild-projections" in _audit_actions(target)


def test_read_models_edited_in_the_vault_warn_on_backup_and_are_rebuilt_by_migrate(
        vault: Harness, tmp_path: Path) -> None:
    add_client(vault, "jira")
    import_grant(vault, "help@contoso.com", "jira")
    vault.ok("grant", "revoke", "help@contoso.com", "--reason", "left the company")
    vault.sql("UPDATE view_grants SET status = 'active'")
    backup = vault.ok("backup", str(tmp_path / "vault.backup"))  # the events are what it keeps
    assert "read models differ from the events" in backup.out
    assert "run `vault admin rebuild-projections`" in backup.err
    migrate = vault.ok("migrate", "--to", str(tmp_path / "new-home"))
    assert "rebuilt from the events" in migrate.err
    moved = Harness("sqlite", tmp_path / "new-home", None, vault.key_file)
    (grant,) = json.loads(moved.ok("grant", "list", "--json").out)
    assert grant["status"] == "revoked"
    vault.ok("admin", "rebuild-projections")  # recomputed from the events: nothing to say
    clean = vault.ok("backup", str(tmp_path / "vault.backup"))
    assert "read models match the events" in clean.out and clean.err == ""


def test_restore_into_postgresql(sqlite_vault: Harness, tmp_path: Path, request) -> None:
    _history(sqlite_vault)
    backup = tmp_path / "vault.backup"
    sqlite_vault.ok("backup", str(backup))
    target = _new_home(tmp_path, request, "postgresql")
    target.ok("restore", str(backup))
    assert _views(target) == _views(sqlite_vault)
    # the passphrase keyslot came along: it opens the restored vault too
    assert target.ok("status", VAULT_KEY_FILE=None, VAULT_PASSPHRASE=PASSPHRASE).code == 0


def _zero_audit_entry(h: Harness, seq: int) -> None:
    """Overwrite one audit ciphertext with zeros, as a broken disk or an intruder would."""
    (ciphertext,) = h.sql("SELECT ciphertext FROM vault_audit WHERE seq = ?", (seq,))[0]
    h.sql("UPDATE vault_audit SET ciphertext = ? WHERE seq = ?", (bytes(len(ciphertext)), seq))


def test_a_backup_that_fails_its_proof_leaves_the_previous_one_in_place(vault: Harness,
                                                                        tmp_path: Path) -> None:
    add_client(vault, "jira")
    directory = tmp_path / "backups"
    directory.mkdir()
    nightly = directory / "vault.backup"
    vault.ok("backup", str(nightly))
    good = nightly.read_bytes()

    _zero_audit_entry(vault, 2)
    result = vault.run("backup", str(nightly))
    assert result.code == 5 and f"{nightly} was left as it was" in result.err, result.text
    assert nightly.read_bytes() == good
    assert os.listdir(directory) == ["vault.backup"]  # no temporary copy left behind


def test_a_backup_is_never_written_into_the_vault_home(sqlite_vault: Harness,
                                                       tmp_path: Path) -> None:
    add_client(sqlite_vault, "jira")
    home = sqlite_vault.home
    before = sorted(p.name for p in home.iterdir())
    (tmp_path / "link.backup").symlink_to(home / "vault.db")
    for file in (home / "vault.db", home / "extra.backup"):
        result = sqlite_vault.run("backup", str(file))
        assert result.code == 2 and "inside the vault's home" in result.err, result.text
    result = sqlite_vault.run("backup", str(tmp_path / "link.backup"), "--force")
    assert result.code == 2 and "is a symbolic link" in result.err, result.text  # never written
    assert sorted(p.name for p in home.iterdir()) == before
    assert json.loads(sqlite_vault.ok("client", "show", "jira", "--json").out)["name"] == "jira"


@pytest.mark.pg
def test_a_backup_stopped_by_sigterm_leaves_no_temporary_copy(tmp_path: Path, request) -> None:
    h = make_harness("postgresql", tmp_path, request)
    h.ok("init", "--no-passphrase", "--key-file", str(h.key_file), VAULT_KEY_FILE=None)
    add_client(h, "jira")
    directory = tmp_path / "backups"
    directory.mkdir()
    with _pg_connect(h.pg_database) as conn, conn.transaction():
        # the copy reads every table in turn: it waits here, with its temporary copy begun
        conn.execute(f"LOCK TABLE {h.schema}.view_secrets IN ACCESS EXCLUSIVE MODE")
        backup = h.spawn("backup", str(directory / "vault.backup"))
        deadline = time.monotonic() + 60
        while not os.listdir(directory):
            assert backup.poll() is None and time.monotonic() < deadline, backup.communicate()
            time.sleep(0.02)
        backup.send_signal(signal.SIGTERM)
        _, err = backup.communicate(timeout=60)
    assert backup.returncode == -signal.SIGTERM, err
    assert "the unfinished copy was removed" in err and "Traceback" not in err, err
    assert os.listdir(directory) == []
