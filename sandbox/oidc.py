"""The sandbox's OpenID side, as Microsoft's v2.0 endpoint has it: tenant GUIDs, the discovery
document, the published signing key, and ID tokens (signed with it, or forged on request)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from typing import TYPE_CHECKING, Any

from adapters.crypto import b64url, b64url_json

if TYPE_CHECKING:
    from sandbox.state import SandboxState

CONSUMERS_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"  # Microsoft's personal-account tenant
# Under these, the discovery document's issuer is the template `{tenantid}` (consumers has its
# own GUID), and an ID token names the tenant of the user's domain.
TEMPLATED_TENANTS = ("common", "organizations")
# What a forged ID token gets wrong (SandboxState.forge_id_tokens): the checks vault must make.
FORGERIES = ("signature", "audience", "nonce", "issuer", "expired", "alg-none", "hs256",
             "missing")


def tenant_id(tenant: str) -> str:
    """The GUID behind a tenant in a URL path: a GUID stands for itself, a domain gets a stable
    made-up one, `consumers` is Microsoft's personal-account tenant."""
    if tenant == "consumers":
        return CONSUMERS_TENANT
    try:
        return str(uuid.UUID(tenant))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_DNS, tenant.lower()))


def new_signing_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def kid(key) -> str:
    numbers = key.public_key().public_numbers()
    return b64url(hashlib.sha256(str(numbers.n).encode()).digest()[:12])


def jwks(key) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()

    def b64int(n: int) -> str:
        return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))

    return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid(key),
                      "n": b64int(numbers.n), "e": b64int(numbers.e)}]}


def discovery(base_url: str, tenant: str) -> dict[str, Any]:
    """As Microsoft's: the issuer names the tenant's GUID, or {tenantid} for common."""
    tid = "{tenantid}" if tenant in TEMPLATED_TENANTS else tenant_id(tenant)
    base = f"{base_url}/{tenant}"
    return {
        "issuer": f"{base_url}/{tid}/v2.0",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "response_types_supported": ["code"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "nonce", "tid", "oid",
                             "preferred_username", "email", "name", "ver"],
    }


def id_token(state: SandboxState, base_url: str, tenant: str, user: str, scopes: list[str],
             nonce: str | None) -> dict[str, str]:
    """{"id_token": ...} when `openid` was asked for (as Microsoft: only then)."""
    if "openid" not in scopes:
        return {}
    with state.lock:
        forgery = state.forge_id_tokens.pop(0) if state.forge_id_tokens else None
    if forgery == "missing":
        return {}
    now = int(state.clock())
    # Signed in at common or organizations, a user lands in the tenant of their domain.
    tid = tenant_id(user.split("@")[-1] if tenant in TEMPLATED_TENANTS else tenant)
    claims: dict[str, Any] = {
        "aud": state.client_id, "iss": f"{base_url}/{tid}/v2.0",
        "iat": now, "nbf": now, "exp": now + 3600, "tid": tid, "ver": "2.0",
        "sub": b64url(hashlib.sha256(f"{state.client_id}|{tid}|{user}".encode()).digest()[:24]),
    }
    if nonce:
        claims["nonce"] = nonce
    if "profile" in scopes:
        claims.update(preferred_username=user, name=user.split("@")[0].title(),
                      oid=str(uuid.uuid5(uuid.UUID(tid), user)))
    if "email" in scopes:
        claims["email"] = state.mail_attributes.get(user, user)
    header = {"typ": "JWT", "alg": "RS256", "kid": kid(state.signing_key)}
    key = state.signing_key
    if forgery == "audience":
        claims["aud"] = str(uuid.uuid4())
    elif forgery == "nonce":
        claims["nonce"] = secrets.token_urlsafe(16)
    elif forgery == "issuer":
        claims["iss"] = f"{base_url}/{uuid.uuid4()}/v2.0"
    elif forgery == "expired":
        claims.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    elif forgery == "signature":
        key = new_signing_key()  # the published kid, another key
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    if forgery == "alg-none":
        return {"id_token": f"{b64url_json({**header, 'alg': 'none'})}.{b64url_json(claims)}."}
    if forgery == "hs256":  # the classic confusion: HMAC keyed with something public
        head = b64url_json({**header, "alg": "HS256"})
        mac = hmac.new(state.client_id.encode(), f"{head}.{b64url_json(claims)}".encode(),
                       hashlib.sha256).digest()
        return {"id_token": f"{head}.{b64url_json(claims)}.{b64url(mac)}"}
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {"id_token": f"{signing_input}.{b64url(signature)}"}
