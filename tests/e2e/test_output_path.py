"""One output path (issue 10, item 5): whatever a provider or a mail server says reaches stdout
and stderr only through `vault.render.text.printable`, which shows control characters instead
of sending them.

A hostile provider and mail server (tests/peers/hostile_peer.py, real servers on loopback) put
ESC sequences (clear screen, OSC 52 clipboard), BEL, CR, LF, the 8-bit CSI, a right-to-left
override and DEL into every free-text field they send: OAuth error words, descriptions, trace
and correlation ids, token_type, scope, the access token itself, device-code texts, an IMAP or
SMTP greeting, refusal and error challenge, an SMTP server's acceptance. Every command that can
print such text runs against them, in each of its formats; none may let a control character
through, and those that carry the text must show it."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from tests.conftest import Harness, Result
from tests.peers.hostile_peer import GOOD_REFRESH_TOKEN, HOSTILE, HostilePeer
from vault.render.text import printable

# what must never reach a terminal: C0 but TAB and LF, DEL, C1, bidi controls, U+2028/9
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                     "\u2028\u2029]")
SHOWN = "\\x1b]52;c;ZXZpbA==\\x07"  # the OSC 52 sequence as printable() shows it
SHOWN_JSON = "\\u001b]52;c;ZXZpbA==\\u0007"  # ... and as JSON escapes it
HELP, STALE, MAILER = "help@example.test", "stale@example.test", "mailer@example.test"


@pytest.fixture
def hostile():
    peer = HostilePeer(senders=(MAILER,)).start()
    yield peer
    peer.stop()


def test_printable_shows_every_control_character_and_nothing_else() -> None:
    shown = printable(HOSTILE)
    assert not CONTROL.search(shown) and "\n" not in shown
    assert shown == "\\x1b[2J\\x1b]52;c;ZXZpbA==\\x07\\x0d\\x0a\\x9b31m\\u202eevil\\x7f"
    assert printable(shown) == shown  # idempotent: text may pass twice
    assert printable("a\tb\nc", lines=True) == "a\tb\nc"
    ordinary = "help@contoso.com: Gr\u00fc\u00dfe, \u6771\u4eac, \u2013 \U0001f469\u200d\U0001f4bb \u00a0="
    assert printable(ordinary) == ordinary


class Checked:
    """Runs commands and keeps, for each, whether a control character got through."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.leaks: list[str] = []
        self.missing: list[str] = []

    def run(self, *args: str, codes: tuple[int, ...] = (0,), shown: str | None = None,
            input: str | None = None, **env: str | None) -> Result:
        result = self.h.run(*args, input=input, **env)
        name = " ".join(a if len(a) < 40 else a[:37] + "..." for a in args)
        assert result.code in codes, f"vault {name} -> {result.code}: {result.text}"
        assert "internal error" not in result.err and "Traceback" not in result.text, name
        for stream, text in (("stdout", result.out), ("stderr", result.err)):
            found = CONTROL.search(text)
            if found:
                self.leaks.append(f"{name} ({stream}): {found.group()!r} in "
                                  f"{text[max(found.start() - 60, 0):found.end() + 20]!r}")
        # the provider's words are there, shown (a table may fold a long cell over lines)
        if shown and shown not in re.sub(r"\s+", "", result.text):
            self.missing.append(f"{name}: {result.text[:300]!r}")
        return result


def _setup(h: Harness, hostile: HostilePeer) -> None:
    h.ok("client", "add", "evil", "--provider", "custom", "--client-id", "evil-client",
         "--secret-stdin", "--token-url", hostile.url("/token"), "--authorize-url",
         hostile.url("/authorize"), "--device-url", hostile.url("/devicecode"),
         "--revoke-url", hostile.url("/revoke"), "--scopes", "offline_access mail",
         input="evil-secret-value-0123")
    h.ok("client", "set-servers", "evil", "--imap", f"127.0.0.1:{hostile.imap_port}/plain",
         "--smtp", f"127.0.0.1:{hostile.smtp_port}/plain")
    long_ago = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%d")
    for mailbox, token, protocols in ((HELP, GOOD_REFRESH_TOKEN, "imap,smtp"),
                                      (MAILER, GOOD_REFRESH_TOKEN, "smtp"),
                                      (STALE, "rt-refused-0123456789abcdef", "imap")):
        h.ok("grant", "import", "--client", "evil", "--mailbox", mailbox, "--protocols",
             protocols, "--refresh-token-stdin", "--granted-at", long_ago, input=token)


def test_a_hostile_provider_and_mail_server_never_drive_the_terminal(
        sqlite_vault: Harness, hostile: HostilePeer, webhook, tmp_path) -> None:
    h = sqlite_vault
    _setup(h, hostile)
    c = Checked(h)

    # tokens: refreshed (the full CLI), then cached (the light path), in every format
    c.run("token", HELP, shown=SHOWN)
    asked = len(hostile.requests)
    c.run("token", HELP, shown=SHOWN)
    c.run("token", HELP, "--format", "json", shown=SHOWN_JSON)
    assert len(hostile.requests) == asked  # both served from the cache, by vault/fastpath.py
    for fmt in ("xoauth2", "oauthbearer"):
        out = c.run("token", HELP, "--format", fmt).out
        assert HOSTILE.encode() in base64.b64decode(out)  # the SASL response carries it as is
    c.run("token", MAILER, "--protocol", "smtp")
    c.run("token", STALE, codes=(1,), shown=SHOWN)  # refused: the reason on stderr
    c.run("app-token", "evil", "--scopes", "mail", shown=SHOWN)
    c.run("app-token", "evil", "--scopes", "mail", "--format", "json", shown=SHOWN_JSON)

    # refresh: the refused grant's error, its trace and correlation ids
    c.run("refresh", "--all", codes=(1,), shown=SHOWN)
    c.run("refresh", "--all", "--json", codes=(1,), shown=SHOWN_JSON)
    c.run("refresh", STALE, codes=(1,), shown=SHOWN)

    # consent that fails: an error sent back through the browser, a device code's texts
    redirect = ("http://127.0.0.1/callback?error=" + quote("access_denied" + HOSTILE)
                + "&error_description=" + quote(HOSTILE) + "&state=x")
    c.run("consent", "evil", "--mailbox", "new@example.test", "--protocols", "imap",
          "--flow", "manual", "--no-open", codes=(1,), shown=SHOWN, input=redirect + "\n")
    c.run("consent", "evil", "--mailbox", "new@example.test", "--protocols", "imap",
          "--flow", "device", codes=(1,), shown=SHOWN)

    # probes: a greeting, an error challenge and a refusal full of escapes; an SMTP acceptance
    c.run("probe", HELP, "--protocol", "imap", codes=(1,), shown=SHOWN)
    c.run("probe", HELP, "--protocol", "imap", "--json", codes=(1,), shown=SHOWN_JSON)
    c.run("probe", MAILER, "--send-test", shown=SHOWN)

    # alerts: the failed probes go out by webhook and e-mail (accepted), ...
    url_file = tmp_path / "hook"
    url_file.write_text(webhook.url)
    c.run("alert", "--webhook-file", str(url_file), "--email-to", "ops@example.test",
          "--via", MAILER)
    assert webhook.received and hostile.messages
    for payload in webhook.received:
        assert not CONTROL.search(json.dumps(payload, ensure_ascii=False)), payload
    for message in hostile.messages:
        assert not CONTROL.search(message), message
    # ... then a new finding (the SMTP probe of HELP) fails on e-mail: the server's refusal
    c.run("probe", HELP, "--protocol", "smtp", codes=(1,), shown=SHOWN)
    c.run("alert", "--email-to", "ops@example.test", "--via", HELP, codes=(1,), shown=SHOWN)

    # maintain: the refresh step's errors (trace ids) and the alert step's pending e-mail
    for fmt, shown in (("table", SHOWN), ("json", SHOWN_JSON)):
        c.run("maintain", "--probe-every", "0", "--email-to", "ops@example.test", "--via",
              HELP, "--format", fmt, codes=(1,), shown=shown)

    # what was recorded, read back
    c.run("status")
    c.run("status", "--json")
    c.run("grant", "list", shown=SHOWN)
    c.run("grant", "list", "--json", shown=SHOWN_JSON)
    c.run("grant", "show", HELP, shown=SHOWN)
    c.run("grant", "show", HELP, "--json", shown=SHOWN_JSON)
    c.run("grant", "show", STALE)
    c.run("history", STALE, shown=SHOWN)
    c.run("history", HELP, shown=SHOWN)
    c.run("history", HELP, "--json", shown=SHOWN_JSON)
    for fmt, shown in (("table", SHOWN), ("json", SHOWN_JSON), ("csv", SHOWN),
                       ("html", SHOWN)):
        c.run("report", "audit", "--format", fmt, shown=shown)
        c.run("report", "revocations", "--format", fmt)
    c.run("report", "expiry")
    c.run("report", "expiry", "--format", "json")
    for args in ((), ("--json",), ("--format", "prometheus"), ("--check",)):
        c.run("expiry", *args, codes=(0, 1, 2))

    # revoking at a provider that refuses: its words in the one line that says so
    c.run("grant", "revoke", HELP, "--reason", "done", shown=SHOWN)
    for fmt in ("table", "csv", "html"):
        c.run("report", "revocations", "--format", fmt)

    assert not c.leaks, "\n".join(c.leaks)
    assert not c.missing, "\n".join(c.missing)
