"""Unlocking, keyslots and root-key rotation, on both stores."""

from __future__ import annotations

import json
import os

from adapters.keyslots import SealedHeader
from tests.conftest import PASSPHRASE, Harness, add_client, import_grant

SECRET = "Key~slots-secret-value-0123456789"


def reveal(h: Harness, **env: str | None) -> str:
    out = h.ok("client", "show", "jira", "--reveal-secret", "--json", **env).out
    return json.loads(out)["secret"]


def by_passphrase(passphrase: str = PASSPHRASE) -> dict[str, str | None]:
    return {"VAULT_KEY_FILE": None, "VAULT_PASSPHRASE": passphrase}


def test_a_passphrase_and_a_key_file_open_the_same_vault(vault: Harness) -> None:
    add_client(vault, secret=SECRET)
    assert reveal(vault) == SECRET
    assert reveal(vault, **by_passphrase()) == SECRET
    slots = json.loads(vault.ok("key", "list", "--json").out)
    assert [(s["id"], s["kind"], s["used_now"]) for s in slots] == [
        (1, "passphrase", False), (2, "keyfile", True)]


def test_a_wrong_passphrase_exits_3_with_one_line(vault: Harness) -> None:
    result = vault.run("client", "list", **by_passphrase("not the passphrase"))
    assert result.code == 3
    assert result.out == ""
    assert result.err.count("\n") == 1 and "wrong passphrase" in result.err
    assert "Traceback" not in result.err and "not the passphrase" not in result.err


def test_another_vaults_key_file_exits_3(vault: Harness, tmp_path) -> None:
    from adapters.keyslots import write_key_file

    other = write_key_file(str(tmp_path / "other.key"))
    result = vault.run("client", "list", VAULT_KEY_FILE=other.path)
    assert result.code == 3 and "opens no keyslot" in result.err


def test_a_key_file_others_can_read_is_refused(vault: Harness) -> None:
    os.chmod(vault.key_file, 0o644)
    result = vault.run("client", "list")
    assert result.code == 3 and "chmod 600" in result.err


def test_no_unlock_material_without_a_terminal_exits_3(vault: Harness) -> None:
    result = vault.run("client", "list", VAULT_KEY_FILE=None)
    assert result.code == 3 and "VAULT_PASSPHRASE" in result.err


def _header(h: Harness) -> tuple[str, str, str]:
    return h.sql("SELECT body, checksum, mac FROM vault_header")[0]


def _write_header(h: Harness, body: str, checksum: str | None = None, mac: str | None = None):
    old = _header(h)
    h.sql("UPDATE vault_header SET body = ?, checksum = ?, mac = ?",
          (body, checksum or old[1], mac or old[2]))


def test_an_edited_header_exits_5(vault: Harness) -> None:
    body = json.loads(_header(vault)[0])
    body["keyslots"][0]["label"] = "edited"
    _write_header(vault, json.dumps(body, sort_keys=True, separators=(",", ":")))
    result = vault.run("client", "list")
    assert result.code == 5 and "header" in result.err and "checksum" in result.err


def test_a_header_rewritten_with_a_matching_checksum_still_fails_its_mac(vault: Harness) -> None:
    body = json.loads(_header(vault)[0])
    body["audit_public_key"] = "00" * 32  # an attacker re-signing the audit log with their key
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    _write_header(vault, text, SealedHeader.checksum_of(text))
    result = vault.run("client", "list")
    assert result.code == 5 and "authentication code" in result.err


def test_kdf_parameters_cannot_be_downgraded_or_inflated(vault: Harness) -> None:
    original = _header(vault)
    for ops, mem in ((1, 64 * 1024 * 1024), (2, 8 * 1024 * 1024), (2, 64 * 1024 ** 3)):
        body = json.loads(original[0])
        body["keyslots"][0]["kdf"].update(opslimit=ops, memlimit=mem)
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        _write_header(vault, text, SealedHeader.checksum_of(text))
        result = vault.run("client", "list", **by_passphrase())
        assert result.code == 5 and "out of bounds" in result.err, result.err


def test_key_passwd_rewraps_only_and_keeps_secrets(vault: Harness, tmp_path) -> None:
    add_client(vault, secret=SECRET)
    events_before = vault.sql("SELECT COUNT(*) FROM stored_events")[0][0]
    keys_before = vault.sql("SELECT originator_id, wrapped FROM vault_keys ORDER BY 1")
    new = tmp_path / "new-pass"
    new.write_text("a brand new passphrase\n")
    vault.ok("key", "passwd", "--new-passphrase-file", str(new), **by_passphrase())
    assert vault.run("client", "list", **by_passphrase()).code == 3
    assert reveal(vault, **by_passphrase("a brand new passphrase")) == SECRET
    assert reveal(vault) == SECRET  # the key file slot is untouched
    assert vault.sql("SELECT originator_id, wrapped FROM vault_keys ORDER BY 1") == keys_before
    assert vault.sql("SELECT COUNT(*) FROM stored_events")[0][0] == events_before


def test_key_passwd_needs_the_passphrase_slot(vault: Harness) -> None:
    result = vault.run("key", "passwd", VAULT_NEW_PASSPHRASE="another passphrase")
    assert result.code == 2 and "unlock with the passphrase" in result.err


def test_key_rotate_rewraps_every_data_key_and_slot(vault: Harness, tmp_path) -> None:
    add_client(vault, secret=SECRET)
    import_grant(vault)
    before = dict(vault.sql("SELECT originator_id, wrapped FROM vault_keys"))
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE)
    vault.ok("key", "rotate", "--other-passphrase-file", str(pass_file))
    after = vault.sql("SELECT originator_id, wrapped, term FROM vault_keys")
    assert {r[0] for r in after} == set(before)
    assert all(r[2] == 2 and r[1] != before[r[0]] for r in after)
    assert json.loads(_header(vault)[0])["root_term"] == 2
    assert reveal(vault) == SECRET
    assert reveal(vault, **by_passphrase()) == SECRET
    assert vault.ok("audit", "verify").code == 0


def test_key_rotate_refuses_to_lock_out_a_slot_nobody_opened(vault: Harness) -> None:
    add_client(vault, secret=SECRET)
    header = _header(vault)
    result = vault.run("key", "rotate")
    assert result.code == 2 and "keyslot(s) 1 (passphrase" in result.err
    assert _header(vault) == header
    vault.ok("key", "rotate", "--drop-slot", "1")
    assert vault.run("client", "list", **by_passphrase()).code == 3
    assert reveal(vault) == SECRET


def test_keyslots_can_be_added_and_removed_but_not_the_last(vault: Harness, tmp_path) -> None:
    add_client(vault, secret=SECRET)
    extra = tmp_path / "backup.key"
    vault.ok("key", "add-keyfile", str(extra), "--label", "backup")
    assert oct(extra.stat().st_mode & 0o777) == "0o600"
    assert reveal(vault, VAULT_KEY_FILE=str(extra)) == SECRET
    vault.ok("key", "add-passphrase", "--kdf", "interactive", "--label", "ops",
             VAULT_NEW_PASSPHRASE="second passphrase here")
    assert reveal(vault, **by_passphrase("second passphrase here")) == SECRET
    vault.ok("key", "remove", "1")
    vault.ok("key", "remove", "4")
    vault.ok("key", "remove", "2", VAULT_KEY_FILE=str(extra))
    result = vault.run("key", "remove", "3", VAULT_KEY_FILE=str(extra))
    assert result.code == 1 and "last keyslot" in result.err
    assert vault.run("key", "remove", "9", VAULT_KEY_FILE=str(extra)).code == 4


def test_init_refuses_a_second_vault_and_weak_passphrases(vault: Harness, tmp_path) -> None:
    again = vault.run("init", "--kdf", "interactive", VAULT_PASSPHRASE=PASSPHRASE,
                      VAULT_KEY_FILE=None)
    assert again.code == 1 and "already exists" in again.err
    other = Harness(vault.kind, tmp_path / "other-home", None, tmp_path / "other.key")
    weak = other.run("init", VAULT_PASSPHRASE="short", VAULT_KEY_FILE=None)
    assert weak.code == 2 and "at least 8" in weak.err
    assert other.run("client", "list").code == 4


def test_commands_on_a_missing_vault_say_so(tmp_path) -> None:
    nothing = Harness("sqlite", tmp_path / "nowhere", None, tmp_path / "k")
    result = nothing.run("client", "list", VAULT_PASSPHRASE="whatever passphrase")
    assert result.code == 4 and "vault init" in result.err
