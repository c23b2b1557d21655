"""Mailbox probes against a real Dovecot (IMAP, POP3, submission) that checks each token at the
real authorization server (oidc-provider introspection), over TLS with a test CA."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import Harness, add_oidc_client, point_at
from tests.consent import ALICE, oidc_consent

MAIL_SCOPES = "openid offline_access mail.imap mail.pop mail.smtp"


def _consent(h: Harness, peer, mailbox: str = ALICE[0], user=ALICE,
             protocols=("imap", "pop", "smtp"), client: str = "idp",
             account: str | None = None) -> None:
    oidc_consent(h, peer, client=client, protocols=protocols, user=user, mailbox=mailbox,
                 account=account)


def _probe(h: Harness, mailbox: str, *args: str, ca=None, code: int | None = None):
    env = {"VAULT_CA_FILE": str(ca.ca_path)} if ca is not None else {}
    result = h.run("probe", mailbox, *args, "--json", **env)
    if code is not None:
        assert result.code == code, result.text
    return {r["protocol"]: r for r in json.loads(result.out)}, result


@pytest.fixture
def alice(sqlite_vault: Harness, oidc, dovecot) -> Harness:
    add_oidc_client(sqlite_vault, oidc, scopes=MAIL_SCOPES)
    _consent(sqlite_vault, oidc)
    return sqlite_vault


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_imap_pop_and_smtp_succeed(alice: Harness, dovecot, mail_ca, tls: str,
                                   mechanism: str) -> None:
    point_at(alice, dovecot, tls=tls)
    results, _ = _probe(alice, ALICE[0], "--mechanism", mechanism, ca=mail_ca, code=0)
    assert {p: r["outcome"] for p, r in results.items()} == {
        "imap": "ok", "pop": "ok", "smtp": "ok"}
    assert results["imap"]["detail"]["messages"] == 2  # SELECT INBOX, not just a login
    assert results["pop"]["detail"]["messages"] == 2  # STAT
    assert results["imap"]["greeting"].startswith("* OK")
    shown = json.loads(alice.ok("grant", "show", ALICE[0], "--json").out)
    assert {p: r["outcome"] for p, r in shown["probes"].items()} == {
        "imap": "ok", "pop": "ok", "smtp": "ok"}
    status = alice.ok("status").out
    assert "imap:ok pop:ok smtp:ok" in status


def test_an_untrusted_certificate_is_refused(alice: Harness, dovecot) -> None:
    point_at(alice, dovecot)
    results, _ = _probe(alice, ALICE[0], "--protocol", "imap", code=1)
    assert results["imap"]["outcome"] == "tls"
    assert "not trusted" in results["imap"]["diagnosis"]
    assert "--ca-file" in results["imap"]["diagnosis"]


def test_send_test_delivers_a_message(alice: Harness, dovecot, mail_ca, mail_sink) -> None:
    point_at(alice, dovecot)
    mail_sink.clear()
    results, _ = _probe(alice, ALICE[0], "--protocol", "smtp", "--send-test", ca=mail_ca, code=0)
    (message,) = mail_sink.wait_for(1)
    assert results["smtp"]["detail"]["test_message"] in message.content.decode()
    assert "vault probe: test message" in message.content.decode()
    assert list(message.rcpt_tos) == [ALICE[0]]


def test_an_expired_token_is_refused(alice: Harness, oidc, dovecot, mail_ca) -> None:
    point_at(alice, dovecot)
    oidc.expire_access_tokens(ALICE[0])
    results, _ = _probe(alice, ALICE[0], "--protocol", "imap", ca=mail_ca, code=1)
    imap = results["imap"]
    assert imap["outcome"] == "refused" and "expired" in imap["diagnosis"]
    assert "AUTHENTICATIONFAILED" in imap["server_reply"]
    assert "status 401" in imap["diagnosis"]  # the decoded error challenge


def test_a_revoked_grant_is_refused(alice: Harness, oidc, dovecot, mail_ca) -> None:
    point_at(alice, dovecot)
    oidc.revoke_grants(ALICE[0])
    results, _ = _probe(alice, ALICE[0], "--protocol", "pop", ca=mail_ca, code=1)
    assert results["pop"]["outcome"] == "refused"
    assert results["pop"]["server_reply"].startswith("-ERR")


def test_a_token_of_another_mailbox_is_refused(sqlite_vault: Harness, oidc, dovecot,
                                               mail_ca) -> None:
    """Alice consented for bob's mailbox, claiming to be his delegate (--account): the consent
    checks who signed in, not who may read the mailbox; user=bob with alice's token is refused
    by the mail server."""
    add_oidc_client(sqlite_vault, oidc, scopes=MAIL_SCOPES)
    _consent(sqlite_vault, oidc, mailbox="bob@example.test", user=ALICE, account=ALICE[0])
    point_at(sqlite_vault, dovecot)
    results, _ = _probe(sqlite_vault, "bob@example.test", "--protocol", "imap",
                        "--mechanism", "oauthbearer", ca=mail_ca, code=1)
    assert results["imap"]["outcome"] == "refused"
    assert any("user= address" in item for item in results["imap"]["checklist"])


def test_a_token_without_the_mail_scope_is_refused(sqlite_vault: Harness, oidc, dovecot,
                                                   mail_ca) -> None:
    add_oidc_client(sqlite_vault, oidc, scopes="openid offline_access mail.smtp")
    _consent(sqlite_vault, oidc, protocols=("imap",))
    point_at(sqlite_vault, dovecot)
    results, _ = _probe(sqlite_vault, ALICE[0], ca=mail_ca, code=1)
    assert results["imap"]["outcome"] == "refused"


def test_an_unreachable_authorization_server_is_temporary(alice: Harness, dovecot_without_idp,
                                                          mail_ca) -> None:
    point_at(alice, dovecot_without_idp)
    results, _ = _probe(alice, ALICE[0], ca=mail_ca, code=1)
    assert {p: r["outcome"] for p, r in results.items()} == {
        "imap": "temporary", "pop": "temporary", "smtp": "temporary"}
    assert "UNAVAILABLE" in results["imap"]["server_reply"]
    assert results["pop"]["server_reply"].startswith("-ERR [SYS/TEMP]")
    assert results["smtp"]["server_reply"].startswith("454")
    assert all("says nothing about the credential" in r["diagnosis"] for r in results.values())


def test_no_token_in_output_audit_or_events(alice: Harness, dovecot, mail_ca) -> None:
    point_at(alice, dovecot)
    table = alice.run("probe", ALICE[0], VAULT_CA_FILE=str(mail_ca.ca_path))
    assert table.code == 0 and "imap" in table.out
    token = alice.ok("token", ALICE[0]).out.strip()
    probe_outputs = [o for o in alice.outputs if "imap" in o]
    assert all(token not in o for o in probe_outputs)
    assert token.encode() not in alice.stored_bytes()
    entries = alice.ok("audit", "log", "--limit", "0", "--json").out
    assert token not in entries and '"action": "probe"' in entries


def _login_with(initial_response: str, dovecot, mail_ca, protocol: str) -> str:
    """Log in to Dovecot with a SASL initial response as `vault token --format ...` printed it
    (base64); the server's answer."""
    import base64
    import imaplib
    import smtplib

    raw = base64.b64decode(initial_response)
    mechanism = "OAUTHBEARER" if raw.startswith(b"n,") else "XOAUTH2"
    if protocol == "imap":
        with imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port,
                               ssl_context=mail_ca.client_context()) as imap:
            try:
                typ, data = imap.authenticate(mechanism, lambda _: raw)
            except imaplib.IMAP4.error as refused:
                return f"NO {refused}"
            return f"{typ} {data[0].decode()}"
    with smtplib.SMTP_SSL(dovecot.host, dovecot.submissions_port,
                          context=mail_ca.client_context()) as smtp:
        smtp.ehlo()
        code, text = smtp.docmd("AUTH", f"{mechanism} {initial_response}")
        return f"{code} {text.decode()}"


def test_a_login_that_is_not_the_mailbox(sqlite_vault: Harness, oidc, dovecot, mail_ca) -> None:
    """carol's mailbox is carol@example.test, but the mail server knows her as `carol` (her
    token's subject): with --login the probes and the SASL formats name `carol`; without it
    they name the mailbox and are refused."""
    import base64

    from tests.consent import CAROL, CAROL_MAILBOX

    h = sqlite_vault
    add_oidc_client(h, oidc, scopes=MAIL_SCOPES)
    oidc_consent(h, oidc, protocols=("imap", "pop", "smtp"), user=CAROL, mailbox=CAROL_MAILBOX,
                 login=CAROL[0])
    point_at(h, dovecot)
    shown = json.loads(h.ok("grant", "show", CAROL_MAILBOX, "--json").out)
    assert (shown["mailbox"], shown["signed_in"]["account"], shown["login"]) == (
        CAROL_MAILBOX, CAROL_MAILBOX, "carol")
    assert re.search(r"^  login +carol$", h.ok("grant", "show", CAROL_MAILBOX).out, re.M)
    results, _ = _probe(h, CAROL_MAILBOX, ca=mail_ca, code=0)
    assert {p: r["outcome"] for p, r in results.items()} == {
        "imap": "ok", "pop": "ok", "smtp": "ok"}
    for fmt in ("xoauth2", "oauthbearer"):
        for protocol in ("imap", "smtp"):
            response = h.ok("token", CAROL_MAILBOX, "--protocol", protocol, "--format", fmt).out
            raw = base64.b64decode(response)
            assert b"user=carol\x01" in raw or b"n,a=carol," in raw
            answer = _login_with(response.strip(), dovecot, mail_ca, protocol)
            assert answer.startswith(("OK", "235")), (fmt, protocol, answer)
    # the cached-token path names her login too
    assert h.light("token", CAROL_MAILBOX, "--format", "xoauth2") == h.ok(
        "token", CAROL_MAILBOX, "--format", "xoauth2", full=True).out

    h.ok("grant", "set-login", CAROL_MAILBOX, CAROL_MAILBOX)  # back to the mailbox
    assert json.loads(h.ok("grant", "show", CAROL_MAILBOX, "--json").out)["login"] == CAROL_MAILBOX
    results, _ = _probe(h, CAROL_MAILBOX, "--protocol", "imap", ca=mail_ca, code=1)
    assert results["imap"]["outcome"] == "refused"
    response = h.ok("token", CAROL_MAILBOX, "--format", "xoauth2").out
    assert _login_with(response.strip(), dovecot, mail_ca, "imap").startswith("NO")
