"""`vault key rotate --reencrypt` (issue 15): what a removed key file and a copy of the database
taken before can open afterwards (nothing new), resuming after a kill, the audit hand-over, and
commands running meanwhile."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import time

import pytest

from adapters import crypto
from adapters.errors import IntegrityViolation
from adapters.keyslots import SealedHeader, read_key_file, unlock
from tests.conftest import PASSPHRASE, Harness, add_client, import_grant

SECRET = "Reenc~secret-value-0123456789abcdef"
NEW_SECRET = "After~the-reencryption-0123456789xyz"


def _header(h: Harness) -> SealedHeader:
    body, checksum, mac = h.sql("SELECT body, checksum, mac FROM vault_header")[0]
    return SealedHeader(body, checksum, mac)


def _reencrypt(h: Harness, *args: str, **env: str | None) -> dict:
    result = h.run("key", "rotate", "--reencrypt", *args, "--json", **env)
    assert result.code == 0, result.text
    return json.loads(result.out)


def _stolen_root(db: str, key_file) -> tuple[str, object]:
    """What the holder of a removed key file and an old copy of the database has: the old root
    key (its keyslot in the old header)."""
    conn = sqlite3.connect(db)
    body, checksum, mac = conn.execute("SELECT body, checksum, mac FROM vault_header").fetchone()
    conn.close()
    header = SealedHeader(body, checksum, mac).parse()
    root, _ = unlock(header, read_key_file(str(key_file)), None)
    return header.vault_id, root


def test_old_material_opens_nothing_written_after_the_reencryption(sqlite_vault: Harness,
                                                                   tmp_path) -> None:
    """A key file removed, and a copy of the database taken before: the secret written after
    `--reencrypt` stays sealed to that material (tried with the library's own primitives)."""
    vault = sqlite_vault
    add_client(vault, secret=SECRET)
    import_grant(vault)
    leaked = tmp_path / "leaked.key"
    vault.ok("key", "add-keyfile", str(leaked), "--label", "leaked")
    copy = tmp_path / "copy-before.db"
    vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(vault.home / "vault.db", copy)
    checkpoint = tmp_path / "before.checkpoint"
    vault.ok("audit", "checkpoint", "--export", str(checkpoint))
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE)
    done = _reencrypt(vault, "--other-passphrase-file", str(pass_file), "--drop-slot", "3")
    assert done["generation"] == 1 and done["subjects"] == 2 and done["resumed"] is False
    assert vault.run("client", "list", VAULT_KEY_FILE=str(leaked)).code == 3
    vault.ok("client", "rotate-secret", "jira", "--secret-stdin", input=NEW_SECRET)
    assert json.loads(vault.ok("client", "show", "jira", "--reveal-secret", "--json").out)[
        "secret"] == NEW_SECRET
    verified = vault.ok("audit", "verify", "--trusted", str(checkpoint)).out
    assert "across 1 signing-key hand-over" in verified and "pin" in verified

    vault_id, old_root = _stolen_root(str(copy), leaked)
    old = sqlite3.connect(copy)
    client_id = next(o for o, s in old.execute(
        "SELECT originator_id, subject_id FROM vault_keys") if o == s
        and not o.startswith("system:") and _is_client(vault, o))
    (old_wrapped,) = old.execute("SELECT wrapped FROM vault_keys WHERE originator_id = ?",
                                 (client_id,)).fetchone()
    old_data_key = crypto.unseal(old_root.key, old_wrapped, crypto.aad(
        b"vault-data-key-v1", vault_id, client_id, client_id, old_root.term), "old key")
    new_events = vault.sql("SELECT originator_version, topic, state FROM stored_events WHERE "
                           "originator_id = ? ORDER BY originator_version",
                           (client_id.replace("-", ""),))
    from adapters.keyring import event_aad

    version, topic, state = [e for e in new_events if e[1].endswith("SecretAdded")][-1]
    assert version > 2  # the secret added after the re-encryption
    with pytest.raises(IntegrityViolation):  # the old data key opens none of it
        crypto.unseal(old_data_key, bytes(state)[1:], event_aad(client_id, version, topic), "x")
    (new_wrapped, generation) = vault.sql("SELECT wrapped, generation FROM vault_keys WHERE "
                                          "originator_id = ?", (client_id,))[0]
    assert generation == 1
    for label in (b"vault-data-key-v1", b"vault-data-key-v2"):
        with pytest.raises(IntegrityViolation):  # nor does the old root open the new key
            crypto.unseal(old_root.key, bytes(new_wrapped), crypto.aad(
                label, vault_id, client_id, client_id, old_root.term + 1, 1), "x")
    # the audit entries written since: not with the old audit key
    (old_audit,) = old.execute("SELECT wrapped FROM vault_keys WHERE originator_id = "
                               "'system:audit'").fetchone()
    old_audit_key = crypto.unseal(old_root.key, old_audit, crypto.aad(
        b"vault-data-key-v1", vault_id, "system:audit", "system:audit", old_root.term), "k")
    from adapters.store import AuditRow
    from vault.audit import decrypt_entry

    last = AuditRow(*vault.sql("SELECT seq, prev_hash, header, nonce, ciphertext, entry_hash "
                               "FROM vault_audit ORDER BY seq DESC LIMIT 1")[0])
    with pytest.raises(IntegrityViolation):
        decrypt_entry(old_audit_key, vault_id, last)
    entries = json.loads(vault.ok("audit", "log", "--limit", "1000", "--json").out)
    assert [e["detail"].get("step") for e in entries if e["action"] ==
            "key rotate --reencrypt"][-1] == "proven"
    assert any(e["action"] == "init" for e in entries)  # read with the archived old key


def _is_client(h: Harness, originator: str) -> bool:
    return bool(h.sql("SELECT 1 FROM view_clients WHERE client_uuid = ?", (originator,)))


def _many_grants(h: Harness, count: int) -> None:
    """`count` imported grants of client jira, written in bulk (in-process, as the bench does)."""
    from datetime import UTC, datetime

    from adapters.store.changes import Changes
    from domain.grants import ConsentGrant
    from domain.rotation import TokenRotation, rotation_id_for
    from domain.secret_value import SecretValue
    from vault.core import apply_views, use_case
    from vault.projections import grant_changes, rotation_changes

    now = datetime.now(UTC)
    with h.app() as app:
        @use_case("test: bulk grants")
        def bulk(app, first: int, size: int) -> None:
            client = app.core.load_client(app.clients.client_row("jira").client_uuid)
            aggregates, changes = [], Changes()
            for n in range(first, first + size):
                gid = app.core.new_id()
                grant = ConsentGrant.grant(
                    aggregate_id=gid, rotation_id=rotation_id_for(gid), now=now, client=client,
                    mailbox=f"box{n:05d}@contoso.com", protocols=("imap",), scopes=None,
                    method="import", granted_at=now, granted_by="test")
                rotation = TokenRotation.start(
                    grant_id=gid, now=now, refresh_token=SecretValue(f"rt-{n:06d}-xxxxxxxx"),
                    issued_at=now, source="import")
                changes.keys += (app.core.new_key_rows(gid, gid)
                                 + app.core.new_key_rows(rotation.id, gid))
                apply_views(changes, grant_changes(grant, "microsoft", False),
                            rotation_changes(rotation))
                aggregates += [grant, rotation]
            app.core.commit(*aggregates, changes=changes)

        for first in range(0, count, 100):
            bulk(app, first, min(100, count - first))


def _generation_counts(h: Harness) -> tuple[int, int]:
    """(subjects of the header's generation, subjects in all), from the key table."""
    rows = h.sql("SELECT subject_id, COALESCE(generation, 0) FROM vault_keys WHERE wrapped IS "
                 "NOT NULL AND originator_id NOT LIKE ? AND originator_id = subject_id",
                 ("system:%",))
    generation = json.loads(h.sql("SELECT body FROM vault_header")[0][0]).get(
        "key_generation", 0)
    return sum(g == generation and generation > 0 for _, g in rows), len(rows)


@pytest.mark.parametrize("when", ["after the start", "between batches", "before the seals"])
def test_a_killed_reencryption_resumes_complete_and_proven(vault: Harness, tmp_path,
                                                           when: str) -> None:
    """Killed (SIGKILL: on PostgreSQL its connection is lost with it) at three points of a
    re-encryption of 301 subjects, five a transaction: the next run completes and proves it."""
    from tests.e2e.test_clear_errors import _spawn

    h = vault
    add_client(h, secret=SECRET)
    _many_grants(h, 300)
    checkpoint = tmp_path / "before.checkpoint"
    h.ok("audit", "checkpoint", "--export", str(checkpoint))
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE)
    process = _spawn(h, "key", "rotate", "--reencrypt", "--batch-size", "5",
                     "--other-passphrase-file", str(pass_file))
    deadline = time.monotonic() + 120
    total = 301
    while True:
        done, total = _generation_counts(h)
        seals = h.sql("SELECT COALESCE(generation, 0) FROM vault_keys WHERE originator_id = "
                      "'system:rows'")[0][0]
        started = json.loads(h.sql("SELECT body FROM vault_header")[0][0]).get("key_generation")
        if (when == "after the start" and started) or (
                when == "between batches" and 20 <= done < total) or (
                when == "before the seals" and done == total and not seals):
            break
        assert process.poll() is None and time.monotonic() < deadline, (when, done, total)
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    # meanwhile: the vault works, reading either generation
    assert json.loads(h.ok("client", "show", "jira", "--reveal-secret", "--json").out)[
        "secret"] == SECRET
    h.ok("client", "set-secret-dates", "jira", "s1", "--expires", "2030-01-01")
    h.ok("status")
    resumed = _reencrypt(h)
    assert resumed["resumed"] is True and resumed["generation"] == 1
    assert resumed["aggregates_proven"] == 1 + 2 * 300
    assert _generation_counts(h) == (total, total)
    assert h.ok("audit", "verify", "--trusted", str(checkpoint)).code == 0
    h.ok("grant", "show", "box00150@contoso.com")
    entries = json.loads(h.ok("audit", "log", "--limit", "5000", "--json").out)
    steps = [e["detail"].get("step") for e in entries if e["action"] == "key rotate --reencrypt"]
    assert entries[0]["action"] == "init" and steps[-1] == "proven" and "batch" in steps


def test_reencryption_on_both_stores_keeps_every_secret(vault: Harness, tmp_path) -> None:
    """On SQLite and on PostgreSQL: the secrets read back, new writes land in the new
    generation, a second run starts generation 2 (and hands the audit log over again)."""
    add_client(vault, secret=SECRET)
    import_grant(vault)
    checkpoint = tmp_path / "before.checkpoint"
    vault.ok("audit", "checkpoint", "--export", str(checkpoint))
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE)
    first = _reencrypt(vault, "--other-passphrase-file", str(pass_file))
    assert (first["generation"], first["subjects"], first["aggregates_proven"]) == (1, 2, 3)
    assert json.loads(vault.ok("client", "show", "jira", "--reveal-secret", "--json").out)[
        "secret"] == SECRET
    vault.ok("client", "rotate-secret", "jira", "--secret-stdin", input=NEW_SECRET)
    second = _reencrypt(vault, "--other-passphrase-file", str(pass_file))
    assert (second["generation"], second["root_term"]) == (2, 3)
    assert second["handover_at"] > first["handover_at"]
    assert json.loads(vault.ok("client", "show", "jira", "--reveal-secret", "--json",
                               VAULT_KEY_FILE=None, VAULT_PASSPHRASE=PASSPHRASE).out)[
        "secret"] == NEW_SECRET
    assert vault.ok("audit", "verify", "--trusted", str(checkpoint)).code == 0
    entries = json.loads(vault.ok("audit", "log", "--limit", "1000", "--json").out)
    assert entries[0]["action"] == "init"  # three audit keys' entries, each read with its own
    assert vault.ok("report", "audit", "--format", "json").out
    assert all(g == 2 for (g,) in vault.sql(
        "SELECT generation FROM vault_keys WHERE wrapped IS NOT NULL AND originator_id NOT "
        "LIKE ?", ("system:audit@%",)))


def test_an_edited_hand_over_or_generation_is_exit_5(sqlite_vault: Harness, tmp_path) -> None:
    h = sqlite_vault
    add_client(h, secret=SECRET)
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE)
    checkpoint = tmp_path / "before.checkpoint"
    h.ok("audit", "checkpoint", "--export", str(checkpoint))
    _reencrypt(h, "--other-passphrase-file", str(pass_file))
    (key, value) = h.sql("SELECT key, value FROM vault_meta WHERE key LIKE 'audit_handover:%'")[0]
    forged = json.loads(value)
    forged["new_public_key"] = "00" * 32
    h.sql("UPDATE vault_meta SET value = ? WHERE key = ?", (json.dumps(forged), key))
    assert h.run("audit", "verify", "--trusted", str(checkpoint)).code == 5
    h.sql("UPDATE vault_meta SET value = ? WHERE key = ?", (value, key))
    assert h.run("audit", "verify", "--trusted", str(checkpoint)).code == 0
    h.sql("DELETE FROM vault_meta WHERE key = ?", (key,))
    assert h.run("audit", "verify", "--trusted", str(checkpoint)).code == 5  # no way back
    h.sql("INSERT INTO vault_meta (key, value) VALUES (?, ?)", (key, value))
    # a key row claiming a generation it was not wrapped as opens nothing
    client = h.sql("SELECT client_uuid FROM view_clients")[0][0]
    h.sql("UPDATE vault_keys SET generation = 0 WHERE originator_id = ?", (client,))
    assert h.run("client", "show", "jira").code == 5


def test_token_and_refresh_meanwhile_succeed_or_are_told_to_run_again(sqlite_vault: Harness,
                                                                      sandbox,
                                                                      tmp_path) -> None:
    from tests.conftest import add_sandbox_client
    from tests.consent import SANDBOX_MAILBOX, sandbox_consent
    from tests.e2e.test_clear_errors import _spawn

    h = sqlite_vault
    add_sandbox_client(h, sandbox)
    sandbox_consent(h, sandbox)
    add_client(h, secret=SECRET)
    _many_grants(h, 300)
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE)
    process = _spawn(h, "key", "rotate", "--reencrypt", "--batch-size", "3",
                     "--other-passphrase-file", str(pass_file))
    outcomes: list[tuple[str, int, str]] = []
    while process.poll() is None or not outcomes:
        for args in (("token", SANDBOX_MAILBOX), ("refresh", SANDBOX_MAILBOX),
                     ("token", SANDBOX_MAILBOX, "--min-valid", "3000")):
            result = h.run(*args)
            outcomes.append((args[0], result.code, result.err + result.out))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, out + err
    told = [o for o in outcomes if o[1] != 0]
    assert len(outcomes) >= 6  # while it ran
    assert all(code == 1 and "run it again" in text for _, code, text in told), told
    assert {"token", "refresh"} <= {command for command, code, _ in outcomes if code == 0}
    assert h.ok("token", SANDBOX_MAILBOX, "--min-valid", "3000").out.strip()
    assert h.ok("audit", "verify").code == 0
    (grant,) = [g for g in json.loads(h.ok("grant", "list", "--json").out)
                if g["mailbox"] == SANDBOX_MAILBOX]
    assert grant["status"] == "active"


# -- races with a re-encryption, forced at their exact moment (a review's findings) ------------


class _Killed(Exception):
    pass


def _materials(pass_file):
    from vault.cli.inputs import other_materials

    return other_materials((), (str(pass_file),))


def _stopped_before(h: Harness, step: str, monkeypatch, pass_file=None) -> None:
    """A re-encryption (started with `pass_file`, else resumed) killed before `step` of
    vault/services/reencrypt.py's Reencryptor (run_batches, finish, prove)."""
    from vault.services.reencrypt import Reencryptor

    def killed(self):
        raise _Killed

    monkeypatch.setattr(Reencryptor, step, killed)
    with h.app() as app, pytest.raises(_Killed):
        app.keys.reencrypt(_materials(pass_file) if pass_file else [])
    monkeypatch.undo()


def _ready(h: Harness, tmp_path):
    add_client(h, secret=SECRET)
    import_grant(h)
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE)
    return pass_file


def test_a_related_aggregate_filed_with_a_replaced_key_is_refused(sqlite_vault: Harness,
                                                                  tmp_path,
                                                                  monkeypatch) -> None:
    """An alert state filed under a grant by a process that read the grant's key before its
    batch: refused ("run it again"), never stored under the discarded key."""
    from datetime import UTC, datetime
    from uuid import UUID

    from adapters.errors import ConcurrentChange
    from adapters.store.changes import Changes
    from domain.alerts import AlertState, alert_key

    h = sqlite_vault
    _stopped_before(h, "run_batches", monkeypatch, _ready(h, tmp_path))
    grant_id = h.sql("SELECT grant_uuid FROM view_grants")[0][0]
    with h.app() as a:
        a.core.load(UUID(grant_id))  # its generation-0 key, read before its batch
        with h.app() as b:
            b.keys.reencrypt([])

        def file_alert():
            state = AlertState.open(key=alert_key(grant_id, "expiry", None),
                                    now=datetime.now(UTC))
            a.core.commit(state, changes=Changes(keys=a.core.new_key_rows(state.id,
                                                                          UUID(grant_id))))

        with pytest.raises(ConcurrentChange):
            a.core.broker.run("test alert", file_alert)
    assert not h.sql("SELECT 1 FROM vault_keys WHERE subject_id = ? AND originator_id != ?",
                     (grant_id, grant_id)) or all(
        g == 1 for (g,) in h.sql("SELECT generation FROM vault_keys WHERE subject_id = ?",
                                 (grant_id,)))


def test_settings_changed_just_before_the_seals_stay_readable(sqlite_vault: Harness, tmp_path,
                                                              monkeypatch) -> None:
    h = sqlite_vault
    _stopped_before(h, "finish", monkeypatch, _ready(h, tmp_path))
    h.ok("config", "set", "secret_warning_days", "45")
    with h.app() as app:
        app.keys.reencrypt([])
    assert '"secret_warning_days": 45' in h.ok("config", "show", "--json").out


def test_readers_meanwhile_read_again_instead_of_crying_wolf(sqlite_vault: Harness, tmp_path,
                                                             monkeypatch) -> None:
    """A listing whose rows were sealed anew while it read them, a load whose key was replaced
    between two reads of its row, and an audit read by a command that unlocked before the
    start: each reads again or is told to run again, never exit 5."""
    from uuid import UUID

    from adapters.errors import ConcurrentChange

    h = sqlite_vault
    pass_file = _ready(h, tmp_path)
    with h.app() as early:
        _stopped_before(h, "run_batches", monkeypatch, pass_file)
        with pytest.raises(ConcurrentChange):
            early.audit.verified_audit_rows()
    client_id = h.sql("SELECT client_uuid FROM view_clients")[0][0]
    with h.app() as a:
        real = a.core.store.key_row

        def key_row(originator):
            row = real(originator)
            if originator == client_id:
                a.core.store.key_row = real
                with h.app() as b:
                    _stopped_before_in(b, "finish", monkeypatch)
            return row

        a.core.store.key_row = key_row
        assert a.core.load(UUID(client_id)).name == "jira"
    with h.app() as a:
        a.core.keyring.forget(["system:rows"])
        real_side = a.core.store.read_side

        def read_side():
            a.core.store.read_side = real_side
            side = real_side()
            with h.app() as b:
                b.keys.reencrypt([])  # the seals, after the rows were read
            return side

        a.core.store.read_side = read_side
        assert [c.name for c in a.core.reads.models().clients] == ["jira"]


def _stopped_before_in(app, step: str, monkeypatch) -> None:
    from vault.services.reencrypt import Reencryptor

    def killed(self):
        raise _Killed

    monkeypatch.setattr(Reencryptor, step, killed)
    with pytest.raises(_Killed):
        app.keys.reencrypt([])
    monkeypatch.undo()


def test_a_refresh_during_a_batch_keeps_the_token_the_provider_rotated(
        sqlite_vault: Harness, sandbox, tmp_path, monkeypatch) -> None:
    """The provider answered with a new refresh token while a batch re-encrypted the grant:
    the outcome is sealed again under the new keys and stored, not lost."""
    from uuid import UUID

    from adapters.oauth import OAuthClient
    from tests.conftest import add_sandbox_client
    from tests.consent import SANDBOX_MAILBOX, sandbox_consent

    h = sqlite_vault
    add_sandbox_client(h, sandbox)
    sandbox_consent(h, sandbox)
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE)
    _stopped_before(h, "run_batches", monkeypatch, pass_file)
    real, issued = OAuthClient.refresh, []

    def refresh(self, *args, **kwargs):
        tokens = real(self, *args, **kwargs)
        issued.append(tokens.refresh_token.reveal())
        with h.app() as other:
            other.keys.reencrypt([])  # every batch, the seals and the proof, meanwhile
        return tokens

    monkeypatch.setattr(OAuthClient, "refresh", refresh)
    result = h.run("refresh", SANDBOX_MAILBOX)
    monkeypatch.undo()
    assert result.code == 0, result.text
    rotation_id = h.sql("SELECT rotation_uuid FROM view_grants")[0][0]
    with h.app() as app:
        assert app.core.load(UUID(rotation_id)).refresh_token.reveal() == issued[0]


def test_a_purged_subjects_ciphertext_is_gone_after_a_reencryption(sqlite_vault: Harness,
                                                                   tmp_path) -> None:
    """What a purge left sealed under its destroyed key (events written after an old copy of
    the key table included) is deleted: nothing for old material to open."""
    h = sqlite_vault
    pass_file = _ready(h, tmp_path)
    client_id = h.sql("SELECT client_uuid FROM view_clients")[0][0]
    h.ok("grant", "revoke", "help@contoso.com", "--reason", "x", "--purge")
    h.ok("client", "rotate-secret", "jira", "--secret-stdin", input=NEW_SECRET)
    h.ok("client", "remove", "jira", "--reason", "gone", "--purge")
    assert h.sql("SELECT COUNT(*) FROM stored_events WHERE originator_id = ?",
                 (client_id.replace("-", ""),))[0][0] > 0
    _reencrypt(h, "--other-passphrase-file", str(pass_file))
    assert h.sql("SELECT COUNT(*) FROM stored_events WHERE originator_id = ?",
                 (client_id.replace("-", ""),))[0][0] == 0
    assert h.run("history", "jira").code == 4  # still a purge
    assert h.ok("audit", "verify").code == 0


def test_a_row_forged_with_the_old_seal_is_not_carried_over(sqlite_vault: Harness, tmp_path,
                                                            monkeypatch) -> None:
    """Whoever holds the leaked material can seal a read-model row of their own before the last
    step: the read models are replayed from the events then, not re-sealed as found."""
    h = sqlite_vault
    _stopped_before(h, "finish", monkeypatch, _ready(h, tmp_path))
    with h.app() as app:
        sealer = app.core.keyring.rows  # the seal of before the last step: leaked with the rest
        names = [r[1] for r in h.sql("PRAGMA table_info(view_grants)")]
        values = dict(zip(names, h.sql("SELECT * FROM view_grants")[0], strict=True))
        values["status"] = "revoked"
        h.sql("UPDATE view_grants SET status = 'revoked', mac = ? WHERE grant_uuid = ?",
              (sealer.mac("view_grants", values), values["grant_uuid"]))
    assert json.loads(h.ok("grant", "list", "--json").out)[0]["status"] == "revoked"
    with h.app() as app:
        app.keys.reencrypt([])
    assert json.loads(h.ok("grant", "list", "--json").out)[0]["status"] == "active"


def test_a_snapshot_sealed_while_a_batch_replaced_its_key_is_dropped(sqlite_vault: Harness,
                                                                     tmp_path,
                                                                     monkeypatch) -> None:
    """eventsourcing writes a snapshot in a transaction of its own after the events: a batch
    committing in between would leave it sealed with the discarded key. It is dropped, and the
    grant loads from its events."""
    from uuid import UUID

    from tests.conftest import record_refreshes
    from vault.core import SNAPSHOT_EVERY

    h = sqlite_vault
    _stopped_before(h, "run_batches", monkeypatch, _ready(h, tmp_path))
    rotation_id, version = h.sql("SELECT rotation_uuid, rotation_version FROM view_grants")[0]
    with h.app() as a:
        record_refreshes(a, "help@contoso.com", SNAPSHOT_EVERY - version % SNAPSHOT_EVERY - 1)
        a.core.load(UUID(rotation_id))  # its generation-0 key
        real_put, fired = a.core.snapshots.put, []

        def put(*args, **kwargs):
            if not fired:
                fired.append(1)
                with h.app() as b:
                    b.keys.reencrypt([])  # the batch, while the snapshot is being written
            return real_put(*args, **kwargs)

        a.core.snapshots.put = put
        record_refreshes(a, "help@contoso.com", 1)
    assert fired
    h.ok("grant", "show", "help@contoso.com")
    with h.app() as c:
        assert c.core.load(UUID(rotation_id)).version == version + SNAPSHOT_EVERY - \
            version % SNAPSHOT_EVERY
