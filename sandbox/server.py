"""The sandbox on HTTP, on 127.0.0.1 only: routes, the sign-in and device-login pages, the test
hooks, and the one line of settings `vault client add` needs."""

from __future__ import annotations

import html
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from sandbox import applications, graph, hooks, oidc, tokens
from sandbox.failures import PlainError, SandboxError, error_body
from sandbox.state import PASSWORD, SandboxState


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

    def _answer(self, produce: Callable[[], dict[str, Any]]) -> None:
        """What an endpoint produced, or the error it raised, as Microsoft sends them."""
        try:
            payload = produce()
        except SandboxError as e:
            status, body = error_body(e.code)
            self._json(e.status or status, body)
        except PlainError as e:
            self._json(e.status, {"error": e.error}, e.headers)
        else:
            self._json(200, payload)

    def _graph(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        status, payload, headers = applications.answer(
            self.state, method, path, query, self.headers.get("Authorization", ""), body)
        if payload is None:
            self._send(status, b"", "application/json", headers)
        else:
            self._json(status, payload, headers)

    def _hook(self, hook: Callable[[SandboxState, dict[str, str]], dict[str, Any]],
              query: dict[str, str]) -> None:
        try:
            self._json(200, hook(self.state, query))
        except hooks.UnknownApp as e:
            self._json(404, {"error": f"no app registration {e}"})
        except ValueError as e:
            self._json(400, {"error": str(e)})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

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

    # -- routes --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        segments = parts.path.strip("/").split("/")
        if applications.is_application_path(parts.path):
            self._graph("GET", parts.path, query, b"")
        elif parts.path.startswith("/v1.0/"):
            too_many = graph.throttled(self.state)
            if too_many is not None:
                self._json(*too_many)
            else:
                self._json(*graph.inbox(self.state, parts.path,
                                        self.headers.get("Authorization", "")))
        elif parts.path == "/sandbox/stats":
            with self.state.lock:
                self._json(200, dict(self.state.stats))
        elif len(segments) == 4 and segments[1:] == ["oauth2", "v2.0", "authorize"]:
            self._sign_in_page(query, error=None)
        elif parts.path == "/devicelogin":
            self._device_page(error=None)
        elif (len(segments) == 3 and segments[1:] == ["v2.0", ".well-known"]) or \
                parts.path.endswith("/v2.0/.well-known/openid-configuration"):
            self._json(200, oidc.discovery(self.server.base_url, segments[0]))
        elif len(segments) == 4 and segments[1:] == ["discovery", "v2.0", "keys"]:
            self._json(200, oidc.jwks(self.state.signing_key))
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        segments = parts.path.strip("/").split("/")
        switches = {"/sandbox/register": hooks.register, "/sandbox/app": hooks.configure,
                    "/sandbox/graph/throttle": hooks.throttle,
                    "/sandbox/clock": hooks.advance_clock}
        if applications.is_application_path(parts.path):
            self._graph("POST", parts.path, query, self._body())
        elif parts.path in switches:
            self._hook(switches[parts.path], query)
        elif parts.path == "/sandbox/fail":
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
            request = tokens.TokenRequest(
                base_url=self.server.base_url, tenant=segments[0],
                path=self.path.split("?")[0], form=self._form(),
                authorization=self.headers.get("Authorization", ""))
            self._answer(lambda: tokens.token(self.state, request))
        elif len(segments) == 4 and segments[1:] == ["oauth2", "v2.0", "devicecode"]:
            form = self._form()
            self._answer(lambda: tokens.device_authorization(self.state, self.server.base_url,
                                                             form))
        elif parts.path == "/devicelogin":
            self._device_approve(self._form())
        else:
            self._send(404, b"not found", "text/plain")

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

    # -- device login ---------------------------------------------------------------------------

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


def client_add_args(server: SandboxServer, tenant: str = "sandbox.onmicrosoft.com",
                    name: str = "demo") -> list[str]:
    """The `vault client add` that registers the sandbox as client `name` (its arguments; the
    client secret goes on stdin, as every secret does)."""
    s = json.loads(settings_line(server, tenant))
    return ["client", "add", name, "--provider", "microsoft", "--tenant", tenant,
            "--client-id", s["client_id"], "--authorize-url", s["authorize_url"],
            "--token-url", s["token_url"], "--device-url", s["device_url"],
            "--issuer", s["issuer"], "--secret-stdin"]


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
