"""OAuth exchanges against a real authorization server (oidc-provider on loopback, refresh-token
rotation with reuse detection): consent flows, refresh, client credentials, diagnosis."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Harness, add_oidc_client
from tests.consent import ALICE, oidc_consent
from tests.support import Sleeps


def consent(h: Harness, peer, flow: str = "browser", **kwargs):
    return oidc_consent(h, peer, flow, protocols=kwargs.pop("protocols", ("imap", "smtp")), **kwargs)


def token(h: Harness, mailbox: str = ALICE[0], *extra: str) -> str:
    return h.ok("token", mailbox, *extra).out.strip()


@pytest.mark.parametrize("client_id", ["vault-basic", "vault-post"])
def test_browser_consent_with_each_client_authentication(vault: Harness, oidc,
                                                         client_id: str) -> None:
    add_oidc_client(vault, oidc, client_id=client_id)
    result = consent(vault, oidc, "browser")
    assert result.status == "active" and result.method == "browser"
    access = token(vault)
    assert oidc.introspect(access)["active"] is True
    assert oidc.introspect(access)["sub"] == ALICE[0]
    shown = json.loads(vault.ok("grant", "show", ALICE[0], "--json").out)
    assert shown["tokens"]["refresh_token"] == "held" and shown["tokens"]["generation"] == 1
    assert access not in vault.ok("grant", "show", ALICE[0]).out
    assert access.encode() not in vault.stored_bytes()


def test_manual_and_device_consent(vault: Harness, oidc) -> None:
    add_oidc_client(vault, oidc, "manual-app", client_id="vault-post")
    add_oidc_client(vault, oidc, "device-app", client_id="vault-basic")
    assert consent(vault, oidc, "manual", client="manual-app").method == "manual"
    assert consent(vault, oidc, "device", client="device-app").method == "device"
    for client in ("manual-app", "device-app"):
        access = vault.ok("token", ALICE[0], "--client", client).out.strip()
        assert oidc.introspect(access)["active"] is True


def test_refresh_rotates_the_refresh_token_and_the_grant_keeps_working(vault: Harness,
                                                                       oidc) -> None:
    add_oidc_client(vault, oidc)
    consent(vault, oidc)
    first = token(vault)
    for generation in (2, 3):
        result = json.loads(vault.ok("refresh", ALICE[0], "--json").out)
        assert [r["outcome"] for r in result] == ["refreshed"]
        tokens = json.loads(vault.ok("grant", "show", ALICE[0], "--json").out)["tokens"]
        assert tokens["generation"] == generation and tokens["refreshes"] == generation
    latest = token(vault)
    assert latest != first and oidc.introspect(latest)["active"] is True
    assert [e["event"] for e in json.loads(vault.ok(
        "history", ALICE[0], "--json").out)["events"]].count("TokensIssued") == 3


def test_token_formats_for_mail_clients(vault: Harness, oidc) -> None:
    import base64

    add_oidc_client(vault, oidc)
    consent(vault, oidc)
    access = token(vault)
    xoauth2 = base64.b64decode(token(vault, ALICE[0], "--format", "xoauth2")).decode()
    assert xoauth2 == f"user={ALICE[0]}\x01auth=Bearer {access}\x01\x01"
    bearer = base64.b64decode(token(vault, ALICE[0], "--format", "oauthbearer")).decode()
    assert bearer == f"n,a={ALICE[0]},\x01auth=Bearer {access}\x01\x01"  # no server known
    # RFC 7628: the host and port of the server the response is for, once the client has one
    vault.ok("client", "set-servers", "idp", "--imap", "mail.example.test:993",
             "--smtp", "mail.example.test:465/implicit")
    for protocol, port in (("imap", 993), ("smtp", 465)):
        bearer = base64.b64decode(token(vault, ALICE[0], "--protocol", protocol, "--format",
                                        "oauthbearer")).decode()
        assert bearer == (f"n,a={ALICE[0]},\x01host=mail.example.test\x01port={port}\x01"
                          f"auth=Bearer {access}\x01\x01")
    bearer = base64.b64decode(token(vault, ALICE[0], "--format", "oauthbearer", "--host",
                                    "imap.example.test", "--port", "1993")).decode()
    assert "\x01host=imap.example.test\x01port=1993\x01" in bearer
    assert vault.run("token", ALICE[0], "--host", "x.example.test").code == 2  # not a SASL format
    as_json = json.loads(vault.ok("token", ALICE[0], "--format", "json").out)
    assert as_json["access_token"] == access and as_json["refreshed"] is False
    assert vault.run("token", ALICE[0], "--protocol", "pop").code == 2  # not granted


def test_client_credentials_and_app_only_grants(vault: Harness, oidc) -> None:
    add_oidc_client(vault, oidc, scopes="openid offline_access mail.imap mail.app")
    app_token = vault.ok("app-token", "idp", "--scopes", "mail.app").out.strip()
    assert oidc.introspect(app_token)["client_id"] == "vault-basic"
    vault.ok("grant", "add-app", "--client", "idp", "--mailbox", "shared@example.test",
             "--protocols", "imap", "--scopes", "mail.app")
    first = token(vault, "shared@example.test")
    assert oidc.introspect(first)["active"] is True
    assert token(vault, "shared@example.test") == first  # cached
    status = json.loads(vault.ok("status", "--json").out)
    (row,) = [g for g in status["grants"] if g["mailbox"] == "shared@example.test"]
    assert row["method"] == "app-only" and row["access_expires"]


def test_a_wrong_client_secret_is_diagnosed(vault: Harness, oidc) -> None:
    vault.ok("client", "add", "idp", "--provider", "custom", "--client-id", "vault-post",
             "--secret-stdin", "--issuer", oidc.issuer, "--auth-method", "client_secret_post",
             "--scopes", "openid offline_access mail.imap", input="not-the-right-secret-0123")
    with pytest.raises(Exception, match="the client secret was refused") as caught:
        consent(vault, oidc, "manual", protocols=("imap",))
    assert "invalid_client" in str(caught.value)
    assert json.loads(vault.ok("grant", "list", "--json").out) == []


def test_an_expired_code_is_diagnosed(vault: Harness, oidc) -> None:
    add_oidc_client(vault, oidc, client_id="vault-expired-codes",
                    scopes="openid offline_access mail.imap")
    with pytest.raises(Exception, match="authorization code was refused"):
        consent(vault, oidc, "manual", protocols=("imap",))


def test_a_grant_revoked_at_the_provider_breaks_after_a_second_refusal(vault: Harness,
                                                                       oidc) -> None:
    """invalid_grant is retried once (Office 365 sometimes answers it transiently) without
    consequence; a refusal in a later command, ten minutes after the first, marks the grant for
    re-consent."""
    from datetime import UTC, datetime, timedelta

    add_oidc_client(vault, oidc)
    consent(vault, oidc, user=("bob@example.test", "bob-password-123"))
    oidc.revoke_grants("bob@example.test")
    first = vault.run("refresh", "bob@example.test", "--json")
    assert first.code == 1
    (outcome,) = json.loads(first.out)
    assert "refused the refresh token (invalid_grant)" in outcome["error"]
    assert "refresh refused once" in outcome["error"]
    assert "marked for re-consent" not in outcome["error"]
    ten_minutes_on = timedelta(minutes=10, seconds=5)
    with vault.app(clock=lambda: datetime.now(UTC) + ten_minutes_on, sleep=Sleeps()) as app:
        (outcome,) = app.tokens.refresh("bob@example.test")
    assert "marked for re-consent" in outcome.error
    events = [e["event"] for e in json.loads(vault.ok(
        "history", "bob@example.test", "--json").out)["events"]]
    assert events[-7:] == ["RotationStarted", "RotationFailed", "RotationStarted",
                           "RotationFailed", "RotationStarted", "RotationFailed",
                           "MarkedBroken"]
    grant = json.loads(vault.ok("grant", "show", "bob@example.test", "--json").out)
    assert grant["status"] == "needs-reconsent"
    refused = vault.run("token", "bob@example.test")
    assert refused.code == 1 and refused.out == "" and "needs a new consent" in refused.err
    findings = json.loads(vault.ok("expiry", "--json").out)["findings"]
    assert [(f["severity"], f["kind"]) for f in findings if f["severity"] != "info"] == [
        ("critical", "grant_broken")]


def test_revoking_a_grant_revokes_its_refresh_token_at_the_provider(vault: Harness,
                                                                    oidc) -> None:
    add_oidc_client(vault, oidc)
    consent(vault, oidc)
    access = token(vault)
    result = vault.ok("grant", "revoke", ALICE[0], "--reason", "left the company")
    assert "revoked at the provider" in result.out
    assert oidc.introspect(access)["active"] is False  # oidc-provider drops the whole grant
    assert vault.run("token", ALICE[0]).code == 1


def test_rotate_secret_verify_checks_the_new_secret_first(vault: Harness, oidc) -> None:
    add_oidc_client(vault, oidc, client_id="vault-post",
                    scopes="openid offline_access mail.imap mail.app")
    before = json.loads(vault.ok("client", "show", "idp", "--json").out)["secrets"]
    bad = vault.run("client", "rotate-secret", "idp", "--secret-stdin", "--verify",
                    "--verify-timeout", "0", input="a-wrong-new-secret-0123456")
    assert bad.code == 1 and "client secret was refused" in bad.err
    assert json.loads(vault.ok("client", "show", "idp", "--json").out)["secrets"] == before
