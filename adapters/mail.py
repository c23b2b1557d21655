"""Mailbox probes: connect the way a mail client does and say whether this token can read or send.

IMAP: CAPABILITY, AUTHENTICATE (with SASL-IR when offered), then SELECT INBOX: a login that cannot
select is not a success (Exchange can accept a token for the wrong mailbox). POP3: the two-step
AUTH exchange by hand (poplib takes a `+ challenge` error for success), then STAT. SMTP: EHLO,
STARTTLS, EHLO, AUTH, and optionally a short message to the mailbox itself. Graph: the inbox folder.
XOAUTH2 and OAUTHBEARER; an error challenge is decoded and answered as the mechanism requires.
Tokens are sent, never logged or kept in a result.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from typing import Any

from adapters import sasl
from domain.mail_verdicts import NETWORK, OK, PROTOCOL, TEMPORARY, TLS, decode_challenge, judge_refusal
from domain.secret_value import SecretValue

# RFC 5321 section 4.5.3.1.4: a command line, CRLF included, is at most 512 octets; servers hold
# AUTH to less than RFC 4954's 12288 (Dovecot 2.3's submission: 1026 octets of parameters), so a
# longer initial response goes after the server's 334.
SMTP_COMMAND_LINE = 512


@dataclass(frozen=True)
class Target:
    protocol: str
    host: str
    port: int
    tls: str  # implicit | starttls | plain
    mechanism: str  # xoauth2 | oauthbearer
    user: str  # who logs in (SASL): the grant's login
    timeout: float = 20.0
    provider: str = "custom"  # whose advice a refusal gets (domain/mail_verdicts.py)
    mailbox: str | None = None  # the address mail is sent from, where not `user`

    @property
    def sender(self) -> str:
        return self.mailbox or self.user


@dataclass
class ProbeResult:
    protocol: str
    outcome: str
    latency_ms: int | None = None
    greeting: str | None = None
    diagnosis: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    checklist: tuple[str, ...] = ()
    server_reply: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "outcome": self.outcome,
                "latency_ms": self.latency_ms, "greeting": self.greeting,
                "diagnosis": self.diagnosis, "detail": self.detail,
                "checklist": list(self.checklist), "server_reply": self.server_reply}


class _Refused(Exception):
    def __init__(self, reply: str, challenge: dict[str, str] | None) -> None:
        super().__init__(reply)
        self.reply = reply
        self.challenge = challenge


class _Unexpected(Exception):
    pass


def _initial_response(target: Target, token: SecretValue) -> str:
    return sasl.initial_response(target.mechanism, target.user, token.reveal(), target.host,
                                 target.port)


class _Line:
    """A line-oriented connection; TLS on connect, or upgraded with STARTTLS."""

    def __init__(self, target: Target, context: ssl.SSLContext | None) -> None:
        self.target = target
        self.context = context
        raw = socket.create_connection((target.host, target.port), timeout=target.timeout)
        self.sock: socket.socket = raw
        if target.tls == "implicit":
            self.upgrade()
        self.buffer = b""

    def upgrade(self) -> None:
        assert self.context is not None
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.target.host)

    def readline(self) -> str:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise _Unexpected("the server closed the connection")
            self.buffer += chunk
            if len(self.buffer) > 65536:
                raise _Unexpected("an answer line longer than 64 KiB")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def probe(target: Target, token: SecretValue, context: ssl.SSLContext | None,
          send_test: bool = False, message: EmailMessage | None = None) -> ProbeResult:
    """Probe one protocol; never raises for what the server or network does. SMTP sends
    `message` (or, with `send_test`, a short test message to the mailbox itself)."""
    if send_test and message is None and target.protocol == "smtp":
        message = test_message(target.sender)
    started = time.monotonic()
    result = ProbeResult(target.protocol, OK)
    conn: _Line | None = None
    try:
        conn = _Line(target, context if target.tls != "plain" else None)
        talk = {"imap": _imap, "pop": _pop, "smtp": _smtp}[target.protocol]
        talk(conn, target, token, result, message)
    except _Refused as refused:
        verdict = judge_refusal(target.protocol, refused.reply, refused.challenge,
                                target.provider)
        result.outcome, result.diagnosis = verdict.outcome, verdict.diagnosis
        result.checklist, result.server_reply = verdict.checklist, refused.reply
    except ssl.SSLCertVerificationError as e:
        result.outcome = TLS
        result.diagnosis = (f"the server's certificate is not trusted ({e.verify_message}): "
                            "for a private CA give --ca-file (or VAULT_CA_FILE)")
    except ssl.SSLError as e:
        result.outcome, result.diagnosis = TLS, f"TLS failed: {e.reason or e}"
    except TimeoutError:
        result.outcome, result.diagnosis = NETWORK, f"no answer within {target.timeout:.0f} s"
    except OSError as e:
        result.outcome = NETWORK
        result.diagnosis = f"cannot connect to {target.host}:{target.port}: {e.strerror or e}"
    except _Unexpected as e:
        result.outcome, result.diagnosis = PROTOCOL, f"unexpected answer: {e}"
    finally:
        if conn is not None:
            conn.close()
    result.latency_ms = round((time.monotonic() - started) * 1000)
    return result


def _expect(line: str, *prefixes: str) -> str:
    if not line.startswith(prefixes):
        raise _Unexpected(line[:200])
    return line


# -- IMAP ----------------------------------------------------------------------------------------


def _imap_command(conn: _Line, tag: str, command: str) -> tuple[list[str], str]:
    conn.send(f"{tag} {command}")
    untagged = []
    while True:
        line = conn.readline()
        if line.startswith(f"{tag} "):
            return untagged, line
        untagged.append(line)


def _imap_capabilities(conn: _Line, tag: str) -> set[str]:
    untagged, done = _imap_command(conn, tag, "CAPABILITY")
    _expect(done, f"{tag} OK")
    caps: set[str] = set()
    for line in untagged:
        if line.upper().startswith("* CAPABILITY"):
            caps.update(line.split()[2:])
    return {c.upper() for c in caps}


def _imap(conn: _Line, target: Target, token: SecretValue, result: ProbeResult,
          message: EmailMessage | None) -> None:
    result.greeting = _expect(conn.readline(), "* OK", "* PREAUTH")[:200]
    caps = _imap_capabilities(conn, "v1")
    if target.tls == "starttls":
        _, done = _imap_command(conn, "v2", "STARTTLS")
        _expect(done, "v2 OK")
        conn.upgrade()
        caps = _imap_capabilities(conn, "v3")
    mechanism = target.mechanism.upper()
    if f"AUTH={mechanism}" not in caps:
        raise _Unexpected(f"the server does not offer AUTH={mechanism} (it offers: "
                          f"{' '.join(sorted(c for c in caps if c.startswith('AUTH=')))})")
    response = _initial_response(target, token)
    if "SASL-IR" in caps:
        conn.send(f"v4 AUTHENTICATE {mechanism} {response}")
    else:
        conn.send(f"v4 AUTHENTICATE {mechanism}")
        _expect(conn.readline(), "+")
        conn.send(response)
    line = conn.readline()
    challenge = None
    if line.startswith("+"):
        challenge = decode_challenge(line[1:])
        conn.send(sasl.abort_answer(target.mechanism))
        line = conn.readline()
    while line.startswith("*"):
        line = conn.readline()
    if not line.startswith("v4 OK"):
        raise _Refused(line[:300], challenge)
    untagged, done = _imap_command(conn, "v5", "SELECT INBOX")
    if not done.startswith("v5 OK"):
        raise _Unexpected(f"the login succeeded but INBOX cannot be selected: {done[:200]} "
                          "(Exchange: the token may be for another mailbox than user=)")
    for line in untagged:
        parts = line.split()
        if len(parts) == 3 and parts[2].upper() == "EXISTS":
            result.detail["messages"] = int(parts[1])
    conn.send("v6 LOGOUT")


# -- POP3 ----------------------------------------------------------------------------------------


def _pop(conn: _Line, target: Target, token: SecretValue, result: ProbeResult,
         message: EmailMessage | None) -> None:
    result.greeting = _expect(conn.readline(), "+OK")[:200]
    if target.tls == "starttls":
        conn.send("STLS")
        _expect(conn.readline(), "+OK")
        conn.upgrade()
    conn.send(f"AUTH {target.mechanism.upper()}")
    _expect(conn.readline(), "+")  # Exchange wants the two steps; so does everyone else
    conn.send(_initial_response(target, token))
    line = conn.readline()
    challenge = None
    if line.startswith("+ ") and len(line) > 2:
        challenge = decode_challenge(line[2:])
        conn.send(sasl.abort_answer(target.mechanism))
        line = conn.readline()
    if not line.startswith("+OK"):
        raise _Refused(line[:300], challenge)
    conn.send("STAT")
    stat = _expect(conn.readline(), "+OK").split()
    if len(stat) >= 3:
        result.detail["messages"] = int(stat[1])
    conn.send("QUIT")


# -- SMTP ----------------------------------------------------------------------------------------


def _smtp_reply(conn: _Line) -> tuple[int, list[str]]:
    lines = []
    while True:
        line = conn.readline()
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            break
    try:
        return int(lines[-1][:3]), lines
    except ValueError:
        raise _Unexpected(lines[-1][:200]) from None


def _smtp_ok(conn: _Line, command: str | None, *codes: int) -> list[str]:
    if command is not None:
        conn.send(command)
    code, lines = _smtp_reply(conn)
    if code not in codes:
        raise _Unexpected(lines[-1][:200])
    return lines


def test_message(mailbox: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = message["To"] = mailbox
    message["Subject"] = "vault probe: test message"
    message.set_content("This message was sent by `vault probe --send-test` to check that "
                        "this mailbox can send mail with its OAuth grant.\n")
    return message


def _smtp(conn: _Line, target: Target, token: SecretValue, result: ProbeResult,
          message: EmailMessage | None) -> None:
    result.greeting = _smtp_ok(conn, None, 220)[-1][:200]
    lines = _smtp_ok(conn, "EHLO vault-probe.localhost", 250)
    if target.tls == "starttls":
        _smtp_ok(conn, "STARTTLS", 220)
        conn.upgrade()
        lines = _smtp_ok(conn, "EHLO vault-probe.localhost", 250)
    offered = " ".join(line[4:].upper() for line in lines if line[4:].upper().startswith("AUTH"))
    mechanism = target.mechanism.upper()
    if mechanism not in offered.split():
        raise _Unexpected(f"the server does not offer AUTH {mechanism} ({offered or 'no AUTH'})")
    response = _initial_response(target, token)
    if len(f"AUTH {mechanism} {response}\r\n") <= SMTP_COMMAND_LINE:
        conn.send(f"AUTH {mechanism} {response}")
    else:  # e.g. a JWT: sent after the server's empty challenge (RFC 4954 section 4)
        conn.send(f"AUTH {mechanism}")
        code, reply = _smtp_reply(conn)
        if code != 334:
            raise _Refused(reply[-1][:300], None)
        conn.send(response)
    code, reply = _smtp_reply(conn)
    challenge = None
    if code == 334:
        challenge = decode_challenge(reply[-1][4:])
        conn.send(sasl.abort_answer(target.mechanism))
        code, reply = _smtp_reply(conn)
    if code != 235:
        raise _Refused(reply[-1][:300], challenge)
    if message is not None:
        if "Date" not in message:
            message["Date"] = formatdate(usegmt=True)
        if "Message-ID" not in message:
            message["Message-ID"] = make_msgid(domain="vault.localhost")
        recipients = [address for _, address in getaddresses([str(message["To"])]) if address]
        _smtp_ok(conn, f"MAIL FROM:<{target.sender}>", 250)
        for address in recipients:
            _smtp_ok(conn, f"RCPT TO:<{address}>", 250, 251)
        _smtp_ok(conn, "DATA", 354)
        body = message.as_string().replace("\r\n", "\n").split("\n")
        for line in body:
            conn.send("." + line if line.startswith(".") else line)
        accepted = _smtp_ok(conn, ".", 250)
        result.detail["test_message"] = message["Message-ID"]
        result.detail["accepted"] = accepted[-1][:200]
    conn.send("QUIT")


# -- Graph ---------------------------------------------------------------------------------------


def probe_graph(http: Any, base_url: str, user: str, token: SecretValue,
                app_only: bool) -> ProbeResult:
    """GET the inbox folder: /me/... with a delegated token, /users/{mailbox}/... app-only."""
    import httpx

    path = f"/v1.0/users/{user}/mailFolders/inbox" if app_only else "/v1.0/me/mailFolders/inbox"
    started = time.monotonic()
    result = ProbeResult("graph", OK, greeting=base_url)
    try:
        response = http.get(base_url.rstrip("/") + path,
                            headers={"Authorization": f"Bearer {token.reveal()}"})
    except httpx.ConnectError as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, ssl.SSLError) or "CERTIFICATE" in str(e).upper():
            result.outcome = TLS
            result.diagnosis = ("the server's certificate is not trusted: for a private CA give "
                                "--ca-file (or VAULT_CA_FILE)")
        else:
            result.outcome, result.diagnosis = NETWORK, f"cannot connect to {base_url}"
    except httpx.TransportError as e:
        result.outcome, result.diagnosis = NETWORK, f"{base_url}: {type(e).__name__}"
    else:
        result.server_reply = f"HTTP {response.status_code}"
        if response.status_code == 200:
            body = response.json()
            result.detail = {"messages": body.get("totalItemCount"),
                             "unread": body.get("unreadItemCount")}
        elif response.status_code in (429, 500, 502, 503, 504):
            result.outcome, result.diagnosis = TEMPORARY, (
                f"Graph answered HTTP {response.status_code}: try again later")
        else:
            try:
                error = response.json().get("error", {})
            except ValueError:
                error = {}
            code = error.get("code", f"HTTP {response.status_code}")
            verdict = judge_refusal("graph", f"{response.status_code} {code}", None, "microsoft")
            result.outcome = verdict.outcome
            result.diagnosis = (f"Graph refused the token ({code}: {error.get('message', '')}"
                                ")" + ("; app-only access needs Mail.Read application "
                                       "permission and an access policy for the mailbox"
                                       if app_only else "; the token must be for Microsoft "
                                       "Graph (Mail.ReadWrite), not Outlook"))
    result.latency_ms = round((time.monotonic() - started) * 1000)
    return result
