"""The OIDC test peer (oidc-provider) answers like a real authorization server, driven over plain HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from tests.peers.oidc_peer import CLIENTS, REDIRECT_URI, USERS, OidcPeer, client_auth, http_client, make_pkce

pytestmark = pytest.mark.peers

ALICE = "alice@example.test"
BOB = "bob@example.test"
MAIL = "openid offline_access mail.imap mail.smtp"


@pytest.fixture(scope="module")
def peer() -> Iterator[OidcPeer]:
    server = OidcPeer.start()
    yield server
    server.stop()


def token_request(peer: OidcPeer, client_id: str, data: dict[str, str]) -> httpx.Response:
    """POST to the token endpoint authenticating the way the client is registered for."""
    return peer.http.post(peer.token_url, **client_auth(client_id, data))


def authorize(peer: OidcPeer, client_id: str, user: str = ALICE, scope: str = MAIL,
              redirect_uri: str = REDIRECT_URI, **extra: str | None) -> tuple[str, str, str]:
    """Run the browser part of the code flow; return (code, verifier, redirect_uri).

    prompt=consent by default: oidc-provider drops offline_access from requests without it (OpenID
    Connect Core 11)."""
    verifier, challenge = make_pkce()
    state = f"state-{client_id}-{user}"
    params = {"prompt": "consent", **extra}
    params = {k: v for k, v in params.items() if v is not None}
    url = peer.build_authorize_url(client_id, scope, state, challenge, redirect_uri=redirect_uri, **params)
    redirect = peer.complete_authorization(url, user, USERS[user])
    assert redirect.startswith(redirect_uri + "?"), redirect
    query = parse_qs(urlsplit(redirect).query)
    assert query["state"] == [state]
    assert query["iss"] == [peer.issuer]  # RFC 9207
    return query["code"][0], verifier, redirect_uri


def redeem(peer: OidcPeer, client_id: str, code: str, verifier: str, redirect_uri: str) -> httpx.Response:
    return token_request(peer, client_id, {"grant_type": "authorization_code", "code": code,
                                           "code_verifier": verifier, "redirect_uri": redirect_uri})


def code_tokens(peer: OidcPeer, client_id: str, user: str = ALICE, scope: str = MAIL,
                **extra: str | None) -> dict:
    resp = redeem(peer, client_id, *authorize(peer, client_id, user, scope, **extra))
    assert resp.status_code == 200, resp.text
    return resp.json()


def refresh(peer: OidcPeer, client_id: str, refresh_token: str) -> httpx.Response:
    return token_request(peer, client_id, {"grant_type": "refresh_token", "refresh_token": refresh_token})


def assert_error(resp: httpx.Response, status: int, error: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == error, resp.text


# --- authorization code + PKCE -----------------------------------------------------------------------


def test_discovery_advertises_what_the_suite_relies_on(peer: OidcPeer) -> None:
    meta = peer.http.get(peer.discovery_url).json()
    assert meta["issuer"] == peer.issuer
    assert meta["token_endpoint"] == peer.token_url
    assert meta["authorization_endpoint"] == peer.authorize_url
    assert meta["device_authorization_endpoint"] == peer.device_url
    assert meta["introspection_endpoint"] == peer.introspection_url
    assert meta["revocation_endpoint"] == peer.revocation_url
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert {"mail.imap", "mail.smtp", "mail.pop", "graph.mail", "mail.app", "offline_access"} <= set(
        meta["scopes_supported"])
    assert {"authorization_code", "refresh_token", "client_credentials",
            "urn:ietf:params:oauth:grant-type:device_code"} <= set(meta["grant_types_supported"])


def test_code_flow_with_pkce_client_secret_basic(peer: OidcPeer) -> None:
    code, verifier, redirect_uri = authorize(peer, "vault-basic")
    body = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": redirect_uri}

    # client_secret_basic is the only method this client may use
    secret = CLIENTS["vault-basic"].client_secret
    post_auth = peer.http.post(peer.token_url,
                               data={**body, "client_id": "vault-basic", "client_secret": secret})
    assert_error(post_auth, 401, "invalid_client")
    wrong_secret = peer.http.post(peer.token_url, data=body, auth=("vault-basic", "not-the-secret"))
    assert_error(wrong_secret, 401, "invalid_client")

    resp = token_request(peer, "vault-basic", body)
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert tokens["token_type"] == "Bearer"
    assert set(tokens["scope"].split()) == set(MAIL.split())
    assert tokens["refresh_token"] and tokens["access_token"] and tokens["id_token"]
    assert 0 < tokens["expires_in"] <= 3600

    # a code is single use
    assert_error(token_request(peer, "vault-basic", body), 400, "invalid_grant")


def test_code_flow_client_secret_post_on_any_loopback_port(peer: OidcPeer) -> None:
    code, verifier, redirect_uri = authorize(peer, "vault-post", user=BOB,
                                             redirect_uri="http://127.0.0.1:54321/callback")
    body = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": redirect_uri}

    # client_secret_basic is refused for a client_secret_post client
    secret = CLIENTS["vault-post"].client_secret
    basic = peer.http.post(peer.token_url, data=body, auth=("vault-post", secret))
    assert_error(basic, 401, "invalid_client")
    # the redirect_uri must be the one the code was issued for, port included
    other_port = token_request(peer, "vault-post", {**body, "redirect_uri": REDIRECT_URI})
    assert_error(other_port, 400, "invalid_grant")

    resp = token_request(peer, "vault-post", body)
    assert resp.status_code == 200, resp.text
    assert peer.introspect(resp.json()["access_token"])["sub"] == BOB


def test_pkce_is_required_and_checked(peer: OidcPeer) -> None:
    # no code_challenge: refused at the authorization endpoint, back to the client with an error
    resp = peer.http.get(peer.authorize_url, params={
        "response_type": "code", "client_id": "vault-basic", "redirect_uri": REDIRECT_URI,
        "scope": MAIL, "state": "s1",
    })
    assert resp.status_code == 303
    query = parse_qs(urlsplit(resp.headers["location"]).query)
    assert query["error"] == ["invalid_request"]
    assert query["state"] == ["s1"]

    code, _verifier, redirect_uri = authorize(peer, "vault-basic")
    other_verifier, _ = make_pkce()
    assert_error(redeem(peer, "vault-basic", code, other_verifier, redirect_uri), 400, "invalid_grant")


def test_unregistered_redirect_uri_is_refused_without_redirecting(peer: OidcPeer) -> None:
    _, challenge = make_pkce()
    for uri in ("http://127.0.0.1:8080/elsewhere", "http://localhost/callback", "http://evil.test/callback"):
        resp = peer.http.get(peer.build_authorize_url("vault-basic", MAIL, "s", challenge, redirect_uri=uri))
        assert resp.status_code == 400, uri
        assert "redirect_uri did not match" in resp.text


def follow(browser: httpx.Client, resp: httpx.Response) -> httpx.Response:
    assert resp.is_redirect, (resp.status_code, resp.text)
    return browser.get(urljoin(str(resp.url), resp.headers["location"]))


def test_wrong_password_shows_the_login_page_again(peer: OidcPeer) -> None:
    _, challenge = make_pkce()
    with http_client(cookies=True) as browser:
        start = browser.get(peer.build_authorize_url("vault-basic", MAIL, "s", challenge))
        login_page = follow(browser, start)
        assert 'id="username"' in login_page.text and 'id="login"' in login_page.text
        login_url = f"{login_page.url}/login"
        again = browser.post(login_url, data={"username": ALICE, "password": "wrong"})
        assert again.status_code == 200
        assert 'id="error"' in again.text and 'id="password"' in again.text
        unknown = browser.post(login_url, data={"username": "carol@example.test", "password": "wrong"})
        assert 'id="error"' in unknown.text
        # the correct password still works on the same interaction
        ok = browser.post(login_url, data={"username": ALICE, "password": USERS[ALICE]})
        assert ok.status_code == 303

    with pytest.raises(RuntimeError, match="login refused"):
        peer.complete_authorization(peer.build_authorize_url("vault-basic", MAIL, "s", challenge),
                                    BOB, USERS[ALICE])


def test_denied_consent_returns_access_denied(peer: OidcPeer) -> None:
    _, challenge = make_pkce()
    with http_client(cookies=True) as browser:
        start = browser.get(peer.build_authorize_url("vault-basic", MAIL, "s-deny", challenge))
        login_page = follow(browser, start)
        resp = browser.post(f"{login_page.url}/login", data={"username": ALICE, "password": USERS[ALICE]})
        consent_page = follow(browser, follow(browser, resp))  # resume, then the consent interaction
        assert 'id="consent"' in consent_page.text and "mail.imap" in consent_page.text
        resume = follow(browser, browser.post(f"{consent_page.url}/abort"))
        query = parse_qs(urlsplit(resume.headers["location"]).query)
        assert query["error"] == ["access_denied"]
        assert query["state"] == ["s-deny"]


# --- refresh tokens ----------------------------------------------------------------------------------


def test_refresh_rotates_the_refresh_token(peer: OidcPeer) -> None:
    first = code_tokens(peer, "vault-post")
    resp = refresh(peer, "vault-post", first["refresh_token"])
    assert resp.status_code == 200, resp.text
    second = resp.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert set(second["scope"].split()) == set(MAIL.split())
    assert peer.introspect(second["access_token"])["active"] is True

    third = refresh(peer, "vault-post", second["refresh_token"])
    assert third.status_code == 200, third.text
    # a refresh token of another client is not accepted
    assert_error(refresh(peer, "vault-basic", third.json()["refresh_token"]), 400, "invalid_grant")


def test_replaying_a_rotated_refresh_token_revokes_the_whole_grant(peer: OidcPeer) -> None:
    first = code_tokens(peer, "vault-basic")
    resp = refresh(peer, "vault-basic", first["refresh_token"])
    assert resp.status_code == 200, resp.text
    newest = resp.json()
    assert peer.introspect(newest["access_token"])["active"] is True

    # reuse detection: the rotated-out token is refused ...
    assert_error(refresh(peer, "vault-basic", first["refresh_token"]), 400, "invalid_grant")
    # ... and the grant is gone: the newest refresh token and its access token stop working too
    assert_error(refresh(peer, "vault-basic", newest["refresh_token"]), 400, "invalid_grant")
    assert peer.introspect(newest["access_token"]) == {"active": False}
    assert peer.introspect(newest["refresh_token"]) == {"active": False}


def test_offline_access_is_dropped_without_prompt_consent(peer: OidcPeer) -> None:
    # OpenID Connect Core 11: oidc-provider ignores offline_access unless prompt=consent ...
    tokens = code_tokens(peer, "vault-basic", prompt=None)
    assert set(tokens["scope"].split()) == {"openid", "mail.imap", "mail.smtp"}
    assert "refresh_token" in tokens  # ... but the mail scopes get a refresh token anyway

    tokens = code_tokens(peer, "vault-basic", scope="openid offline_access", prompt=None)
    assert tokens["scope"] == "openid"
    assert "refresh_token" not in tokens


def test_refresh_token_for_mail_scope_without_offline_access(peer: OidcPeer) -> None:
    tokens = code_tokens(peer, "vault-basic", scope="mail.imap")
    assert tokens["scope"] == "mail.imap"
    assert "refresh_token" in tokens and "id_token" not in tokens
    assert refresh(peer, "vault-basic", tokens["refresh_token"]).status_code == 200


# --- device flow -------------------------------------------------------------------------------------


def test_device_flow(peer: OidcPeer) -> None:
    client = CLIENTS["vault-post"]
    resp = peer.http.post(peer.device_url, data={"client_id": client.client_id,
                                                 "client_secret": client.client_secret, "scope": MAIL})
    assert resp.status_code == 200, resp.text
    device = resp.json()
    assert device["verification_uri"] == f"{peer.issuer}/device"
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": device["device_code"]}

    assert_error(token_request(peer, "vault-post", poll), 400, "authorization_pending")

    with pytest.raises(RuntimeError, match="refused"):
        peer.approve_device_code(device["verification_uri"], "BCDF-GHJK", BOB, USERS[BOB])
    peer.approve_device_code(device["verification_uri"], device["user_code"], BOB, USERS[BOB])

    resp = token_request(peer, "vault-post", poll)
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert set(tokens["scope"].split()) == set(MAIL.split())
    info = peer.introspect(tokens["access_token"])
    assert info["active"] is True and info["sub"] == BOB and info["client_id"] == "vault-post"
    assert refresh(peer, "vault-post", tokens["refresh_token"]).status_code == 200
    # the device code is single use
    assert_error(token_request(peer, "vault-post", poll), 400, "invalid_grant")


# --- client credentials, introspection, revocation ---------------------------------------------------


def test_client_credentials(peer: OidcPeer) -> None:
    resp = token_request(peer, "vault-basic", {"grant_type": "client_credentials", "scope": "mail.app"})
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert tokens["scope"] == "mail.app" and tokens["token_type"] == "Bearer"
    assert "refresh_token" not in tokens
    info = peer.introspect(tokens["access_token"])
    assert info["active"] is True and info["client_id"] == "vault-basic" and info["scope"] == "mail.app"
    assert "sub" not in info

    # dovecot is not allowed this grant (oidc-provider says invalid_request, not unauthorized_client)
    resp = token_request(peer, "dovecot", {"grant_type": "client_credentials"})
    assert_error(resp, 400, "invalid_request")
    assert resp.json()["error_description"] == "requested grant type is not allowed for this client"
    # scopes unknown to the provider are silently dropped (RFC 6749 3.3 allows it): no scope at all
    resp = token_request(peer, "vault-basic", {"grant_type": "client_credentials", "scope": "admin"})
    assert resp.status_code == 200, resp.text
    assert "scope" not in resp.json()
    assert "scope" not in peer.introspect(resp.json()["access_token"])
    wrong = peer.http.post(peer.token_url, data={"grant_type": "client_credentials"},
                           auth=("vault-basic", "x"))
    assert_error(wrong, 401, "invalid_client")


def test_introspection_by_dovecot(peer: OidcPeer) -> None:
    tokens = code_tokens(peer, "vault-basic")
    info = peer.introspect(tokens["access_token"])
    assert info["active"] is True
    assert info["sub"] == ALICE
    assert info["client_id"] == "vault-basic"
    assert info["iss"] == peer.issuer
    assert info["token_type"] == "Bearer"
    assert "mail.imap" in info["scope"].split()
    assert info["exp"] > info["iat"]

    # another client may introspect only its own tokens
    assert peer.introspect(tokens["access_token"], client_id="vault-post") == {"active": False}
    assert peer.introspect(tokens["access_token"], client_id="vault-basic")["active"] is True
    assert peer.introspect("not-a-token") == {"active": False}
    bad = peer.http.post(peer.introspection_url, data={"token": tokens["access_token"]},
                         auth=("dovecot", "wrong"))
    assert_error(bad, 401, "invalid_client")


def test_revocation_endpoint(peer: OidcPeer) -> None:
    tokens = code_tokens(peer, "vault-post")
    client = CLIENTS["vault-post"]
    creds = {"client_id": client.client_id, "client_secret": client.client_secret}

    # another client may not revoke it
    other = CLIENTS["vault-basic"]
    resp = peer.http.post(peer.revocation_url, data={"token": tokens["access_token"]},
                          auth=(other.client_id, other.client_secret))
    assert_error(resp, 400, "invalid_request")
    assert peer.introspect(tokens["access_token"])["active"] is True

    resp = peer.http.post(peer.revocation_url, data={**creds, "token": tokens["access_token"],
                                                     "token_type_hint": "access_token"})
    assert resp.status_code == 200 and resp.content == b""
    assert peer.introspect(tokens["access_token"]) == {"active": False}
    # oidc-provider revokes every token of the grant with it (RFC 7009 allows it), the refresh token too
    assert_error(refresh(peer, "vault-post", tokens["refresh_token"]), 400, "invalid_grant")

    fresh = code_tokens(peer, "vault-post")
    resp = peer.http.post(peer.revocation_url, data={**creds, "token": fresh["refresh_token"]})
    assert resp.status_code == 200
    assert_error(refresh(peer, "vault-post", fresh["refresh_token"]), 400, "invalid_grant")
    assert peer.introspect(fresh["access_token"]) == {"active": False}
    # RFC 7009: unknown tokens are answered 200 too
    assert peer.http.post(peer.revocation_url, data={**creds, "token": "unknown"}).status_code == 200


# --- expiry and provider-side revocation -------------------------------------------------------------


def test_expired_authorization_code_is_invalid_grant(peer: OidcPeer) -> None:
    resp = redeem(peer, "vault-expired-codes", *authorize(peer, "vault-expired-codes"))
    assert_error(resp, 400, "invalid_grant")
    assert resp.json()["error_description"] == "grant request is invalid"  # the reason goes to the log only
    assert "authorization code is expired" in peer.log_text()


def test_expire_codes_endpoint(peer: OidcPeer) -> None:
    issued = authorize(peer, "vault-basic")
    assert peer.expire_codes() >= 1
    assert_error(redeem(peer, "vault-basic", *issued), 400, "invalid_grant")


def test_revoke_grants_makes_the_refresh_token_fail(peer: OidcPeer) -> None:
    alice = code_tokens(peer, "vault-basic", user=ALICE)
    bob = code_tokens(peer, "vault-basic", user=BOB)

    assert peer.revoke_grants(ALICE, client_id="vault-basic") >= 1

    assert_error(refresh(peer, "vault-basic", alice["refresh_token"]), 400, "invalid_grant")
    assert peer.introspect(alice["access_token"]) == {"active": False}
    # other users are untouched
    assert peer.introspect(bob["access_token"])["active"] is True
    assert refresh(peer, "vault-basic", bob["refresh_token"]).status_code == 200
    # and alice can consent again
    assert code_tokens(peer, "vault-basic", user=ALICE)["refresh_token"]


def test_expire_access_tokens_endpoint(peer: OidcPeer) -> None:
    alice = code_tokens(peer, "vault-basic", user=ALICE)
    bob = code_tokens(peer, "vault-basic", user=BOB)
    assert peer.introspect(alice["access_token"])["active"] is True

    resp = peer.http.post(f"{peer.issuer}/test/expire-access-tokens", params={"sub": ALICE})
    assert resp.status_code == 200, resp.text
    assert resp.json()["expired_access_tokens"] >= 1

    # expired at once: no waiting for the TTL
    assert peer.introspect(alice["access_token"]) == {"active": False}
    # only that user's access tokens: other users, refresh tokens and the grant are untouched
    assert peer.introspect(bob["access_token"])["active"] is True
    assert peer.introspect(alice["refresh_token"])["active"] is True
    resp = refresh(peer, "vault-basic", alice["refresh_token"])
    assert resp.status_code == 200, resp.text
    assert peer.introspect(resp.json()["access_token"])["active"] is True
    # nothing left to expire for a user without live access tokens; sub is required
    assert peer.http.post(f"{peer.issuer}/test/expire-access-tokens",
                          params={"sub": "carol@example.test"}).json() == {"expired_access_tokens": 0}
    assert peer.http.post(f"{peer.issuer}/test/expire-access-tokens").status_code == 400
