"""Golden outputs: every command's table, JSON and CSV forms, its help, exit codes and the stderr
of the common errors, on one fixed vault under a frozen clock, byte for byte.

The files in tests/e2e/golden/ were captured before the application layer was reshaped (issue 10);
a change to any of them is a change users see and must be named where it is made. Random values
(UUIDs, the temporary directory) are replaced by stable placeholders before comparing.
`VAULT_UPDATE_GOLDEN=1 pytest tests/e2e/test_golden.py` rewrites them.
"""

from __future__ import annotations

import os
import pwd
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import time_machine

from tests.conftest import MS_CLIENT_ID, MS_TENANT, PASSPHRASE, Harness, make_harness

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SECRET = "Abc~defghijklmnopqrstuvwxyz0123"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")


def _build(h: Harness) -> list[tuple[str, tuple[str, ...], dict, str | None]]:
    """The fixed vault's history, as commands (each is captured too)."""
    ms = ("--provider", "microsoft", "--tenant", MS_TENANT, "--client-id", MS_CLIENT_ID)
    return [
        ("init", ("init", "--kdf", "interactive", "--key-file", str(h.key_file)),
         {"VAULT_PASSPHRASE": PASSPHRASE, "VAULT_KEY_FILE": None}, None),
        ("client-add-jira", ("client", "add", "jira", *ms, "--secret-stdin", "--secret-created",
                             "2024-07-01", "--secret-expires", "2026-06-20"), {}, SECRET),
        ("client-add-helpdesk", ("client", "add", "helpdesk", "--provider", "microsoft",
                                 "--cloud", "gcc-high", "--tenant", "fabrikam.onmicrosoft.us",
                                 "--client-id", "22222222-3333-4444-5555-666666666666",
                                 "--secret-stdin"), {}, "Other~secret-value-0123456789"),
        ("client-add-google", ("client", "add", "gmail", "--provider", "google", "--client-id",
                               "123-abc.apps.googleusercontent.com", "--no-secret"), {}, None),
        ("client-add-custom", ("client", "add", "corp", "--provider", "custom", "--client-id",
                               "corp-client", "--token-url", "https://idp.example.test/token",
                               "--authorize-url", "https://idp.example.test/authorize",
                               "--scopes", "openid offline_access mail", "--secret-stdin"),
         {}, "corp-secret-value-0123"),
        ("client-set-servers", ("client", "set-servers", "corp", "--imap",
                                "mail.example.test:993", "--smtp", "mail.example.test:465"),
         {}, None),
        ("grant-import-help", ("grant", "import", "--client", "jira", "--mailbox",
                               "help@contoso.com", "--protocols", "imap,smtp",
                               "--refresh-token-stdin", "--granted-at", "2026-03-20"),
         {}, "M.R3_BAY.refresh-token-0123456789"),
        ("grant-import-sales", ("grant", "import", "--client", "jira", "--mailbox",
                                "sales@contoso.com", "--protocols", "imap",
                                "--refresh-token-stdin"), {}, "M.R3_BAY.refresh-token-sales-0001"),
        ("grant-import-corp", ("grant", "import", "--client", "corp", "--mailbox",
                               "ops@example.test", "--protocols", "imap,smtp",
                               "--refresh-token-stdin"), {}, "corp-refresh-token-000000001"),
        ("grant-add-app", ("grant", "add-app", "--client", "helpdesk", "--mailbox",
                           "desk@fabrikam.us", "--protocols", "graph"), {}, None),
        ("rotate-secret", ("client", "rotate-secret", "corp", "--secret-stdin", "--overlap"),
         {}, "corp-secret-value-0456"),
        ("set-secret-dates", ("client", "set-secret-dates", "helpdesk", "s1", "--created",
                              "2025-01-01", "--expires", "2026-12-31"), {}, None),
        ("grant-revoke", ("grant", "revoke", "sales@contoso.com", "--client", "jira", "--reason",
                          "mailbox decommissioned"), {}, None),
        ("config-set", ("config", "set", "secret_warning_days", "45"), {}, None),
    ]


def _captures(h: Harness) -> list[tuple[str, tuple[str, ...], dict, str | None]]:
    cases: list[tuple[str, tuple[str, ...], dict, str | None]] = []

    def add(name: str, *args: str, env: dict | None = None, stdin: str | None = None) -> None:
        cases.append((name, args, env or {}, stdin))

    for fmt in ("table", "json"):
        add(f"status-{fmt}", "status", "--format", fmt)
        add(f"client-list-{fmt}", "client", "list", "--format", fmt)
        add(f"client-show-{fmt}", "client", "show", "jira", "--format", fmt)
        add(f"client-show-corp-{fmt}", "client", "show", "corp", "--format", fmt)
        add(f"grant-list-{fmt}", "grant", "list", "--format", fmt)
        add(f"grant-list-client-{fmt}", "grant", "list", "--client", "jira", "--format", fmt)
        add(f"grant-show-{fmt}", "grant", "show", "help@contoso.com", "--format", fmt)
        add(f"history-{fmt}", "history", "help@contoso.com", "--format", fmt)
        add(f"history-as-of-{fmt}", "history", "sales@contoso.com", "--as-of", "2026-06-01",
            "--format", fmt)
        add(f"audit-log-{fmt}", "audit", "log", "--format", fmt)
        add(f"audit-verify-{fmt}", "audit", "verify", "--format", fmt)
        add(f"key-list-{fmt}", "key", "list", "--format", fmt)
        add(f"config-show-{fmt}", "config", "show", "--format", fmt)
    for fmt in ("table", "json", "csv", "prometheus"):
        add(f"expiry-{fmt}", "expiry", "--format", fmt)
    add("expiry-within", "expiry", "--within", "30")
    add("expiry-as-of", "expiry", "--as-of", "2026-09-01")
    add("expiry-check", "expiry", "--check")
    for fmt in ("table", "json", "csv", "html"):
        add(f"report-audit-{fmt}", "report", "audit", "--format", fmt)
        add(f"report-revocations-{fmt}", "report", "revocations", "--format", fmt)
    for fmt in ("html", "json"):
        add(f"report-expiry-{fmt}", "report", "expiry", "--format", fmt)
    add("report-audit-filtered", "report", "audit", "--mailbox", "help@contoso.com",
        "--since", "2026-01-01")
    # the common errors
    add("error-unknown-mailbox", "grant", "show", "nobody@contoso.com")
    add("error-unknown-client", "client", "show", "nope")
    add("error-bad-tenant", "client", "add", "x", "--provider", "microsoft", "--tenant",
        "not a tenant", "--client-id", MS_CLIENT_ID, "--secret-stdin", stdin=SECRET)
    add("error-secret-id", "client", "add", "x", "--provider", "microsoft", "--tenant",
        MS_TENANT, "--client-id", MS_CLIENT_ID, "--secret-stdin",
        stdin="0a1b2c3d-4e5f-6789-abcd-ef0123456789")
    add("error-duplicate", "client", "add", "JIRA", "--provider", "google", "--client-id", "x",
        "--no-secret")
    add("error-no-secret", "client", "add", "y", "--provider", "google", "--client-id", "x")
    add("error-usage", "grant", "list", "--bogus")
    add("error-unknown-command", "frobnicate")
    add("error-no-args", "grant")
    add("error-bad-date", "expiry", "--as-of", "yesterday")
    add("error-check-usage", "expiry", "--check", "--within", "soon")
    add("error-wrong-key", "status", env={"VAULT_KEY_FILE": str(h.key_file) + ".other"})
    add("error-remove-with-grants", "client", "remove", "jira")
    add("error-output-exists", "report", "audit", "--format", "csv", "--output",
        str(h.home.parent / "exists.csv"))
    add("error-not-initialised", "status", env={"VAULT_HOME": str(h.home.parent / "empty")})
    add("error-other-key", "status", env={"VAULT_KEY_FILE": str(h.home.parent / "other.key")})
    add("version", "--version")
    # last: a read-model row edited behind vault's back
    add("tamper", "__sql__", "UPDATE view_grants SET protocols = 'pop' "
        "WHERE mailbox = 'help@contoso.com'")
    add("error-integrity-grant-show", "grant", "show", "help@contoso.com")
    add("error-integrity-status", "status")
    return cases


def _help_cases() -> list[tuple[str, tuple[str, ...], dict, str | None]]:
    import click

    from vault.cli.main import all_commands, cli

    cases = []

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        cases.append(("help-" + ("-".join(path) or "vault"), (*path, "--help"), {}, None))
        if isinstance(command, click.Group):
            commands = all_commands() if command is cli else command.commands  # cli's are lazy
            for name in sorted(commands):
                walk(commands[name], (*path, name))

    walk(cli, ())
    return cases


def _render(h: Harness, code: int, out: str, err: str) -> str:
    text = f"exit {code}\n--- stdout\n{out}--- stderr\n{err}"
    text = text.replace(str(h.home.parent), "<TMP>")
    text = re.sub(r'"(pid|uid)": \d+', r'"\1": 0', text)
    seen: dict[str, str] = {}
    return UUID.sub(lambda m: seen.setdefault(m.group(0), f"<id-{len(seen) + 1}>"), text)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
            ) -> dict[str, str]:
    h = make_harness("sqlite", tmp_path_factory.mktemp("golden"), request)
    (h.home.parent / "exists.csv").write_text("not vault's\n")
    (h.home.parent / "empty").mkdir(mode=0o700)
    (h.home.parent / "other.key").write_text("vault-keyfile-v1:" + "A" * 43 + "=\n")
    (h.home.parent / "other.key").chmod(0o600)
    results: dict[str, str] = {}
    with time_machine.travel(NOW, tick=False), pytest.MonkeyPatch.context() as patch:
        # the audit's actor, the same on every machine (the pid and uid are replaced below)
        real = os.uname()
        patch.setattr(os, "uname", lambda: os.uname_result(
            (real.sysname, "golden-host", real.release, real.version, real.machine)))
        patch.setattr(pwd, "getpwuid", lambda uid: SimpleNamespace(pw_name="admin"))
        for name, args, env, stdin in _build(h) + _captures(h) + _help_cases():
            if args[0] == "__sql__":
                h.sql(args[1])
                continue
            result = h.run(*args, input=stdin, COLUMNS="100", **env)
            results[name] = _render(h, result.code, result.out, result.err)
    return results


def _names() -> list[str]:
    return sorted(p.stem for p in GOLDEN.glob("*.txt"))


def test_every_case_has_a_golden_file(outputs: dict[str, str]) -> None:
    if os.environ.get("VAULT_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        for old in GOLDEN.glob("*.txt"):
            old.unlink()
        for name, text in outputs.items():
            (GOLDEN / f"{name}.txt").write_text(text)
    assert sorted(outputs) == _names()


@pytest.mark.parametrize("name", _names())
def test_output_is_unchanged(outputs: dict[str, str], name: str) -> None:
    assert outputs[name] == (GOLDEN / f"{name}.txt").read_text()
