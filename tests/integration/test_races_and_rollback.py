"""Changes that race with key commands, and events deleted from the end of an aggregate."""

from __future__ import annotations

import json

import pytest

from adapters.errors import ConcurrentChange
from domain.secret_value import SecretValue
from tests.conftest import MS_CLIENT_ID, Harness, add_client, import_grant, record_refreshes


def test_a_process_unlocked_before_a_root_key_rotation_cannot_write_old_term_keys(
        vault: Harness) -> None:
    with vault.app() as stale:
        stale.clients.list_clients()  # its audit key is now cached: only the commit can tell
        vault.ok("key", "rotate", "--drop-slot", "1")
        with pytest.raises(ConcurrentChange, match="root key was rotated"):
            stale.clients.add_client(name="late", provider="microsoft", tenant="contoso.com",
                             client_id=MS_CLIENT_ID, secret=SecretValue("Late~secret-012345678"))
    assert json.loads(vault.ok("client", "list", "--json").out) == []
    assert vault.sql("SELECT DISTINCT term FROM vault_keys") == [(2,)]


def test_rotation_leaves_purged_keys_destroyed(vault: Harness) -> None:
    add_client(vault)
    import_grant(vault)
    vault.ok("grant", "revoke", "help@contoso.com", "--reason", "gone", "--purge")
    vault.ok("key", "rotate", "--drop-slot", "1")
    rows = vault.sql("SELECT wrapped IS NULL, term FROM vault_keys WHERE shredded_at IS NOT NULL")
    assert rows == [(1, 1), (1, 1)]


def test_a_key_command_on_a_header_changed_meanwhile_is_refused(vault: Harness, tmp_path) -> None:
    from adapters.keyslots import write_key_file

    with vault.app() as stale:
        vault.ok("key", "add-keyfile", str(tmp_path / "first.key"))
        with pytest.raises(ConcurrentChange, match="keyslots changed"):
            stale.keys.add_keyslot(write_key_file(str(tmp_path / "second.key")), label="second")
    slots = json.loads(vault.ok("key", "list", "--json").out)
    assert [s["id"] for s in slots] == [1, 2, 3]
    assert vault.ok("client", "list", VAULT_KEY_FILE=str(tmp_path / "first.key")).code == 0


def _stored_id(h: Harness, uuid: str) -> str:
    return uuid if h.kind == "postgresql" else uuid.replace("-", "")


def test_deleting_the_newest_events_of_a_token_rotation_is_detected(vault: Harness) -> None:
    """Dropping the newest TokensIssued would bring back a spent refresh token."""
    add_client(vault)
    import_grant(vault)
    with vault.app() as app:
        record_refreshes(app, "help@contoso.com", 3)
    rotation = _stored_id(vault, vault.sql("SELECT rotation_uuid FROM view_grants")[0][0])
    vault.sql("DELETE FROM stored_events WHERE originator_id = ? AND originator_version = 4",
              (rotation,))
    result = vault.run("grant", "show", "help@contoso.com")
    assert result.code == 5 and "newest events were deleted" in result.err


def test_deleting_a_revocation_does_not_bring_a_grant_back(vault: Harness) -> None:
    add_client(vault)
    import_grant(vault)
    vault.ok("grant", "revoke", "help@contoso.com", "--reason", "left")
    grant = _stored_id(vault, vault.sql("SELECT grant_uuid FROM view_grants")[0][0])
    vault.sql("DELETE FROM stored_events WHERE originator_id = ? AND originator_version = 2",
              (grant,))
    assert vault.run("grant", "show", "help@contoso.com").code == 5
    assert vault.run("admin", "rebuild-projections").code == 5


def test_a_forged_head_version_is_detected(vault: Harness) -> None:
    add_client(vault)
    uuid = vault.sql("SELECT client_uuid FROM view_clients")[0][0]
    vault.sql("UPDATE vault_keys SET head_version = 1 WHERE originator_id = ?", (uuid,))
    vault.sql("DELETE FROM stored_events WHERE originator_id = ? AND originator_version = 2",
              (_stored_id(vault, uuid),))
    result = vault.run("client", "show", "jira")
    # the read model, projected from version 2, already says the newest event is gone
    assert result.code == 5 and "newest events were deleted" in result.err


def test_a_forged_head_version_alone_is_detected(vault: Harness) -> None:
    """Nothing else out of place: only the head's MAC tells."""
    add_client(vault)
    uuid = vault.sql("SELECT client_uuid FROM view_clients")[0][0]
    vault.sql("UPDATE vault_keys SET head_version = 1 WHERE originator_id = ?", (uuid,))
    result = vault.run("client", "show", "jira")
    assert result.code == 5 and "forged" in result.err


def test_implausible_dates_are_bad_input(vault: Harness) -> None:
    add_client(vault)
    far = vault.run("client", "rotate-secret", "jira", "--secret-stdin", "--secret-created",
                    "9999-12-01", input="Far~future-secret-0123")
    assert far.code == 2 and "outside" in far.err
    future = vault.run("client", "rotate-secret", "jira", "--secret-stdin", "--secret-created",
                       "2150-01-01", input="Far~future-secret-0123")
    assert future.code == 2 and "not plausible" in future.err
    assert vault.run("history", "jira", "--as-of", "9999-12-31").code == 2
    assert vault.run("expiry", "--as-of", "0001-01-01").code == 2
    assert vault.run("config", "set", "google_idle_limit_days", "99999999").code == 2
    assert vault.ok("status").code == 0


def test_a_vault_home_with_uri_characters_stays_in_its_directory(tmp_path) -> None:
    home = tmp_path / "odd#name?x=1%20"
    h = Harness("sqlite", home, None, tmp_path / "k")
    h.ok("init", "--kdf", "interactive", "--key-file", str(h.key_file),
         VAULT_PASSPHRASE="a long enough passphrase", VAULT_KEY_FILE=None)
    assert (home / "vault.db").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "odd#name?x=1%20"]
