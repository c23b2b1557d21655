"""`vault maintain` against the real authorization server (oidc-provider, strict rotation with
reuse detection), the real Dovecot and a webhook receiver: one run does everything, a second run
does only what became due, two hosts at once on PostgreSQL refresh each grant once and alert once,
and a store rolled back to an older copy is caught by the exported checkpoint."""

from __future__ import annotations

import json
import os
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.conftest import Harness, add_oidc_client, point_at
from tests.consent import consent_two_hours_ago

USERS = [("alice@example.test", "alice-password-123"), ("bob@example.test", "bob-password-123")]
SCOPES = "openid offline_access mail.imap mail.pop mail.smtp"


@pytest.fixture
def estate(vault: Harness, oidc, dovecot, webhook, tmp_path: Path) -> Harness:
    """Two grants whose access tokens expired an hour ago; a secret ending in 3 days."""
    add_oidc_client(vault, oidc, scopes=SCOPES)
    for user in USERS:
        consent_two_hours_ago(vault, oidc.complete_authorization, "idp", user)
    point_at(vault, dovecot)
    vault.ok("client", "set-secret-dates", "idp", "s1", "--created", "2026-01-01",
             "--expires", (date.today() + timedelta(days=3)).isoformat())
    (tmp_path / "hook.url").write_text(webhook.url)
    (tmp_path / "checkpoints").mkdir()
    return vault


def _args(tmp_path: Path) -> list[str]:
    return ["maintain", "--json", "--webhook-file", str(tmp_path / "hook.url"),
            "--metrics-file", str(tmp_path / "vault.prom"),
            "--checkpoint-dir", str(tmp_path / "checkpoints")]


def _ca(mail_ca) -> dict[str, str]:
    return {"VAULT_CA_FILE": str(mail_ca.ca_path)}


def _rotations_started(h: Harness, mailbox: str) -> int:
    data = json.loads(h.ok("history", mailbox, "--json", "--limit", "500").out)
    return [e["event"] for e in data["events"]].count("RotationStarted")


def _steps(out: str) -> dict[str, dict]:
    return {s["step"]: s for s in json.loads(out)}


def test_one_run_does_everything_and_the_next_only_what_is_due(
        estate: Harness, webhook, mail_ca, tmp_path: Path) -> None:
    steps = _steps(estate.ok(*_args(tmp_path), **_ca(mail_ca)).out)
    assert {s: v["outcome"] for s, v in steps.items()} == {
        "sync": "skipped", "renew": "skipped", "refresh": "ok", "probe": "ok", "alert": "ok", "metrics": "ok",
        "checkpoint": "ok"}  # sync: no client was ever synced with Entra
    assert steps["refresh"]["summary"].startswith("2 refreshed, 0 already fresh, 0 failed")
    assert steps["probe"]["summary"] == "2 probed, 2 ok"  # the IMAP grant of each
    assert [a["kind"] for a in webhook.alerts()] == ["client_secret_expiry"]
    assert "vault_probe_success" in (tmp_path / "vault.prom").read_text()
    (checkpoint,) = (tmp_path / "checkpoints").iterdir()
    assert estate.ok("audit", "verify", "--trusted", str(checkpoint)).code == 0
    for user, _ in USERS:  # each grant's refresh is audited under that grant
        rows = json.loads(estate.ok("report", "audit", "--mailbox", user, "--format",
                                    "json").out)
        steps = [r["detail"].split("step=")[-1] for r in rows if r["action"] == "refresh"]
        assert steps == ["refresh started", "tokens issued"], rows

    again = _steps(estate.ok(*_args(tmp_path), **_ca(mail_ca)).out)
    assert again["refresh"]["summary"].startswith("0 refreshed, 0 already fresh")
    assert again["probe"]["summary"] == "0 probed, 0 ok"
    assert again["alert"]["summary"] == "nothing new to send"
    assert len(webhook.alerts()) == 1
    for user, _ in USERS:
        assert _rotations_started(estate, user) == 1

    table = estate.ok(*[a for a in _args(tmp_path) if a != "--json"], "--probe-every", "0",
                      **_ca(mail_ca)).out
    assert "probe      skipped disabled" in table and "alert      ok      nothing new" in table


def test_a_failing_step_does_not_stop_the_others_and_exits_1(estate: Harness, webhook,
                                                             tmp_path: Path) -> None:
    result = estate.run(*_args(tmp_path))  # no CA file: every probe fails on TLS
    assert result.code == 1, result.text
    steps = _steps(result.out)
    assert steps["probe"]["outcome"] == "failed" and "imap: tls" in steps["probe"]["summary"]
    # said on stderr too, which cron mails even when stdout goes to /dev/null
    assert result.err.startswith("vault: maintain: probe failed: 2 probed, 0 ok")
    assert steps["checkpoint"]["outcome"] == "ok"  # ran after the failed step
    kinds = sorted(a["kind"] for a in webhook.alerts())
    assert kinds == ["client_secret_expiry"] + ["probe_failed"] * 2


def test_probes_stop_at_the_budget_and_the_rest_come_next_run(estate: Harness, mail_ca) -> None:
    runs = [_steps(estate.ok("maintain", "--json", "--probe-budget", "0", **_ca(mail_ca)).out)
            ["probe"] for _ in range(3)]
    assert [r["summary"] for r in runs] == [
        "1 probed, 1 ok, 1 left for the next run (--probe-budget)", "1 probed, 1 ok",
        "0 probed, 0 ok"]
    assert sorted(r["mailbox"] for run in runs for r in run["results"]) == [u for u, _ in USERS]


def test_a_bad_plan_is_refused_before_anything_is_done(estate: Harness, webhook,
                                                       tmp_path: Path) -> None:
    for args, words in ((["--checkpoint-dir", str(tmp_path / "nope")], "no such directory"),
                        (["--email-to", "ops@example.test"], "--via"),
                        (["--metrics-file", str(tmp_path / "x" / "m.prom")], "directory")):
        result = estate.run("maintain", *args)
        assert result.code == 2 and words in result.err, result.text
    assert _rotations_started(estate, USERS[0][0]) == 0 and webhook.attempts == 0


def test_a_store_rolled_back_to_an_older_copy_is_caught(sqlite_vault: Harness, oidc, webhook,
                                                        tmp_path: Path) -> None:
    h = sqlite_vault
    add_oidc_client(h, oidc, scopes=SCOPES)
    consent_two_hours_ago(h, oidc.complete_authorization, "idp", USERS[0])
    (tmp_path / "checkpoints").mkdir()
    args = ["maintain", "--probe-every", "0", "--checkpoint-dir", str(tmp_path / "checkpoints")]
    old = tmp_path / "old.db"
    shutil.copy(h.home / "vault.db", old)
    h.ok(*args)
    (checkpoint,) = (tmp_path / "checkpoints").iterdir()
    pinned = checkpoint.read_text()
    shutil.copy(old, h.home / "vault.db")  # the attacker restores yesterday's copy
    result = h.run(*args)
    assert result.code == 5 and "integrity" in result.err, result.text
    assert checkpoint.read_text() == pinned  # the proof stays
    # caught before any step: the rolled-back copy's spent refresh token was not used
    assert _rotations_started(h, USERS[0][0]) == 0


def test_two_hosts_at_once_refresh_once_and_alert_once(estate: Harness, oidc, webhook,
                                                       mail_ca, tmp_path: Path) -> None:
    """On PostgreSQL, two hosts; on SQLite, two processes on one host."""
    h = estate
    hosts = [h.spawn("maintain", "--json", "--webhook-file", str(tmp_path / "hook.url"),
                     **_ca(mail_ca)) for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in hosts]
    assert [p.returncode for p in hosts] == [0, 0], outputs
    refreshed = [_steps(out)["refresh"]["results"]
                 for out, _ in outputs]
    outcomes = sorted(r["outcome"] for results in refreshed for r in results)
    assert outcomes.count("refreshed") == 2  # each grant once, by one host or the other

    for user, _ in USERS:
        assert _rotations_started(h, user) == 1
        shown = json.loads(h.ok("grant", "show", user, "--json").out)
        assert shown["status"] == "active"
        access = h.ok("token", user).out.strip()
        assert oidc.introspect(access)["active"] is True  # no reuse detection fired
    assert [a["kind"] for a in webhook.alerts()] == ["client_secret_expiry"]
    assert webhook.attempts == 1
    # and the grants still rotate: a double spend would have revoked the whole family
    assert all(r["outcome"] == "refreshed"
               for r in json.loads(h.ok("refresh", "--all", "--json").out))


def test_a_service_unlocks_with_its_systemd_credential(sqlite_vault: Harness, oidc,
                                                       tmp_path: Path) -> None:
    """LoadCredential=vault.key:... puts the key in $CREDENTIALS_DIRECTORY: no path to configure,
    and the same permission rules as any key file."""
    h = sqlite_vault
    add_oidc_client(h, oidc, scopes=SCOPES)
    consent_two_hours_ago(h, oidc.complete_authorization, "idp", USERS[0])
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o500)
    shutil.copy(h.key_file, credentials / "vault.key")
    (credentials / "vault.key").chmod(0o400)
    env = {"VAULT_KEY_FILE": None, "CREDENTIALS_DIRECTORY": str(credentials)}
    assert "1 refreshed" in h.ok("maintain", "--probe-every", "0", **env).out
    token = h.spawn("token", USERS[0][0], VAULT_KEY_FILE="", CREDENTIALS_DIRECTORY=str(credentials))
    out, err = token.communicate(timeout=60)
    assert token.returncode == 0 and oidc.introspect(out.strip())["active"] is True, err
    assert h.run("status", VAULT_KEY_FILE=None).code == 3  # without it: cannot unlock
    # systemd grants the service user read access by an ACL, which shows as mode 0440 there
    (credentials / "vault.key").chmod(0o440)
    assert h.run("status", **env).code == 0
    (credentials / "vault.key").chmod(0o444)
    unsafe = h.run("status", **env)
    assert unsafe.code == 3 and "chmod 600" in unsafe.err
    elsewhere = tmp_path / "group-readable.key"
    shutil.copy(h.key_file, elsewhere)
    elsewhere.chmod(0o440)  # outside the credentials directory, group-read is refused
    assert h.run("status", VAULT_KEY_FILE=str(elsewhere)).code == 3
    # ... and inside it, for a file that is not root:root (its group could read it)
    os.chown(credentials / "vault.key", 0, 4321)
    (credentials / "vault.key").chmod(0o440)
    assert h.run("status", **env).code == 3
