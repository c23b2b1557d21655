"""The refresh protocol under pressure: eight processes at once, and a process killed between
the provider's answer and the commit. Against oidc-provider's strict rotation, a double spend
of a refresh token would revoke the whole grant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from tests.conftest import Harness, add_oidc_client, add_sandbox_client
from tests.consent import ALICE, consent_two_hours_ago
from tests.support import ROOT


def _events(h: Harness, mailbox: str) -> list[str]:
    data = json.loads(h.ok("history", mailbox, "--json", "--limit", "500").out)
    return [e["event"] for e in data["events"]]


def test_eight_processes_on_an_expired_token_make_one_refresh(vault: Harness, oidc) -> None:
    add_oidc_client(vault, oidc)
    consent_two_hours_ago(vault, oidc.complete_authorization, "idp")
    procs = [vault.spawn("token", ALICE[0]) for _ in range(8)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, outputs
    tokens = {out.strip() for out, _ in outputs}
    assert len(tokens) == 1  # all eight print the one new token
    (access,) = tokens
    assert oidc.introspect(access)["active"] is True
    events = _events(vault, ALICE[0])
    assert events.count("RotationStarted") == 1 and events.count("TokensIssued") == 2
    # the grant still works: a double spend would have made oidc-provider revoke it
    assert json.loads(vault.ok("refresh", ALICE[0], "--json").out)[0]["outcome"] == "refreshed"


def _crash(h: Harness, mailbox: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tests.workers", "crash-after-token-response", str(h.home),
         h.store_url or "", str(h.key_file), mailbox],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)


def test_a_crash_after_the_answer_is_reported_and_recovered_where_old_tokens_live(
        vault: Harness, sandbox) -> None:
    """Microsoft (here its sandbox) keeps old refresh tokens valid: the next run recovers."""
    import httpx

    add_sandbox_client(vault, sandbox)

    def sign_in(url: str, user: str, password: str) -> str:
        import re
        from html import unescape

        page = httpx.get(url).text
        form = dict(re.findall(r"name='([^']+)' value='([^']*)'", page))
        form = {k: unescape(v) for k, v in form.items()}
        form.update(username=user, password="sandbox")
        answer = httpx.post(url.split("?")[0], data=form)
        return answer.headers["location"]

    sandbox.state.clock = lambda: (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    consent_two_hours_ago(vault, sign_in, "demo", ("carol@contoso.com", "sandbox"))
    crashed = _crash(vault, "carol@contoso.com")
    assert crashed.returncode == 17, crashed.stderr
    assert _events(vault, "carol@contoso.com")[-1] == "RotationStarted"  # intent, no outcome
    shown = json.loads(vault.ok("grant", "show", "carol@contoso.com", "--json").out)
    assert shown["tokens"]["interrupted_attempt"] is True
    result = vault.run("token", "carol@contoso.com")
    assert result.code == 0 and result.out.strip().startswith("sbx-at.")
    assert "was interrupted" in result.err  # reported
    assert json.loads(vault.ok("grant", "show", "carol@contoso.com", "--json").out)[
        "tokens"]["interrupted_attempt"] is False


def test_a_crash_after_the_answer_flags_reconsent_on_a_strict_provider(vault: Harness,
                                                                       oidc) -> None:
    """oidc-provider rotated the refresh token when it answered; vault never stored the new one.
    Reusing the old one is reuse: the grant is revoked there, and vault asks for a new consent."""
    add_oidc_client(vault, oidc)
    consent_two_hours_ago(vault, oidc.complete_authorization, "idp")
    assert _crash(vault, ALICE[0]).returncode == 17
    result = vault.run("token", ALICE[0])
    assert result.code == 1 and result.out == ""
    assert "was interrupted" in result.err and "marked for re-consent" in result.err
    grant = json.loads(vault.ok("grant", "show", ALICE[0], "--json").out)
    assert grant["status"] == "needs-reconsent"
