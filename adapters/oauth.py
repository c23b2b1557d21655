"""Talking to an OAuth 2.0 authorization server: token requests of every grant type, client
authentication, PKCE, device authorization, revocation and OpenID discovery.

Errors come back as `OAuthFailure` carrying the domain's diagnosis; a network failure carries the
host and port tried and the cause (refused, timed out, name not found, TLS), never reads as bad
credentials. Tokens travel as SecretValue; nothing here logs.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from adapters.crypto import b64url, b64url_json
from adapters.errors import AdapterError
from adapters.http import transport_failure
from adapters.retry import retry_after_seconds
from domain.diagnosis import CLIENT_CREDENTIALS, CODE, DEVICE, REFRESH, Diagnosis, classify
from domain.errors import OperationFailed
from domain.secret_value import SecretValue

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
MAX_DEVICE_INTERVAL = 60


class OAuthFailure(OperationFailed, AdapterError):
    def __init__(self, diagnosis: Diagnosis) -> None:
        super().__init__(diagnosis.message())
        self.diagnosis = diagnosis


@dataclass(frozen=True)
class ClientAuth:
    client_id: str
    method: str  # client_secret_post | client_secret_basic | private_key_jwt | none
    secret: SecretValue | None = None
    private_key_pem: SecretValue | None = None
    thumbprint_sha1: str | None = None  # hex, for the JWT header's x5t (the RS256 fallback)
    thumbprint_sha256: str | None = None  # hex, for x5t#S256 (PS256)

    def apply(self, form: dict[str, str], headers: dict[str, str], audience: str) -> None:
        if self.method == "client_secret_basic":
            assert self.secret is not None
            pair = f"{quote(self.client_id, safe='')}:{quote(self.secret.reveal(), safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
            return
        form["client_id"] = self.client_id
        if self.method == "client_secret_post":
            assert self.secret is not None
            form["client_secret"] = self.secret.reveal()
        elif self.method == "private_key_jwt":
            form["client_assertion_type"] = JWT_BEARER
            form["client_assertion"] = self.assertion(audience)

    def assertion(self, audience: str, now: float | None = None) -> str:
        """A client assertion JWT (RFC 7523) as Microsoft's certificate-credentials page asks:
        PS256 with `x5t#S256`, the SHA-256 thumbprint of the DER certificate
        (https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials).
        A certificate stored before vault kept that thumbprint signs RS256 with `x5t` (SHA-1),
        which Entra ID still accepts and MSAL Python falls back to when it has only a SHA-1
        thumbprint; adding the certificate again records the SHA-256 one."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        assert self.private_key_pem is not None
        key = serialization.load_pem_private_key(self.private_key_pem.reveal().encode(), None)
        issued = int(now if now is not None else time.time())
        if self.thumbprint_sha256:
            header = {"alg": "PS256", "typ": "JWT",
                      "x5t#S256": b64url(bytes.fromhex(self.thumbprint_sha256))}
            pad: padding.AsymmetricPadding = padding.PSS(
                mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
        else:
            assert self.thumbprint_sha1 is not None
            header = {"alg": "RS256", "typ": "JWT",
                      "x5t": b64url(bytes.fromhex(self.thumbprint_sha1))}
            pad = padding.PKCS1v15()
        claims = {"aud": audience, "iss": self.client_id, "sub": self.client_id,
                  "jti": str(uuid.uuid4()), "nbf": issued, "iat": issued, "exp": issued + 600}
        return signed_jwt(key, header, claims, pad)


def signed_jwt(key: Any, header: dict[str, Any], claims: dict[str, Any], pad: Any) -> str:
    """A compact JWS over `header` and `claims` with an RSA private key (SHA-256; `pad` is
    PKCS#1 v1.5 for RS256, PSS for PS256). base64url without padding, as JWTs are."""
    from cryptography.hazmat.primitives import hashes

    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}".encode()
    return signing_input.decode() + "." + b64url(key.sign(signing_input, pad, hashes.SHA256()))


@dataclass(frozen=True)
class Tokens:
    access_token: SecretValue
    expires_in: int
    refresh_token: SecretValue | None
    scope: str
    id_token: SecretValue | None = None  # with `openid`; verified by adapters/id_token.py


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: SecretValue
    user_code: str
    verification_uri: str
    expires_in: int
    interval: int
    message: str | None


def pkce_pair() -> tuple[str, str]:
    """A code verifier (43-128 chars, RFC 7636) and its S256 challenge."""
    verifier = b64url(secrets.token_bytes(48))  # 64 characters
    challenge = b64url(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge


def _error_json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def diagnose(response: httpx.Response, context: str) -> Diagnosis:
    body = _error_json(response)
    codes = body.get("error_codes") or []
    return classify(
        http_status=response.status_code,
        error=str(body["error"]) if body.get("error") else None,
        codes=tuple(c for c in codes if isinstance(c, int)),
        context=context, trace_id=body.get("trace_id"),
        correlation_id=body.get("correlation_id"),
        retry_after=retry_after_seconds(response.headers.get("Retry-After")),
    )


class OAuthClient:
    """One client (app registration) talking to one authorization server."""

    def __init__(self, http: httpx.Client, endpoints: dict[str, str | None], auth: ClientAuth):
        self.http = http
        self.endpoints = endpoints
        self.auth = auth

    def _url(self, name: str) -> str:
        url = self.endpoints.get(name)
        if not url:
            raise AdapterError(f"this client has no {name.replace('_', ' ')}")
        return url

    def _post(self, url: str, form: dict[str, Any], context: str,
              authenticate: bool = True, expect_json: bool = True) -> dict[str, Any]:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if authenticate:
            self.auth.apply(form, headers, audience=url)
        try:
            response = self.http.post(url, content=urlencode(form, doseq=True), headers=headers)
        except httpx.TransportError as e:
            kind, endpoint, cause = transport_failure(e, url)
            raise OAuthFailure(classify(http_status=None, error=None, context=context,
                                        network=kind, endpoint=endpoint,
                                        network_cause=cause)) from None
        if response.status_code != 200:
            raise OAuthFailure(diagnose(response, context))
        body = _error_json(response)
        if not body and expect_json:
            raise OAuthFailure(classify(http_status=502, error="server_error", context=context))
        return body

    def _tokens(self, form: dict[str, Any], context: str) -> Tokens:
        body = self._post(self._url("token_url"), form, context)
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise OAuthFailure(classify(http_status=502, error="server_error", context=context))
        try:
            expires_in = int(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            expires_in = 3600
        refresh = body.get("refresh_token")
        id_token = body.get("id_token")
        return Tokens(
            access_token=SecretValue(access), expires_in=max(expires_in, 1),
            refresh_token=SecretValue(refresh) if isinstance(refresh, str) and refresh else None,
            scope=str(body.get("scope", "")),
            id_token=SecretValue(id_token) if isinstance(id_token, str) and id_token else None,
        )

    def refresh(self, refresh_token: SecretValue, scopes: list[str],
                resource: str | None = None) -> Tokens:
        """`resource`: the RFC 8707 resource indicator the access token is for."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token.reveal()}
        if scopes:
            form["scope"] = " ".join(scopes)
        return self._tokens(_with_resource(form, resource), REFRESH)

    def redeem_code(self, code: SecretValue, redirect_uri: str, verifier: str,
                    scopes: list[str], resource: str | None = None) -> Tokens:
        """Redeem an authorization code, once: a code is never retried (AADSTS54005)."""
        form = {"grant_type": "authorization_code", "code": code.reveal(),
                "redirect_uri": redirect_uri, "code_verifier": verifier}
        if scopes:
            form["scope"] = " ".join(scopes)
        return self._tokens(_with_resource(form, resource), CODE)

    def client_credentials(self, scope: str) -> Tokens:
        return self._tokens({"grant_type": "client_credentials", "scope": scope},
                            CLIENT_CREDENTIALS)

    def authorize_url(self, *, redirect_uri: str, scopes: list[str], state: str,
                      challenge: str, login_hint: str | None, extra: dict[str, str],
                      resources: tuple[str, ...] = ()) -> str:
        """`resources`: every RFC 8707 resource indicator the grant's tokens will be for."""
        params: dict[str, Any] = {
            "client_id": self.auth.client_id, "response_type": "code",
            "redirect_uri": redirect_uri, "scope": " ".join(scopes), "state": state,
            "code_challenge": challenge, "code_challenge_method": "S256", **extra}
        if login_hint:
            params["login_hint"] = login_hint
        if resources:
            params["resource"] = list(resources)
        url = self._url("authorize_url")
        return f"{url}{'&' if '?' in url else '?'}{urlencode(params, doseq=True)}"

    def start_device(self, scopes: list[str], resources: tuple[str, ...] = ()) -> DeviceAuthorization:
        form: dict[str, Any] = {"client_id": self.auth.client_id, "scope": " ".join(scopes)}
        if resources:
            form["resource"] = list(resources)
        body = self._post(self._url("device_url"), form, DEVICE,
                          authenticate=self.auth.method != "none")
        try:
            return DeviceAuthorization(
                device_code=SecretValue(str(body["device_code"])),
                user_code=str(body["user_code"]),
                verification_uri=str(body.get("verification_uri")
                                     or body.get("verification_url")),
                expires_in=int(body.get("expires_in", 900)),
                interval=min(max(int(body.get("interval", 5)), 1), MAX_DEVICE_INTERVAL),
                message=body.get("message"),
            )
        except (KeyError, TypeError, ValueError):
            raise OAuthFailure(classify(http_status=502, error="server_error",
                                        context=DEVICE)) from None

    def poll_device(self, device: DeviceAuthorization, sleep: Callable[[float], None],
                    monotonic: Callable[[], float] = time.monotonic,
                    resource: str | None = None) -> Tokens:
        """Poll at the given interval; `slow_down` adds 5 s (RFC 8628); stop at expiry.
        `resource`: the RFC 8707 resource indicator the access token is for."""
        interval = device.interval
        deadline = monotonic() + device.expires_in
        while True:
            sleep(interval)
            try:
                return self._tokens(_with_resource({"grant_type": DEVICE_GRANT,
                                                    "device_code": device.device_code.reveal()},
                                                   resource), DEVICE)
            except OAuthFailure as failure:
                error = failure.diagnosis.error
                if error == "authorization_pending":
                    pass
                elif error == "slow_down":
                    interval = min(interval + 5, MAX_DEVICE_INTERVAL)
                else:
                    raise
            if monotonic() + interval > deadline:
                raise OAuthFailure(classify(http_status=400, error="expired_token",
                                            context=DEVICE))

    def revoke(self, token: SecretValue, hint: str = "refresh_token") -> None:
        """RFC 7009: an empty 200 answer means revoked (or already invalid)."""
        self._post(self._url("revoke_url"), {"token": token.reveal(), "token_type_hint": hint},
                   REFRESH, expect_json=False)


def _with_resource(form: dict[str, Any], resource: str | None) -> dict[str, Any]:
    return {**form, "resource": resource} if resource else form


def discover(http: httpx.Client, issuer: str) -> dict[str, str | None]:
    """Endpoints from OpenID discovery (/.well-known/openid-configuration)."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = http.get(url)
    except httpx.TransportError as e:
        kind, endpoint, cause = transport_failure(e, url)
        d = classify(http_status=None, error=None, network=kind, endpoint=endpoint,
                     network_cause=cause)
        raise AdapterError(f"OpenID discovery at {url} failed: {d.message()}") from None
    if response.status_code != 200:
        raise AdapterError(f"OpenID discovery at {url} answered HTTP {response.status_code}")
    body = _error_json(response)
    if body.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
        raise AdapterError(f"OpenID discovery at {url} names another issuer")
    return {
        "authorize_url": body.get("authorization_endpoint"),
        "token_url": body.get("token_endpoint"),
        "device_url": body.get("device_authorization_endpoint"),
        "revoke_url": body.get("revocation_endpoint"),
        "issuer": issuer,
    }
