"""The token endpoint's grants (authorization code with PKCE, refresh as Microsoft rotates,
client credentials, device code) and the device authorization endpoint, over SandboxState.
Errors are raised as SandboxError (an AADSTS answer) or PlainError."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapters.crypto import b64url
from domain.clouds import GENERIC_TENANTS, MICROSOFT_CLOUDS
from domain.errors import ScopeCloudMismatch
from domain.scopes import GRAPH, resource_of, resource_url
from sandbox.client_auth import authenticate
from sandbox.failures import PlainError, SandboxError
from sandbox.oidc import id_token, tenant_id
from sandbox.state import ACCESS_TTL, RefreshGrant

if TYPE_CHECKING:
    from sandbox.directory import Application
    from sandbox.state import SandboxState

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
GLOBAL = MICROSOFT_CLOUDS["global"]  # the cloud the sandbox plays


@dataclass(frozen=True)
class TokenRequest:
    base_url: str  # the sandbox's, which ID tokens' issuers start with
    tenant: str  # as the URL path names it
    path: str  # the endpoint's, which a client assertion's audience must end with
    form: dict[str, str]
    authorization: str  # the Authorization header, "" without one


def resource(scope: str) -> str | None:
    """The resource a scope is for, read as vault reads the global cloud's scopes; a resource of
    another Microsoft cloud is here one more resource the sandbox does not know."""
    try:
        return resource_of(GLOBAL, scope)
    except ScopeCloudMismatch:
        return resource_url([scope])


def token(state: SandboxState, request: TokenRequest) -> dict[str, Any]:
    form = request.form
    grant_type = form.get("grant_type", "")
    with state.lock:
        state.stats["token"] += 1
        if grant_type in state.stats:
            state.stats[grant_type] += 1
        failure = state.failures.pop(0) if state.failures else None
    if failure is not None:
        code, status = failure
        if status is not None and code == 0:
            raise PlainError(status, "temporarily_unavailable",
                             {"Retry-After": "1"} if status == 429 else None)
        raise SandboxError(code, status)
    app = authenticate(state, form, request.authorization, request.path)
    if grant_type != "client_credentials" and app.app_id != state.client_id:
        # Codes, refresh tokens and device codes are only ever issued to the primary app.
        raise SandboxError(70000)
    scopes = form.get("scope", "").split()
    if len({r for r in map(resource, scopes) if r}) > 1:
        raise SandboxError(700022)
    if grant_type == "authorization_code":
        return _redeem(state, request, scopes)
    if grant_type == "refresh_token":
        return _refresh(state, form, scopes)
    if grant_type == "client_credentials":
        return _app_only(state, app, request.tenant, scopes)
    if grant_type == DEVICE_GRANT:
        return _device_token(state, request)
    raise PlainError(400, "unsupported_grant_type")


def _issue(state: SandboxState, user: str, scopes: list[str]) -> dict[str, Any]:
    refresh = "sbx-rt." + secrets.token_urlsafe(48)
    access = f"sbx-at.{b64url(user.encode())}.{secrets.token_urlsafe(32)}"
    with state.lock:
        state.refresh_tokens[refresh] = RefreshGrant(user, scopes)
        state.access_tokens[access] = {"user": user, "scopes": scopes, "app": False}
    return {"token_type": "Bearer", "scope": " ".join(s for s in scopes),
            "expires_in": ACCESS_TTL, "ext_expires_in": ACCESS_TTL,
            "access_token": access, "refresh_token": refresh}


def _redeem(state: SandboxState, request: TokenRequest, scopes: list[str]) -> dict[str, Any]:
    form = request.form
    with state.lock:
        entry = state.codes.get(form.get("code", ""))
        if entry is None:
            raise SandboxError(70008)
        if entry["used"]:
            raise SandboxError(54005)
        entry["used"] = True
    if time.monotonic() - entry["issued"] > 600:
        raise SandboxError(70008)
    if form.get("redirect_uri") != entry["redirect_uri"]:
        raise SandboxError(50011)
    verifier = form.get("code_verifier", "")
    expected = b64url(hashlib.sha256(verifier.encode()).digest())
    if not entry["challenge"] or not hmac.compare_digest(expected, entry["challenge"]):
        raise SandboxError(50148)
    return {**_issue(state, entry["user"], scopes or entry["scopes"]),
            **id_token(state, request.base_url, request.tenant, entry["user"],
                       [*entry["scopes"], *scopes], entry["nonce"])}


def _refresh(state: SandboxState, form: dict[str, str], scopes: list[str]) -> dict[str, Any]:
    with state.lock:
        grant = state.refresh_tokens.get(form.get("refresh_token", ""))
        if grant is None:
            raise SandboxError(70000)
        if grant.revoked or grant.user in state.revoked_users:
            raise SandboxError(50173)
    # Like Microsoft: a new refresh token each time, and the old one stays valid.
    return _issue(state, grant.user, scopes or grant.scopes)


def _app_only(state: SandboxState, app: Application, tenant: str,
              scopes: list[str]) -> dict[str, Any]:
    """An opaque token; the sandbox keeps the claims Entra would put in its JWT (appid, tid, oid
    of the service principal, idtyp, and `roles`: the application permissions granted to the app
    on the resource, here Graph's, as the app is set up at the time of issue)."""
    if tenant in GENERIC_TENANTS:
        raise SandboxError(9001023)
    if not scopes or not all(s.endswith("/.default") for s in scopes):
        raise SandboxError(70011)
    access = "sbx-app." + secrets.token_urlsafe(32)
    tid = tenant_id(tenant)
    graph = any(resource(s) == GRAPH for s in scopes)
    with state.lock:
        state.access_tokens[access] = {
            "user": None, "scopes": scopes, "app": True,
            "claims": {"appid": app.app_id, "tid": tid, "idtyp": "app",
                       # its service principal in the tenant it signed in to
                       "oid": app.service_principal if tid == app.tenant else
                       str(uuid.uuid5(uuid.UUID(tid), app.app_id)),
                       "roles": sorted(app.roles) if graph else []}}
    return {"token_type": "Bearer", "expires_in": ACCESS_TTL, "access_token": access}


# -- device code --------------------------------------------------------------------------------


def device_authorization(state: SandboxState, base_url: str,
                         form: dict[str, str]) -> dict[str, Any]:
    if form.get("client_id") != state.client_id:
        raise SandboxError(700016)
    device_code = secrets.token_urlsafe(32)
    user_code = "".join(secrets.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(8))
    with state.lock:
        state.devices[user_code] = {"device_code": device_code, "user": None,
                                    "scopes": form.get("scope", "").split(),
                                    "issued": time.monotonic()}
    uri = f"{base_url}/devicelogin"
    return {"device_code": device_code, "user_code": user_code,
            "verification_uri": uri, "expires_in": 900, "interval": 1,
            "message": f"To sign in, open {uri} and enter the code {user_code}."}


def _device_token(state: SandboxState, request: TokenRequest) -> dict[str, Any]:
    with state.lock:
        entry = next((e for e in state.devices.values()
                      if e["device_code"] == request.form.get("device_code")), None)
    if entry is None or time.monotonic() - entry["issued"] > state.device_ttl:
        raise PlainError(400, "expired_token")  # as RFC 8628 and Microsoft answer
    with state.lock:
        slow = state.slow_downs > 0
        state.slow_downs -= int(slow)
    if slow:
        raise PlainError(400, "slow_down")
    if entry["user"] is None:
        raise PlainError(400, "authorization_pending")
    return {**_issue(state, entry["user"], entry["scopes"]),
            **id_token(state, request.base_url, request.tenant, entry["user"], entry["scopes"],
                       None)}
