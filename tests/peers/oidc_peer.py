"""A real OAuth 2.0 / OpenID authorization server (npm `oidc-provider`) for tests, and helpers to drive it.

No pytest fixtures here: a conftest builds them from `OidcPeer.start()` / `.stop()`.

    peer = OidcPeer.start()               # fails unless tests/peers/install.sh has run npm ci
    verifier, challenge = make_pkce()
    url = peer.build_authorize_url("vault-basic", "openid offline_access mail.imap", "st", challenge)
    redirect = peer.complete_authorization(url, "alice@example.test", "alice-password-123")
    # redirect == "http://127.0.0.1/callback?code=...&state=st&iss=..."
    peer.stop()

The server keeps everything in memory: start it once per test session, never restart it mid-session.
httpx and the standard library, plus `cryptography` for the JWT helpers (signature checks, JWK to PEM).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import queue
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from html.parser import HTMLParser
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import httpx

PEER_DIR = Path(__file__).resolve().parent / "oidc"
SERVER_SCRIPT = PEER_DIR / "server.mjs"
LOCK_FILE = PEER_DIR / "package-lock.json"
STAMP_FILE = PEER_DIR / "node_modules" / ".vault-package-lock.sha256"
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
REDIRECT_URI = "http://127.0.0.1/callback"
INSTALL_HINT = "run `bash tests/peers/install.sh`"


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str
    auth_method: str  # token_endpoint_auth_method


# Mirrors server.mjs.
CLIENTS = {
    c.client_id: c
    for c in (
        Client("vault-basic", "basic-secret-value-0123456789", "client_secret_basic"),
        Client("vault-post", "post-secret-value-0123456789", "client_secret_post"),
        Client("vault-expired-codes", "expired-secret-0123456789", "client_secret_post"),
        Client("dovecot", "dovecot-secret-0123456789", "client_secret_basic"),
    )
}
USERS = {
    "alice@example.test": "alice-password-123",
    "bob@example.test": "bob-password-123",
}
MAIL_SCOPES = ("mail.imap", "mail.smtp", "mail.pop", "graph.mail")
APP_SCOPE = "mail.app"

# RFC 8707 resource servers (mirrors RESOURCE_SERVERS in server.mjs): resource indicator -> the
# scopes it accepts. A request naming one as `resource` gets a JWT access token with aud = the
# indicator, signed RS256 with key id ACCESS_TOKEN_KID; any other resource is invalid_target.
MAIL_RESOURCE = "https://mail.example.test"  # the whole mail service: IMAP, POP3 and submission
IMAP_RESOURCE = "imap://mail.example.test"
POP_RESOURCE = "pop://mail.example.test"
SMTP_RESOURCE = "smtp://mail.example.test"
OTHER_MAIL_RESOURCE = "https://other-mail.example.test"  # same scopes, another audience
RESOURCE_SERVERS = {
    MAIL_RESOURCE: ("mail.imap", "mail.pop", "mail.smtp"),
    IMAP_RESOURCE: ("mail.imap",),
    POP_RESOURCE: ("mail.pop",),
    SMTP_RESOURCE: ("mail.smtp",),
    OTHER_MAIL_RESOURCE: ("mail.imap", "mail.pop", "mail.smtp"),
}
ACCESS_TOKEN_KID = "test-rs256"


# --------------------------------------------------------------------------------------------------
# Installed? (tests/peers/install.sh runs npm ci and writes STAMP_FILE)


def _lock_digest() -> str:
    return hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()


def ensure_installed() -> str:
    """The path of `node` if Node.js is on PATH and node_modules matches package-lock.json (the stamp
    tests/peers/install.sh writes after `npm ci`); otherwise RuntimeError naming install.sh. A stale
    node_modules is reported, never used: the tests install nothing."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError(f"the OIDC test peer needs Node.js (node is not on PATH): {INSTALL_HINT}")
    try:
        stamp = STAMP_FILE.read_text().strip()
    except OSError:
        raise RuntimeError(f"the OIDC test peer's node_modules is not installed (no {STAMP_FILE}): "
                           f"{INSTALL_HINT}") from None
    if stamp != _lock_digest():
        raise RuntimeError(f"the OIDC test peer's node_modules does not match {LOCK_FILE.name} (stale "
                           f"{STAMP_FILE}): {INSTALL_HINT}")
    return node


# --------------------------------------------------------------------------------------------------
# Client authentication, PKCE, HTTP clients


def client_auth(client_id: str, data: dict[str, str]) -> dict:
    """httpx.post keyword arguments authenticating as client_id with its registered method.

    The peer enforces the registered method: Basic for a client_secret_post client (or the
    reverse) is 401 invalid_client."""
    client = CLIENTS[client_id]
    if client.auth_method == "client_secret_basic":
        return {"data": data, "auth": (client.client_id, client.client_secret)}
    return {"data": {**data, "client_id": client.client_id, "client_secret": client.client_secret}}


def make_pkce() -> tuple[str, str]:
    """Return (code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@cache
def _ssl_context() -> ssl.SSLContext:
    # Building one per httpx.Client costs ~60 ms (CA bundle); the peer is plain HTTP anyway.
    return ssl.create_default_context()


def http_client(*, cookies: bool = False) -> httpx.Client:
    """A fast-to-create httpx.Client; without cookies unless asked (a jar would carry the provider's
    session from one authorization to the next)."""
    jar = CookieJar() if cookies else CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.Client(verify=_ssl_context(), cookies=jar, follow_redirects=False, timeout=10)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# JWTs (access tokens for a resource, ID tokens)


@dataclass(frozen=True)
class SigningKey:
    """One public key of the provider's JWKS: its kid, alg and SubjectPublicKeyInfo PEM."""

    kid: str
    alg: str
    pem: str


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_jwt(token: str) -> tuple[dict, dict]:
    """(header, payload) of a compact JWS, NOT verified (verify_jwt checks the signature)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"not a compact JWS ({len(parts)} parts)")
    return json.loads(_b64url_decode(parts[0])), json.loads(_b64url_decode(parts[1]))


def jwk_to_pem(jwk: dict) -> str:
    """The SubjectPublicKeyInfo PEM of an RSA public JWK (what Dovecot's key dict holds)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    if jwk.get("kty") != "RSA":
        raise ValueError(f"only RSA keys are supported, got kty={jwk.get('kty')!r}")
    numbers = RSAPublicNumbers(int.from_bytes(_b64url_decode(jwk["e"]), "big"),
                               int.from_bytes(_b64url_decode(jwk["n"]), "big"))
    return numbers.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def verify_jwt(token: str, keys: list[SigningKey]) -> tuple[dict, dict]:
    """(header, payload) of an RS256 JWS whose signature verifies with the key its kid names
    (ValueError otherwise). Claims (exp, aud, ...) are the caller's to check."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    header, payload = decode_jwt(token)
    if header.get("alg") != "RS256":
        raise ValueError(f"unsupported alg {header.get('alg')!r}")
    key = next((k for k in keys if k.kid == header.get("kid") and k.alg == "RS256"), None)
    if key is None:
        raise ValueError(f"no RS256 key with kid {header.get('kid')!r}")
    public = serialization.load_pem_public_key(key.pem.encode("ascii"))
    signing_input, _, signature = token.rpartition(".")
    try:
        public.verify(_b64url_decode(signature), signing_input.encode("ascii"), padding.PKCS1v15(),
                      hashes.SHA256())
    except InvalidSignature:
        raise ValueError("bad signature") from None
    return header, payload


# --------------------------------------------------------------------------------------------------
# The server process


class OidcPeer:
    """A running `node server.mjs` on 127.0.0.1 with a port picked at start."""

    def __init__(self, process: subprocess.Popen[str], issuer: str, log_path: Path) -> None:
        self._process = process
        self.issuer = issuer
        self._log_path = log_path
        self.token_url = f"{issuer}/token"
        self.authorize_url = f"{issuer}/auth"
        self.device_url = f"{issuer}/device/auth"  # device authorization endpoint (RFC 8628)
        self.device_verification_url = f"{issuer}/device"  # where the user types the code
        self.revocation_url = f"{issuer}/token/revocation"
        self.introspection_url = f"{issuer}/token/introspection"
        self.userinfo_url = f"{issuer}/me"
        self.jwks_url = f"{issuer}/jwks"
        self.discovery_url = f"{issuer}/.well-known/openid-configuration"
        self.http = http_client()  # cookie-less client for back-channel calls; closed by stop()

    @classmethod
    def start(cls, timeout: float = START_TIMEOUT) -> OidcPeer:
        """Spawn the server on a free port and wait for its READY line (RuntimeError naming
        tests/peers/install.sh if node or node_modules is missing)."""
        node = ensure_installed()
        last_error: RuntimeError | None = None
        for _ in range(3):  # the free port can be taken between probing and listening
            try:
                return cls._spawn(node, _free_port(), timeout)
            except _PortTaken as exc:
                last_error = RuntimeError(str(exc))
        assert last_error is not None
        raise last_error

    @classmethod
    def _spawn(cls, node: str, port: int, timeout: float) -> OidcPeer:
        issuer = f"http://{HOST}:{port}"
        log_fd, log_name = tempfile.mkstemp(prefix="oidc-peer-", suffix=".log")
        log_path = Path(log_name)
        with os.fdopen(log_fd, "w") as log:
            process = subprocess.Popen(
                [node, str(SERVER_SCRIPT), "--port", str(port), "--issuer", issuer, "--watch-stdin"],
                cwd=PEER_DIR,
                stdin=subprocess.PIPE,  # closed when we die: the server exits (--watch-stdin)
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:  # keeps draining stdout so the server never blocks on a full pipe
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, name=f"oidc-peer-{port}", daemon=True).start()

        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                _terminate(process)
                raise RuntimeError(
                    f"OIDC peer did not print READY within {timeout:.0f} s; stderr:\n{_read(log_path, True)}"
                ) from None
            if line is None:
                process.wait(timeout=5)
                stderr = _read(log_path, True)
                if "EADDRINUSE" in stderr:
                    raise _PortTaken(f"port {port} taken: {stderr}")
                raise RuntimeError(
                    f"OIDC peer exited with code {process.returncode} before READY; stderr:\n{stderr}"
                )
            if line == f"READY {issuer}":
                return cls(process, issuer, log_path)

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        self.http.close()
        _terminate(self._process)
        with contextlib.suppress(OSError):
            self._log_path.unlink()

    def __enter__(self) -> OidcPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def log_text(self) -> str:
        """The server's stderr so far (oidc-provider's reasons behind error answers are logged there)."""
        return _read(self._log_path)

    # ---- helpers bound to this issuer --------------------------------------------------------------

    def build_authorize_url(
        self,
        client_id: str,
        scope: str,
        state: str,
        code_challenge: str,
        redirect_uri: str = REDIRECT_URI,
        *,
        resource: str | Sequence[str] | None = None,
        **extra: str,
    ) -> str:
        """resource: RFC 8707 resource indicator(s), one `resource` parameter each."""
        params: dict[str, str | list[str]] = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
            **extra,
        }
        if resource is not None:
            params["resource"] = [resource] if isinstance(resource, str) else list(resource)
        return f"{self.authorize_url}?{urlencode(params, doseq=True)}"

    def complete_authorization(self, authorize_url: str, username: str, password: str) -> str:
        return complete_authorization(authorize_url, username, password)

    def approve_device_code(self, verification_uri: str, user_code: str, username: str,
                            password: str) -> None:
        approve_device_code(verification_uri, user_code, username, password)

    def revoke_grants(self, sub: str, client_id: str | None = None) -> int:
        """Simulate "consent revoked at the provider": drop the user's grants (all clients unless
        client_id) and every token and code issued under them. Returns how many grants went."""
        params = {"sub": sub} if client_id is None else {"sub": sub, "client_id": client_id}
        resp = self.http.post(f"{self.issuer}/test/revoke-grants", params=params)
        resp.raise_for_status()
        return int(resp.json()["revoked_grants"])

    def expire_access_tokens(self, sub: str) -> int:
        """Make the user's live access tokens expired now (introspection: active false)."""
        resp = self.http.post(f"{self.issuer}/test/expire-access-tokens", params={"sub": sub})
        resp.raise_for_status()
        return int(resp.json()["expired_access_tokens"])

    def expire_codes(self) -> int:
        """Expire every outstanding authorization code now. Returns how many."""
        resp = self.http.post(f"{self.issuer}/test/expire-codes")
        resp.raise_for_status()
        return int(resp.json()["expired_codes"])

    def signing_keys(self) -> list[SigningKey]:
        """The provider's public signing keys, from its jwks_uri (the standard endpoint): what a
        resource server validating JWT access tokens locally must hold."""
        resp = self.http.get(self.jwks_url)
        resp.raise_for_status()
        return [SigningKey(jwk["kid"], jwk["alg"], jwk_to_pem(jwk)) for jwk in resp.json()["keys"]]

    def sign_jwt(self, payload: dict, header: dict | None = None) -> str:
        """A JWT signed RS256 by the provider's access-token key (test-only endpoint): validly signed
        tokens a real flow cannot give, e.g. already expired or of another issuer. The header
        defaults to the provider's own: {"alg": "RS256", "typ": "JWT", "kid": ACCESS_TOKEN_KID}."""
        resp = self.http.post(f"{self.issuer}/test/sign-jwt", json={"payload": payload, "header": header or {}})
        resp.raise_for_status()
        return resp.json()["token"]

    def introspect(self, token: str, client_id: str = "dovecot") -> dict:
        """RFC 7662 introspection as `client_id` (default: the resource server `dovecot`)."""
        resp = self.http.post(self.introspection_url, **client_auth(client_id, {"token": token}))
        resp.raise_for_status()
        return resp.json()


class _PortTaken(RuntimeError):
    pass


def _terminate(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _read(path: Path, remove: bool = False) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
    finally:
        if remove:
            with contextlib.suppress(OSError):
                path.unlink()


# --------------------------------------------------------------------------------------------------
# Driving the login, consent and device pages over plain HTTP


class _Forms(HTMLParser):
    """Collects <form>s (id, method, action, name/value of their inputs) and every element id."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, dict] = {}
        self.ids: set[str] = set()
        self._current: dict | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "form":
            self._current = {"method": a.get("method", "get").lower(), "action": a.get("action", ""),
                             "fields": {}}
            self.forms[a.get("id", f"form{len(self.forms)}")] = self._current
        elif tag == "input" and self._current is not None and a.get("name"):
            self._current["fields"][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def _parse(html: str) -> _Forms:
    parser = _Forms()
    parser.feed(html)
    return parser


def _error_text(html: str) -> str:
    match = re.search(r'id="error"[^>]*>(.*?)</', html, re.S)
    return match.group(1).strip() if match else html[:500]


def _browser() -> httpx.Client:
    # A fresh cookie jar per call: each completion is a new user agent with no provider session.
    return http_client(cookies=True)


def _drive(http: httpx.Client, resp: httpx.Response, issuer_origin: str, username: str, password: str,
           *, stop_outside: bool) -> httpx.Response | str:
    """Follow redirects and fill the login/consent pages until a redirect leaves the provider
    (returned as a URL when stop_outside) or a page that is neither login nor consent (returned)."""
    for _ in range(20):
        if resp.is_redirect:
            target = urljoin(str(resp.url), resp.headers["location"])
            if _origin(target) != issuer_origin:
                if stop_outside:
                    return target
                raise RuntimeError(f"unexpected redirect away from the provider: {target}")
            resp = http.get(target)
            continue
        page = _parse(resp.text)
        if "login-form" in page.forms:
            if "error" in page.ids and resp.request.method == "POST":
                raise RuntimeError(f"login refused for {username!r}: {_error_text(resp.text)}")
            action = urljoin(str(resp.url), page.forms["login-form"]["action"])
            resp = http.post(action, data={"username": username, "password": password})
            continue
        if "consent-form" in page.forms:
            resp = http.post(urljoin(str(resp.url), page.forms["consent-form"]["action"]))
            continue
        return resp
    raise RuntimeError("too many steps driving the authorization pages")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def complete_authorization(authorize_url: str, username: str, password: str) -> str:
    """Open authorize_url, log in as username/password, consent, and return the final redirect URL
    (redirect_uri?code=...&state=...&iss=..., or ?error=... when the provider refuses) without
    following it. Raises RuntimeError if the login is refused or the provider shows an error page."""
    issuer_origin = _origin(authorize_url)
    with _browser() as http:
        result = _drive(http, http.get(authorize_url), issuer_origin, username, password, stop_outside=True)
    if isinstance(result, str):
        return result
    raise RuntimeError(
        f"authorization did not redirect back (HTTP {result.status_code}): {_error_text(result.text)}"
    )


def approve_device_code(verification_uri: str, user_code: str, username: str, password: str) -> None:
    """Enter user_code at verification_uri, confirm, log in and consent, like a user on a second
    device. Raises RuntimeError if the code is refused or the success page does not show."""
    issuer_origin = _origin(verification_uri)
    with _browser() as http:
        resp = http.get(verification_uri)
        form = _parse(resp.text).forms.get("op.deviceInputForm")
        if resp.status_code != 200 or form is None:
            raise RuntimeError(f"no user code form at {verification_uri} (HTTP {resp.status_code})")
        action = urljoin(str(resp.url), form["action"])
        resp = http.post(action, data={**form["fields"], "user_code": user_code})
        confirm = _parse(resp.text).forms.get("op.deviceConfirmForm")
        if confirm is None:
            raise RuntimeError(f"user code {user_code!r} refused: {_error_text(resp.text)}")
        resp = http.post(urljoin(str(resp.url), confirm["action"]), data=confirm["fields"])
        result = _drive(http, resp, issuer_origin, username, password, stop_outside=False)
        assert isinstance(result, httpx.Response)
        if 'id="success"' not in result.text:
            raise RuntimeError(
                f"device approval failed (HTTP {result.status_code}): {_error_text(result.text)}"
            )
