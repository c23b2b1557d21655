"""The mail clients' configurations in docs/clients, run for real: Debian's msmtp, mutt, neomutt,
isync (mbsync), getmail6, offlineimap3 and curl, against the suite's Dovecot, which checks every
token they send at the oidc-provider peer (introspection).

Each test fills in the file's placeholders (docs/clients/README.md) with the session's Dovecot:
IMAP with implicit TLS, submission with STARTTLS, host `localhost` (mbsync and offlineimap check
the certificate by name, not by IP address), the test CA. The `vault` the clients find on PATH is
a script running this checkout's code on the test's vault. Every client run gets a HOME of its
own, so none reads the real user's files or what an earlier run stored.

How each client is driven without a person, and what must come back:
- msmtp, `mutt -s` and `neomutt -s`: batch sending, the message on stdin; the mail sink behind
  Dovecot's submission service must receive it.
- mutt and neomutt reading: curses programs, run under a pseudo-terminal, opening INBOX read-only
  (`-R`) with `-e 'push <pipe-message>cat >FILE<enter><quit>'`: the first message (by date, the
  seeded message 1) is piped to a file, then mutt quits.
- mbsync, getmail and offlineimap: one run, one-shot; the seeded message must be in the Maildir it
  fills.
- curl: docs/clients/curl-imap.sh, whose output must name the seeded message.

Every client runs twice. The consent is recorded two hours back, so vault's cached access token
has expired and the client's first `vault token` call refreshes it. Then the refresh is forced:
the provider expires every access token of the user (a client reusing an old one would be
refused) and `vault refresh` rotates the grant; the client's second run must log in with the new
token.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Harness, add_oidc_client, debian_tool
from tests.consent import ALICE, oidc_consent
from tests.support import ROOT

DOCS = ROOT / "docs" / "clients"
MAILBOX = ALICE[0]
SEEDED_SUBJECT = "Seeded message 1"  # tests/peers/dovecot_peer.py seeds it in every INBOX
RECIPIENT = "bob@example.test"
RUN_TIMEOUT = 20  # seconds a client may take before the test fails
PLACEHOLDER = re.compile(r"\{\{[A-Z_]+\}\}")


# -- the clients' world: placeholders filled in, `vault` on PATH, a HOME per run ------------------


@dataclass
class Clients:
    """How to run a client from docs/clients against the session's Dovecot."""

    values: dict[str, str]
    bin_dir: Path
    tmp_path: Path

    def config(self, name: str) -> str:
        """docs/clients/NAME with its placeholders filled in; none may be left."""
        text = (DOCS / name).read_text()
        for placeholder, value in self.values.items():
            text = text.replace("{{" + placeholder + "}}", value)
        assert not PLACEHOLDER.findall(text), f"{name}: unknown placeholders {PLACEHOLDER.findall(text)}"
        return text

    def home(self, label: str) -> Path:
        home = self.tmp_path / f"home-{label}"
        home.mkdir()
        return home

    def env(self, home: Path) -> dict[str, str]:
        """A small environment: nothing of the real user's, `vault` found first on PATH."""
        return {"HOME": str(home), "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
                "LANG": "C.UTF-8", "TERM": "xterm"}

    def run(self, argv: list[str], home: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
        """Run a client in home; it must exit 0."""
        result = subprocess.run(argv, input=stdin if stdin is not None else "", env=self.env(home),
                                cwd=home, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        assert result.returncode == 0, (
            f"{shlex.join(argv)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result


def _vault_on_path(h: Harness, directory: Path) -> Path:
    """A `vault` script in directory that runs this checkout's vault on h's vault."""
    directory.mkdir()
    exports = [f"export {name}={shlex.quote(value)}" for name, value in h.env().items() if value]
    script = directory / "vault"
    script.write_text("\n".join([
        "#!/bin/sh",
        "# vault of this checkout, on the test's vault",
        *exports,
        f"export PYTHONPATH={shlex.quote(str(ROOT))}",
        f'exec {shlex.quote(sys.executable)} -m vault "$@"',
        "",
    ]))
    script.chmod(0o755)
    return directory


def _localhost_is_loopback(port: int) -> None:
    addresses = {info[4][0] for info in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)}
    assert "127.0.0.1" in addresses, (
        f"localhost resolves to {sorted(addresses)}, not 127.0.0.1 where Dovecot listens: the mail "
        "clients connect to `localhost` (the name in the test certificate)")


@pytest.fixture
def vault_with_grant(sqlite_vault: Harness, oidc, dovecot) -> Harness:
    """Alice's IMAP and SMTP grant, consented two hours ago: vault holds her refresh token and an
    access token it counts as expired."""
    add_oidc_client(sqlite_vault, oidc, scopes="openid offline_access mail.imap mail.smtp")
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    oidc_consent(sqlite_vault, oidc, protocols=("imap", "smtp"), clock=lambda: two_hours_ago)
    assert _generation(sqlite_vault) == 1
    return sqlite_vault


@pytest.fixture
def clients(vault_with_grant: Harness, dovecot, mail_ca, tmp_path: Path) -> Clients:
    _localhost_is_loopback(dovecot.imaps_port)
    return Clients(
        values={"IMAP_HOST": "localhost", "IMAP_PORT": str(dovecot.imaps_port),
                "SMTP_HOST": "localhost", "SMTP_PORT": str(dovecot.submission_port),
                "CA_FILE": str(mail_ca.ca_path), "MAILBOX": MAILBOX},
        bin_dir=_vault_on_path(vault_with_grant, tmp_path / "bin"),
        tmp_path=tmp_path)


def _generation(h: Harness) -> int:
    """How many token responses vault has recorded for alice's grant (the consent's is the first)."""
    return json.loads(h.ok("grant", "show", MAILBOX, "--json").out)["tokens"]["generation"]


def _twice(h: Harness, oidc, run: Callable[[str], None]) -> None:
    """run("first"): the client's own `vault token` call must refresh the expired token. Then the
    forced refresh, and run("second") with the rotated grant."""
    run("first")
    assert _generation(h) == 2, "the client's `vault token` call did not refresh the expired token"
    assert oidc.expire_access_tokens(MAILBOX) >= 1  # what the client got is refused from now on
    h.ok("refresh", MAILBOX)
    assert _generation(h) == 3
    run("second")
    assert _generation(h) == 3  # served from vault's cache: the token refreshed just now


def _maildir_has_seeded_message(maildir: Path) -> None:
    messages = [p for sub in ("new", "cur") for p in (maildir / sub).glob("*") if p.is_file()]
    subjects = [line for p in messages for line in p.read_text(errors="replace").splitlines()
                if line.startswith("Subject:")]
    assert f"Subject: {SEEDED_SUBJECT}" in subjects, f"{maildir}: {subjects}"


def _received(mail_sink, subject: str) -> None:
    (message,) = [m for m in mail_sink.wait_for(1) if f"Subject: {subject}".encode() in m.content]
    assert message.mail_from == MAILBOX and list(message.rcpt_tos) == [RECIPIENT]


# -- the clients -----------------------------------------------------------------------------------


def test_msmtp_sends_through_submission(clients: Clients, vault_with_grant: Harness, oidc,
                                        mail_sink) -> None:
    msmtp = debian_tool("msmtp", "msmtp", "running docs/clients/msmtprc")

    def run(label: str) -> None:
        home = clients.home(label)
        rc = home / ".msmtprc"
        rc.write_text(clients.config("msmtprc"))
        rc.chmod(0o600)
        mail_sink.clear()
        subject = f"msmtp {label}"
        clients.run([msmtp, "-C", str(rc), RECIPIENT], home,
                    stdin=f"From: {MAILBOX}\nTo: {RECIPIENT}\nSubject: {subject}\n\nSent by msmtp.\n")
        _received(mail_sink, subject)

    _twice(vault_with_grant, oidc, run)


def _in_terminal(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run a curses program under a pseudo-terminal (24 x 80); its exit code and what it drew.
    It fails the test when the program is still running after RUN_TIMEOUT seconds."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    drawn = bytearray()
    try:
        with subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                              start_new_session=True) as process:
            os.close(slave)
            slave = -1
            deadline = time.monotonic() + RUN_TIMEOUT
            while True:
                if time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"{shlex.join(argv)} still runs after {RUN_TIMEOUT} s; its last "
                                f"lines:\n{_last_lines(drawn.decode(errors='replace'))}")
                ready, _, _ = select.select([master], [], [], 0.1)
                if ready:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:  # EIO: the terminal's last process has gone
                        chunk = b""
                    if not chunk:
                        break
                    drawn += chunk
                elif process.poll() is not None:
                    break
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    return process.wait(), drawn.decode(errors="replace")


TERMINAL_CONTROL = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[()][0-9A-Za-z]|[=>])")


def _last_lines(drawn: str, count: int = 15) -> str:
    """What a curses program drew, without terminal control sequences: its last lines."""
    lines = [line.strip() for line in TERMINAL_CONTROL.sub("\n", drawn).replace("\r", "\n").splitlines()]
    return "\n".join([line for line in lines if line][-count:])


@pytest.mark.parametrize("program", ["mutt", "neomutt"])
def test_mutt_reads_over_imap_and_sends_through_submission(clients: Clients, program: str,
                                                           vault_with_grant: Harness, oidc,
                                                           mail_sink) -> None:
    binary = debian_tool(program, program, "running docs/clients/muttrc")

    def run(label: str) -> None:
        home = clients.home(label)
        rc = home / ".muttrc"
        rc.write_text(clients.config("muttrc"))
        piped = home / "first-message"
        # -n: not the system-wide /etc/Muttrc; -R: INBOX read-only, nothing changes on the server
        code, drawn = _in_terminal(
            [binary, "-n", "-F", str(rc), "-R", "-e", "set wait_key=no",
             "-e", f'push "<pipe-message>cat >{piped}<enter><quit>"'], clients.env(home), home)
        assert code == 0 and piped.exists(), f"{program} -> {code}; its last lines:\n{_last_lines(drawn)}"
        assert f"Subject: {SEEDED_SUBJECT}" in piped.read_text().splitlines()

        mail_sink.clear()
        subject = f"{program} {label}"
        clients.run([binary, "-n", "-F", str(rc), "-s", subject, RECIPIENT], home,
                    stdin=f"Sent by {program}.\n")
        _received(mail_sink, subject)

    _twice(vault_with_grant, oidc, run)


def test_mbsync_copies_inbox(clients: Clients, vault_with_grant: Harness, oidc) -> None:
    mbsync = debian_tool("mbsync", "isync", "running docs/clients/mbsyncrc")
    if not list(Path("/usr/lib").glob("*/sasl2/libkdexoauth2.so*")):
        pytest.fail("mbsync needs a SASL XOAUTH2 plugin (Debian package "
                    "libsasl2-modules-kdexoauth2): run `bash tests/peers/install.sh`", pytrace=False)

    def run(label: str) -> None:
        home = clients.home(label)
        (home / ".mbsyncrc").write_text(clients.config("mbsyncrc"))
        (home / "Mail" / "vault").mkdir(parents=True)
        clients.run([mbsync, "vault"], home)
        _maildir_has_seeded_message(home / "Mail" / "vault" / "INBOX")

    _twice(vault_with_grant, oidc, run)


@pytest.fixture
def traversable_homes() -> Iterator[Path]:
    """A directory for getmail's HOMEs that other users can traverse (pytest's tmp_path lies
    under a 0700 directory of root's)."""
    directory = Path(tempfile.mkdtemp(prefix="getmail-homes-"))
    directory.chmod(0o711)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_getmail_retrieves_over_imap(clients: Clients, vault_with_grant: Harness, oidc,
                                     traversable_homes: Path) -> None:
    """getmail refuses to deliver as root, which the suite runs as: as getmail's documentation
    says for root, the test adds `user = nobody` to [destination], and nobody owns the Maildir.
    getmail itself, and the `vault token` it runs, still run as root."""
    getmail = debian_tool("getmail", "getmail6", "running docs/clients/getmailrc")

    def run(label: str) -> None:
        home = traversable_homes / label
        home.mkdir(mode=0o711)
        home.chmod(0o711)
        config = clients.config("getmailrc")
        if os.geteuid() == 0:
            assert config.count("type = Maildir\n") == 1
            config = config.replace("type = Maildir\n", "type = Maildir\nuser = nobody\n")
        (home / ".config" / "getmail").mkdir(parents=True)
        (home / ".config" / "getmail" / "getmailrc").write_text(config)
        maildir = home / "Mail" / "getmail"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        if os.geteuid() == 0:
            for path in (maildir.parent, maildir, *(maildir / sub for sub in ("cur", "new", "tmp"))):
                shutil.chown(path, "nobody")
        clients.run([getmail], home)
        _maildir_has_seeded_message(maildir)

    _twice(vault_with_grant, oidc, run)


def test_offlineimap_copies_inbox_one_shot(clients: Clients, vault_with_grant: Harness,
                                           oidc) -> None:
    offlineimap = debian_tool("offlineimap", "offlineimap3", "running docs/clients/offlineimaprc")

    def run(label: str) -> None:
        home = clients.home(label)
        rc = home / ".offlineimaprc"
        rc.write_text(clients.config("offlineimaprc"))
        clients.run([offlineimap, "-o", "-u", "basic", "-c", str(rc)], home)
        _maildir_has_seeded_message(home / "Mail" / "offlineimap" / "INBOX")

    _twice(vault_with_grant, oidc, run)


def test_curl_lists_inbox(clients: Clients, vault_with_grant: Harness, oidc) -> None:
    debian_tool("curl", "curl", "running docs/clients/curl-imap.sh")

    def run(label: str) -> None:
        home = clients.home(label)
        script = home / "curl-imap.sh"
        script.write_text(clients.config("curl-imap.sh"))
        result = clients.run(["sh", str(script)], home)
        assert f'"{SEEDED_SUBJECT}"' in result.stdout, result.stdout

    _twice(vault_with_grant, oidc, run)


def test_the_readme_shows_lines_of_these_files() -> None:
    """The README's client table shows the lines of docs/clients that call vault, one row per
    file: each line must be in the file its row links (you@example.com standing for {{MAILBOX}}),
    so that the tests above run what the README shows."""
    rows = [line for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith("| ") and "](docs/clients/" in line]
    linked = set()
    for row in rows:
        client, _protocols, link, lines, _limits = (cell.strip() for cell in row.strip("|").split(" | "))
        (name,) = re.findall(r"\]\(docs/clients/([^)]+)\)", link)
        text = (DOCS / name).read_text()
        fragments = re.findall(r"`([^`]+)`", lines)
        assert fragments, row
        for fragment in fragments:
            assert fragment.replace("you@example.com", "{{MAILBOX}}") in text, (client, name, fragment)
        linked.add(name)
    assert linked == {path.name for path in DOCS.iterdir() if path.name != "README.md"}


def test_msmtp_with_the_agent(clients: Clients, vault_with_grant: Harness, mail_sink,
                              tmp_path: Path) -> None:
    """The README's msmtp line with a `vault agent` running: the `vault` msmtp runs has no key
    file (it could not unlock by itself), so only the agent can have served the token."""
    from tests.integration.test_agent import AgentProcess

    msmtp = debian_tool("msmtp", "msmtp", "running docs/clients/msmtprc")
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    agent = AgentProcess(vault_with_grant, run_dir)
    try:
        script = clients.bin_dir / "vault"
        text = script.read_text().replace("export VAULT_KEY_FILE=", "unset VAULT_KEY_FILE # ")
        script.write_text(text.replace("#!/bin/sh\n", "#!/bin/sh\nexport VAULT_AGENT_SOCK="
                                       + shlex.quote(agent.socket) + "\n", 1))
        home = clients.home("agent")
        rc = home / ".msmtprc"
        rc.write_text(clients.config("msmtprc"))
        rc.chmod(0o600)
        mail_sink.clear()
        clients.run([msmtp, "-C", str(rc), RECIPIENT], home,
                    stdin=f"From: {MAILBOX}\nTo: {RECIPIENT}\nSubject: via the agent\n\nSent.\n")
        _received(mail_sink, "via the agent")
    finally:
        agent.stop()
    entries = json.loads(vault_with_grant.ok("audit", "log", "--limit", "0", "--json").out)
    served = [e["detail"]["protocol"] for e in entries
              if e["action"] == "token" and e.get("via") == "agent"]
    assert served and set(served) == {"smtp"}  # msmtp may ask more than once
