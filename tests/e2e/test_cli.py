"""The CLI as an admin meets it: formats, exit codes, messages, lookups, history, read models."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, date, datetime, timedelta

import pytest

from domain.secret_value import SecretValue
from tests.conftest import MS_CLIENT_ID, Harness, add_client, import_grant


def _json(h: Harness, *args: str):
    return json.loads(h.ok(*args, "--json").out)


def test_listings_speak_json_and_table_from_the_same_data(vault: Harness) -> None:
    add_client(vault)
    import_grant(vault)
    for args in (("client", "list"), ("grant", "list"), ("status",), ("expiry",),
                 ("history", "jira"), ("key", "list"), ("audit", "log"), ("config", "show")):
        short = _json(vault, *args)
        long = json.loads(vault.ok(*args, "--format", "json").out)
        if args[0] != "audit":
            assert short == long, args
        table = vault.ok(*args).out
        assert table.strip() and not table.lstrip().startswith(("{", "[")), args
    assert _json(vault, "client", "list")[0]["name"] == "jira"
    assert "jira" in vault.ok("client", "list").out


def test_the_secret_id_instead_of_the_value_is_refused_with_the_hint(vault: Harness) -> None:
    result = vault.run("client", "add", "jira", "--provider", "microsoft", "--tenant",
                       "contoso.com", "--client-id", MS_CLIENT_ID, "--secret-stdin",
                       input="8f2c1d3e-4b5a-6978-8a9b-0c1d2e3f4a5b\n")
    assert result.code == 2
    assert "Secret ID, not the secret Value" in result.err and "AADSTS7000215" in result.err
    assert "8f2c1d3e" not in result.text
    assert _json(vault, "client", "list") == []


@pytest.mark.parametrize("args,words", [
    (("client", "add", "x", "--provider", "microsoft", "--client-id", MS_CLIENT_ID,
      "--secret-stdin"), "need --tenant"),
    (("client", "add", "x", "--provider", "microsoft", "--tenant", "contoso.com",
      "--client-id", MS_CLIENT_ID), "exactly one of --secret-stdin, --secret-file"),
    (("client", "add", "x", "--provider", "google", "--client-id", "x", "--secret-file",
      "/nonexistent/file"), "cannot read secret file"),
    (("client", "add", "bad name!", "--provider", "google", "--client-id", "x",
      "--no-secret"), "a client name is"),
    (("expiry", "--as-of", "tomorrow"), "is not a date"),
    (("grant", "import", "--client", "jira", "--mailbox", "help@contoso.com", "--protocols",
      "imap,ftp", "--refresh-token-stdin"), "unknown: ftp"),
    (("client", "frobnicate"), "No such command"),
])
def test_bad_input_exits_2_with_a_clear_line(vault: Harness, args, words: str) -> None:
    add_client(vault)
    result = vault.run(*args, input="Some~secret-value-012345")
    assert result.code == 2, result.text
    assert words in result.err
    assert "Traceback" not in result.text


@pytest.mark.parametrize("url, words", [
    ("postgresql://u@h:abc/db", "port in VAULT_STORE is not a number"),
    ("mysql://u@h/db", "must be a postgresql:// URL"),
    ("postgresql://u@h/db?sslmode=disable", "unsupported VAULT_STORE parameter"),
    ("postgresql://u@h/db?schema=a;b", "letters, digits and _"),
])
def test_a_malformed_store_url_is_one_clear_line(vault: Harness, url: str, words: str) -> None:
    result = vault.run("status", VAULT_STORE=url)
    assert result.code == 2 and words in result.err, result.text  # bad input
    assert "internal error" not in result.err and len(result.err.splitlines()) == 1


def test_not_found_exits_4(vault: Harness) -> None:
    assert vault.run("client", "show", "nope").code == 4
    result = vault.run("grant", "show", "nobody@contoso.com")
    assert result.code == 4 and "vault grant list" in result.err
    assert vault.run("history", "nobody@contoso.com").code == 4


def test_a_mailbox_shared_by_two_clients_asks_for_client(vault: Harness) -> None:
    add_client(vault, "jira")
    add_client(vault, "helpdesk", "Other~secret-value-0123456789")
    import_grant(vault, "Shared@Contoso.com", "jira")
    import_grant(vault, "shared@contoso.com", "helpdesk")
    result = vault.run("grant", "show", "shared@contoso.com")
    assert result.code == 2 and "--client" in result.err and "helpdesk, jira" in result.err
    shown = _json(vault, "grant", "show", "SHARED@contoso.com", "--client", "helpdesk")
    assert shown["client"] == "helpdesk"
    again = vault.run("grant", "import", "--client", "jira", "--mailbox", "shared@contoso.com",
                      "--protocols", "imap", "--refresh-token-stdin", input="another-token-xyz1")
    assert again.code == 1 and "already has an active grant" in again.err


def test_client_names_are_unique_regardless_of_case(vault: Harness) -> None:
    add_client(vault, "Jira")
    result = vault.run("client", "add", "jira", "--provider", "google", "--client-id", "x",
                       "--no-secret")
    assert result.code == 1 and "already exists" in result.err


def test_expiry_check_follows_the_monitoring_plugin_convention(vault: Harness) -> None:
    ok = vault.run("expiry", "--check")
    assert ok.code == 0 and ok.out.startswith("VAULT OK")
    add_client(vault, "jira", "Abc~defghijklmnopqrstuvwxyz0123", "--secret-expires",
               (date.today() + timedelta(days=20)).isoformat())
    warning = vault.run("expiry", "--check")
    assert warning.code == 1 and warning.out.startswith("VAULT WARNING") and "jira" in warning.out
    critical = vault.run("expiry", "--check", "--as-of",
                         (date.today() + timedelta(days=15)).isoformat())
    assert critical.code == 2 and critical.out.startswith("VAULT CRITICAL")
    as_json = json.loads(vault.run("expiry", "--check", "--json").out)
    assert as_json["status"] == "warning" and as_json["exit_code"] == 1
    # every error is UNKNOWN (3), so a typo never pages as critical
    assert vault.run("expiry", "--check", "--as-of", "nonsense").code == 3
    assert vault.run("expiry", "--check", VAULT_KEY_FILE=None).code == 3
    assert vault.run("expiry", "--check", "--within", "x").code == 3


def test_expiry_json_has_the_documented_shape(vault: Harness) -> None:
    add_client(vault, "jira", "Abc~defghijklmnopqrstuvwxyz0123", "--secret-created",
               (date.today() - timedelta(days=725)).isoformat())
    data = _json(vault, "expiry")
    assert data["as_of"] == datetime.now(UTC).date().isoformat()
    (finding,) = data["findings"]
    assert {"severity", "kind", "client", "mailbox", "due", "days_left", "advice", "expired",
            "assumed"} <= set(finding)
    assert finding["severity"] == "critical" and finding["assumed"] is True
    assert finding["days_left"] == 5


def test_thresholds_are_shared_settings(vault: Harness) -> None:
    add_client(vault, "jira", "Abc~defghijklmnopqrstuvwxyz0123", "--secret-expires",
               (date.today() + timedelta(days=40)).isoformat())
    assert _json(vault, "expiry")["findings"] == []
    vault.ok("config", "set", "secret_warning_days", "45")
    assert [f["severity"] for f in _json(vault, "expiry")["findings"]] == ["warning"]
    bad = vault.run("config", "set", "secret_warning_days", "3")
    assert bad.code == 2 and "increase" in bad.err


def test_removing_a_client_needs_its_grants_revoked_and_purge_frees_the_name(
        vault: Harness) -> None:
    add_client(vault)
    import_grant(vault)
    refused = vault.run("client", "remove", "jira")
    assert refused.code == 1 and "help@contoso.com" in refused.err
    vault.ok("grant", "revoke", "help@contoso.com", "--reason", "mailbox closed")
    assert vault.run("grant", "revoke", "help@contoso.com", "--reason", "again").code == 1
    assert vault.run("client", "remove", "jira", "--purge").code == 1  # revoked grant first
    vault.ok("grant", "revoke", "help@contoso.com", "--reason", "shred it", "--purge")
    vault.ok("client", "remove", "jira")
    assert _json(vault, "client", "list")[0]["status"] == "removed"
    assert vault.run("client", "add", "jira", "--provider", "google", "--client-id", "x",
                     "--no-secret").code == 1
    vault.ok("client", "remove", "jira", "--purge")
    assert _json(vault, "client", "list") == []
    vault.ok("client", "add", "jira", "--provider", "google", "--client-id", "x", "--no-secret")
    assert vault.ok("audit", "verify").code == 0


def test_rebuilt_read_models_equal_the_inline_ones(vault: Harness) -> None:
    add_client(vault)
    add_client(vault, "helpdesk", "Other~secret-value-0123456789", "--secret-expires",
               "2027-05-01")
    import_grant(vault)
    import_grant(vault, "ops@contoso.com", "helpdesk")
    vault.ok("grant", "revoke", "ops@contoso.com", "--reason", "test")
    tables = ("view_clients", "view_secrets", "view_grants")
    before = {t: sorted(map(tuple, vault.sql(f"SELECT * FROM {t}"))) for t in tables}
    vault.sql("DELETE FROM view_grants")
    vault.sql("UPDATE view_clients SET active_secrets = 99")
    result = vault.ok("admin", "rebuild-projections")
    assert "2 clients, 2 grants" in result.out
    assert {t: sorted(map(tuple, vault.sql(f"SELECT * FROM {t}"))) for t in tables} == before


def test_history_shows_the_state_as_of_a_date(vault: Harness) -> None:
    day = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    clock = {"now": day}
    with vault.app(clock=lambda: clock["now"]) as app:
        app.clients.add_client(name="jira", provider="microsoft", tenant="contoso.com",
                               client_id=MS_CLIENT_ID, secret=SecretValue("First~secret-value-0001"))
        clock["now"] = day + timedelta(days=10)
        app.clients.rotate_secret("jira", secret=SecretValue("Second~secret-value-0002"))
        clock["now"] = day + timedelta(days=20)
        app.grants.import_grant(client="jira", mailbox="help@contoso.com", protocols=("imap",),
                                refresh_token=SecretValue("refresh-token-value-0003"))
    early = _json(vault, "history", "jira", "--as-of", "2026-03-05")
    assert [s["ref"] for s in early["state"]["secrets"]] == ["s1"]
    assert [e["event"] for e in early["events"]] == ["Registered", "SecretAdded"]
    late = _json(vault, "history", "jira", "--as-of", "2026-03-11")
    assert [(s["ref"], s["retired_at"] is not None) for s in late["state"]["secrets"]] == [
        ("s1", True), ("s2", False)]
    assert _json(vault, "history", "jira", "--as-of", "2026-02-01")["state"] is None
    grant = _json(vault, "history", "help@contoso.com")
    assert [e["event"] for e in grant["events"]] == ["Granted", "Started"]
    assert grant["events"][1]["data"]["refresh_token"] == "<redacted>"
    before_grant = vault.run("history", "help@contoso.com", "--as-of", "2026-03-15", "--json")
    assert json.loads(before_grant.out)["state"] is None


def test_history_of_a_long_lived_grant_is_limited_and_uses_snapshots(vault: Harness) -> None:
    from tests.conftest import record_refreshes

    add_client(vault)
    import_grant(vault)
    with vault.app() as app:
        record_refreshes(app, "help@contoso.com", 230)
    data = _json(vault, "history", "help@contoso.com", "--limit", "5")
    assert data["total_events"] == 2 + 230 and len(data["events"]) == 5
    assert data["state"]["tokens"]["refreshes"] == 230
    from vault.core import SNAPSHOT_EVERY

    assert vault.sql("SELECT COUNT(*) FROM stored_snapshots")[0][0] == 232 // SNAPSHOT_EVERY
    table = vault.ok("history", "help@contoso.com", "--limit", "5").out
    assert "last 5 of 232 events" in table
    vault.sql("DELETE FROM stored_snapshots")  # snapshots only save time: history stays the same
    assert _json(vault, "history", "help@contoso.com", "--limit", "5") == data


def test_vault_files_are_private(sqlite_vault: Harness) -> None:
    add_client(sqlite_vault)
    assert stat.S_IMODE(sqlite_vault.home.stat().st_mode) == 0o700
    for path in sqlite_vault.home.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(sqlite_vault.key_file.stat().st_mode) == 0o600
    os.chmod(sqlite_vault.home, 0o755)
    result = sqlite_vault.run("client", "list")
    assert result.code == 3 and "chmod 700" in result.err


def test_usage_errors_and_version(vault: Harness) -> None:
    result = vault.run("client")
    assert result.code == 2 and "rotate-secret" in result.out and result.err == ""
    assert vault.ok("--version").out.startswith("vault, version")
    missing = vault.run("grant", "revoke", "help@contoso.com")
    assert missing.code == 2 and "--reason" in missing.err


