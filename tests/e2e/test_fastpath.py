"""The light paths (vault/fastpath.py): the cached `vault token` and the plain `vault status`,
`vault expiry` and `vault grant list` give the same output and audit entry as the full CLI, with
no heavy import, and fall back to the full CLI whenever they cannot vouch for the answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta

import pytest

from tests.conftest import PASSPHRASE, Harness, add_client, import_grant
from tests.consent import SANDBOX_MAILBOX as MAILBOX
from tests.consent import sandbox_consent


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


# -- the plain listings --------------------------------------------------------------------------

LISTINGS = [("status",), ("status", "--json"), ("expiry",), ("expiry", "--format", "json"),
            ("grant", "list"), ("grant", "list", "--format=json")]


@pytest.fixture
def fleet(sqlite_vault: Harness) -> Harness:
    """Two clients, one secret near its end, three grants, one of them revoked."""
    h = sqlite_vault
    add_client(h, "jira")
    add_client(h, "crm")
    h.ok("client", "set-secret-dates", "jira", "s1", "--created", "2025-01-01", "--expires",
         (date.today() + timedelta(days=20)).isoformat())
    for mailbox, client in (("help@contoso.com", "jira"), ("sales@contoso.com", "jira"),
                            ("ops@contoso.com", "crm")):
        import_grant(h, mailbox, client)
    h.ok("grant", "revoke", "sales@contoso.com", "--reason", "gone")
    return h


def _last_audit(h: Harness) -> dict:
    entry = json.loads(h.ok("audit", "log", "--limit", "1", "--json", full=True).out)[0]
    return {k: v for k, v in entry.items() if k not in ("seq", "at", "pid")}


@pytest.mark.parametrize("args", LISTINGS)
def test_a_listing_is_served_as_the_full_cli_prints_and_audits_it(fleet: Harness,
                                                                  args: tuple[str, ...]) -> None:
    light = fleet.light(*args)
    light_entry = _last_audit(fleet)
    full = fleet.ok(*args, full=True)
    assert light is not None and light == full.out and full.err == ""
    assert light_entry == _last_audit(fleet) and light_entry["action"] == " ".join(
        a for a in args if not a.startswith("-") and a != "json")
    fleet.ok("audit", "verify")


def test_a_listing_the_light_path_cannot_vouch_for_is_left_to_the_full_cli(
        fleet: Harness) -> None:
    before = _audit_count(fleet)
    for args, env in ((("expiry", "--as-of", "2030-01-01"), {}), (("expiry", "--check"), {}),
                      (("expiry", "--format", "prometheus"), {}), (("grant", "list", "--client",
                                                                    "jira"), {}),
                      (("status",), {"FORCE_COLOR": "1"}), (("status", "--bogus"), {}),
                      (("status", "extra"), {}), (("grant", "--json", "list"), {}),
                      (("status",), {"VAULT_KEY_FILE": None, "VAULT_PASSPHRASE": PASSPHRASE})):
        assert fleet.light(*args, **env) is None, args
    fleet.sql("UPDATE view_grants SET protocols = 'pop' WHERE mailbox = 'ops@contoso.com'")
    for args in LISTINGS:
        assert fleet.light(*args) is None, args
    assert _audit_count(fleet) == before  # nothing was served, so nothing was recorded
    assert fleet.run("status").code == 5  # the full CLI says why


def test_an_empty_home_option_is_left_to_the_full_cli(fleet: Harness, tmp_path) -> None:
    """`--home ""` is not "no --home": the light path must not serve the vault VAULT_HOME
    names when the command line named another (the full CLI decides what "" means)."""
    assert fleet.light("status") is not None
    assert fleet.light("--home", "", "status") is None
    assert fleet.light("--home=", "token", "help@contoso.com") is None
    assert fleet.light("status", VAULT_HOME="") is None


def test_the_format_is_checked_as_the_full_cli_checks_it_even_with_json(fleet: Harness) -> None:
    """--json picks JSON, but a --format click refuses is refused, and expiry's prometheus
    wins over --json: the light path serves none of these."""
    for args in (("status", "--json", "--format", "bogus"), ("grant", "list", "--format=", "--json"),
                 ("expiry", "--format", "csv", "--json"),
                 ("expiry", "--json", "--format", "prometheus")):
        assert fleet.light(*args) is None, args
    assert fleet.run("status", "--json", "--format", "bogus").code == 2
    assert fleet.ok("expiry", "--json", "--format", "prometheus").out.startswith("# vault-metrics")


def test_a_single_dash_argument_is_an_option_to_click_and_not_a_mailbox(granted: Harness,
                                                                       sandbox) -> None:
    sandbox_consent(granted, sandbox, mailbox="-ops@contoso.com")
    assert granted.light("token", "--", "-ops@contoso.com") is None  # `--`: click's business
    assert granted.light("token", "-ops@contoso.com") is None
    assert granted.run("token", "-ops@contoso.com").code == 2  # click: no such option -o


def test_a_home_named_like_a_sqlite_uri_opens_that_directory(fleet: Harness, tmp_path,
                                                             monkeypatch) -> None:
    """SQLite reads a file name starting with `file:` as a URI: `file:home` must open the
    directory of that name (whose privacy was checked), never `home`."""
    import shutil

    monkeypatch.chdir(fleet.home.parent)
    copy = fleet.home.parent / f"file:{fleet.home.name}"
    shutil.copytree(fleet.home, copy)
    import_grant(fleet, "late@contoso.com", "crm")  # in the original only
    shown = fleet.light("grant", "list", "--json", VAULT_HOME=copy.name)
    assert shown is not None and "late@contoso.com" not in shown
    assert shown == fleet.ok("grant", "list", "--json", full=True, VAULT_HOME=copy.name).out


def test_output_errors_end_as_the_full_cli_ends_them(fleet: Harness) -> None:
    """A reader that went away (`vault grant list | head -1`) ends the command quietly with exit
    1; a full disk is one line on stderr, exit 1; never a traceback."""
    env = {**os.environ, **{k: v for k, v in fleet.env().items() if v}}
    process = subprocess.Popen([sys.executable, "-m", "vault", "grant", "list"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 1 and "Traceback" not in err, err
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "vault", "status"], env=env, stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("vault: internal error (OSError)"), result.stderr


def test_an_ascii_only_stdout_gets_utf8_from_both_paths(fleet: Harness) -> None:
    """A table with a name that is not ASCII, on a stream that can only encode ASCII: written
    as UTF-8 (as `say` writes every line), by the light path and by the full CLI (rich's
    tables too), never an encoding error halfway through a table."""
    import_grant(fleet, "j\u00fcrgen@contoso.com", "crm")
    env = {**os.environ, **{k: v for k, v in fleet.env().items() if v},
           "PYTHONIOENCODING": "ascii"}
    for args in (("grant", "list"), ("status",), ("expiry", "--within", "3650")):
        result = subprocess.run([sys.executable, "-m", "vault", *args], env=env,
                                capture_output=True, timeout=60)
        assert result.returncode == 0, (args, result.stderr)
        assert "j\u00fcrgen@contoso.com".encode() in result.stdout, args


def test_a_home_whose_name_is_not_utf8_opens_on_both_paths(fleet: Harness) -> None:
    """A directory name that is not UTF-8 (as a Linux file system allows) reaches SQLite byte
    for byte, through the full CLI's URI too (it used to end in an internal error)."""
    odd = os.fsdecode(os.fsencode(str(fleet.home.parent)) + b"/h\xff")
    os.rename(fleet.home, odd)
    listed = fleet.ok("grant", "list", "--json", full=True, VAULT_HOME=odd).out
    assert "help@contoso.com" in listed
    assert fleet.light("grant", "list", "--json", VAULT_HOME=odd) == listed


def test_an_oauthbearer_response_is_served_light_only_for_a_named_server(granted: Harness) -> None:
    """The client's servers are in its aggregate, not in the read model: without --host and
    --port the full CLI answers; with both, the light path, as the full CLI would."""
    import base64

    assert granted.light("token", MAILBOX, "--format", "oauthbearer") is None
    assert granted.light("token", MAILBOX, "--host", "mail.example.test") is None  # token format
    served = granted.light("token", MAILBOX, "--format", "oauthbearer", "--host",
                           "mail.example.test", "--port=993")
    full = granted.ok("token", MAILBOX, "--format", "oauthbearer", "--host", "mail.example.test",
                      "--port", "993", full=True).out
    assert served == full and b"host=mail.example.test\x01port=993\x01" in base64.b64decode(full)
