"""The Dovecot test peer answers like a real mail server: bearer tokens from the OIDC peer's code flow
are checked by introspection, over implicit TLS and STARTTLS, with the standard library as client."""

from __future__ import annotations

import base64
import contextlib
import imaplib
import json
import poplib
import re
import shutil
import smtplib
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.peers.dovecot_peer import (
    DovecotPeer,
    MailSink,
    TestCA,
    ensure_dovecot_installed,
    seed_message,
)
from tests.peers.oidc_peer import REDIRECT_URI, USERS, OidcPeer, client_auth, make_pkce

pytestmark = pytest.mark.peers

ALICE = "alice@example.test"
BOB = "bob@example.test"
CLIENT = "vault-basic"
MAIL = "openid offline_access mail.imap mail.smtp mail.pop"

# What Dovecot 2.3.19 sends, byte for byte.
IMAP_CAPS = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+"
IMAP_GREETING = (f"* OK [CAPABILITY {IMAP_CAPS} LOGINDISABLED AUTH=XOAUTH2 AUTH=OAUTHBEARER] "
                 "Dovecot (Debian) ready.")
IMAP_PLAIN_GREETING = (f"* OK [CAPABILITY {IMAP_CAPS} STARTTLS LOGINDISABLED AUTH=XOAUTH2 AUTH=OAUTHBEARER] "
                       "Dovecot (Debian) ready.")
POP3_GREETING = "+OK Dovecot (Debian) ready."
SMTP_GREETING = "220 localhost Dovecot (Debian) ready."
EHLO_TLS = ["250-localhost", "250-8BITMIME", "250-AUTH XOAUTH2 OAUTHBEARER", "250-BURL imap", "250-CHUNKING",
            "250-ENHANCEDSTATUSCODES", "250-SIZE", "250 PIPELINING"]
XOAUTH2_CHALLENGE = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0="
OAUTHBEARER_CHALLENGE = "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0="
# What the client answers to the error challenge.
ACK = {"XOAUTH2": "", "OAUTHBEARER": base64.b64encode(b"\x01").decode()}  # "" / "AQ=="
FINAL_FAILURE = {
    "imap": "a1 NO [AUTHENTICATIONFAILED] Authentication failed.",
    "pop3": "-ERR [AUTH] Authentication failed.",
    "submission": "535 5.7.8 Authentication failed.",
}
# The bracketed part is "[<system hostname>:<local time>]".
TEMP_FAILURE = {
    "imap": re.compile(r"a1 NO \[UNAVAILABLE\] Temporary authentication failure\. \[[^\]]+\]"),
    "pop3": re.compile(r"-ERR \[SYS/TEMP\] Temporary authentication failure\. \[[^\]]+\]"),
    "submission": re.compile(r"454 4\.7\.0 Temporary authentication failure\. \[[^\]]+\]"),
}


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oidc() -> Iterator[OidcPeer]:
    server = OidcPeer.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("test-ca"))


@pytest.fixture(scope="module")
def sink() -> Iterator[MailSink]:
    with MailSink() as server:
        yield server


@pytest.fixture(scope="module")
def dovecot(oidc: OidcPeer, ca: TestCA, sink: MailSink) -> Iterator[DovecotPeer]:
    ensure_dovecot_installed()
    assert sink.port is not None
    with DovecotPeer.start(introspection_url=oidc.introspection_url, ca=ca, relay_port=sink.port) as server:
        yield server


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture(scope="module")
def dovecot_down(ca: TestCA, sink: MailSink) -> Iterator[DovecotPeer]:
    """The authorization server is down: introspection hits a port nobody listens on."""
    ensure_dovecot_installed()
    assert sink.port is not None
    url = f"http://127.0.0.1:{dead_port()}/token/introspection"
    with DovecotPeer.start(introspection_url=url, ca=ca, relay_port=sink.port) as server:
        yield server


@pytest.fixture
def tls(ca: TestCA) -> ssl.SSLContext:
    return ca.client_context()


# --- tokens and SASL ---------------------------------------------------------------------------------


def fetch_tokens(oidc: OidcPeer, user: str, scope: str = MAIL) -> dict:
    """Authorization code + PKCE with the confidential client vault-basic, as `user`."""
    verifier, challenge = make_pkce()
    url = oidc.build_authorize_url(CLIENT, scope, "st", challenge, prompt="consent")
    redirect = oidc.complete_authorization(url, user, USERS[user])
    code = parse_qs(urlsplit(redirect).query)["code"][0]
    resp = oidc.http.post(oidc.token_url, **client_auth(CLIENT, {
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": REDIRECT_URI}))
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert set(tokens["scope"].split()) == set(scope.split())
    return tokens


def access_token(oidc: OidcPeer, user: str = ALICE, scope: str = MAIL) -> str:
    return fetch_tokens(oidc, user, scope)["access_token"]


def xoauth2(user: str, token: str) -> bytes:
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer(user: str, token: str, host: str, port: int) -> bytes:
    return f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()


def sasl(mech: str, user: str, token: str, port: int) -> bytes:
    return xoauth2(user, token) if mech == "XOAUTH2" else oauthbearer(user, token, "127.0.0.1", port)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def imaplib_responder(mech: str, initial: bytes) -> Callable[[bytes], bytes]:
    """imaplib authobject: the initial response to the empty "+ " continuation, then the ack to an
    error challenge (imaplib sends no SASL-IR and would otherwise repeat whatever it returns)."""
    def respond(challenge: bytes) -> bytes:
        if not challenge:
            return initial
        return b"" if mech == "XOAUTH2" else b"\x01"
    return respond


# --- a line client that records the conversation -----------------------------------------------------


class Wire:
    """CRLF lines over TLS; `transcript` holds ("C", line) / ("S", line) exactly as exchanged."""

    def __init__(self, port: int, context: ssl.SSLContext, host: str = "127.0.0.1") -> None:
        raw = socket.create_connection((host, port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname=host)
        self.file = self.sock.makefile("rwb")
        self.transcript: list[tuple[str, str]] = []

    def send(self, line: str) -> None:
        self.transcript.append(("C", line))
        self.file.write(line.encode("ascii") + b"\r\n")
        self.file.flush()

    def read(self) -> str:
        raw = self.file.readline()
        assert raw.endswith(b"\r\n"), f"connection closed or partial line: {raw!r}"
        line = raw[:-2].decode("utf-8")
        self.transcript.append(("S", line))
        return line

    def read_smtp(self) -> list[str]:
        """One SMTP reply: lines up to the one whose 4th character is a space."""
        lines = [self.read()]
        while lines[-1][3:4] == "-":
            lines.append(self.read())
        return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def refused_exchange(port: int, context: ssl.SSLContext, protocol: str, mech: str,
                     user: str, token: str) -> tuple[list[tuple[str, str]], str]:
    """Authenticate with a token the server refuses; return (transcript from the AUTH command on,
    initial response sent). Follows the protocol: error challenge, client ack, final answer."""
    wire = Wire(port, context)
    try:
        ir = b64(sasl(mech, user, token, port))
        if protocol == "imap":
            assert wire.read() == IMAP_GREETING
            start = len(wire.transcript)
            wire.send(f"a1 AUTHENTICATE {mech} {ir}")  # SASL-IR
        elif protocol == "pop3":
            assert wire.read() == POP3_GREETING
            start = len(wire.transcript)
            wire.send(f"AUTH {mech}")  # two steps, as Exchange needs
            assert wire.read() == "+ "
            wire.send(ir)
        else:
            assert wire.read_smtp() == [SMTP_GREETING]
            wire.send("EHLO client.test")
            assert wire.read_smtp() == EHLO_TLS
            start = len(wire.transcript)
            wire.send(f"AUTH {mech} {ir}")
        wire.read()  # the error challenge
        wire.send(ACK[mech])
        wire.read()
        return wire.transcript[start:], ir
    finally:
        wire.close()


def challenge_line(protocol: str, mech: str) -> str:
    payload = XOAUTH2_CHALLENGE if mech == "XOAUTH2" else OAUTHBEARER_CHALLENGE
    return f"334 {payload}" if protocol == "submission" else f"+ {payload}"


def wait_for_log(peer: DovecotPeer, offset: int, needle: str, timeout: float = 3.0) -> str:
    """Dovecot's log written after `offset` once it contains needle (the log process writes
    asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        text = peer.log_text()[offset:]
        if needle in text or time.monotonic() > deadline:
            assert needle in text, f"{needle!r} not in the Dovecot log:\n{text}"
            return text
        time.sleep(0.02)


# --- IMAP --------------------------------------------------------------------------------------------


def imap_connect(dovecot: DovecotPeer, mode: str, context: ssl.SSLContext) -> imaplib.IMAP4:
    if mode == "implicit":
        return imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=context, timeout=10)
    imap = imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=10)
    assert "STARTTLS" in imap.capabilities
    typ, _ = imap.starttls(ssl_context=context)
    assert typ == "OK"
    assert "STARTTLS" not in imap.capabilities
    return imap


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
@pytest.mark.parametrize("mech", ["XOAUTH2", "OAUTHBEARER"])
def test_imap_authenticate_and_select_inbox(dovecot: DovecotPeer, oidc: OidcPeer, tls: ssl.SSLContext,
                                            mode: str, mech: str) -> None:
    token = access_token(oidc)
    port = dovecot.imaps_port if mode == "implicit" else dovecot.imap_port
    imap = imap_connect(dovecot, mode, tls)
    try:
        assert f"AUTH={mech}" in imap.capabilities and "SASL-IR" in imap.capabilities
        typ, data = imap.authenticate(mech, imaplib_responder(mech, sasl(mech, ALICE, token, port)))
        assert (typ, data) == ("OK", [b"Logged in"])
        typ, data = imap.select("INBOX")
        assert (typ, data) == ("OK", [b"2"])  # the two seeded messages
        typ, data = imap.fetch("1:2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        subjects = [part[1].strip() for part in data if isinstance(part, tuple)]
        assert subjects == [b"Subject: Seeded message 1", b"Subject: Seeded message 2"]
    finally:
        imap.logout()


def test_imap_greetings_on_both_listeners(dovecot: DovecotPeer, tls: ssl.SSLContext) -> None:
    with socket.create_connection((dovecot.host, dovecot.imap_port), timeout=10) as plain:
        greeting = plain.makefile("rb").readline().decode().rstrip("\r\n")
    # Loopback counts as a secured connection for Dovecot: AUTH= is offered before STARTTLS too.
    assert greeting == IMAP_PLAIN_GREETING
    wire = Wire(dovecot.imaps_port, tls)
    assert wire.read() == IMAP_GREETING
    wire.close()


# --- POP3 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["implicit", "stls"])
def test_pop3_two_step_xoauth2_and_stat(dovecot: DovecotPeer, oidc: OidcPeer, tls: ssl.SSLContext,
                                        mode: str) -> None:
    token = access_token(oidc)
    if mode == "implicit":
        pop = poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=tls, timeout=10)
    else:
        pop = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
        assert "STLS" in pop.capa()
        assert pop.stls(context=tls) == b"+OK Begin TLS negotiation now."
    try:
        assert pop.getwelcome() == POP3_GREETING.encode()
        assert pop.capa()["SASL"] == ["XOAUTH2", "OAUTHBEARER"]
        # By hand: poplib would take a "+ <error challenge>" for success.
        assert pop._shortcmd("AUTH XOAUTH2") == b"+ "
        assert pop._shortcmd(b64(xoauth2(ALICE, token))) == b"+OK Logged in."
        count, size = pop.stat()
        assert count == 2
        assert size == sum(len(seed_message(ALICE, n)) for n in (1, 2))
    finally:
        pop.quit()


# --- submission --------------------------------------------------------------------------------------


def test_submission_starttls_xoauth2_relays_to_the_sink(dovecot: DovecotPeer, oidc: OidcPeer,
                                                        tls: ssl.SSLContext, sink: MailSink) -> None:
    token = access_token(oidc)
    sink.clear()
    with smtplib.SMTP(dovecot.host, dovecot.submission_port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("starttls")
        assert smtp.starttls(context=tls)[0] == 220
        smtp.ehlo("client.test")
        assert not smtp.has_extn("starttls")
        assert smtp.esmtp_features["auth"].split() == ["XOAUTH2", "OAUTHBEARER"]
        assert smtp.docmd("AUTH", "XOAUTH2 " + b64(xoauth2(ALICE, token))) == (235, b"2.7.0 Logged in.")
        assert smtp.mail(ALICE) == (250, b"2.1.0 OK")
        assert smtp.rcpt("carol@example.net") == (250, b"2.0.0 OK")
        # Dovecot answers DATA with what the relay (the sink) answered
        assert smtp.data(b"From: alice@example.test\r\nTo: carol@example.net\r\n"
                         b"Subject: relayed\r\n\r\nHello through Dovecot.\r\n") == (
            250, b"2.0.0 Message accepted for delivery")
    [message] = sink.wait_for(1)
    assert message.mail_from == ALICE
    assert message.rcpt_tos == ("carol@example.net",)
    assert message.content.startswith(
        b"Received: from client.test ([127.0.0.1])\r\n\tby localhost with ESMTPSA")
    assert b"\r\nSubject: relayed\r\n\r\nHello through Dovecot.\r\n" in message.content


def test_submissions_implicit_tls_oauthbearer(dovecot: DovecotPeer, oidc: OidcPeer, tls: ssl.SSLContext,
                                              sink: MailSink) -> None:
    token = access_token(oidc)
    sink.clear()
    with smtplib.SMTP_SSL(dovecot.host, dovecot.submissions_port, context=tls, timeout=10) as smtp:
        smtp.ehlo("client.test")
        ir = b64(oauthbearer(ALICE, token, "127.0.0.1", dovecot.submissions_port))
        assert smtp.docmd("AUTH", f"OAUTHBEARER {ir}") == (235, b"2.7.0 Logged in.")
        smtp.sendmail(ALICE, [BOB], b"Subject: second\r\n\r\nbody\r\n")
    [message] = sink.wait_for(1)
    assert (message.mail_from, message.rcpt_tos) == (ALICE, (BOB,))


# --- refused tokens: the exact conversation ----------------------------------------------------------


@pytest.fixture(scope="module")
def refused_tokens(oidc: OidcPeer) -> dict[str, tuple[str, str, str]]:
    """case -> (user to present, token, reason Dovecot logs). Bob's tokens are spoiled here, so
    tests that need a working token use Alice's."""
    revoked = access_token(oidc, BOB)
    assert oidc.revoke_grants(BOB, client_id=CLIENT) >= 1
    expired = access_token(oidc, BOB)  # a new grant: untouched by the revocation above
    resp = oidc.http.post(f"{oidc.issuer}/test/expire-access-tokens",
                          params={"sub": BOB, "client_id": CLIENT})
    assert resp.status_code == 200 and resp.json() == {"expired_access_tokens": 1}, resp.text
    alices = access_token(oidc, ALICE)
    no_imap = access_token(oidc, ALICE, "openid offline_access mail.smtp mail.pop")

    assert oidc.introspect(revoked) == {"active": False}
    assert oidc.introspect(expired) == {"active": False}
    assert oidc.introspect(alices)["sub"] == ALICE
    info = oidc.introspect(no_imap)
    assert info["active"] is True and "mail.imap" not in info["scope"].split()
    not_active = "oauth2 failed: Introspection failed: Provided token is not valid"
    return {
        "expired": (BOB, expired, not_active),
        "revoked": (BOB, revoked, not_active),
        "alice_token_as_bob": (BOB, alices, f"Username '{BOB}' did not match '{ALICE}'"),
        "without_mail_imap": (ALICE, no_imap, "Token is not valid for scope 'mail.imap'"),
    }


EXCHANGES = [("imap", "XOAUTH2"), ("imap", "OAUTHBEARER"), ("pop3", "XOAUTH2"), ("pop3", "OAUTHBEARER"),
             ("submission", "XOAUTH2"), ("submission", "OAUTHBEARER")]


@pytest.mark.parametrize("case", ["expired", "revoked", "alice_token_as_bob", "without_mail_imap"])
@pytest.mark.parametrize(("protocol", "mech"), EXCHANGES)
def test_refused_token_error_challenge_then_failure(dovecot: DovecotPeer, tls: ssl.SSLContext,
                                                    refused_tokens: dict, case: str, protocol: str,
                                                    mech: str) -> None:
    user, token, reason = refused_tokens[case]
    port = {"imap": dovecot.imaps_port, "pop3": dovecot.pop3s_port,
            "submission": dovecot.submissions_port}[protocol]
    offset = len(dovecot.log_text())
    transcript, ir = refused_exchange(port, tls, protocol, mech, user, token)

    first = {"imap": [("C", f"a1 AUTHENTICATE {mech} {ir}")],
             "pop3": [("C", f"AUTH {mech}"), ("S", "+ "), ("C", ir)],
             "submission": [("C", f"AUTH {mech} {ir}")]}[protocol]
    assert transcript == [
        *first,
        ("S", challenge_line(protocol, mech)),
        ("C", ACK[mech]),
        ("S", FINAL_FAILURE[protocol]),
    ]
    challenge = json.loads(base64.b64decode(transcript[len(first)][1].split(" ", 1)[1]))
    expected = {"status": "401", "schemes": "bearer", "scope": "mail"} if mech == "XOAUTH2" else {
        "status": "invalid_token"}
    assert challenge == expected
    # the refusal is for the reason the case is about
    wait_for_log(dovecot, offset, reason)


def test_ack_variants_after_the_error_challenge(dovecot: DovecotPeer, tls: ssl.SSLContext) -> None:
    """Dovecot fails the exchange on any (valid base64) answer to the error challenge; `*` aborts."""
    for mech, ack, final in [
        ("XOAUTH2", "AQ==", "a1 NO [AUTHENTICATIONFAILED] Authentication failed."),
        ("OAUTHBEARER", "", "a1 NO [AUTHENTICATIONFAILED] Authentication failed."),
        ("XOAUTH2", "*", "a1 BAD Authentication aborted by client."),
        ("OAUTHBEARER", "*", "a1 BAD Authentication aborted by client."),
    ]:
        wire = Wire(dovecot.imaps_port, tls)
        try:
            wire.read()
            wire.send(f"a1 AUTHENTICATE {mech} {b64(sasl(mech, ALICE, 'not-a-token', dovecot.imaps_port))}")
            assert wire.read() == challenge_line("imap", mech)
            wire.send(ack)
            assert wire.read() == final, (mech, ack)
        finally:
            wire.close()


def test_failed_logins_answer_at_once(dovecot: DovecotPeer, tls: ssl.SSLContext) -> None:
    """No auth_failure_delay, no per-IP penalty, no 500 ms failure-queue flush: ten failures from the
    same IP on one connection take milliseconds (Dovecot's defaults: ~2 s to 15 s each)."""
    wire = Wire(dovecot.imaps_port, tls)
    try:
        wire.read()
        started = time.monotonic()
        for n in range(10):
            wire.send(f"a{n} AUTHENTICATE XOAUTH2 {b64(xoauth2(ALICE, f'bad-token-{n}'))}")
            assert wire.read() == challenge_line("imap", "XOAUTH2")
            wire.send("")
            assert wire.read() == f"a{n} NO [AUTHENTICATIONFAILED] Authentication failed."
        elapsed = time.monotonic() - started
    finally:
        wire.close()
    assert elapsed < 1.5, f"10 failed logins took {elapsed:.2f} s"


# --- authorization server down -----------------------------------------------------------------------


def test_authorization_server_down_is_a_temporary_failure(dovecot_down: DovecotPeer, oidc: OidcPeer,
                                                          tls: ssl.SSLContext) -> None:
    """No error challenge: the command fails at once with the protocol's temporary-failure code."""
    token = access_token(oidc)  # a perfectly valid token; Dovecot just cannot check it
    answers = {}
    for protocol, port in [("imap", dovecot_down.imaps_port), ("pop3", dovecot_down.pop3s_port),
                           ("submission", dovecot_down.submissions_port)]:
        wire = Wire(port, tls)
        try:
            ir = b64(xoauth2(ALICE, token))
            if protocol == "imap":
                wire.read()
                wire.send(f"a1 AUTHENTICATE XOAUTH2 {ir}")
            elif protocol == "pop3":
                wire.read()
                wire.send("AUTH XOAUTH2")
                assert wire.read() == "+ "
                wire.send(ir)
            else:
                wire.read_smtp()
                wire.send("EHLO client.test")
                wire.read_smtp()
                wire.send(f"AUTH XOAUTH2 {ir}")
            answers[protocol] = wire.read()
        finally:
            wire.close()
    for protocol, answer in answers.items():
        assert TEMP_FAILURE[protocol].fullmatch(answer), answer
    wait_for_log(dovecot_down, 0, "oauth2 failed: Introspection failed: connect(127.0.0.1:")
    assert "Connection refused" in dovecot_down.log_text()


def test_authorization_server_down_oauthbearer(dovecot_down: DovecotPeer, tls: ssl.SSLContext) -> None:
    wire = Wire(dovecot_down.imaps_port, tls)
    try:
        wire.read()
        wire.send(f"a1 AUTHENTICATE OAUTHBEARER {b64(oauthbearer(ALICE, 'tok', '127.0.0.1', 1))}")
        assert TEMP_FAILURE["imap"].fullmatch(wire.read())
    finally:
        wire.close()


# --- TLS trust ---------------------------------------------------------------------------------------


def test_tls_fails_unless_the_test_ca_is_trusted(dovecot: DovecotPeer) -> None:
    system_trust = ssl.create_default_context()  # the test CA is not in the system store
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=system_trust, timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=system_trust, timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        smtplib.SMTP_SSL(dovecot.host, dovecot.submissions_port, context=system_trust, timeout=10)
    imap = imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=10)
    try:
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            imap.starttls(ssl_context=system_trust)
    finally:
        with contextlib.suppress(OSError):  # the failed handshake closed the socket already
            imap.shutdown()


def test_certificate_names(dovecot: DovecotPeer, ca: TestCA) -> None:
    context = ca.client_context()
    for name in ("127.0.0.1", "localhost"):
        with socket.create_connection((dovecot.host, dovecot.imaps_port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=name) as sock:
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
    with socket.create_connection((dovecot.host, dovecot.imaps_port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        context.wrap_socket(raw, server_hostname="mail.example.test")


# --- the instance itself -----------------------------------------------------------------------------


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp) with a LISTEN socket on port."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


def test_start_failure_raises_with_the_log(tmp_path: Path, sink: MailSink) -> None:
    ensure_dovecot_installed()
    assert sink.port is not None
    broken = TestCA(tmp_path / "ca")
    broken.cert_chain_path.unlink()
    with pytest.raises(RuntimeError, match=r"(?s)dovecot exited with code \d+ while starting:.*ssl_cert"):
        DovecotPeer.start(introspection_url="http://127.0.0.1:1/", ca=broken, relay_port=sink.port)


def imap_login(peer: DovecotPeer, context: ssl.SSLContext, user: str, token: str) -> tuple[str, list]:
    with imaplib.IMAP4_SSL(peer.host, peer.imaps_port, ssl_context=context, timeout=10) as imap:
        try:
            imap.authenticate("XOAUTH2", imaplib_responder("XOAUTH2", xoauth2(user, token)))
        except imaplib.IMAP4.error as exc:
            return "NO", [str(exc)]
        return imap.select("INBOX")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory the mail user can reach (pytest's tmp_path sits under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="dovecot-peer-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_workdir_the_mail_user_cannot_reach_is_refused(tmp_path: Path, ca: TestCA, sink: MailSink) -> None:
    ensure_dovecot_installed()
    assert sink.port is not None
    with pytest.raises(ValueError, match=r"the mail user .* cannot traverse"):
        DovecotPeer.start(introspection_url="http://127.0.0.1:1/", ca=ca, relay_port=sink.port,
                          workdir=tmp_path)


def test_scope_setting_is_what_refuses_a_token_without_mail_imap(workdir: Path, oidc: OidcPeer,
                                                                 ca: TestCA, sink: MailSink) -> None:
    """Same token, same workdir: accepted with required_scope=None, refused with "mail.imap". Also:
    loopback-only listeners, stop() waits for every process, a restart in the same workdir works."""
    tmp_path = workdir
    ensure_dovecot_installed()
    assert sink.port is not None
    token = access_token(oidc, ALICE, "openid offline_access mail.smtp mail.pop")
    context = ca.client_context()

    first = DovecotPeer.start(introspection_url=oidc.introspection_url, ca=ca, relay_port=sink.port,
                              workdir=tmp_path, required_scope=None)
    ports = list(first.ports.values())
    try:
        assert len(set(ports)) == 6
        for port in ports:
            assert _listening(port) == ["0100007F"], port  # 127.0.0.1 only
        assert "scope = \n" in (tmp_path / "dovecot-oauth2.conf.ext").read_text()
        assert imap_login(first, context, ALICE, token) == ("OK", [b"2"])
    finally:
        first.stop()
    assert not first.running
    for port in ports:
        assert _listening(port) == []
    assert "starting up for imap, pop3, submission" in (tmp_path / "dovecot.log").read_text()

    second = DovecotPeer.start(introspection_url=oidc.introspection_url, ca=ca, relay_port=sink.port,
                               workdir=tmp_path)
    try:
        assert "scope = mail.imap\n" in (tmp_path / "dovecot-oauth2.conf.ext").read_text()
        assert imap_login(second, context, ALICE, token) == (
            "NO", ["[AUTHENTICATIONFAILED] Authentication failed."])
        wait_for_log(second, 0, "Token is not valid for scope 'mail.imap'")
    finally:
        second.stop()
    assert tmp_path.is_dir()  # a given workdir is kept
