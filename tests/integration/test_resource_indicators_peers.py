"""RFC 8707 resource indicators at the suite's peers, without vault: oidc-provider issues an
audience-bound JWT access token for a known `resource` (authorization code, refresh and device
flows), and the JWT-validating Dovecot (`dovecot_jwt`) accepts it over IMAP, POP3 and submission
while refusing tokens for another audience, of another issuer, expired, tampered, or opaque.

What the peers do, verified here (and in the sources named in server.mjs and oauth2-jwt.conf.ext.in):
- oidc-provider 9.13: `resource` must be one of its resource servers, else invalid_target (as a
  redirect from the authorization endpoint, a 400 from the token and device endpoints). A token
  request may name one resource only, one of those granted; without one, a grant whose scope has
  openid gets an opaque token as if no resource had been asked (so a refresh must repeat it). The
  JWT's scope holds only the resource server's scopes; JWTs cannot be introspected.
- Debian's Dovecot 2.3.19 (deb12u7) checks typ, exp, iss, aud (its `client_id` setting), scope,
  the signature with the key named by kid, and sub against the SASL user; nothing else is asked.
"""

from __future__ import annotations

import base64
import imaplib
import json
import poplib
import smtplib
import time
import uuid
from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.peers.dovecot_peer import DovecotPeer, MailSink, TestCA
from tests.peers.oidc_peer import (
    ACCESS_TOKEN_KID,
    IMAP_RESOURCE,
    MAIL_RESOURCE,
    OTHER_MAIL_RESOURCE,
    POP_RESOURCE,
    REDIRECT_URI,
    RESOURCE_SERVERS,
    SMTP_RESOURCE,
    USERS,
    OidcPeer,
    client_auth,
    decode_jwt,
    make_pkce,
    verify_jwt,
)

pytestmark = pytest.mark.peers

ALICE = "alice@example.test"
BOB = "bob@example.test"
CLIENT = "vault-basic"
MAIL = "openid offline_access mail.imap mail.pop mail.smtp"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
PROTOCOLS = ("imap", "pop3", "submission")
REFUSED = {  # the final answers (imaplib's error drops the tagged "NO ")
    "imap": "[AUTHENTICATIONFAILED] Authentication failed.",
    "pop3": "-ERR [AUTH] Authentication failed.",
    "submission": "535 5.7.8 Authentication failed.",
}


# --- OAuth flows, driven directly ------------------------------------------------------------------


def token_request(oidc: OidcPeer, data: dict, client_id: str = CLIENT) -> httpx.Response:
    return oidc.http.post(oidc.token_url, **client_auth(client_id, data))


def authorize(oidc: OidcPeer, resource: str | list[str] | None, scope: str = MAIL,
              user: str = ALICE) -> tuple[str, str]:
    """The browser part of the code flow with `resource` on the authorization request: (code,
    verifier). prompt=consent keeps offline_access (OpenID Connect Core 11)."""
    verifier, challenge = make_pkce()
    url = oidc.build_authorize_url(CLIENT, scope, "st", challenge, prompt="consent", resource=resource)
    redirect = oidc.complete_authorization(url, user, USERS[user])
    query = parse_qs(urlsplit(redirect).query)
    assert "code" in query, redirect
    return query["code"][0], verifier


def redeem(oidc: OidcPeer, code: str, verifier: str, resource: str | None) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": REDIRECT_URI}
    if resource is not None:
        data["resource"] = resource
    return token_request(oidc, data)


def code_flow(oidc: OidcPeer, resource: str | None, scope: str = MAIL, user: str = ALICE) -> dict:
    """Code flow naming `resource` on both the authorization and the token request (RFC 8707)."""
    resp = redeem(oidc, *authorize(oidc, resource, scope, user), resource)
    assert resp.status_code == 200, resp.text
    return resp.json()


def refresh(oidc: OidcPeer, refresh_token: str, resource: str | None) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if resource is not None:
        data["resource"] = resource
    return token_request(oidc, data)


def assert_error(resp: httpx.Response, status: int, error: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == error, resp.text


def assert_jwt_for(oidc: OidcPeer, token: str, resource: str, scopes: set[str], user: str = ALICE) -> dict:
    """The access token is an RS256 JWT signed by the provider's key, bound to `resource`."""
    header, claims = verify_jwt(token, oidc.signing_keys())
    assert header == {"alg": "RS256", "typ": "JWT", "kid": ACCESS_TOKEN_KID}
    assert claims["aud"] == resource
    assert claims["sub"] == user
    assert claims["iss"] == oidc.issuer
    assert claims["client_id"] == CLIENT
    assert set(claims["scope"].split()) == scopes
    assert claims["exp"] - claims["iat"] == 3600
    return claims


def is_jwt(token: str) -> bool:
    try:
        decode_jwt(token)
    except ValueError:
        return False
    return True


# --- SASL logins at the mail server -------------------------------------------------------------------


def xoauth2(user: str, token: str) -> bytes:
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer(user: str, token: str, port: int) -> bytes:
    return f"n,a={user},\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()


def login(peer: DovecotPeer, ca: TestCA, protocol: str, token: str, user: str = ALICE,
          mech: str = "XOAUTH2") -> str:
    """Authenticate over implicit TLS (trusting the test CA only): "OK", or the server's final
    refusal line (after the client acknowledged the error challenge, as RFC 7628 wants)."""
    context = ca.client_context()
    ack = b"" if mech == "XOAUTH2" else b"\x01"
    if protocol == "imap":
        payload = xoauth2(user, token) if mech == "XOAUTH2" else oauthbearer(user, token, peer.imaps_port)
        with imaplib.IMAP4_SSL(peer.host, peer.imaps_port, ssl_context=context, timeout=10) as imap:
            try:
                imap.authenticate(mech, lambda challenge: ack if challenge else payload)
            except imaplib.IMAP4.error as exc:
                return str(exc)
            assert imap.select("INBOX")[0] == "OK"
            typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert typ == "OK" and b"Subject: Seeded message 1" in data[0][1]
            return "OK"
    if protocol == "pop3":
        payload = xoauth2(user, token) if mech == "XOAUTH2" else oauthbearer(user, token, peer.pop3s_port)
        pop = poplib.POP3_SSL(peer.host, peer.pop3s_port, context=context, timeout=10)
        try:
            # RFC 5034 initial response on the AUTH line
            reply = pop._shortcmd(f"AUTH {mech} {base64.b64encode(payload).decode()}")
            if reply.startswith(b"+ "):  # the error challenge
                try:
                    pop._shortcmd(base64.b64encode(ack).decode())
                except poplib.error_proto as exc:
                    return exc.args[0].decode()
                raise AssertionError("POP3 accepted the login after an error challenge")
            assert reply.startswith(b"+OK"), reply
            assert pop.stat()[0] >= 1
            return "OK"
        finally:
            pop.close()
    assert protocol == "submission"
    payload = xoauth2(user, token) if mech == "XOAUTH2" else oauthbearer(user, token, peer.submissions_port)
    with smtplib.SMTP_SSL(peer.host, peer.submissions_port, context=context, timeout=10) as smtp:
        smtp.ehlo("client.example.test")
        code, text = smtp_auth(smtp, mech, payload)
        if code == 334:  # the error challenge
            code, text = smtp.docmd(base64.b64encode(ack).decode())
        if code != 235:
            return f"{code} {text.decode()}"
        return "OK"


def smtp_auth(smtp: smtplib.SMTP, mech: str, payload: bytes) -> tuple[int, bytes]:
    """AUTH without an initial response, the payload after the server's empty 334 challenge.

    Dovecot 2.3.19's submission-login reads the AUTH command line itself into a ~1 KB buffer
    (lib-smtp limits.max_parameters_size = LOGIN_MAX_INBUF_SIZE) and answers a longer one with
    "500 5.5.2 Line too long"; only a response to a 334 may be 8 KB (max_auth_size). A JWT access
    token makes the XOAUTH2 initial response longer than that (test_long_initial_response_...)."""
    code, text = smtp.docmd("AUTH", mech)
    assert (code, text) == (334, b""), (code, text)
    return smtp.docmd(base64.b64encode(payload).decode())


def send_mail(peer: DovecotPeer, ca: TestCA, sink: MailSink, token: str, user: str = ALICE) -> None:
    """Submit a message with XOAUTH2 and wait until the relay sink has it."""
    message = EmailMessage()
    message["From"], message["To"] = user, BOB
    message["Subject"] = f"resource-indicator test {uuid.uuid4()}"
    message.set_content("sent with an audience-bound JWT\n")
    before = len(sink.messages)
    with smtplib.SMTP_SSL(peer.host, peer.submissions_port, context=ca.client_context(), timeout=10) as smtp:
        smtp.ehlo("client.example.test")
        code, text = smtp_auth(smtp, "XOAUTH2", xoauth2(user, token))
        assert code == 235, (code, text)
        smtp.send_message(message)
    received = sink.wait_for(before + 1)
    assert any(message["Subject"].encode() in m.content for m in received[before:])


def refusal_reasons(peer: DovecotPeer, offset: int, count: int = 1, timeout: float = 5.0) -> str:
    """The log written since `offset` once it holds `count` "Local validation failed" lines (the
    log process may write them just after the client got its answer)."""
    deadline = time.monotonic() + timeout
    while True:
        text = peer.log_text()[offset:]
        if text.count("Local validation failed: ") >= count or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


def log_offset(peer: DovecotPeer) -> int:
    return len(peer.log_text())


# --- (a) code flow with resource --------------------------------------------------------------------


def test_provider_publishes_the_access_token_key(oidc: OidcPeer) -> None:
    keys = oidc.signing_keys()
    assert [(k.kid, k.alg) for k in keys] == [(ACCESS_TOKEN_KID, "RS256")]
    assert keys[0].pem.startswith("-----BEGIN PUBLIC KEY-----\n")
    assert oidc.http.get(oidc.discovery_url).json()["jwks_uri"] == oidc.jwks_url


def test_code_flow_with_resource_returns_an_audience_bound_jwt(oidc: OidcPeer) -> None:
    tokens = code_flow(oidc, MAIL_RESOURCE)
    assert_jwt_for(oidc, tokens["access_token"], MAIL_RESOURCE, {"mail.imap", "mail.pop", "mail.smtp"})
    # The response's scope is the access token's: the resource server's scopes, no OIDC ones.
    assert set(tokens["scope"].split()) == {"mail.imap", "mail.pop", "mail.smtp"}
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert tokens["refresh_token"] and not is_jwt(tokens["refresh_token"])
    _, id_claims = verify_jwt(tokens["id_token"], oidc.signing_keys())
    assert id_claims["aud"] == CLIENT and id_claims["sub"] == ALICE  # the ID token is as before

    # Only the requested scopes the resource server accepts go into the token.
    tokens = code_flow(oidc, IMAP_RESOURCE, scope="openid offline_access mail.imap mail.smtp", user=BOB)
    assert_jwt_for(oidc, tokens["access_token"], IMAP_RESOURCE, {"mail.imap"}, user=BOB)

    # JWT access tokens are for local validation: oidc-provider refuses to introspect them.
    resp = oidc.http.post(oidc.introspection_url, **client_auth("dovecot", {"token": tokens["access_token"]}))
    assert_error(resp, 400, "unsupported_token_type")


def test_token_request_without_the_resource_gets_an_opaque_token(oidc: OidcPeer) -> None:
    """oidc-provider (helpers/resolve_resource.js, useGrantedResource false): with openid in the
    scope, a token request that does not repeat the granted resource gets an opaque token."""
    resp = redeem(oidc, *authorize(oidc, MAIL_RESOURCE), None)
    assert resp.status_code == 200, resp.text
    assert not is_jwt(resp.json()["access_token"])
    assert oidc.introspect(resp.json()["access_token"])["active"] is True

    # Without openid, the single granted resource is used on its own.
    resp = redeem(oidc, *authorize(oidc, MAIL_RESOURCE, scope="offline_access mail.imap"), None)
    assert resp.status_code == 200, resp.text
    assert_jwt_for(oidc, resp.json()["access_token"], MAIL_RESOURCE, {"mail.imap"})


# --- (b) the JWT at the JWT-validating Dovecot ------------------------------------------------------


def test_jwt_logs_in_over_imap_pop3_and_submission(oidc: OidcPeer, dovecot_jwt: DovecotPeer,
                                                     mail_ca: TestCA, mail_sink: MailSink) -> None:
    token = code_flow(oidc, MAIL_RESOURCE)["access_token"]
    for protocol in PROTOCOLS:
        for mech in ("XOAUTH2", "OAUTHBEARER"):
            assert login(dovecot_jwt, mail_ca, protocol, token, mech=mech) == "OK", (protocol, mech)
    send_mail(dovecot_jwt, mail_ca, mail_sink, token)
    # The token names alice: it logs in as nobody else.
    offset = log_offset(dovecot_jwt)
    assert login(dovecot_jwt, mail_ca, "imap", token, user=BOB) == REFUSED["imap"]
    reasons = refusal_reasons(dovecot_jwt, offset)
    assert f"Local validation failed: Username '{BOB}' did not match '{ALICE}'" in reasons


def test_long_initial_response_is_too_long_for_dovecot_submission(
        oidc: OidcPeer, dovecot_jwt: DovecotPeer, mail_ca: TestCA) -> None:
    """An SMTP client that sends a JWT's XOAUTH2 initial response on the AUTH line (as smtplib's
    login does) gets "500 5.5.2 Line too long" from Dovecot 2.3.19 submission: the AUTH command's
    parameters may be 1026 bytes (LOGIN_MAX_INBUF_SIZE = 1218 - 128 - 64 in login-common), and
    this token's "XOAUTH2 <base64>" is about 1036. After the 334 it fits (8 KB, smtp_auth). POP3's
    AUTH line takes it (login() sends it there), IMAP's SASL-IR has its own larger buffer."""
    token = code_flow(oidc, MAIL_RESOURCE)["access_token"]
    initial = base64.b64encode(xoauth2(ALICE, token)).decode()
    assert len(f"XOAUTH2 {initial}") > 1026
    with smtplib.SMTP_SSL(dovecot_jwt.host, dovecot_jwt.submissions_port, context=mail_ca.client_context(),
                          timeout=10) as smtp:
        smtp.ehlo("client.example.test")
        assert smtp.docmd("AUTH", f"XOAUTH2 {initial}") == (500, b"5.5.2 Line too long")
        assert smtp_auth(smtp, "XOAUTH2", xoauth2(ALICE, token))[0] == 235


def test_per_protocol_resources(oidc: OidcPeer, dovecot_jwt: DovecotPeer, mail_ca: TestCA) -> None:
    """A token for one protocol's resource is accepted by that protocol only (aud and scope)."""
    accepted = {IMAP_RESOURCE: "imap", POP_RESOURCE: "pop3", SMTP_RESOURCE: "submission"}
    for resource, protocol in accepted.items():
        token = code_flow(oidc, resource)["access_token"]
        for other in PROTOCOLS:
            expected = "OK" if other == protocol else REFUSED[other]
            assert login(dovecot_jwt, mail_ca, other, token) == expected, (resource, other)


def test_token_for_another_audience_is_refused(oidc: OidcPeer, dovecot_jwt: DovecotPeer,
                                               mail_ca: TestCA) -> None:
    """Same issuer, key and scopes, other aud: Dovecot's client_id setting is the audience check."""
    token = code_flow(oidc, OTHER_MAIL_RESOURCE)["access_token"]
    assert_jwt_for(oidc, token, OTHER_MAIL_RESOURCE, {"mail.imap", "mail.pop", "mail.smtp"})
    for protocol in PROTOCOLS:
        offset = log_offset(dovecot_jwt)
        assert login(dovecot_jwt, mail_ca, protocol, token) == REFUSED[protocol]
        # one refusal per accepted audience (the protocol's passdbs are tried in turn)
        assert refusal_reasons(dovecot_jwt, offset, count=2).count("client_id not found in aud field") == 2


def test_opaque_token_is_refused_by_the_jwt_dovecot(oidc: OidcPeer, dovecot_jwt: DovecotPeer,
                                                    dovecot: DovecotPeer, mail_ca: TestCA) -> None:
    tokens = code_flow(oidc, None)
    assert not is_jwt(tokens["access_token"])
    offset = log_offset(dovecot_jwt)
    assert login(dovecot_jwt, mail_ca, "imap", tokens["access_token"]) == REFUSED["imap"]
    assert "Local validation failed: Not a JWT token" in refusal_reasons(dovecot_jwt, offset)
    # ... and it still works where tokens are introspected, as always
    assert login(dovecot, mail_ca, "imap", tokens["access_token"]) == "OK"


def test_jwt_at_the_introspecting_dovecot_is_a_temporary_failure(
        oidc: OidcPeer, dovecot: DovecotPeer, mail_ca: TestCA) -> None:
    """A resource-bound JWT sent to the Dovecot that introspects: oidc-provider answers 400
    unsupported_token_type, which Dovecot 2.3.19 reports as a temporary failure, not as bad
    credentials (worth knowing when a probe sees [UNAVAILABLE] after adding --resource)."""
    token = code_flow(oidc, MAIL_RESOURCE)["access_token"]
    answer = login(dovecot, mail_ca, "imap", token)
    assert answer.startswith("[UNAVAILABLE] Temporary authentication failure."), answer


def claims_for(oidc: OidcPeer, **changes) -> dict:
    now = int(time.time())
    claims = {"jti": uuid.uuid4().hex, "sub": ALICE, "iat": now, "exp": now + 600,
              "scope": "mail.imap mail.pop mail.smtp", "client_id": CLIENT, "iss": oidc.issuer,
              "aud": MAIL_RESOURCE}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def test_what_dovecot_checks_in_a_jwt(oidc: OidcPeer, dovecot_jwt: DovecotPeer, mail_ca: TestCA) -> None:
    """Each token differs from an accepted one in one point and is refused for it (Dovecot's log
    names the reason). Signed by the provider's key through its /test/sign-jwt endpoint: an
    expired token needs no waiting."""
    assert login(dovecot_jwt, mail_ca, "imap", oidc.sign_jwt(claims_for(oidc))) == "OK"
    now = int(time.time())
    real = code_flow(oidc, MAIL_RESOURCE)["access_token"]
    header, payload, signature = real.split(".")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged_input = f"{header}.{payload}"
    forged_signature = other_key.sign(forged_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    forged = f"{forged_input}.{b64url(forged_signature)}"
    as_bob = b64url(json.dumps({**decode_jwt(real)[1], "sub": BOB}).encode())
    cases = {
        "expired": (oidc.sign_jwt(claims_for(oidc, iat=now - 7200, exp=now - 3600)), "Token has expired"),
        "not yet valid": (oidc.sign_jwt(claims_for(oidc, nbf=now + 3600)), "Token is not valid yet"),
        "no exp": (oidc.sign_jwt(claims_for(oidc, exp=None)), "Missing 'exp' field"),
        "other issuer": (oidc.sign_jwt(claims_for(oidc, iss="https://evil.example.test")),
                         "Issuer 'https://evil.example.test' is not allowed"),
        "no scope": (oidc.sign_jwt(claims_for(oidc, scope=None)), "scope set but not found in token"),
        "other scope": (oidc.sign_jwt(claims_for(oidc, scope="mail.smtp")),
                        "configured scope 'mail.imap' missing from token scope 'mail.smtp'"),
        "no aud": (oidc.sign_jwt(claims_for(oidc, aud=None)), "client_id set but aud is missing"),
        "RFC 9068 typ": (oidc.sign_jwt(claims_for(oidc), header={"typ": "at+jwt"}),
                         "Cannot find 'typ' field"),
        "unknown kid": (oidc.sign_jwt(claims_for(oidc), header={"kid": "rotated-away"}),
                        "RS256 key 'rotated-away' not found"),
        "other key": (forged, "Bad signature"),
        "payload changed": (f"{header}.{as_bob}.{signature}", "Bad signature"),
    }
    for name, (token, reason) in cases.items():
        offset = log_offset(dovecot_jwt)
        user = BOB if name == "payload changed" else ALICE
        assert login(dovecot_jwt, mail_ca, "imap", token, user=user) == REFUSED["imap"], name
        assert f"Local validation failed: {reason}" in refusal_reasons(dovecot_jwt, offset), name


# --- (c) refresh with resource ------------------------------------------------------------------------


def test_refresh_with_resource_returns_a_new_jwt(oidc: OidcPeer, dovecot_jwt: DovecotPeer,
                                                 mail_ca: TestCA, mail_sink: MailSink) -> None:
    first = code_flow(oidc, MAIL_RESOURCE)
    resp = refresh(oidc, first["refresh_token"], MAIL_RESOURCE)
    assert resp.status_code == 200, resp.text
    second = resp.json()
    claims = assert_jwt_for(oidc, second["access_token"], MAIL_RESOURCE,
                            {"mail.imap", "mail.pop", "mail.smtp"})
    assert claims["jti"] != decode_jwt(first["access_token"])[1]["jti"]
    assert second["refresh_token"] != first["refresh_token"]  # rotated
    for protocol in PROTOCOLS:
        assert login(dovecot_jwt, mail_ca, protocol, second["access_token"]) == "OK", protocol
    send_mail(dovecot_jwt, mail_ca, mail_sink, second["access_token"])

    # A refresh that does not repeat the resource gets an opaque token (openid is in the scope),
    # which the JWT Dovecot refuses: a client must send resource on every refresh.
    resp = refresh(oidc, second["refresh_token"], None)
    assert resp.status_code == 200, resp.text
    third = resp.json()
    assert not is_jwt(third["access_token"])
    assert set(third["scope"].split()) == set(MAIL.split())
    assert login(dovecot_jwt, mail_ca, "imap", third["access_token"]) == REFUSED["imap"]
    # ... and the grant goes on: the next refresh with the resource is a JWT again
    resp = refresh(oidc, third["refresh_token"], MAIL_RESOURCE)
    assert resp.status_code == 200, resp.text
    assert login(dovecot_jwt, mail_ca, "pop3", resp.json()["access_token"]) == "OK"

    # Reuse detection is as without resource: replaying a rotated-out token revokes the grant.
    assert_error(refresh(oidc, first["refresh_token"], MAIL_RESOURCE), 400, "invalid_grant")
    assert_error(refresh(oidc, resp.json()["refresh_token"], MAIL_RESOURCE), 400, "invalid_grant")


def test_invalid_target_at_the_token_endpoint_uses_up_the_code_or_refresh_token(oidc: OidcPeer) -> None:
    """oidc-provider consumes the code (actions/grants/authorization_code.js) or rotates the
    refresh token out (refresh_token.js) BEFORE it resolves the resource: after invalid_target the
    code is spent, and the refresh token counts as used, so presenting it again is reuse, which
    revokes the whole grant. A client must not retry a refresh with another resource."""
    code, verifier = authorize(oidc, MAIL_RESOURCE)
    assert_error(redeem(oidc, code, verifier, SMTP_RESOURCE), 400, "invalid_target")  # known, not granted
    assert_error(redeem(oidc, code, verifier, MAIL_RESOURCE), 400, "invalid_grant")

    tokens = code_flow(oidc, MAIL_RESOURCE)
    assert_error(refresh(oidc, tokens["refresh_token"], SMTP_RESOURCE), 400, "invalid_target")
    assert_error(refresh(oidc, tokens["refresh_token"], MAIL_RESOURCE), 400, "invalid_grant")
    assert "refresh token already used" in oidc.log_text()


def test_one_grant_for_two_resources_gives_a_token_per_resource(
        oidc: OidcPeer, dovecot_jwt: DovecotPeer, mail_ca: TestCA) -> None:
    """Per protocol resources in one grant: every token request names one of them (two at once is
    invalid_target), and refreshes may alternate between them."""
    code, verifier = authorize(oidc, [IMAP_RESOURCE, SMTP_RESOURCE])
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": REDIRECT_URI, "resource": [IMAP_RESOURCE, SMTP_RESOURCE]}
    assert_error(token_request(oidc, data), 400, "invalid_target")
    code, verifier = authorize(oidc, [IMAP_RESOURCE, SMTP_RESOURCE])  # that one is used up (below)
    resp = redeem(oidc, code, verifier, IMAP_RESOURCE)
    assert resp.status_code == 200, resp.text
    imap_tokens = resp.json()
    assert_jwt_for(oidc, imap_tokens["access_token"], IMAP_RESOURCE, {"mail.imap"})
    assert login(dovecot_jwt, mail_ca, "imap", imap_tokens["access_token"]) == "OK"

    resp = refresh(oidc, imap_tokens["refresh_token"], SMTP_RESOURCE)
    assert resp.status_code == 200, resp.text
    smtp_tokens = resp.json()
    assert_jwt_for(oidc, smtp_tokens["access_token"], SMTP_RESOURCE, {"mail.smtp"})
    assert login(dovecot_jwt, mail_ca, "submission", smtp_tokens["access_token"]) == "OK"
    assert login(dovecot_jwt, mail_ca, "imap", smtp_tokens["access_token"]) == REFUSED["imap"]
    resp = refresh(oidc, smtp_tokens["refresh_token"], IMAP_RESOURCE)
    assert resp.status_code == 200, resp.text
    assert login(dovecot_jwt, mail_ca, "imap", resp.json()["access_token"]) == "OK"
    # POP was not among the grant's resources
    assert_error(refresh(oidc, resp.json()["refresh_token"], POP_RESOURCE), 400, "invalid_target")


# --- (d) device flow with resource ----------------------------------------------------------------------


def test_device_flow_with_resource(oidc: OidcPeer, dovecot_jwt: DovecotPeer, mail_ca: TestCA) -> None:
    client = client_auth(CLIENT, {"scope": MAIL, "resource": MAIL_RESOURCE})
    resp = oidc.http.post(oidc.device_url, **client)
    assert resp.status_code == 200, resp.text
    device = resp.json()
    oidc.approve_device_code(device["verification_uri"], device["user_code"], BOB, USERS[BOB])
    resp = token_request(oidc, {"grant_type": DEVICE_GRANT, "device_code": device["device_code"],
                                "resource": MAIL_RESOURCE})
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert_jwt_for(oidc, tokens["access_token"], MAIL_RESOURCE, {"mail.imap", "mail.pop", "mail.smtp"},
                   user=BOB)
    for protocol in PROTOCOLS:
        assert login(dovecot_jwt, mail_ca, protocol, tokens["access_token"], user=BOB) == "OK", protocol

    resp = refresh(oidc, tokens["refresh_token"], MAIL_RESOURCE)
    assert resp.status_code == 200, resp.text
    assert login(dovecot_jwt, mail_ca, "submission", resp.json()["access_token"], user=BOB) == "OK"


def test_device_poll_without_the_resource_gets_an_opaque_token(oidc: OidcPeer) -> None:
    resp = oidc.http.post(oidc.device_url, **client_auth(CLIENT, {"scope": MAIL, "resource": POP_RESOURCE}))
    assert resp.status_code == 200, resp.text
    device = resp.json()
    oidc.approve_device_code(device["verification_uri"], device["user_code"], ALICE, USERS[ALICE])
    resp = token_request(oidc, {"grant_type": DEVICE_GRANT, "device_code": device["device_code"]})
    assert resp.status_code == 200, resp.text
    assert not is_jwt(resp.json()["access_token"])
    # the refresh token still carries the granted resource
    resp = refresh(oidc, resp.json()["refresh_token"], POP_RESOURCE)
    assert resp.status_code == 200, resp.text
    assert_jwt_for(oidc, resp.json()["access_token"], POP_RESOURCE, {"mail.pop"})


# --- (e) unknown resources --------------------------------------------------------------------------


@pytest.mark.parametrize("resource", ["https://unknown.example.test", "imap://mail.example.test/INBOX",
                                      "not an absolute URI", f"{MAIL_RESOURCE}#fragment"])
def test_unknown_resource_is_invalid_target(oidc: OidcPeer, resource: str) -> None:
    assert resource not in RESOURCE_SERVERS
    # authorization endpoint: the error goes back to the client's redirect URI
    verifier, challenge = make_pkce()
    url = oidc.build_authorize_url(CLIENT, MAIL, "st", challenge, resource=resource)
    resp = oidc.http.get(url)
    assert resp.status_code in (302, 303), resp.text
    query = parse_qs(urlsplit(resp.headers["location"]).query)
    assert query["error"] == ["invalid_target"] and query["state"] == ["st"]
    # device authorization endpoint
    resp = oidc.http.post(oidc.device_url, **client_auth(CLIENT, {"scope": MAIL, "resource": resource}))
    assert_error(resp, 400, "invalid_target")
    # token endpoint: a grant for a known resource, redeemed or refreshed for an unknown one
    code, verifier = authorize(oidc, MAIL_RESOURCE)
    assert_error(redeem(oidc, code, verifier, resource), 400, "invalid_target")
    tokens = code_flow(oidc, MAIL_RESOURCE)
    assert_error(refresh(oidc, tokens["refresh_token"], resource), 400, "invalid_target")


# --- (f) without resource, as before ----------------------------------------------------------------


def test_without_resource_tokens_stay_opaque_and_introspectable(oidc: OidcPeer) -> None:
    tokens = code_flow(oidc, None)
    assert not is_jwt(tokens["access_token"])
    assert set(tokens["scope"].split()) == set(MAIL.split())
    info = oidc.introspect(tokens["access_token"])
    assert info["active"] is True and info["sub"] == ALICE and "aud" not in info
    assert set(info["scope"].split()) == set(MAIL.split())
    resp = refresh(oidc, tokens["refresh_token"], None)
    assert resp.status_code == 200, resp.text
    assert not is_jwt(resp.json()["access_token"])
    assert oidc.introspect(resp.json()["access_token"])["active"] is True
    # rotation with reuse detection, unchanged
    assert_error(refresh(oidc, tokens["refresh_token"], None), 400, "invalid_grant")
    assert oidc.introspect(resp.json()["access_token"]) == {"active": False}
