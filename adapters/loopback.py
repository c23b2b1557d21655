"""A one-shot loopback redirect listener for the browser consent flow (RFC 8252).

Listens on 127.0.0.1 only, answers the single redirect with a clear page, ignores anything else
(favicon, a second tab), and gives up after a timeout.
"""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from adapters.errors import AdapterError
from domain.errors import InvalidInput

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;color:#222}}
h1{{font-size:1.4em}}</style></head><body><h1>{title}</h1><p>{text}</p></body></html>"""


@dataclass(frozen=True)
class Redirect:
    """What the authorization server sent back: code and state, or an error."""

    query: dict[str, str]

    @property
    def code(self) -> str | None:
        return self.query.get("code")

    @property
    def state(self) -> str | None:
        return self.query.get("state")

    @property
    def error(self) -> str | None:
        return self.query.get("error")


def parse_redirect(url: str) -> Redirect:
    """A redirect URL pasted by the admin (manual flow) or received by the listener."""
    try:
        parts = urlsplit(url.strip())
    except ValueError as e:  # "Invalid IPv6 URL": a '[' without its ']'
        raise InvalidInput(f"the pasted address is not a valid URL ({e}): paste the whole "
                           "address the browser was sent to") from None
    query = {k: v[0] for k, v in parse_qs(parts.query).items() if v}
    return Redirect(query)


class LoopbackListener:
    """Binds 127.0.0.1; `host_name` is how the redirect URI names it (as registered)."""

    def __init__(self, path: str = "/callback", port: int = 0,
                 host_name: str = "127.0.0.1") -> None:
        self.path = path
        self.host_name = host_name
        self._result: Redirect | None = None
        self._received = threading.Event()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != listener.path or listener._received.is_set():
                    self.send_error(404)
                    return
                redirect = parse_redirect(self.path)
                if redirect.error:
                    title = "Consent was not given"
                    text = (f"The provider answered {html.escape(redirect.error)}. "
                            "You can close this tab; vault shows what to do.")
                else:
                    title = "Consent received"
                    text = "vault has the authorization. You can close this tab."
                body = PAGE.format(title=title, text=text).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)
                listener._result = redirect
                listener._received.set()

            def log_message(self, format: str, *args: object) -> None:
                """Silent: the query string holds the authorization code."""

        try:
            self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError as e:  # the registered redirect URI's port is taken
            raise AdapterError(f"cannot listen for the redirect on 127.0.0.1:{port} "
                               f"({e.strerror}): another program uses that port; stop it, or "
                               "register another redirect URI (http://localhost without a "
                               "port lets vault pick one)") from None
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def redirect_uri(self) -> str:
        return f"http://{self.host_name}:{self.port}{self.path}"

    def wait(self, timeout: float) -> Redirect | None:
        """The redirect, or None when nobody came back within `timeout` seconds."""
        self._received.wait(timeout)
        return self._result

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> LoopbackListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
