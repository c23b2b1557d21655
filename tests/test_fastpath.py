"""The cached-token path of `vault token`: same answer and audit entry as the full CLI, no
heavy imports, and a fall back to the full CLI whenever it is not the plain cached case."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PASSPHRASE, Harness, ScriptedConsent, add_sandbox_client
from tests.test_microsoft_sandbox import MAILBOX, sign_in
from vault.fastpath import cached_token


@pytest.fixture
def granted(sqlite_vault: Harness, sandbox) -> Harness:
    add_sandbox_client(sqlite_vault, sandbox)
    with sqlite_vault.app() as app:
        app.consent.consent("demo", mailbox=MAILBOX, protocols=("imap", "smtp"), flow="manual",
                            ui=ScriptedConsent(sign_in, MAILBOX, "sandbox"))
    return sqlite_vault


def fast(h: Harness, *args: str, **env: str | None):
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in h.env(**env).items() if v is not None})
    for k, v in h.env(**env).items():
        if v is None:
            os.environ.pop(k, None)
    try:
        return cached_token(["token", MAILBOX, *args])
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _audit_count(h: Harness) -> int:
    return h.sql("SELECT COUNT(*) FROM vault_audit")[0][0]


def test_the_cached_path_answers_like_the_full_cli_and_is_audited(granted: Harness) -> None:
    with granted.app() as app:
        full = app.tokens.access_token(MAILBOX).token.reveal()
    before = _audit_count(granted)
    assert fast(granted) == full
    assert fast(granted, "--protocol", "smtp") == full  # one resource serves both
    assert json.loads(fast(granted, "--format", "json"))["access_token"] == full
    assert _audit_count(granted) == before + 3
    entry = json.loads(granted.ok("audit", "log", "--limit", "1", "--json").out)[0]
    assert (entry["action"], entry["detail"]["revealed"], entry["subject"]["mailbox"]) == (
        "token", "access_token", MAILBOX)
    granted.ok("audit", "verify")


def test_anything_but_the_plain_cached_case_falls_back(granted: Harness) -> None:
    before = _audit_count(granted)
    assert fast(granted, "--min-valid", "3000") is not None
    assert fast(granted, "--protocol", "graph") is None  # not granted: the CLI says so
    assert fast(granted, "--bogus") is None
    assert fast(granted, VAULT_KEY_FILE=None, VAULT_PASSPHRASE=PASSPHRASE) is None
    assert fast(granted, VAULT_STORE="postgresql://x@127.0.0.1/y") is None
    granted.ok("grant", "revoke", MAILBOX, "--reason", "gone")
    assert fast(granted) is None
    assert _audit_count(granted) == before + 1 + 1  # the one served token, the revoke


def test_deleted_newest_events_are_not_served_from_cache(granted: Harness) -> None:
    rotation = granted.sql("SELECT rotation_uuid FROM view_grants")[0][0].replace("-", "")
    granted.sql("DELETE FROM stored_events WHERE originator_id = ? AND originator_version = "
                "(SELECT MAX(originator_version) FROM stored_events WHERE originator_id = ?)",
                (rotation, rotation))
    assert fast(granted) is None
    assert granted.run("token", MAILBOX).code == 5


def test_no_heavy_imports_on_the_cached_path(granted: Harness) -> None:
    env = {**os.environ, **{k: v for k, v in granted.env().items() if v}}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "vault", "token",
                             MAILBOX], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("sbx-at.")
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    for heavy in ("eventsourcing", "click", "httpx", "rich", "psycopg", "adapters.store.queries"):
        assert heavy not in imported, heavy
