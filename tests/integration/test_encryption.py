"""Encryption at rest: every ciphertext is bound to its row; any change to it is detected."""

from __future__ import annotations

import pytest

from tests.conftest import Harness, add_client, import_grant, record_refreshes
from vault.core import SNAPSHOT_EVERY


def _event(h: Harness, name: str, version: int) -> tuple[str, bytes]:
    """The originator id and stored state of a client's event, found through the read model."""
    uuid = h.sql("SELECT client_uuid FROM view_clients WHERE name = ?", (name,))[0][0]
    stored_id = uuid if h.kind == "postgresql" else uuid.replace("-", "")
    state = h.sql("SELECT state FROM stored_events WHERE originator_id = ? "
                  "AND originator_version = ?", (stored_id, version))[0][0]
    return stored_id, bytes(state)


def _set_state(h: Harness, stored_id: str, version: int, state: bytes) -> None:
    h.sql("UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = ?",
          (state, stored_id, version))


def _assert_integrity_failure(h: Harness, *args: str) -> None:
    result = h.run(*args)
    assert result.code == 5, result.text
    assert result.err.startswith("vault: integrity violation: stored event")
    assert "Traceback" not in result.err and result.err.count("\n") == 1


def test_a_ciphertext_copied_onto_another_aggregate_fails_to_decrypt(vault: Harness) -> None:
    add_client(vault, "alice-app", "Alice~secret-value-0123456789")
    add_client(vault, "bob-app", "Bob~secret-value-9876543210xx")
    _, alice_state = _event(vault, "alice-app", 2)  # SecretAdded of Alice
    bob_id, _ = _event(vault, "bob-app", 2)
    _set_state(vault, bob_id, 2, alice_state)
    _assert_integrity_failure(vault, "client", "show", "bob-app", "--reveal-secret")
    assert vault.ok("client", "show", "alice-app").code == 0


def test_a_ciphertext_moved_to_another_version_fails_to_decrypt(vault: Harness) -> None:
    add_client(vault, "app", "First~secret-value-0123456789")
    vault.ok("client", "rotate-secret", "app", "--secret-stdin", "--overlap",
             input="Second~secret-value-012345678")
    stored_id, v2 = _event(vault, "app", 2)
    _set_state(vault, stored_id, 3, v2)  # same event type (SecretAdded), other version
    _assert_integrity_failure(vault, "client", "show", "app")


def test_an_edited_topic_is_detected(vault: Harness) -> None:
    add_client(vault, "app", "First~secret-value-0123456789")
    stored_id, _ = _event(vault, "app", 2)
    vault.sql("UPDATE stored_events SET topic = ? WHERE originator_id = ? "
              "AND originator_version = 2", ("vault.ClientCredential.Removed", stored_id))
    _assert_integrity_failure(vault, "client", "show", "app")


@pytest.mark.parametrize("position", [0, 1, 30, -40, -1])
def test_a_flipped_byte_is_detected(vault: Harness, position: int) -> None:
    add_client(vault, "app", "First~secret-value-0123456789")
    stored_id, state = _event(vault, "app", 2)
    flipped = bytearray(state)
    flipped[position] ^= 0x01
    _set_state(vault, stored_id, 2, bytes(flipped))
    _assert_integrity_failure(vault, "client", "show", "app")


def test_a_truncated_ciphertext_is_detected(vault: Harness) -> None:
    add_client(vault, "app", "First~secret-value-0123456789")
    stored_id, state = _event(vault, "app", 2)
    _set_state(vault, stored_id, 2, state[:20])
    _assert_integrity_failure(vault, "client", "show", "app")


def test_data_keys_swapped_between_subjects_fail(vault: Harness) -> None:
    add_client(vault, "alice-app", "Alice~secret-value-0123456789")
    add_client(vault, "bob-app", "Bob~secret-value-9876543210xx")
    rows = dict(vault.sql("SELECT c.name, k.wrapped FROM vault_keys k JOIN view_clients c "
                          "ON c.client_uuid = k.originator_id"))
    bob = vault.sql("SELECT client_uuid FROM view_clients WHERE name = 'bob-app'")[0][0]
    vault.sql("UPDATE vault_keys SET wrapped = ? WHERE originator_id = ?",
              (rows["alice-app"], bob))
    result = vault.run("client", "show", "bob-app")
    assert result.code == 5 and "data key" in result.err


def test_snapshots_are_encrypted_and_bound_too(vault: Harness) -> None:
    """A TokenRotation snapshot holds the refresh token: it is sealed like any event."""
    add_client(vault)
    import_grant(vault)
    with vault.app() as app:
        record_refreshes(app, "help@contoso.com", 120)
    snapshots = vault.sql("SELECT originator_id, originator_version, state FROM stored_snapshots")
    assert sorted(row[1] for row in snapshots) == list(range(SNAPSHOT_EVERY, 122, SNAPSHOT_EVERY))
    vault.ok("grant", "show", "help@contoso.com")
    stored_id, _, state = max(snapshots, key=lambda row: row[1])
    flipped = bytearray(bytes(state))
    flipped[len(flipped) // 2] ^= 0x80
    vault.sql("UPDATE stored_snapshots SET state = ? WHERE originator_id = ?",
              (bytes(flipped), stored_id))
    result = vault.run("grant", "show", "help@contoso.com")
    assert result.code == 5 and "failed authentication" in result.err


