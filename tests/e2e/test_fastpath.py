"""The cached-token path of `vault token`: same answer and audit entry as the full CLI, no
heavy imports, and a fall back to the full CLI whenever it is not the plain cached case."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import PASSPHRASE, Harness
from tests.consent import SANDBOX_MAILBOX as MAILBOX


def _audit_count(h: Harness) -> int:
    return h.sql("SELECT COUNT(*) FROM vault_audit")[0][0]


def test_the_cached_path_answers_like_the_full_cli_and_is_audited(granted: Harness) -> None:
    with granted.app() as app:
        full = app.tokens.access_token(MAILBOX).token.reveal()
    before = _audit_count(granted)
    assert granted.cached_token(MAILBOX) == full
    assert granted.cached_token(MAILBOX, "--protocol", "smtp") == full  # one resource serves both
    assert json.loads(granted.cached_token(MAILBOX, "--format", "json"))["access_token"] == full
    assert _audit_count(granted) == before + 3
    entry = json.loads(granted.ok("audit", "log", "--limit", "1", "--json").out)[0]
    assert (entry["action"], entry["detail"]["revealed"], entry["subject"]["mailbox"]) == (
        "token", "access_token", MAILBOX)
    granted.ok("audit", "verify")


def test_anything_but_the_plain_cached_case_falls_back(granted: Harness) -> None:
    before = _audit_count(granted)
    assert granted.cached_token(MAILBOX, "--min-valid", "3000") is not None
    assert granted.cached_token(MAILBOX, "--protocol", "graph") is None  # not granted: the CLI says so
    assert granted.cached_token(MAILBOX, "--bogus") is None
    assert granted.cached_token(MAILBOX, VAULT_KEY_FILE=None, VAULT_PASSPHRASE=PASSPHRASE) is None
    assert granted.cached_token(MAILBOX, VAULT_STORE="postgresql://x@127.0.0.1/y") is None
    granted.ok("grant", "revoke", MAILBOX, "--reason", "gone")
    assert granted.cached_token(MAILBOX) is None
    assert _audit_count(granted) == before + 1 + 1  # the one served token, the revoke


def test_deleted_newest_events_are_not_served_from_cache(granted: Harness) -> None:
    rotation = granted.sql("SELECT rotation_uuid FROM view_grants")[0][0].replace("-", "")
    granted.sql("DELETE FROM stored_events WHERE originator_id = ? AND originator_version = "
                "(SELECT MAX(originator_version) FROM stored_events WHERE originator_id = ?)",
                (rotation, rotation))
    assert granted.cached_token(MAILBOX) is None
    assert granted.run("token", MAILBOX).code == 5


def test_no_heavy_imports_on_the_cached_path(granted: Harness) -> None:
    env = {**os.environ, **{k: v for k, v in granted.env().items() if v}}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "vault", "token",
                             MAILBOX], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("sbx-at.")
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    for heavy in ("eventsourcing", "click", "httpx", "rich", "psycopg", "adapters.store.queries"):
        assert heavy not in imported, heavy
