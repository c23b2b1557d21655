"""P1: plant sentinel secrets, run every command, and look for them in every byte written and
printed (plain, base64, hex). Only an explicit reveal may print a secret."""

from __future__ import annotations

import base64
import json

from tests.conftest import PASSPHRASE, Harness, record_refreshes

SECRET_1 = "SentinelClientSecret~0001xyz"
SECRET_2 = "SentinelClientSecret~0002xyz"
REFRESH = "SentinelRefreshToken.0003.xyz"
NEW_PASSPHRASE = "SentinelPassphrase 0004 xyz"
SENTINELS = (SECRET_1, SECRET_2, REFRESH, PASSPHRASE, NEW_PASSPHRASE, "SentinelRT", "AT-SentinelRT")


def _encodings(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), raw.hex().encode(),
            value.encode("utf-16-le")]


def _assert_absent(blob: bytes, where: str) -> None:
    for sentinel in SENTINELS:
        for encoded in _encodings(sentinel):
            assert encoded not in blob, f"{sentinel!r} found in {where}"


def test_no_secret_in_any_stored_byte_or_output(vault: Harness, tmp_path) -> None:
    pass_file = tmp_path / "new-pass"
    pass_file.write_text(NEW_PASSPHRASE)
    old_pass = tmp_path / "old-pass"
    old_pass.write_text(PASSPHRASE)
    h = vault
    h.ok("client", "add", "jira", "--provider", "microsoft", "--tenant", "contoso.com",
         "--client-id", "11111111-2222-3333-4444-555555555555", "--secret-stdin",
         "--secret-created", "2025-06-01", input=SECRET_1)
    secret_file = tmp_path / "secret2"
    secret_file.write_text(SECRET_2 + "\n")
    h.ok("client", "rotate-secret", "jira", "--secret-file", str(secret_file), "--overlap")
    h.ok("client", "set-secret-dates", "jira", "s2", "--expires", "2027-06-01")
    h.ok("client", "retire-secret", "jira", "s1")
    h.ok("grant", "import", "--client", "jira", "--mailbox", "help@contoso.com", "--protocols",
         "imap,pop,smtp,graph", "--refresh-token-stdin", input=REFRESH)
    with h.app() as app:
        record_refreshes(app, "help@contoso.com", 105, token_prefix="SentinelRT")
    for args in (("client", "list"), ("client", "show", "jira"), ("grant", "list"),
                 ("grant", "show", "help@contoso.com"), ("status",), ("expiry", "--within", "999"),
                 ("expiry", "--check"), ("history", "jira"), ("history", "help@contoso.com"),
                 ("history", "jira", "--as-of", "2020-01-01"), ("audit", "log", "--limit", "0"),
                 ("audit", "verify"), ("audit", "checkpoint", "--export", "-"), ("key", "list"),
                 ("config", "set", "secret_warning_days", "40"), ("config", "show"),
                 ("admin", "rebuild-projections")):
        h.run(*args)
        if args[0] in ("client", "grant", "status", "history"):
            h.run(*args, "--json")
    # refusals and failures must not echo what they refuse
    h.run("client", "add", "x", "--provider", "microsoft", "--tenant", "contoso.com",
          "--client-id", "11111111-2222-3333-4444-555555555555", "--secret-stdin", input=REFRESH)
    h.run("grant", "import", "--client", "nope", "--mailbox", "a@b.example", "--protocols", "imap",
          "--refresh-token-stdin", input=REFRESH)
    h.run("client", "list", VAULT_KEY_FILE=None, VAULT_PASSPHRASE=NEW_PASSPHRASE)
    h.ok("key", "add-passphrase", "--kdf", "interactive", "--new-passphrase-file", str(pass_file))
    h.ok("key", "rotate", "--other-passphrase-file", str(old_pass),
         "--other-passphrase-file", str(pass_file))
    h.ok("key", "passwd", "--new-passphrase-file", str(old_pass), VAULT_KEY_FILE=None,
         VAULT_PASSPHRASE=NEW_PASSPHRASE)
    h.ok("grant", "revoke", "help@contoso.com", "--reason", "left")

    outputs = "\n".join(h.outputs)
    _assert_absent(outputs.encode(), "command output")
    stored = h.stored_bytes()
    assert b"help@contoso.com" in stored and b"vault.ClientCredential" in stored  # scans real rows
    _assert_absent(stored, f"the {h.kind} store")

    revealed = h.ok("client", "show", "jira", "--reveal-secret", "--json")
    assert json.loads(revealed.out)["secret"] == SECRET_2  # only when asked for


def test_purge_shreds_the_data_key_and_wipes_its_pages(sqlite_vault: Harness) -> None:
    h = sqlite_vault
    h.ok("client", "add", "jira", "--provider", "microsoft", "--tenant", "contoso.com",
         "--client-id", "11111111-2222-3333-4444-555555555555", "--secret-stdin", input=SECRET_1)
    h.ok("grant", "import", "--client", "jira", "--mailbox", "help@contoso.com", "--protocols",
         "imap", "--refresh-token-stdin", input=REFRESH)
    grant_uuid = h.sql("SELECT grant_uuid FROM view_grants")[0][0]
    wrapped = [bytes(r[0]) for r in h.sql("SELECT wrapped FROM vault_keys WHERE subject_id = ?",
                                          (grant_uuid,))]
    assert len(wrapped) == 2  # the grant and its token rotation share one subject
    h.ok("grant", "revoke", "help@contoso.com", "--reason", "mailbox deleted", "--purge")
    assert h.sql("SELECT wrapped, shredded_at IS NOT NULL FROM vault_keys WHERE subject_id = ?",
                 (grant_uuid,)) == [(None, 1), (None, 1)]
    stored = h.stored_bytes()
    for blob in wrapped:
        assert blob not in stored  # secure_delete zeroed the pages; the WAL was truncated
    events = h.sql("SELECT COUNT(*) FROM stored_events WHERE originator_id = ?",
                   (grant_uuid.replace("-", ""),))[0][0]
    assert events >= 2  # the events stay, unreadable without their key
    with h.app() as app:
        from uuid import UUID

        from adapters.errors import SubjectPurged

        try:
            app.core.load(UUID(grant_uuid))
        except SubjectPurged:
            pass
        else:
            raise AssertionError("a purged grant could still be read")
    assert h.run("grant", "show", "help@contoso.com").code == 4
    h.ok("audit", "verify")
    # the mailbox can be granted again afresh
    h.ok("grant", "import", "--client", "jira", "--mailbox", "help@contoso.com", "--protocols",
         "imap", "--refresh-token-stdin", input="another-refresh-token-xyz")
