"""`vault sandbox`: a local identity provider that behaves like Microsoft's v2.0 endpoints.

For trying vault without a tenant, and for tests: authorization code with PKCE behind a simple
sign-in page, refresh with rotation where old refresh tokens stay valid (as at Microsoft), device
code, client credentials, and Microsoft's error JSON (AADSTS codes, trace and correlation ids).
With `openid` it issues signed ID tokens as Microsoft's v2.0 endpoint does (RS256 under a key made
at start and published at /{tenant}/discovery/v2.0/keys; tid, oid, sub, nonce; preferred_username
with `profile`, email with `email`), and its discovery document names the tenant's GUID as
issuer (`{tenantid}` for common and organizations). Switches make it answer a chosen AADSTS
error, or hand out a forged ID token. Everything is in memory, on 127.0.0.1 only.

Test hooks (POST, loopback only): /sandbox/fail?code=N&count=K&status=S  /sandbox/revoke?user=U
GET /sandbox/stats. The sign-in password of every user is "sandbox".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

SANDBOX_CLIENT_ID = "5a1db0c0-0000-4000-8000-00000000c11e"
CONSUMERS_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"  # Microsoft's personal-account tenant
GENERIC_TENANTS = ("common", "organizations")
# What a forged ID token gets wrong (SandboxState.forge_id_tokens): the checks vault must make.
FORGERIES = ("signature", "audience", "nonce", "issuer", "expired", "alg-none", "hs256",
             "missing")
SANDBOX_SECRET = "Sandbox~Secret.Value-not-for-real-use-0123"
PASSWORD = "sandbox"
ACCESS_TTL = 3600

MESSAGES = {
    7000215: (401, "invalid_client", "Invalid client secret provided. Ensure the secret being "
              "sent in the request is the client secret value, not the client secret ID."),
    7000222: (401, "invalid_client", "The provided client secret keys are expired."),
    700016: (400, "unauthorized_client", "Application was not found in the directory."),
    90002: (400, "invalid_request", "Tenant not found."),
    9001023: (400, "invalid_request", "The grant type is not supported over the /common or "
              "/consumers endpoints."),
    65001: (400, "invalid_grant", "The user or administrator has not consented to use the "
            "application."),
    700022: (400, "invalid_scope", "The provided value for the input parameter scope is not "
             "valid because it contains more than one resource."),
    700082: (400, "invalid_grant", "The refresh token has expired due to inactivity."),
    70008: (400, "invalid_grant", "The provided authorization code or refresh token has "
            "expired due to inactivity."),
    50173: (400, "invalid_grant", "The provided grant has expired due to it being revoked."),
    70000: (400, "invalid_grant", "Provided grant is invalid or malformed."),
    700027: (401, "invalid_client", "Client assertion failed signature validation."),
    700024: (400, "invalid_client", "Client assertion is not within its valid time range."),
    54005: (400, "invalid_grant", "OAuth2 Authorization code was already redeemed."),
    50011: (400, "invalid_request", "The redirect URI specified in the request does not match "
            "the redirect URIs configured for the application."),
    50148: (400, "invalid_grant", "The code_verifier does not match the code_challenge."),
    53003: (400, "invalid_grant", "Access has been blocked by Conditional Access policies."),
    50196: (400, "temporarily_unavailable", "The server terminated an operation because it "
            "encountered a client request loop."),
    90055: (400, "temporarily_unavailable", "There are too many incoming requests."),
    # Transient codes (Microsoft's error reference). Which `error` word Microsoft pairs with them
    # is not documented: these answers use words that read as a refused request or a refused
    # refresh token, so only a classification on the code gets them right.
    90006: (400, "invalid_request", "The service is temporarily unavailable."),
    90033: (400, "invalid_grant", "The Microsoft Online Directory Service isn't available."),
    90090: (400, "invalid_request", "The service is temporarily unavailable."),
    50087: (400, "invalid_grant", "A transient error has occurred during strong "
            "authentication. Please try again."),
    65004: (400, "access_denied", "User declined to consent to access the app."),
    50057: (400, "invalid_grant", "The user account is disabled."),
    7000112: (400, "unauthorized_client", "The application is disabled."),
    70001: (400, "unauthorized_client", "The application is disabled."),
    50055: (400, "invalid_grant", "The password is expired."),
    50144: (400, "invalid_grant", "The user's Active Directory password has expired."),
    50132: (400, "invalid_grant", "The session isn't valid due to password expiration or "
            "recent password change."),
    50133: (400, "invalid_grant", "The session isn't valid due to password expiration or "
            "recent password change."),
    53000: (400, "invalid_grant", "Conditional Access policy requires a compliant device."),
    53001: (400, "invalid_grant", "Conditional Access policy requires a domain joined device."),
    53002: (400, "invalid_grant", "The app used isn't an approved app for Conditional Access."),
    530032: (400, "invalid_grant", "The tenant admin has configured a security policy that "
             "blocks this request."),
    50072: (400, "interaction_required", "User needs to enroll for second factor "
            "authentication."),
    50074: (400, "interaction_required", "Strong authentication is required."),
    9002313: (400, "invalid_request", "Request is malformed or invalid."),
    1002016: (400, "invalid_request", "You are using TLS version 1.0, 1.1 and/or 3DES cipher "
              "which are deprecated."),
    50020: (400, "invalid_grant", "User account from identity provider does not exist in "
            "tenant."),
    50105: (400, "invalid_grant", "The signed in user isn't assigned to a role for the app."),
    50147: (400, "invalid_request", "The size of the code challenge parameter isn't valid."),
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def tenant_id(tenant: str) -> str:
    """The GUID behind a tenant in a URL path: a GUID stands for itself, a domain gets a stable
    made-up one, `consumers` is Microsoft's personal-account tenant."""
    if tenant == "consumers":
        return CONSUMERS_TENANT
    try:
        return str(uuid.UUID(tenant))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_DNS, tenant.lower()))


def _new_signing_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()

    def b64int(n: int) -> str:
        return _b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": b64int(numbers.n), "e": b64int(numbers.e)}


def _b64json(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


@dataclass
class _Grant:
    user: str
    scopes: list[str]
    revoked: bool = False


@dataclass
class SandboxState:
    client_id: str = SANDBOX_CLIENT_ID
    secret: str = SANDBOX_SECRET
    lock: threading.Lock = field(default_factory=threading.Lock)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh_tokens: dict[str, _Grant] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[tuple[int, int | None]] = field(default_factory=list)  # (AADSTS, HTTP)
    revoked_users: set[str] = field(default_factory=set)
    certificates: list[Any] = field(default_factory=list)  # cryptography x509 certificates
    slow_downs: int = 0  # answer this many device-code polls with slow_down (RFC 8628)
    device_ttl: float = 900.0  # seconds a device code stays valid (then: expired_token)
    access_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)  # for the Graph API
    signing_key: Any = field(default_factory=_new_signing_key)  # RS256, for ID tokens
    mail_attributes: dict[str, str] = field(default_factory=dict)  # user -> `email` claim
    forge_id_tokens: list[str] = field(default_factory=list)  # FORGERIES, one per ID token
    clock: Callable[[], float] = time.time  # what ID tokens are stamped with (tests move it)
    assertions: list[dict[str, str]] = field(default_factory=list)  # headers of accepted ones
    stats: dict[str, int] = field(default_factory=lambda: {"token": 0, "refresh_token": 0,
                                                           "authorization_code": 0,
                                                           "client_credentials": 0})


class SandboxError(Exception):
    def __init__(self, code: int, status: int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.status = status


def error_body(code: int) -> tuple[int, dict[str, Any]]:
    status, error, text = MESSAGES.get(code, (400, "invalid_request", "Request failed."))
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\n"
                             f"Correlation ID: {correlation}\r\nTimestamp: {stamp}",
        "error_codes": [code], "timestamp": stamp, "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


def _resource(scope: str) -> str | None:
    if scope in ("offline_access", "openid", "profile", "email"):
        return None
    if "://" in scope:
        parts = urlsplit(scope)
        return f"{parts.scheme}://{parts.netloc}/"
    return "https://graph.microsoft.com/"


class SandboxHandler(BaseHTTPRequestHandler):
    server: SandboxServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: requests carry codes and tokens."""

    # -- plumbing ----------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any],
              headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _html(self, body: str) -> None:
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>vault sandbox</title>"
                f"</head><body style='font-family:sans-serif;max-width:32em;margin:3em auto'>"
                f"<h1>vault sandbox sign-in</h1>{body}</body></html>")
        self._send(200, page.encode(), "text/html; charset=utf-8")

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}

    @property
    def state(self) -> SandboxState:
        return self.server.state

    @property
    def kid(self) -> str:
        numbers = self.state.signing_key.public_key().public_numbers()
        return _b64url(hashlib.sha256(str(numbers.n).encode()).digest()[:12])

    def _issuer(self, tenant: str) -> str:
        tid = "{tenantid}" if tenant in GENERIC_TENANTS else tenant_id(tenant)
        return f"{self.server.base_url}/{tid}/v2.0"

    # -- routes --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        segments = parts.path.strip("/").split("/")
        if parts.path.startswith("/v1.0/"):
            self._graph(parts.path)
        elif parts.path == "/sandbox/stats":
            with self.state.lock:
                self._json(200, dict(self.state.stats))
        elif len(segments) == 4 and segments[1:] == ["oauth2", "v2.0", "authorize"]:
            self._sign_in_page(query, error=None)
        elif parts.path == "/devicelogin":
            self._device_page(error=None)
        elif (len(segments) == 3 and segments[1:] == ["v2.0", ".well-known"]) or \
                parts.path.endswith("/v2.0/.well-known/openid-configuration"):
            self._discovery(segments[0])
        elif len(segments) == 4 and segments[1:] == ["discovery", "v2.0", "keys"]:
            self._json(200, {"keys": [_jwk(self.state.signing_key, self.kid)]})
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        segments = parts.path.strip("/").split("/")
        if parts.path == "/sandbox/fail":
            with self.state.lock:
                for _ in range(int(query.get("count", "1"))):
                    status = int(query["status"]) if query.get("status") else None
                    self.state.failures.append((int(query.get("code", "0")), status))
            self._json(200, {"queued": len(self.state.failures)})
        elif parts.path == "/sandbox/revoke":
            with self.state.lock:
                self.state.revoked_users.add(query.get("user", "").lower())
            self._json(200, {"revoked": query.get("user")})
        elif len(segments) == 4 and segments[1:] == ["oauth2", "v2.0", "authorize"]:
            self._sign_in(self._form())
        elif len(segments) == 4 and segments[1:] == ["oauth2", "v2.0", "token"]:
            self._token(segments[0], self._form())
        elif len(segments) == 4 and segments[1:] == ["oauth2", "v2.0", "devicecode"]:
            self._device_code(self._form())
        elif parts.path == "/devicelogin":
            self._device_approve(self._form())
        else:
            self._send(404, b"not found", "text/plain")

    def _discovery(self, tenant: str) -> None:
        """As Microsoft's: the issuer names the tenant's GUID, or {tenantid} for common."""
        base = f"{self.server.base_url}/{tenant}"
        self._json(200, {
            "issuer": self._issuer(tenant),
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
        })

    def _id_token(self, tenant: str, user: str, scopes: list[str],
                  nonce: str | None) -> dict[str, str]:
        """{"id_token": ...} when `openid` was asked for (as Microsoft: only then)."""
        if "openid" not in scopes:
            return {}
        with self.state.lock:
            forgery = self.state.forge_id_tokens.pop(0) if self.state.forge_id_tokens else None
        if forgery == "missing":
            return {}
        now = int(self.state.clock())
        # Signed in at common or organizations, a user lands in the tenant of their domain.
        tid = tenant_id(user.split("@")[-1] if tenant in GENERIC_TENANTS else tenant)
        claims: dict[str, Any] = {
            "aud": self.state.client_id, "iss": f"{self.server.base_url}/{tid}/v2.0",
            "iat": now, "nbf": now, "exp": now + 3600, "tid": tid, "ver": "2.0",
            "sub": _b64url(hashlib.sha256(f"{self.state.client_id}|{tid}|{user}".encode())
                           .digest()[:24]),
        }
        if nonce:
            claims["nonce"] = nonce
        if "profile" in scopes:
            claims.update(preferred_username=user, name=user.split("@")[0].title(),
                          oid=str(uuid.uuid5(uuid.UUID(tid), user)))
        if "email" in scopes:
            claims["email"] = self.state.mail_attributes.get(user, user)
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        key = self.state.signing_key
        if forgery == "audience":
            claims["aud"] = str(uuid.uuid4())
        elif forgery == "nonce":
            claims["nonce"] = secrets.token_urlsafe(16)
        elif forgery == "issuer":
            claims["iss"] = f"{self.server.base_url}/{uuid.uuid4()}/v2.0"
        elif forgery == "expired":
            claims.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
        elif forgery == "signature":
            key = _new_signing_key()  # the published kid, another key
        signing_input = f"{_b64json(header)}.{_b64json(claims)}"
        if forgery == "alg-none":
            return {"id_token": f"{_b64json({**header, 'alg': 'none'})}.{_b64json(claims)}."}
        if forgery == "hs256":  # the classic confusion: HMAC keyed with something public
            head = _b64json({**header, "alg": "HS256"})
            mac = hmac.new(self.state.client_id.encode(), f"{head}.{_b64json(claims)}".encode(),
                           hashlib.sha256).digest()
            return {"id_token": f"{head}.{_b64json(claims)}.{_b64url(mac)}"}
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return {"id_token": f"{signing_input}.{_b64url(signature)}"}

    # -- a sliver of Microsoft Graph ------------------------------------------------------------

    def _graph(self, path: str) -> None:
        """GET /v1.0/me/mailFolders/inbox (delegated) or /v1.0/users/{mailbox}/... (app-only),
        with Graph's error shape; the token must be one this sandbox issued for Graph."""
        def refuse(status: int, code: str, message: str) -> None:
            self._json(status, {"error": {"code": code, "message": message,
                                          "innerError": {"request-id": str(uuid.uuid4())}}})

        header = self.headers.get("Authorization", "")
        with self.state.lock:
            token = self.state.access_tokens.get(header.removeprefix("Bearer ").strip())
        if token is None:
            refuse(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
            return
        if not any(_resource(s) == "https://graph.microsoft.com/" for s in token["scopes"]):
            refuse(401, "InvalidAuthenticationToken",
                   "Access token validation failure. Invalid audience.")
            return
        segments = path.strip("/").split("/")
        if segments[1:] == ["me", "mailFolders", "inbox"] and not token["app"]:
            user = token["user"]
        elif len(segments) == 5 and segments[1] == "users" and segments[3:] == [
                "mailFolders", "inbox"] and token["app"]:
            user = segments[2].lower()
        else:
            refuse(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            return
        self._json(200, {"id": _b64url(f"inbox:{user}".encode()), "displayName": "Inbox",
                         "totalItemCount": 3, "unreadItemCount": 1, "childFolderCount": 0})

    # -- sign-in --------------------------------------------------------------------------------

    def _sign_in_page(self, params: dict[str, str], error: str | None) -> None:
        hidden = "".join(f"<input type='hidden' name='{html.escape(k)}' value='{html.escape(v)}'>"
                         for k, v in params.items() if k not in ("username", "password"))
        hint = html.escape(params.get("login_hint", ""))
        self._html(
            (f"<p style='color:#b00'>{html.escape(error)}</p>" if error else "")
            + f"<p>Application {html.escape(params.get('client_id', ''))} asks for: "
              f"{html.escape(params.get('scope', ''))}</p>"
            + f"<form method='post'>{hidden}<label>Mailbox <input id='username' name='username' "
              f"value='{hint}'></label><br><label>Password <input id='password' "
              f"name='password' type='password'></label> (every password is "
              f"<code>{PASSWORD}</code>)<br><button id='login' type='submit'>Sign in and accept"
              f"</button></form>")

    def _sign_in(self, form: dict[str, str]) -> None:
        if form.get("password") != PASSWORD or "@" not in form.get("username", ""):
            self._sign_in_page(form, error="Wrong mailbox or password.")
            return
        redirect_uri = form.get("redirect_uri", "")
        if form.get("client_id") != self.state.client_id:
            self._json(*error_body(700016))
            return
        if not redirect_uri.startswith(("http://127.0.0.1", "http://localhost", "https://")):
            self._json(*error_body(50011))
            return
        code = secrets.token_urlsafe(32)
        with self.state.lock:
            self.state.codes[code] = {
                "user": form["username"].lower(), "scopes": form.get("scope", "").split(),
                "redirect_uri": redirect_uri, "challenge": form.get("code_challenge"),
                "issued": time.monotonic(), "used": False, "nonce": form.get("nonce"),
            }
        target = redirect_uri + ("&" if "?" in redirect_uri else "?") + urlencode(
            {"code": code, "state": form.get("state", ""), "session_state": str(uuid.uuid4())})
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    # -- token endpoint ---------------------------------------------------------------------------

    def _client_authenticated(self, form: dict[str, str]) -> bool:
        if form.get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return self._assertion_valid(form)
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                pair = base64.b64decode(header[6:]).decode()
            except ValueError:
                return False
            from urllib.parse import unquote

            left, _, right = pair.partition(":")
            client_id, secret = unquote(left), unquote(right)
        if client_id != self.state.client_id:
            raise SandboxError(700016)
        if secret is None or not hmac.compare_digest(secret.encode(), self.state.secret.encode()):
            raise SandboxError(7000215)
        return True

    def _assertion_valid(self, form: dict[str, str]) -> bool:
        """private_key_jwt as Entra ID checks it: the certificate is found by its `x5t#S256`
        (SHA-256 of the DER) or `x5t` (SHA-1) thumbprint among those registered; the signature
        is PS256 (RSASSA-PSS, SHA-256, MGF1, 32-byte salt: RFC 7518) or RS256 (PKCS#1 v1.5);
        anything else fails signature validation (700027). An assertion outside its nbf/exp
        window is 700024."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            head, body, signature = form.get("client_assertion", "").split(".")
            header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            raw_signature = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        except ValueError:
            raise SandboxError(700027) from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise SandboxError(700027)
        if claims.get("iss") != self.state.client_id or claims.get("sub") != self.state.client_id:
            raise SandboxError(700016)
        if not str(claims.get("aud", "")).endswith(self.path.split("?")[0]):
            raise SandboxError(700027)
        now = time.time()
        try:
            if float(claims.get("exp", 0)) < now or float(claims.get("nbf", 0)) > now + 300:
                raise SandboxError(700024)
        except (TypeError, ValueError):
            raise SandboxError(700027) from None
        pads = {"PS256": padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                     salt_length=padding.PSS.DIGEST_LENGTH),
                "RS256": padding.PKCS1v15()}
        pad = pads.get(header.get("alg"))
        if pad is None:
            raise SandboxError(700027)
        for certificate in self.state.certificates:
            if "x5t#S256" in header:
                matches = _b64url(certificate.fingerprint(hashes.SHA256())) == header["x5t#S256"]
            else:
                matches = _b64url(certificate.fingerprint(hashes.SHA1())) == header.get(  # noqa: S303
                    "x5t")
            if not matches:
                continue
            try:
                certificate.public_key().verify(raw_signature, f"{head}.{body}".encode(), pad,
                                                hashes.SHA256())
            except InvalidSignature:
                raise SandboxError(700027) from None
            with self.state.lock:
                self.state.assertions.append(
                    {k: header[k] for k in ("alg", "x5t", "x5t#S256") if k in header})
            return True
        raise SandboxError(700027)

    def _token(self, tenant: str, form: dict[str, str]) -> None:
        grant_type = form.get("grant_type", "")
        with self.state.lock:
            self.state.stats["token"] += 1
            if grant_type in self.state.stats:
                self.state.stats[grant_type] += 1
            failure = self.state.failures.pop(0) if self.state.failures else None
        try:
            if failure is not None:
                code, status = failure
                if status is not None and code == 0:
                    self._json(status, {"error": "temporarily_unavailable"},
                               {"Retry-After": "1"} if status == 429 else None)
                    return
                raise SandboxError(code, status)
            self._client_authenticated(form)
            scopes = form.get("scope", "").split()
            resources = {r for r in map(_resource, scopes) if r}
            if len(resources) > 1:
                raise SandboxError(700022)
            if grant_type == "authorization_code":
                payload = self._redeem(tenant, form, scopes)
            elif grant_type == "refresh_token":
                payload = self._refresh(form, scopes)
            elif grant_type == "client_credentials":
                if tenant in ("common", "organizations", "consumers"):
                    raise SandboxError(9001023)
                if not scopes or not all(s.endswith("/.default") for s in scopes):
                    raise SandboxError(70011)
                access = "sbx-app." + secrets.token_urlsafe(32)
                with self.state.lock:
                    self.state.access_tokens[access] = {"user": None, "scopes": scopes,
                                                        "app": True}
                payload = {"token_type": "Bearer", "expires_in": ACCESS_TTL,
                           "access_token": access}
            elif grant_type == "urn:ietf:params:oauth:grant-type:device_code":
                payload = self._device_token(tenant, form)
                if payload is None:
                    return
            else:
                self._json(400, {"error": "unsupported_grant_type"})
                return
        except SandboxError as e:
            status, body = error_body(e.code)
            self._json(e.status or status, body)
            return
        self._json(200, payload)

    def _issue(self, user: str, scopes: list[str]) -> dict[str, Any]:
        refresh = "sbx-rt." + secrets.token_urlsafe(48)
        access = f"sbx-at.{_b64url(user.encode())}.{secrets.token_urlsafe(32)}"
        with self.state.lock:
            self.state.refresh_tokens[refresh] = _Grant(user, scopes)
            self.state.access_tokens[access] = {"user": user, "scopes": scopes, "app": False}
        return {"token_type": "Bearer", "scope": " ".join(s for s in scopes),
                "expires_in": ACCESS_TTL, "ext_expires_in": ACCESS_TTL,
                "access_token": access, "refresh_token": refresh}

    def _redeem(self, tenant: str, form: dict[str, str], scopes: list[str]) -> dict[str, Any]:
        with self.state.lock:
            entry = self.state.codes.get(form.get("code", ""))
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
        expected = _b64url(hashlib.sha256(verifier.encode()).digest())
        if not entry["challenge"] or not hmac.compare_digest(expected, entry["challenge"]):
            raise SandboxError(50148)
        return {**self._issue(entry["user"], scopes or entry["scopes"]),
                **self._id_token(tenant, entry["user"], [*entry["scopes"], *scopes],
                                 entry["nonce"])}

    def _refresh(self, form: dict[str, str], scopes: list[str]) -> dict[str, Any]:
        with self.state.lock:
            grant = self.state.refresh_tokens.get(form.get("refresh_token", ""))
            if grant is None:
                raise SandboxError(70000)
            if grant.revoked or grant.user in self.state.revoked_users:
                raise SandboxError(50173)
        # Like Microsoft: a new refresh token each time, and the old one stays valid.
        return self._issue(grant.user, scopes or grant.scopes)

    # -- device code ------------------------------------------------------------------------------

    def _device_code(self, form: dict[str, str]) -> None:
        if form.get("client_id") != self.state.client_id:
            self._json(*error_body(700016))
            return
        device_code = secrets.token_urlsafe(32)
        user_code = "".join(secrets.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(8))
        with self.state.lock:
            self.state.devices[user_code] = {"device_code": device_code, "user": None,
                                             "scopes": form.get("scope", "").split(),
                                             "issued": time.monotonic()}
        uri = f"{self.server.base_url}/devicelogin"
        self._json(200, {"device_code": device_code, "user_code": user_code,
                         "verification_uri": uri, "expires_in": 900, "interval": 1,
                         "message": f"To sign in, open {uri} and enter the code {user_code}."})

    def _device_page(self, error: str | None) -> None:
        self._html((f"<p style='color:#b00'>{html.escape(error)}</p>" if error else "")
                   + "<form method='post'><label>Code <input id='user_code' name='user_code'>"
                     "</label><br><label>Mailbox <input id='username' name='username'></label>"
                     "<br><label>Password <input id='password' name='password' type='password'>"
                     "</label><br><button id='login' type='submit'>Sign in</button></form>")

    def _device_approve(self, form: dict[str, str]) -> None:
        with self.state.lock:
            entry = self.state.devices.get(form.get("user_code", "").strip().upper())
            ok = entry is not None and form.get("password") == PASSWORD and \
                "@" in form.get("username", "")
            if ok:
                entry["user"] = form["username"].lower()
        if ok:
            self._html("<p>Signed in. You can return to vault.</p>")
        else:
            self._device_page(error="Wrong code, mailbox or password.")

    def _device_token(self, tenant: str, form: dict[str, str]) -> dict[str, Any] | None:
        with self.state.lock:
            entry = next((e for e in self.state.devices.values()
                          if e["device_code"] == form.get("device_code")), None)
        if entry is None or time.monotonic() - entry["issued"] > self.state.device_ttl:
            self._json(400, {"error": "expired_token"})  # as RFC 8628 and Microsoft answer
            return None
        with self.state.lock:
            slow = self.state.slow_downs > 0
            self.state.slow_downs -= int(slow)
        if slow:
            self._json(400, {"error": "slow_down"})
            return None
        if entry["user"] is None:
            self._json(400, {"error": "authorization_pending"})
            return None
        return {**self._issue(entry["user"], entry["scopes"]),
                **self._id_token(tenant, entry["user"], entry["scopes"], None)}


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0, state: SandboxState | None = None) -> None:
        super().__init__(("127.0.0.1", port), SandboxHandler)
        self.state = state or SandboxState()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> SandboxServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def settings_line(server: SandboxServer, tenant: str = "sandbox.onmicrosoft.com") -> str:
    """What a `vault client add` needs to use the sandbox (the secret is not a real one)."""
    base = server.base_url
    return json.dumps({
        "base_url": base, "tenant": tenant, "client_id": server.state.client_id,
        "client_secret": server.state.secret,
        "issuer": f"{base}/{quote(tenant)}/v2.0",
        "authorize_url": f"{base}/{quote(tenant)}/oauth2/v2.0/authorize",
        "token_url": f"{base}/{quote(tenant)}/oauth2/v2.0/token",
        "device_url": f"{base}/{quote(tenant)}/oauth2/v2.0/devicecode",
    })
