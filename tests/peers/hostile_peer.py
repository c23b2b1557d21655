"""A provider and a mail server whose every free-text answer carries terminal control sequences,
on loopback: what vault must show, never send to a terminal.

HTTP (OAuth, as a custom provider): /token issues tokens for GOOD_REFRESH_TOKEN and to client
credentials (an access token, token_type and scope full of escapes) and refuses anything else
with an error JSON whose error word, description, trace id and correlation id are full of
escapes; /devicecode hands out such a user code, verification URI and message; /revoke refuses
like /token.
Mail (no TLS: `--tls plain`): IMAP greets with escapes and refuses AUTHENTICATE with an error
challenge and a NO line full of them; SMTP does the same for every user but those in
`senders`, whose messages it accepts (kept in `messages`) with an escape-laden 250.
"""

from __future__ import annotations

import base64
import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

# ESC [ 2J (clear the screen), OSC 52 (write the clipboard) ended by BEL, a carriage return and
# a line feed (rewrite or forge a line), the 8-bit CSI (U+009B), a right-to-left override
# (U+202E), DEL
HOSTILE = "\x1b[2J\x1b]52;c;ZXZpbA==\x07\r\n\x9b31m\u202eevil\x7f"
# for line protocols: the same without the line break that ends an IMAP or SMTP line
HOSTILE_LINE = HOSTILE.replace("\r\n", "\r")
GOOD_REFRESH_TOKEN = "rt-good-0123456789abcdef"
ACCESS_TOKEN = "at-hostile." + HOSTILE


def _b64json(value: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def error_body(word: str) -> dict[str, Any]:
    return {"error": word + HOSTILE, "error_description": "refused" + HOSTILE,
            "error_codes": [], "trace_id": "trace" + HOSTILE,
            "correlation_id": "correlation" + HOSTILE}


CHALLENGE = {"status": "invalid_token" + HOSTILE, "scope": "mail" + HOSTILE,
             "schemes": "bearer"}


class _OAuthHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        self.server.requests.append((self.path, form.get("grant_type")))  # type: ignore[attr-defined]
        if self.path == "/token" and (form.get("refresh_token") == GOOD_REFRESH_TOKEN
                                      or form.get("grant_type") == "client_credentials"):
            self._json(200, {"access_token": ACCESS_TOKEN, "token_type": "Bearer" + HOSTILE,
                             "scope": "offline_access mail" + HOSTILE, "expires_in": 3600,
                             "refresh_token": GOOD_REFRESH_TOKEN})
        elif self.path == "/devicecode":
            self._json(200, {"device_code": "dc-1", "user_code": "CODE" + HOSTILE,
                             "verification_uri": "https://example.test/device" + HOSTILE,
                             "expires_in": 60, "interval": 1, "message": "go" + HOSTILE})
        elif self.path in ("/token", "/revoke"):
            self._json(400, error_body("access_denied" if "device" in form.get(
                "grant_type", "") else "invalid_grant"))
        else:
            self._json(404, error_body("not_found"))


class _MailHandler(socketserver.StreamRequestHandler):
    def send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def line(self) -> str:
        return self.rfile.readline().decode("utf-8", "replace").rstrip("\r\n")

    def handle(self) -> None:
        if self.server.protocol == "imap":  # type: ignore[attr-defined]
            self.imap()
        else:
            self.smtp()

    def imap(self) -> None:
        self.send("* OK hostile IMAP " + HOSTILE_LINE)
        while line := self.line():
            tag, _, command = line.partition(" ")
            verb = command.split(" ")[0].upper()
            if verb == "CAPABILITY":
                self.send("* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 AUTH=OAUTHBEARER SASL-IR")
                self.send(f"{tag} OK done")
            elif verb == "AUTHENTICATE":
                self.send("+ " + _b64json(CHALLENGE))
                self.line()  # the client's abort
                self.send(f"{tag} NO [AUTHENTICATIONFAILED] refused " + HOSTILE_LINE)
            elif verb == "LOGOUT":
                self.send("* BYE")
                self.send(f"{tag} OK bye")
                return
            else:
                self.send(f"{tag} BAD " + HOSTILE_LINE)

    def smtp(self) -> None:
        senders: set[str] = self.server.senders  # type: ignore[attr-defined]
        self.send("220 hostile ESMTP " + HOSTILE_LINE)
        while line := self.line():
            verb = line.split(" ")[0].upper()
            if verb == "EHLO":
                self.send("250-hostile " + HOSTILE_LINE)
                self.send("250 AUTH XOAUTH2 OAUTHBEARER")
            elif verb == "AUTH":
                response = base64.b64decode(line.split(" ")[2]).decode("utf-8", "replace")
                user = response.split("\x01")[0].removeprefix("user=").removeprefix("n,a=")
                if user.rstrip(",") in senders:
                    self.send("235 2.7.0 accepted")
                    continue
                self.send("334 " + _b64json(CHALLENGE))
                self.line()
                self.send("535 5.7.8 refused " + HOSTILE_LINE)
            elif verb in ("MAIL", "RCPT"):
                self.send("250 2.1.0 ok")
            elif verb == "DATA":
                self.send("354 go ahead")
                lines = []
                while (data := self.line()) != ".":
                    lines.append(data[1:] if data.startswith(".") else data)
                self.server.messages.append("\n".join(lines))  # type: ignore[attr-defined]
                self.send("250 2.0.0 queued " + HOSTILE_LINE)
            elif verb == "QUIT":
                self.send("221 bye")
                return
            else:
                self.send("502 " + HOSTILE_LINE)


class _MailServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class HostilePeer:
    def __init__(self, senders: tuple[str, ...] = ()) -> None:
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _OAuthHandler)
        self.http.requests = []  # type: ignore[attr-defined]
        self.imap = _MailServer(("127.0.0.1", 0), _MailHandler)
        self.imap.protocol = "imap"  # type: ignore[attr-defined]
        self.smtp = _MailServer(("127.0.0.1", 0), _MailHandler)
        self.smtp.protocol = "smtp"  # type: ignore[attr-defined]
        self.smtp.senders = set(senders)  # type: ignore[attr-defined]
        self.smtp.messages = []  # type: ignore[attr-defined]
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True)
                        for s in (self.http, self.imap, self.smtp)]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http.server_port}{path}"

    @property
    def imap_port(self) -> int:
        return self.imap.server_address[1]

    @property
    def smtp_port(self) -> int:
        return self.smtp.server_address[1]

    @property
    def messages(self) -> list[str]:
        return self.smtp.messages  # type: ignore[attr-defined]

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        return self.http.requests  # type: ignore[attr-defined]

    def start(self) -> HostilePeer:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in (self.http, self.imap, self.smtp):
            server.shutdown()
            server.server_close()
