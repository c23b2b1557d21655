"""The audit log: every command leaves one entry; verify detects every kind of tampering."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.conftest import Harness, add_client, import_grant


def _count(h: Harness) -> int:
    return h.sql("SELECT COUNT(*) FROM vault_audit")[0][0]


def _entries(h: Harness) -> list[dict]:
    return json.loads(h.ok("audit", "log", "--limit", "0", "--json").out)


@pytest.fixture
def busy(vault: Harness) -> Harness:
    add_client(vault)
    import_grant(vault)
    vault.ok("client", "list")
    vault.ok("status")
    vault.ok("client", "show", "jira", "--reveal-secret")
    return vault


def test_every_command_reads_included_appends_exactly_one_entry(vault: Harness) -> None:
    assert _count(vault) == 1  # init
    for args in (("client", "list"), ("status",), ("expiry",), ("key", "list"),
                 ("grant", "list"), ("config", "show")):
        before = _count(vault)
        vault.ok(*args)
        assert _count(vault) == before + 1, args
    add_client(vault)
    entries = _entries(vault)  # the log is read before its own entry is appended
    assert entries[-1]["action"] == "client add"
    assert entries[-1]["subject"] == {"client": "jira"}
    assert {"user", "host", "pid", "at", "outcome"} <= set(entries[-1])
    assert _entries(vault)[-1]["action"] == "audit log"


def test_reveals_and_refusals_are_recorded(busy: Harness) -> None:
    busy.run("client", "add", "x", "--provider", "microsoft", "--tenant", "contoso.com",
             "--client-id", "11111111-2222-3333-4444-555555555555", "--secret-stdin",
             input="11111111-2222-3333-4444-555555555555")
    entries = _entries(busy)
    reveal = [e for e in entries if e["action"] == "client show --reveal-secret"]
    assert len(reveal) == 1 and reveal[0]["detail"]["revealed"] == "client_secret"
    refused = [e for e in entries if e["outcome"] == "refused"]
    assert refused and "Secret ID" in refused[-1]["detail"]["error"]


def test_verify_needs_no_key_and_writes_nothing(busy: Harness) -> None:
    before = _count(busy)
    result = busy.ok("audit", "verify", VAULT_KEY_FILE=None)
    assert f"{before} entries" in result.out
    assert _count(busy) == before


def test_a_checkpoint_is_exported_only_from_an_unlocked_vault(busy: Harness, tmp_path) -> None:
    """Unlocking checks the header's MAC, so the exported public key is the vault's own."""
    assert busy.run("audit", "checkpoint", "--export", "-", VAULT_KEY_FILE=None).code == 3
    before = _count(busy)
    exported = busy.ok("audit", "checkpoint", "--export", "-").out
    assert exported.startswith("vault-audit-checkpoint-v1") and f"size: {before}" in exported
    assert _entries(busy)[-1]["action"] == "audit checkpoint"
    missing = busy.run("audit", "checkpoint", "--export", str(tmp_path / "no" / "such" / "file"))
    assert missing.code == 2 and "cannot write" in missing.err


def test_the_actor_is_the_account_of_the_process_not_what_the_environment_claims(
        busy: Harness) -> None:
    import os
    import pwd

    account = pwd.getpwuid(os.geteuid()).pw_name
    busy.ok("status", USER="mallory", LOGNAME="mallory")
    (entry,) = _entries(busy)[-1:]  # `audit log` reads before appending its own entry
    assert entry["action"] == "status" and entry["user"] == account
    assert entry["uid"] == os.geteuid() and "sudo_user" not in entry
    busy.ok("grant", "revoke", "help@contoso.com", "--reason", "left", SUDO_USER="carol")
    revoked = json.loads(busy.ok("report", "revocations", "--format", "json").out)
    assert [r["by"] for r in revoked] == [f"carol (sudo as {account})"]
    rows = json.loads(busy.ok("report", "audit", "--mailbox", "help@contoso.com",
                              "--format", "json").out)
    assert (rows[-1]["action"], rows[-1]["user"], rows[-1]["sudo_user"]) == (
        "grant revoke", account, "carol")


def test_a_command_appending_while_the_log_is_read_is_not_tampering(busy: Harness) -> None:
    """Verifying reads the signed head and the entries from one snapshot: another host's
    command that appends meanwhile must not look like a truncated log (exit 5 at 3 a.m.)."""
    from vault.audit import verify_log

    with busy.app() as reader, busy.app() as writer:
        with reader.core.store.audit_log() as (checkpoint, rows, _):
            writer.reports.status()  # appends an entry and re-signs the head, mid-read
            report = verify_log(rows, checkpoint, reader.core.header.vault_id,
                                reader.core.header.audit_public_key)
        assert report.ok, report.problems
        assert report.entries == checkpoint.size == _count(busy) - 1
        reader.audit.verified_audit_rows()  # and a fresh read sees the new head, also sound


@pytest.mark.parametrize("edit", [
    "UPDATE vault_audit SET header = '{\"v\":1}' WHERE seq = 2",
    "UPDATE vault_audit SET header = 'not json' WHERE seq = 2",
    "UPDATE vault_audit SET ciphertext = ? WHERE seq = 2",
])
def test_every_reader_of_the_log_refuses_a_tampered_one(busy: Harness, edit: str) -> None:
    busy.ok("grant", "revoke", "help@contoso.com", "--reason", "gone", "--purge")
    busy.sql(edit, (b"\0" * 40,) if "?" in edit else ())
    for args in (("audit", "log"), ("report", "audit", "--since", "2000-01-01"),
                 ("report", "revocations"), ("audit", "checkpoint", "--export", "-")):
        result = busy.run(*args)
        assert result.code == 5 and "integrity" in result.err, (args, result.text)
        assert "Traceback" not in result.text


def test_a_wiped_log_does_not_verify(busy: Harness) -> None:
    busy.sql("DELETE FROM vault_audit")
    busy.sql("DELETE FROM vault_audit_checkpoint")
    result = _verify(busy)
    assert result.code == 5 and "wiped" in result.err and "checkpoint is missing" in result.err


def _verify(h: Harness, *extra: str):
    return h.run("audit", "verify", *extra, VAULT_KEY_FILE=None)


def _assert_detected(h: Harness, words: str, *extra: str) -> None:
    result = _verify(h, *extra)
    assert result.code == 5, result.text
    assert words in result.err, result.err


def _row(h: Harness, seq: int) -> tuple:
    return h.sql("SELECT seq, prev_hash, header, nonce, ciphertext, entry_hash FROM vault_audit "
                 "WHERE seq = ?", (seq,))[0]


def test_an_edited_entry_is_detected(busy: Harness) -> None:
    ct = bytearray(bytes(_row(busy, 3)[4]))
    ct[5] ^= 1
    busy.sql("UPDATE vault_audit SET ciphertext = ? WHERE seq = 3", (bytes(ct),))
    _assert_detected(busy, "entry 3 was altered")


def test_an_edited_entry_with_a_recomputed_hash_breaks_the_chain(busy: Harness) -> None:
    from vault.audit import entry_hash

    seq, prev, header, nonce, ct, _ = _row(busy, 3)
    header = header.replace('"v":1', '"v":1,"x":0')
    busy.sql("UPDATE vault_audit SET header = ?, entry_hash = ? WHERE seq = 3",
             (header, entry_hash(seq, bytes(prev), header, bytes(nonce), bytes(ct))))
    _assert_detected(busy, "entry 4 does not follow entry 3")


def test_an_inserted_entry_is_detected(busy: Harness) -> None:
    last = _count(busy)
    row = _row(busy, 2)
    busy.sql("INSERT INTO vault_audit VALUES (?, ?, ?, ?, ?, ?)", (last + 1, *row[1:]))
    _assert_detected(busy, f"entry {last + 1} does not follow")


def test_a_deleted_entry_is_detected(busy: Harness) -> None:
    busy.sql("DELETE FROM vault_audit WHERE seq = 3")
    _assert_detected(busy, "entry 3 is missing")


def test_reordered_entries_are_detected(busy: Harness) -> None:
    a, b = _row(busy, 2), _row(busy, 3)
    for target, source in ((2, b), (3, a)):
        busy.sql("UPDATE vault_audit SET prev_hash = ?, header = ?, nonce = ?, ciphertext = ?, "
                 "entry_hash = ? WHERE seq = ?", (*source[1:], target))
    _assert_detected(busy, "does not follow")


def test_a_truncated_tail_is_detected(busy: Harness) -> None:
    last = _count(busy)
    busy.sql("DELETE FROM vault_audit WHERE seq >= ?", (last - 1,))
    _assert_detected(busy, f"truncated: the signed checkpoint covers {last} entries")


def test_a_forged_checkpoint_signature_is_detected(busy: Harness) -> None:
    signature = bytearray(bytes(busy.sql("SELECT signature FROM vault_audit_checkpoint")[0][0]))
    signature[0] ^= 1
    busy.sql("UPDATE vault_audit_checkpoint SET signature = ?", (bytes(signature),))
    _assert_detected(busy, "signature does not verify")


def test_a_rollback_to_an_older_copy_is_detected_with_a_trusted_checkpoint(
        busy: Harness, tmp_path) -> None:
    older_log = busy.sql("SELECT * FROM vault_audit ORDER BY seq")
    older_checkpoint = busy.sql("SELECT * FROM vault_audit_checkpoint")[0]
    busy.ok("client", "rotate-secret", "jira", "--secret-stdin", input="Newer~secret-0123456789")
    trusted = tmp_path / "trusted.checkpoint"
    busy.ok("audit", "checkpoint", "--export", str(trusted))
    assert _verify(busy, "--trusted", str(trusted)).code == 0

    # An attacker (or a careless restore) puts back the older, self-consistent log.
    busy.sql("DELETE FROM vault_audit")
    for row in older_log:
        busy.sql("INSERT INTO vault_audit VALUES (?, ?, ?, ?, ?, ?)", tuple(row))
    busy.sql("UPDATE vault_audit_checkpoint SET size = ?, head_hash = ?, signed_at = ?, "
             "signature = ?", tuple(older_checkpoint[1:]))
    assert _verify(busy).code == 0  # consistent on its own: only a trusted checkpoint tells
    _assert_detected(busy, "rollback", "--trusted", str(trusted))


def test_a_trusted_checkpoint_from_another_history_is_detected(busy: Harness, tmp_path) -> None:
    trusted = tmp_path / "trusted.checkpoint"
    busy.ok("audit", "checkpoint", "--export", str(trusted))
    size = int(next(line for line in trusted.read_text().splitlines()
                    if line.startswith("size:")).split()[1])
    ct = bytearray(bytes(_row(busy, size)[4]))
    ct[0] ^= 1
    busy.sql("UPDATE vault_audit SET ciphertext = ? WHERE seq = ?", (bytes(ct), size))
    _assert_detected(busy, "altered", "--trusted", str(trusted))


def test_an_edited_trusted_checkpoint_file_is_refused(busy: Harness, tmp_path) -> None:
    trusted = tmp_path / "trusted.checkpoint"
    busy.ok("audit", "checkpoint", "--export", str(trusted))
    trusted.write_text(trusted.read_text().replace("size: ", "size: 1"))
    result = _verify(busy, "--trusted", str(trusted))
    assert result.code == 2 and "signature does not verify" in result.err


def _break_audit_writes(h: Harness) -> None:
    if h.kind == "sqlite":
        h.sql("CREATE TRIGGER no_audit BEFORE INSERT ON vault_audit "
              "BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END")
    else:
        h.sql("CREATE FUNCTION no_audit() RETURNS trigger AS $$ BEGIN "
              "RAISE EXCEPTION 'disk full (simulated)'; END $$ LANGUAGE plpgsql")
        h.sql("CREATE TRIGGER no_audit BEFORE INSERT ON vault_audit "
              "FOR EACH ROW EXECUTE FUNCTION no_audit()")


def _repair_audit_writes(h: Harness) -> None:
    h.sql("DROP TRIGGER no_audit" + ("" if h.kind == "sqlite" else " ON vault_audit"))


def test_a_command_whose_audit_entry_cannot_be_written_changes_nothing(busy: Harness) -> None:
    tables = ("stored_events", "vault_keys", "view_clients", "view_secrets", "vault_audit")
    before = {t: busy.sql(f"SELECT COUNT(*) FROM {t}")[0][0] for t in tables}
    _break_audit_writes(busy)
    result = busy.run("client", "add", "other", "--provider", "microsoft", "--tenant",
                      "contoso.com", "--client-id", "11111111-2222-3333-4444-555555555555",
                      "--secret-stdin", input="Other~secret-value-012345678")
    assert result.code == 1 and "audit log could not be written" in result.err
    rotate = busy.run("client", "rotate-secret", "jira", "--secret-stdin",
                      input="Rotated~secret-value-0123456")
    assert rotate.code == 1
    reveal = busy.run("client", "show", "jira", "--reveal-secret")
    assert reveal.code == 1 and reveal.out == ""  # a reveal that cannot be audited shows nothing
    _repair_audit_writes(busy)
    assert {t: busy.sql(f"SELECT COUNT(*) FROM {t}")[0][0] for t in tables} == before
    assert [c["name"] for c in json.loads(busy.ok("client", "list", "--json").out)] == ["jira"]
    assert busy.ok("audit", "verify").code == 0


def test_an_auditors_read_only_copy_verifies(sqlite_vault: Harness, tmp_path) -> None:
    add_client(sqlite_vault)
    copy_home = tmp_path / "auditor"
    copy_home.mkdir(mode=0o700)
    source = sqlite3.connect(sqlite_vault.home / "vault.db")
    target = sqlite3.connect(copy_home / "vault.db")
    source.backup(target)
    source.close()
    target.close()
    trusted = tmp_path / "cp"
    sqlite_vault.ok("audit", "checkpoint", "--export", str(trusted))
    auditor = Harness("sqlite", copy_home, None, tmp_path / "none.key")
    entries = auditor.sql("SELECT COUNT(*) FROM vault_audit")[0][0]
    (copy_home / "vault.db").chmod(0o400)
    result = auditor.run("audit", "verify", "--trusted", str(trusted), VAULT_KEY_FILE=None)
    assert result.code == 0, result.text
    assert f"{entries} entries" in result.out
    assert auditor.sql("SELECT COUNT(*) FROM vault_audit")[0][0] == entries
