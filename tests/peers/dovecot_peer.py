"""A real IMAP/POP3/submission server (Debian's Dovecot 2.3) that checks OAuth bearer tokens, for tests.

No pytest fixtures here: a conftest builds them from these helpers.

    ensure_dovecot_installed()            # fails unless tests/peers/install.sh has installed Dovecot
    oidc = OidcPeer.start()
    ca = TestCA(tmp_dir)
    sink = MailSink().start()             # where submission relays to
    dovecot = DovecotPeer.start(introspection_url=oidc.introspection_url, ca=ca, relay_port=sink.port)
    ...                                   # imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ...)
    dovecot.stop(); sink.stop(); oidc.stop()

Dovecot validates every XOAUTH2/OAUTHBEARER token by RFC 7662 introspection at the authorization
server (`passdb { driver = oauth2 }`), so a token it accepts is one the provider says is active.
`DovecotPeer.start_jwt(...)` starts one that validates JWT access tokens (RFC 8707 resource
indicators) locally instead, with the provider's public keys written to its key dictionary.
Standard library + trustme + aiosmtpd only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import ssl
import string
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
PACKAGES = ("dovecot-imapd", "dovecot-pop3d", "dovecot-submissiond")
TEMPLATE_DIR = Path(__file__).resolve().parent / "dovecot"
INSTALL_HINT = "run `bash tests/peers/install.sh`"

# The resource server's introspection client at the OIDC peer (mirrors oidc_peer.CLIENTS["dovecot"]).
INTROSPECTION_CLIENT = ("dovecot", "dovecot-secret-0123456789")


# --------------------------------------------------------------------------------------------------
# Installed? (tests/peers/install.sh installs Dovecot, keeping the system-wide instance from starting)


def dovecot_binary() -> str | None:
    """Path of the dovecot master binary, also when /usr/sbin is not on PATH."""
    found = shutil.which("dovecot")
    if found:
        return found
    for candidate in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_dovecot_installed() -> str:
    """The path of the `dovecot` binary if Dovecot and its imap, pop3 and submission services are
    installed; otherwise RuntimeError naming tests/peers/install.sh (the tests install nothing)."""
    binary = dovecot_binary()
    if binary is None:
        raise RuntimeError(f"the Dovecot test peer needs {' '.join(PACKAGES)} (no dovecot binary found): "
                           f"{INSTALL_HINT}")
    libexec = Path("/usr/lib/dovecot")
    lacking = [name for name in ("imap", "pop3", "submission") if not (libexec / name).exists()]
    if libexec.is_dir() and lacking:  # e.g. dovecot-core + dovecot-imapd only
        raise RuntimeError(f"the Dovecot test peer needs {' '.join(PACKAGES)} ({', '.join(lacking)} "
                           f"missing from {libexec}): {INSTALL_HINT}")
    return binary


def _dovecot_pid(pid_file: Path) -> int | None:
    """The pid in a master.pid file if that process is a live dovecot master (not a reused pid)."""
    try:
        pid = int(pid_file.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm == "dovecot" and state != "Z" else None


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    """Wait until pid has exited (a zombie counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _free_ports(count: int) -> list[int]:
    """count distinct free ports (all held open together, so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


# --------------------------------------------------------------------------------------------------
# TLS


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class TestCA:
    """A throw-away CA (trustme) and a server certificate for 127.0.0.1 and localhost, written as PEM
    files: `ca_path` (what clients must trust explicitly), `cert_chain_path` (server certificate +
    chain) and `key_path` (server private key).

    The certificate's subject alternative names are the identities; its subject's common name is
    the first DNS name among them. Mail clients connect to `localhost`: mbsync ignores IP
    addresses in a certificate, and offlineimap refuses a certificate without a common name."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, directory: Path | str | None = None,
                 identities: tuple[str, ...] = ("127.0.0.1", "localhost")) -> None:
        import trustme

        self.directory = Path(directory) if directory is not None else Path(
            tempfile.mkdtemp(prefix="test-ca-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.identities = identities
        self.ca = trustme.CA()
        dns_names = [name for name in identities if not _is_ip_address(name)]
        self.server_cert = self.ca.issue_cert(*identities,
                                              common_name=dns_names[0] if dns_names else None)
        self.ca_path = self.directory / "ca.pem"
        self.cert_chain_path = self.directory / "server-chain.pem"
        self.key_path = self.directory / "server-key.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        self.server_cert.private_key_pem.write_to_path(str(self.key_path))
        self.key_path.chmod(0o600)
        with open(self.cert_chain_path, "wb") as fh:
            for blob in self.server_cert.cert_chain_pems:
                fh.write(blob.bytes())

    def client_context(self) -> ssl.SSLContext:
        """A client SSLContext that trusts this CA only (hostname checking on)."""
        return ssl.create_default_context(cafile=str(self.ca_path))


# --------------------------------------------------------------------------------------------------
# SMTP sink (where Dovecot's submission service relays to)


@dataclass(frozen=True)
class SinkMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes  # the DATA as received (headers + body, CRLF line ends)
    peer: tuple[str, int] | None


class MailSink:
    """An aiosmtpd SMTP server on 127.0.0.1 (free port) that keeps every message in memory."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.messages: list[SinkMessage] = []
        self._controller = None
        self._cond = threading.Condition()

    # aiosmtpd handler hook
    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd handler API
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        message = SinkMessage(envelope.mail_from, tuple(envelope.rcpt_tos), content, session.peer)
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()
        # Plain text: aiosmtpd does not announce ENHANCEDSTATUSCODES, so Dovecot adds its own 2.0.0.
        return "250 Message accepted for delivery"

    def start(self) -> MailSink:
        from aiosmtpd.controller import Controller

        last: Exception | None = None
        for _ in range(3):  # the free port can be taken between probing and listening
            port = _free_port()
            controller = Controller(self, hostname=HOST, port=port, ready_timeout=10)
            try:
                controller.start()
            except Exception as exc:  # aiosmtpd raises plain errors here
                last = exc
                with contextlib.suppress(Exception):
                    controller.stop()
                continue
            self._controller, self.port = controller, port
            return self
        raise RuntimeError(f"MailSink could not listen on {HOST}: {last}")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[SinkMessage]:
        """Wait until at least count messages arrived; return them all (RuntimeError on timeout)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout):
                raise RuntimeError(f"MailSink got {len(self.messages)} message(s), expected {count}")
            return list(self.messages)

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# Dovecot


@dataclass(frozen=True)
class JwtCheck:
    """What one protocol demands of a JWT access token: the scope it must carry (None: any), and the
    audiences of which its aud must name one (none given: aud is not checked)."""

    scope: str | None
    audiences: tuple[str, ...] = ()


@dataclass(frozen=True)
class JwtValidation:
    """Local JWT validation (`introspection_mode = local`) instead of introspection.

    issuer: the only accepted iss. keys: the issuer's public signing keys, each with `kid`, `alg`
    and `pem` (SubjectPublicKeyInfo PEM), e.g. oidc_peer.OidcPeer.signing_keys(). checks: by
    Dovecot protocol (imap, pop3, submission), what that protocol's logins demand."""

    issuer: str
    keys: tuple
    checks: Mapping[str, JwtCheck]


JWT_PROTOCOLS = ("imap", "pop3", "submission")


def _mail_owner() -> tuple[int, int]:
    """uid/gid the mail processes run as and the Maildirs belong to: Debian's `mail` user (8)."""
    try:
        entry = pwd.getpwnam("mail")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 8, 8


def _with_basic_credentials(url: str, username: str, password: str) -> str:
    """url with username:password as userinfo: Dovecot's HTTP client turns it into HTTP Basic."""
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ValueError(f"not an absolute URL: {url!r}")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


DEFAULT_MAILBOX_USERS = ("alice@example.test", "bob@example.test")
PORT_NAMES = ("imap_port", "imaps_port", "pop3_port", "pop3s_port", "submission_port", "submissions_port")


def seed_message(user: str, number: int) -> bytes:
    """The number-th (1-based) message pre-seeded in user's INBOX."""
    return (
        f"From: Seed Sender <seed@example.test>\r\n"
        f"To: {user}\r\n"
        f"Subject: Seeded message {number}\r\n"
        f"Date: {formatdate(1700000000 + number, usegmt=True)}\r\n"
        f"Message-ID: <seed-{number}.{user}@example.test>\r\n"
        f"\r\n"
        f"Seeded test message number {number} for {user}.\r\n"
    ).encode("ascii")


class DovecotPeer:
    """A private `dovecot -F -c <workdir>/dovecot.conf` on 127.0.0.1 with ports picked at start.

    Users authenticate with XOAUTH2 / OAUTHBEARER only; each token is introspected at
    introspection_url (as the `dovecot` client). Every user gets a Maildir; the users in
    mailbox_users start with `seed_count` messages in their INBOX."""

    host = HOST

    def __init__(self, process: subprocess.Popen[bytes], workdir: Path, ports: dict[str, int],
                 *, own_workdir: bool, required_scope: str | None, introspection_url: str,
                 jwt: JwtValidation | None = None) -> None:
        self._process = process
        self.workdir = workdir
        self._own_workdir = own_workdir
        self.ports = dict(ports)
        self.imap_port = ports["imap_port"]
        self.imaps_port = ports["imaps_port"]
        self.pop3_port = ports["pop3_port"]
        self.pop3s_port = ports["pop3s_port"]
        self.submission_port = ports["submission_port"]
        self.submissions_port = ports["submissions_port"]
        self.required_scope = required_scope
        self.introspection_url = introspection_url  # without credentials ("" with jwt)
        self.jwt = jwt  # local JWT validation settings, None when tokens are introspected
        self.config_path = workdir / "dovecot.conf"
        self.log_path = workdir / "dovecot.log"
        self.mail_root = workdir / "mail"

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    @classmethod
    def start(
        cls,
        *,
        introspection_url: str,
        ca: TestCA,
        relay_port: int,
        required_scope: str | None = "mail.imap",
        workdir: Path | None = None,
        mailbox_users: tuple[str, ...] = DEFAULT_MAILBOX_USERS,
        seed_count: int = 2,
        introspection_client: tuple[str, str] = INTROSPECTION_CLIENT,
        introspection_timeout: float = 10.0,
        debug: bool = False,
        timeout: float = START_TIMEOUT,
        jwt: JwtValidation | None = None,
    ) -> DovecotPeer:
        """Write the configuration and Maildirs under workdir (a new temporary directory if None),
        start Dovecot and wait until every port accepts connections.

        required_scope: the scope the token must carry (Dovecot's `scope` setting), None for none.
        jwt: validate JWTs locally with these settings instead (introspection_url, required_scope
        and the introspection options are then unused; see start_jwt).
        Raises RuntimeError with Dovecot's log when it does not come up within `timeout` seconds, and
        one naming tests/peers/install.sh when Dovecot is not installed."""
        binary = ensure_dovecot_installed()
        if os.geteuid() != 0:
            raise RuntimeError("DovecotPeer runs Dovecot as root (it switches to the dovenull, dovecot "
                               "and mail users itself); run the tests as root")
        if required_scope is not None and (not required_scope.strip() or len(required_scope.split()) != 1):
            raise ValueError(f"required_scope must be one scope, got {required_scope!r} "
                             "(Dovecot 2.3 would accept a token carrying ANY of several)")
        own_workdir = workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="dovecot-peer-")) if workdir is None else Path(workdir)
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            # The mail processes run as the mail user and must reach the Maildirs: the workdir and
            # every directory above it must be traversable by that user.
            workdir.chmod(0o755)
            _check_traversable(workdir.resolve(), *_mail_owner())
            last_error: RuntimeError | None = None
            for _ in range(3):  # a port picked as free can be taken before Dovecot binds it
                ports = dict(zip(PORT_NAMES, _free_ports(len(PORT_NAMES)), strict=True))
                cls._write_files(workdir, ports, introspection_url=introspection_url, ca=ca,
                                 relay_port=relay_port, required_scope=required_scope,
                                 mailbox_users=mailbox_users, seed_count=seed_count,
                                 introspection_client=introspection_client,
                                 introspection_timeout=introspection_timeout, debug=debug, jwt=jwt)
                try:
                    return cls._spawn(binary, workdir, ports, timeout, own_workdir=own_workdir,
                                      required_scope=required_scope, introspection_url=introspection_url,
                                      jwt=jwt)
                except _PortTaken as exc:
                    last_error = RuntimeError(str(exc))
            assert last_error is not None
            raise last_error
        except BaseException:
            if own_workdir:  # the error message carries the log already
                shutil.rmtree(workdir, ignore_errors=True)
            raise

    @classmethod
    def start_jwt(cls, *, issuer: str, keys: Iterable, checks: Mapping[str, JwtCheck], ca: TestCA,
                  relay_port: int, **options) -> DovecotPeer:
        """Start an instance that validates JWT access tokens locally (nothing is asked of the
        authorization server): signed by one of `keys` (written to its key dictionary), issued by
        `issuer`, and for each protocol (imap, pop3, submission) what `checks` demands. Other
        options as for start()."""
        missing = [name for name in JWT_PROTOCOLS if name not in checks]
        if missing or set(checks) - set(JWT_PROTOCOLS):
            raise ValueError(f"checks must be given for exactly {', '.join(JWT_PROTOCOLS)}, "
                             f"got {', '.join(checks)}")
        jwt = JwtValidation(issuer=issuer, keys=tuple(keys), checks=dict(checks))
        return cls.start(introspection_url="", ca=ca, relay_port=relay_port, required_scope=None,
                         jwt=jwt, **options)

    # ---- files ----------------------------------------------------------------------------------

    @staticmethod
    def _write_files(workdir: Path, ports: dict[str, int], *, introspection_url: str, ca: TestCA,
                     relay_port: int, required_scope: str | None, mailbox_users: tuple[str, ...],
                     seed_count: int, introspection_client: tuple[str, str],
                     introspection_timeout: float, debug: bool, jwt: JwtValidation | None = None) -> None:
        uid, gid = _mail_owner()
        mail_root = workdir / "mail"
        mail_root.mkdir(exist_ok=True)
        os.chown(mail_root, uid, gid)
        for user in mailbox_users:
            _seed_maildir(mail_root / user.lower(), user, seed_count, uid, gid)

        if jwt is not None:
            oauth2_passdbs = _write_jwt_files(workdir, jwt, debug)
        else:
            oauth2_conf = workdir / "dovecot-oauth2.conf.ext"
            _render("oauth2.conf.ext.in", oauth2_conf, {
                "introspection_url": _with_basic_credentials(introspection_url, *introspection_client),
                "scope": required_scope or "",
                "timeout_msecs": str(int(introspection_timeout * 1000)),
                "debug": "yes" if debug else "no",
            })
            oauth2_conf.chmod(0o600)  # holds the introspection client's secret; read by root at auth start
            oauth2_passdbs = _oauth2_passdb(oauth2_conf)
        _render("dovecot.conf.in", workdir / "dovecot.conf", {
            "instance_name": f"dovecot-peer-{ports['imap_port']}",
            "base_dir": _conf_path(workdir / "run"),
            "state_dir": _conf_path(workdir / "state"),
            "log_path": _conf_path(workdir / "dovecot.log"),
            "auth_debug": "yes" if debug else "no",
            "oauth2_passdbs": oauth2_passdbs,
            "mail_uid": str(uid),
            "mail_gid": str(gid),
            "mail_root": _conf_path(mail_root),
            "ssl_cert": _conf_path(ca.cert_chain_path),
            "ssl_key": _conf_path(ca.key_path),
            "relay_port": str(relay_port),
            **{name: str(port) for name, port in ports.items()},
        })

    # ---- process --------------------------------------------------------------------------------

    @classmethod
    def _spawn(cls, binary: str, workdir: Path, ports: dict[str, int], timeout: float, *,
               own_workdir: bool, required_scope: str | None, introspection_url: str,
               jwt: JwtValidation | None = None) -> DovecotPeer:
        log_path = workdir / "dovecot.log"
        stderr_path = workdir / "dovecot.stderr"
        _wait_old_instance_gone(workdir / "run")
        with contextlib.suppress(FileNotFoundError):
            log_path.unlink()
        with open(stderr_path, "wb") as err:
            process = subprocess.Popen(
                [binary, "-F", "-c", str(workdir / "dovecot.conf")],
                stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() can clean up the children
            )
        peer = cls(process, workdir, ports, own_workdir=own_workdir, required_scope=required_scope,
                   introspection_url=introspection_url, jwt=jwt)
        deadline = time.monotonic() + timeout
        pending = list(ports.values())
        while pending:
            if process.poll() is not None:
                text = peer.log_text()
                peer._cleanup_after_failure()
                if "Address already in use" in text:
                    raise _PortTaken(f"a Dovecot port was taken:\n{text}")
                raise RuntimeError(f"dovecot exited with code {process.returncode} while starting:\n{text}")
            if time.monotonic() > deadline:
                text = peer.log_text()
                peer._own_workdir = False  # start() decides about the directory
                peer.stop()
                raise RuntimeError(
                    f"dovecot did not accept connections on {HOST}:{pending} within {timeout:.0f} s:\n{text}")
            try:
                with socket.create_connection((HOST, pending[0]), timeout=1):
                    pending.pop(0)
            except OSError:
                time.sleep(0.05)
        return peer

    def _cleanup_after_failure(self) -> None:
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=5)
        _wait_group_gone(self._process.pid, 5)

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the instance and wait until its master and every child process have exited.
        Idempotent. A temporary workdir created by start() is removed; a given one is kept (its log
        too), and a new instance may be started in it at once.

        Signals go to the whole process group: signalled alone, the master waits for login
        processes that may sit ~5 s in a stats-writer handshake, and can leave some behind."""
        # Processes the master forks around the signal (login processes started for a connection
        # that just came in) miss it, and the master then waits seconds for them; while shutting
        # down it also sleeps up to ~1 s polling its children. Repeat the signal until the whole
        # group is gone, SIGKILL after 0.3 s (the log lines a test checks are written by then).
        kill_at = time.monotonic() + 0.3
        give_up = kill_at + timeout
        while self._process.poll() is None or _group_alive(self._process.pid):
            now = time.monotonic()
            if now > give_up:
                raise RuntimeError(f"dovecot (process group {self._process.pid}) does not exit")
            self._signal_group(signal.SIGTERM if now < kill_at else signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=0.05)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DovecotPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        """Dovecot's log so far (log_path), plus anything the master printed on stdout/stderr."""
        parts = []
        for path in (self.workdir / "dovecot.stderr", self.log_path):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace")
                if text:
                    parts.append(text)
        return "".join(parts)

    def maildir(self, user: str) -> Path:
        return self.mail_root / user.lower() / "Maildir"


class _PortTaken(RuntimeError):
    pass


def _group_alive(pgid: int) -> bool:
    """Whether a non-zombie process of process group pgid is left (zombies count as gone: a
    container's PID 1 may never reap the orphans)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may contain spaces and parentheses
        fields = stat[stat.rindex(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _wait_old_instance_gone(base_dir: Path, timeout: float = 10.0) -> None:
    """A master still running in base_dir (earlier instance in the same workdir) makes a new one
    refuse to start: wait for it to exit."""
    pid = _dovecot_pid(base_dir / "master.pid")
    if pid is not None and not _wait_pid_gone(pid, timeout):
        raise RuntimeError(f"an earlier dovecot (pid {pid}) still runs in {base_dir}")


def _check_traversable(workdir: Path, uid: int, gid: int) -> None:
    """Dovecot would log in fine and then fail SELECT with [SERVERBUG] (chdir: Permission denied)
    if the mail user cannot traverse the workdir's ancestors, e.g. pytest's 0700
    /tmp/pytest-of-root: refuse such a workdir up front."""
    for directory in workdir.parents:
        st = directory.stat()
        if st.st_mode & 0o001 or (st.st_uid == uid and st.st_mode & 0o100) or (
                st.st_gid == gid and st.st_mode & 0o010):
            continue
        raise ValueError(
            f"workdir {workdir} is unusable: the mail user (uid {uid}) cannot traverse {directory} "
            f"(mode {st.st_mode & 0o7777:o}); use e.g. tempfile.mkdtemp() or workdir=None")


def _conf_path(path: Path) -> str:
    text = str(path)
    if any(c in text for c in ' \t"#{}<'):
        raise ValueError(f"path not usable in dovecot.conf: {text!r}")
    return text


def _oauth2_passdb(args: Path, indent: str = "", *, last: bool = False) -> str:
    lines = ["passdb {", "  driver = oauth2", "  mechanisms = xoauth2 oauthbearer",
             f"  args = {_conf_path(args)}", *(["  result_failure = return-fail"] if last else []), "}"]
    return "\n".join(indent + line for line in lines)


# In a protocol block, first: the same no-delay passdb dovecot.conf.in has at the top level (see there).
_NODELAY_PASSDB = """  passdb {
    driver = static
    mechanisms = xoauth2 oauthbearer
    args = noauthenticate=y nodelay=y
  }"""


def _escape_key_part(part: str) -> str:
    """A kid or alg as Dovecot names its key file: '/' and '%' escaped to %2f and %25
    (escape_identifier in lib-oauth2/oauth2-jwt.c, 2.3.19)."""
    return part.replace("%", "%25").replace("/", "%2f")


def _write_jwt_files(workdir: Path, jwt: JwtValidation, debug: bool) -> str:
    """Write the key dictionary and one passdb file per protocol and audience; return the passdb
    blocks for dovecot.conf.

    Keys: Dovecot looks a JWT's key up as shared/<azp>/<alg>/<kid> (azp claim, else "default"; kid
    header, else "default"). oidc-provider's access tokens carry no azp, so every key is written
    under default/ (and under no client's name).

    Passdbs: oauth2 ones only inside protocol blocks. Dovecot 2.3.19 runs a protocol block's
    passdbs first and the top-level ones after them (seen in its auth debug log), so a top-level
    oauth2 passdb would accept a token for every protocol, and the top-level no-delay static passdb
    would come last, where its noauthenticate turns every refusal into a temporary failure ("Last
    passdb had noauthenticate field"). Hence each block: its own no-delay passdb, then the oauth2
    ones, the last with result_failure = return-fail (the top-level passdbs are never reached).
    Dovecot's `client_id` is a single aud value, so a protocol accepting several audiences gets one
    oauth2 passdb each: a token refused by one is tried by the next (result_failure defaults to
    continue), and accepted if any accepts it."""
    key_dir = workdir / "keys"
    if key_dir.exists():
        shutil.rmtree(key_dir)
    if not jwt.keys:
        raise ValueError("local JWT validation needs at least one public key")
    for key in jwt.keys:
        path = key_dir / "default" / _escape_key_part(key.alg.upper()) / _escape_key_part(key.kid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(key.pem)
    for directory, _dirs, files in os.walk(key_dir):  # public keys: readable by the auth process
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    if any(c.isspace() for c in jwt.issuer) or not jwt.issuer:
        raise ValueError(f"issuer must be one non-empty word, got {jwt.issuer!r}")

    blocks = []
    for protocol in JWT_PROTOCOLS:
        check = jwt.checks[protocol]
        if check.scope is not None and (not check.scope.strip() or len(check.scope.split()) != 1):
            raise ValueError(f"{protocol}: the scope must be one scope, got {check.scope!r}")
        passdbs = [_NODELAY_PASSDB]
        audiences = check.audiences or ("",)
        for number, audience in enumerate(audiences, start=1):
            if any(c.isspace() for c in audience):
                raise ValueError(f"{protocol}: audience {audience!r} contains white space")
            conf = workdir / f"dovecot-oauth2-jwt-{protocol}-{number}.conf.ext"
            _render("oauth2-jwt.conf.ext.in", conf, {
                "key_dir": _conf_path(key_dir),
                "issuers": jwt.issuer,
                "audience": audience,
                "scope": check.scope or "",
                "debug": "yes" if debug else "no",
            })
            passdbs.append(_oauth2_passdb(conf, indent="  ", last=number == len(audiences)))
        blocks.append(f"protocol {protocol} {{\n" + "\n".join(passdbs) + "\n}")
    return "\n".join(blocks)


def _render(template: str, target: Path, values: dict[str, str]) -> None:
    text = string.Template((TEMPLATE_DIR / template).read_text()).substitute(values)
    target.write_text(text)


def _seed_maildir(home: Path, user: str, count: int, uid: int, gid: int) -> None:
    maildir = home / "Maildir"
    if maildir.exists():
        return
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for number in range(1, count + 1):
        name = f"{1700000000 + number}.M{number}P{os.getpid()}.dovecot-peer"
        (maildir / "new" / name).write_bytes(seed_message(user, number))
    for root, dirs, files in os.walk(home):
        os.chown(root, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid)
