"""What mail servers answer, and what vault makes of it (answers as Exchange, Gmail and Dovecot
send them; pure, no server), with the advice of the server's provider."""

from __future__ import annotations

import base64

import pytest

from domain.mail_verdicts import REFUSED, TEMPORARY, decode_challenge, judge_refusal


@pytest.mark.parametrize("protocol,reply,outcome,words", [
    ("imap", "v4 NO AUTHENTICATE failed.", REFUSED, "Exchange refused the token"),
    ("smtp", "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
             "for the Tenant.", REFUSED, "SMTP AUTH is disabled"),
    ("smtp", "535 5.7.3 Authentication unsuccessful", REFUSED, "Exchange refused the token"),
    ("pop", "-ERR Authentication failure: unknown user name or bad password.", REFUSED,
     "refused the token"),
    ("imap", "v4 NO [UNAVAILABLE] Temporary authentication failure.", TEMPORARY,
     "says nothing about the credential"),
    ("pop", "-ERR [SYS/TEMP] Temporary authentication failure.", TEMPORARY, "try again later"),
    ("smtp", "454 4.7.0 Temporary authentication failure.", TEMPORARY, "try again later"),
])
def test_server_answers_are_judged(protocol: str, reply: str, outcome: str, words: str) -> None:
    verdict = judge_refusal(protocol, reply, None, "microsoft")
    assert verdict.outcome == outcome and words in verdict.diagnosis
    if outcome == REFUSED and "5.7.139" not in reply:
        assert any("user= address" in item for item in verdict.checklist)


def test_error_challenges_are_decoded() -> None:
    gmail = base64.b64encode(b'{"status":"400","schemes":"Bearer",'
                             b'"scope":"https://mail.google.com/"}').decode()
    assert decode_challenge(gmail)["scope"] == "https://mail.google.com/"
    verdict = judge_refusal("imap", "v4 NO [AUTHENTICATIONFAILED] Invalid credentials",
                            decode_challenge(gmail), "google")
    assert "status 400, scope https://mail.google.com/" in verdict.diagnosis
    assert decode_challenge("not base64!") is None


@pytest.mark.parametrize("reply,first", [
    ("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
     "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.", "SMTP AUTH is disabled"),
    ("535 5.7.139 Authentication unsuccessful, user is locked by your organization's security "
     "defaults policy. Contact your administrator.", "security defaults"),
])
def test_smtp_auth_refused_names_both_causes(reply: str, first: str) -> None:
    verdict = judge_refusal("smtp", reply, None, "microsoft")
    assert verdict.outcome == REFUSED
    text = verdict.diagnosis
    assert "security defaults" in text and "SmtpClientAuthenticationDisabled" in text
    assert text.index(first) == min(text.index("SMTP AUTH is disabled"),
                                    text.index("security defaults"))
    assert len(verdict.checklist) == 2


@pytest.mark.parametrize("provider,server,advice", [
    ("microsoft", "Exchange", "Set-CASMailbox"),
    ("google", "Gmail", "https://mail.google.com/"),
    ("custom", "the server", "the server's log"),
])
def test_a_refusal_gets_the_advice_of_its_provider(provider: str, server: str,
                                                   advice: str) -> None:
    """Exchange's settings are advice for Exchange only: a refusal by Gmail gets Gmail's checks,
    by any other server the checks that hold everywhere."""
    for protocol, reply in (("imap", "v4 NO [AUTHENTICATIONFAILED] Authentication failed."),
                            ("smtp", "535 5.7.8 Error: authentication failed")):
        verdict = judge_refusal(protocol, reply, None, provider)
        assert verdict.outcome == REFUSED and verdict.diagnosis.startswith(server)
        assert any(advice in item for item in verdict.checklist)
        assert any("user= address" in item for item in verdict.checklist)
        if provider != "microsoft":
            assert not any("Set-CASMailbox" in item or "Add-MailboxPermission" in item
                           for item in verdict.checklist)
    # 5.7.139 is Exchange's: another server's code means nothing of the sort
    assert ("SMTP AUTH is disabled" in judge_refusal(
        "smtp", "535 5.7.139 Authentication unsuccessful", None, provider).diagnosis) == (
        provider == "microsoft")
