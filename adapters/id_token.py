"""Verifying an OpenID Connect ID token from a token endpoint's answer: the provider's discovery
document and published keys (through the one HTTP client, adapters/http.py), the signature
(`cryptography`, an allow-list of algorithms: never `none`, never HMAC), then issuer, audience,
nonce and times (OpenID Connect Core 1.0, 3.1.3.7).

Which name in the token counts, and whether it is the expected account, is the domain's
(domain/identity.py). Nothing here logs or echoes a token. Microsoft's discovery document (its
issuer templated with {tenantid} under common and organizations, jwks_uri
https://{login_host}/{tenant}/discovery/v2.0/keys):
https://learn.microsoft.com/en-us/entra/identity-platform/v2-protocols-oidc
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from adapters.errors import AdapterError
from domain.errors import OperationFailed

CLOCK_SKEW = timedelta(minutes=5)
MAX_AGE = timedelta(hours=1)  # an ID token issued longer ago than this is not from this consent
MAX_TOKEN_CHARS = 64 * 1024
MIN_RSA_BITS = 2048
TENANT_TEMPLATE = "{tenantid}"  # Microsoft's common/organizations issuer (filled with `tid`)

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_CURVES = {"ES256": ("P-256", ec.SECP256R1, 32), "ES384": ("P-384", ec.SECP384R1, 48),
           "ES512": ("P-521", ec.SECP521R1, 66)}
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", *_CURVES)
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


class IdTokenRejected(OperationFailed, AdapterError):
    """The ID token failed verification: whoever signed in cannot be told."""


class OpenIdDiscoveryFailed(OperationFailed, AdapterError):
    pass


@dataclass(frozen=True)
class OpenIdProvider:
    """What discovery says about a provider's ID tokens."""

    issuer: str  # may hold {tenantid} (Microsoft's common / organizations authority)
    jwks_uri: str
    scopes_supported: tuple[str, ...] | None
    also_issuers: tuple[str, ...] = ()  # Google's legacy "accounts.google.com"

    @property
    def tenant_pinned(self) -> bool:
        return TENANT_TEMPLATE not in self.issuer


def _allowed_url(url: str) -> bool:
    parts = urlsplit(url)
    return (parts.scheme == "https" and bool(parts.hostname)) or (
        parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"))


def _get_json(http: httpx.Client, url: str, what: str) -> dict[str, Any]:
    try:
        response = http.get(url)
    except httpx.TransportError as e:
        raise OpenIdDiscoveryFailed(f"{what} at {url} could not be fetched "
                                    f"({type(e).__name__})") from None
    if response.status_code != 200:
        raise OpenIdDiscoveryFailed(f"{what} at {url} answered HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise OpenIdDiscoveryFailed(f"{what} at {url} is not a JSON object")
    return body


def discover_provider(http: httpx.Client, issuer: str, *, provider: str) -> OpenIdProvider:
    """The discovery document under `issuer`. A custom provider must name itself exactly
    (OpenID Connect Discovery 4.3); Microsoft names the tenant's GUID (or `{tenantid}`) instead
    of the domain or `common` it was asked under, so there only the origin must agree."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    body = _get_json(http, url, "OpenID discovery")
    named, jwks_uri = body.get("issuer"), body.get("jwks_uri")
    if not isinstance(named, str) or not isinstance(jwks_uri, str) or not _allowed_url(jwks_uri):
        raise OpenIdDiscoveryFailed(f"OpenID discovery at {url} names no usable issuer and "
                                    "jwks_uri")
    if provider == "microsoft":
        same_origin = urlsplit(named)[:2] == urlsplit(issuer)[:2]
        if not same_origin:
            raise OpenIdDiscoveryFailed(f"OpenID discovery at {url} names another issuer")
    elif named.rstrip("/") != issuer.rstrip("/"):
        raise OpenIdDiscoveryFailed(f"OpenID discovery at {url} names another issuer")
    scopes = body.get("scopes_supported")
    supported = (tuple(s for s in scopes if isinstance(s, str))
                 if isinstance(scopes, list) else None)
    also = ("accounts.google.com",) if provider == "google" else ()
    return OpenIdProvider(issuer=named, jwks_uri=jwks_uri, scopes_supported=supported,
                          also_issuers=also)


def fetch_keys(http: httpx.Client, jwks_uri: str) -> list[dict[str, Any]]:
    body = _get_json(http, jwks_uri, "the provider's signing keys")
    keys = body.get("keys")
    if not isinstance(keys, list):
        raise OpenIdDiscoveryFailed(f"the provider's signing keys at {jwks_uri} hold no keys")
    return [k for k in keys if isinstance(k, dict)]


# -- the token ---------------------------------------------------------------------------------


def _b64decode(part: str) -> bytes:
    if not _B64URL.match(part):
        raise IdTokenRejected("the ID token is not a JWS in compact form")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise IdTokenRejected("the ID token is not a JWS in compact form") from None


def _json_part(part: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64decode(part))
    except (ValueError, UnicodeDecodeError):
        raise IdTokenRejected("the ID token is not a JWS in compact form") from None
    if not isinstance(value, dict):
        raise IdTokenRejected("the ID token is not a JWS in compact form")
    return value


def _int_of(jwk: dict[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(name)
    return int.from_bytes(_b64decode(value), "big")


def _public_key(jwk: dict[str, Any], alg: str):
    """The key a JWK describes, if it may verify `alg` (kty, crv, use and alg agree)."""
    if jwk.get("use", "sig") != "sig" or jwk.get("alg", alg) != alg:
        return None
    try:
        if alg[:2] in ("RS", "PS"):
            if jwk.get("kty") != "RSA":
                return None
            key = rsa.RSAPublicNumbers(_int_of(jwk, "e"), _int_of(jwk, "n")).public_key()
            return key if key.key_size >= MIN_RSA_BITS else None
        curve_name, curve, _ = _CURVES[alg]
        if jwk.get("kty") != "EC" or jwk.get("crv") != curve_name:
            return None
        return ec.EllipticCurvePublicNumbers(_int_of(jwk, "x"), _int_of(jwk, "y"),
                                             curve()).public_key()
    except (ValueError, UnsupportedAlgorithm, IdTokenRejected):
        return None


def _signature_verifies(key: Any, alg: str, signature: bytes, signed: bytes) -> bool:
    digest = _HASHES[alg[2:]]()
    try:
        if alg.startswith("RS"):
            key.verify(signature, signed, padding.PKCS1v15(), digest)
        elif alg.startswith("PS"):
            key.verify(signature, signed,
                       padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size),
                       digest)
        else:  # JWS carries ECDSA as r || s (RFC 7518 3.4); cryptography wants DER
            size = _CURVES[alg][2]
            if len(signature) != 2 * size:
                return False
            r, s = (int.from_bytes(signature[:size], "big"),
                    int.from_bytes(signature[size:], "big"))
            key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(digest))
    except InvalidSignature:
        return False
    return True


def _number(claims: dict[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IdTokenRejected(f"the ID token has no valid '{name}' time")
    return float(value)


def verify_id_token(token: str, *, provider: OpenIdProvider, keys: list[dict[str, Any]],
                    client_id: str, nonce: str | None, now: datetime,
                    skew: timedelta = CLOCK_SKEW) -> dict[str, Any]:
    """The claims of an ID token that verifies; IdTokenRejected saying which check failed.

    `nonce` is the one sent on the authorize request (None for the device flow, which has
    none: a token that still carries one is not refused for it). Times, against `now` (the
    application's clock) with `skew` either way: `exp` must lie ahead and `nbf`, when present,
    behind (RFC 7519); `iat` must be present and at most MAX_AGE old, so a token kept from an
    earlier sign-in is refused even where no nonce can be checked (OpenID Connect Core 3.1.3.7
    leaves the range of iat to the client; a future iat alone is not refused).
    """
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise IdTokenRejected("the ID token is not a JWS in compact form")
    head, body, signature = token.split(".")
    header = _json_part(head)
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise IdTokenRejected(f"the ID token is signed with {str(alg)[:20]!r}, which vault does "
                              f"not accept (only {', '.join(ALGORITHMS)})")
    if "crit" in header:
        raise IdTokenRejected("the ID token's header names critical extensions vault does not "
                              "know")
    kid = header.get("kid")
    candidates = [k for k in keys if kid is None or k.get("kid") == kid]
    public_keys = [key for key in (_public_key(k, alg) for k in candidates) if key is not None]
    if not public_keys:
        raise IdTokenRejected("the ID token is signed by a key the provider does not publish")
    raw = _b64decode(signature)
    signed = f"{head}.{body}".encode()
    if not any(_signature_verifies(key, alg, raw, signed) for key in public_keys):
        raise IdTokenRejected("the ID token's signature does not verify against the provider's "
                              "published keys")
    claims = _json_part(body)
    _check_issuer(claims, provider)
    _check_audience(claims, client_id)
    if nonce is not None:
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
            raise IdTokenRejected("the ID token's nonce is not the one this consent sent: it "
                                  "belongs to another sign-in (or was replayed)")
    moment = now.timestamp()
    expires = _number(claims, "exp", True)
    issued = _number(claims, "iat", True)
    not_before = _number(claims, "nbf", False)
    assert expires is not None and issued is not None
    if expires + skew.total_seconds() <= moment:
        raise IdTokenRejected("the ID token has expired (is this host's clock right?)")
    if issued + (MAX_AGE + skew).total_seconds() < moment:
        raise IdTokenRejected("the ID token was issued more than an hour ago: it is not from "
                              "this sign-in (or this host's clock is wrong)")
    if not_before is not None and not_before - skew.total_seconds() > moment:
        raise IdTokenRejected("the ID token is not valid yet (is this host's clock right?)")
    return claims


def _check_issuer(claims: dict[str, Any], provider: OpenIdProvider) -> None:
    issuer = claims.get("iss")
    expected = provider.issuer
    if not provider.tenant_pinned:
        tid = claims.get("tid")
        if not isinstance(tid, str) or not _GUID.match(tid):
            raise IdTokenRejected("the ID token names no tenant (tid) to check its issuer with")
        expected = expected.replace(TENANT_TEMPLATE, tid)
    if not isinstance(issuer, str) or issuer not in (expected, *provider.also_issuers):
        raise IdTokenRejected(f"the ID token was issued by {str(issuer)[:200]}, not by "
                              f"{expected}")


def _check_audience(claims: dict[str, Any], client_id: str) -> None:
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or client_id not in audiences:
        raise IdTokenRejected("the ID token is for another application (its audience is not "
                              "this client id)")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise IdTokenRejected("the ID token names several audiences and another authorized "
                              "party (azp)")
