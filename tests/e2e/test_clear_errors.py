"""Failures of the world around vault are said plainly (one line, the documented exit code), never
as an "internal error": a full disk, a read-only file system, a PostgreSQL connection ended
mid-command, malformed URLs, a port in use, a process killed during a backup or a restore.

Disks are real: small tmpfs mounts, remounted read-only (the suite runs as root)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sandbox import settings_line
from tests.conftest import (
    PASSPHRASE,
    VAULT_ENV,
    Harness,
    _pg_connect,
    add_client,
    add_sandbox_client,
    make_harness,
)


def _plain(result, code: int, *words: str) -> None:
    assert result.code == code, result.text
    assert "internal error" not in result.err and "Traceback" not in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    for word in words:
        assert word in result.err, result.err


# -- disks ----------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount a tmpfs of the given size under tmp_path; `read_only(point)` remounts it so."""
    assert os.geteuid() == 0, "these tests mount file systems: the suite runs as root"
    mounts: list[Path] = []

    def mount(name: str, size: str = "8m") -> Path:
        point = tmp_path / name
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                        str(point)], check=True, capture_output=True)
        mounts.append(point)
        return point

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


def _read_only(point: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True, capture_output=True)


def _vault_on(disk: Path, tmp_path: Path) -> Harness:
    h = Harness("sqlite", disk / "vault-home", None, tmp_path / "service.key")
    h.ok("init", "--kdf", "interactive", "--key-file", str(h.key_file),
         VAULT_PASSPHRASE=PASSPHRASE, VAULT_KEY_FILE=None)
    add_client(h, "jira")
    return h


def _fill(disk: Path) -> None:
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def _entries(h: Harness) -> int:
    return json.loads(h.ok("audit", "verify", "--json").out)["entries"]


def test_a_full_disk_is_said_plainly_and_changes_nothing(small_disk, tmp_path: Path) -> None:
    disk = small_disk("disk", "2m")
    h = _vault_on(disk, tmp_path)
    entries = _entries(h)
    _fill(disk)
    for command, stdin in ((("client", "add", "crm", "--provider", "microsoft", "--tenant",
                             "contoso.onmicrosoft.com", "--client-id",
                             "11111111-2222-3333-4444-555555555555", "--secret-stdin"),
                            "Abc~defghijklmnopqrstuvwxyz0124"),
                           (("status",), None), (("client", "show", "jira"), None)):
        _plain(h.run(*command, input=stdin), 1, f"the vault's store {h.home}",
               "the disk is full", "nothing was changed")
    (disk / "filler").unlink()
    assert [c["name"] for c in json.loads(h.ok("client", "list", "--json").out)] == ["jira"]
    assert _entries(h) == entries + 1  # the list just now; nothing from the failed commands


def test_a_read_only_file_system_is_said_plainly_and_audit_verify_still_reads_it(
        small_disk, tmp_path: Path) -> None:
    """On read-only media a vault cannot be used, and says why; `audit verify` (keyless, writes
    nothing) still verifies it: with no write-ahead log the file is the whole database."""
    media = small_disk("media")
    h = _vault_on(media, tmp_path)
    entries = _entries(h)
    wal = h.home / "vault.db-wal"  # folded in when the last writer closed (a reader may
    assert not wal.exists() or wal.stat().st_size == 0  # leave an empty one)
    _read_only(media)
    _plain(h.run("status"), 1, f"the vault's store {h.home}", "read-only file system",
           "nothing was changed")
    verified = h.run("audit", "verify")
    assert verified.code == 0 and f"audit log OK: {entries} entries" in verified.out, \
        verified.text


def test_audit_verify_on_read_only_media_reads_the_write_ahead_log(
        sqlite_vault: Harness, small_disk) -> None:
    """A copy taken while the vault was open holds its newest entries in vault.db-wal. With the
    -shm index beside it, verify reads them (SQLite's `immutable` would not, and would verify an
    older log); without it, reading is impossible on read-only media, and verify says what to
    do instead of verifying the stale file."""
    h = sqlite_vault
    add_client(h, "jira")
    holder = sqlite3.connect(h.home / "vault.db")  # keeps the log from being folded in
    try:
        holder.execute("SELECT COUNT(*) FROM vault_audit").fetchone()
        add_client(h, "crm")
        h.ok("status")
        (entries,) = holder.execute("SELECT COUNT(*) FROM vault_audit").fetchone()
        assert (h.home / "vault.db-wal").stat().st_size > 0
        with_index, without_index = small_disk("copy"), small_disk("copy-without-index")
        for target in (with_index, without_index):
            shutil.copytree(h.home, target / "home", dirs_exist_ok=True)
            os.chmod(target / "home", 0o700)
        (without_index / "home" / "vault.db-shm").unlink()
    finally:
        holder.close()
    _read_only(with_index)
    _read_only(without_index)
    copy = Harness("sqlite", with_index / "home", None, h.key_file)
    verified = copy.run("audit", "verify")
    assert verified.code == 0 and f"audit log OK: {entries} entries" in verified.out, \
        verified.text
    stale = Harness("sqlite", without_index / "home", None, h.key_file)
    _plain(stale.run("audit", "verify"), 1, "vault.db-wal", "vault.db-shm", "cp -a")


# -- PostgreSQL -----------------------------------------------------------------------------------


@pytest.mark.pg
def test_a_postgresql_connection_ended_mid_command_is_said_plainly(tmp_path: Path,
                                                                   request) -> None:
    """The token endpoint ends every session of the vault's database (as a server restart
    would) while `vault refresh` holds the grant's lock and has a pooled connection open."""
    h = make_harness("postgresql", tmp_path, request)
    h.ok("init", "--no-passphrase", "--key-file", str(h.key_file), VAULT_KEY_FILE=None)

    class TokenEndpoint(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with _pg_connect(h.pg_database) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                             "datname = %s AND pid <> pg_backend_pid()", (h.pg_database,))
            body = json.dumps({"access_token": "AT-0123456789", "token_type": "Bearer",
                               "expires_in": 3600, "refresh_token": "RT-new-0123456789"})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        h.ok("client", "add", "idp", "--provider", "custom", "--client-id", "vault-test",
             "--secret-stdin", "--token-url", f"{base}/token", "--authorize-url",
             f"{base}/authorize", "--scopes", "mail.imap offline_access",
             input="client-secret-0123456789")
        h.ok("grant", "import", "--client", "idp", "--mailbox", "a@example.test",
             "--protocols", "imap", "--scopes", "mail.imap offline_access",
             "--refresh-token-stdin", input="RT-old-0123456789")
        _plain(h.run("refresh", "a@example.test"), 1, f"the vault's store {h.store_url}",
               "the database connection was lost", "nothing was changed, run it again")
    finally:
        server.shutdown()
        server.server_close()
    h.ok("audit", "verify")


# -- malformed URLs, a port in use ----------------------------------------------------------------


def test_an_unclosed_bracket_in_vault_store_or_migrate_to_is_bad_input(
        sqlite_vault: Harness) -> None:
    url = "postgresql://vault:pw-s3cr3t@[::1/vault"
    _plain(sqlite_vault.run("status", VAULT_STORE=url), 2, "VAULT_STORE is not a valid URL")
    _plain(sqlite_vault.run("migrate", "--to", url), 2, "--to is not a valid URL")
    assert "s3cr3t" not in "".join(sqlite_vault.outputs)


def test_a_pasted_redirect_that_is_no_url_or_has_a_foreign_state_is_bad_input(
        vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    consent = ("consent", "demo", "--mailbox", "carol@contoso.com", "--protocols", "imap",
               "--flow", "manual")
    for pasted, words in (("http://[::1/callback?code=abc&state=x", "not a valid URL"),
                          ("http://127.0.0.1/callback?code=abc&state=%C3%A9t%C3%A9",
                           "state"),
                          ("http://127.0.0.1/callback?code=abc&state=\u00e9t\u00e9", "state")):
        result = vault.run(*consent, input=pasted + "\n")
        assert result.code == 2, result.text
        last = result.err.strip().splitlines()[-1]
        assert last.startswith("vault: error: ") and words in last, result.err
        assert "internal error" not in result.err and "Traceback" not in result.err
    assert json.loads(vault.ok("grant", "list", "--json").out) == []


def _busy_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_a_port_in_use_is_said_plainly(sqlite_vault: Harness, sandbox) -> None:
    with _busy_port() as busy:
        port = busy.getsockname()[1]
        _plain(sqlite_vault.run("sandbox", "--port", str(port)), 2, f"--port {port}",
               "Address already in use")
        add_sandbox_client(sqlite_vault, sandbox)  # then its redirect URI names the busy port
        sqlite_vault.ok("client", "remove", "demo", "--purge")
        settings = json.loads(settings_line(sandbox))
        sqlite_vault.ok("client", "add", "demo", "--provider", "microsoft", "--tenant",
                        settings["tenant"], "--client-id", settings["client_id"],
                        "--secret-stdin", "--authorize-url", settings["authorize_url"],
                        "--token-url", settings["token_url"], "--issuer", settings["issuer"],
                        "--redirect-uri",
                        f"http://127.0.0.1:{port}/callback", input=settings["client_secret"])
        result = sqlite_vault.run("consent", "demo", "--mailbox", "carol@contoso.com",
                                  "--protocols", "imap", "--no-open", "--timeout", "10")
        _plain(result, 1, f"cannot listen for the redirect on 127.0.0.1:{port}",
               "Address already in use")


# -- processes killed during a backup or a restore ------------------------------------------------


def _spawn(h: Harness, *args: str, **env: str) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if k not in VAULT_ENV}
    full.update({k: v for k, v in h.env(**env).items() if v is not None})
    return subprocess.Popen([sys.executable, "-m", "vault", *args], env=full,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_entries(directory: Path, process: subprocess.Popen) -> list[str]:
    deadline = time.monotonic() + 60
    while not os.listdir(directory):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    return os.listdir(directory)


@pytest.mark.pg
def test_the_copy_of_a_killed_backup_is_removed_by_the_next_one(tmp_path: Path,
                                                                request) -> None:
    h = make_harness("postgresql", tmp_path, request)
    h.ok("init", "--no-passphrase", "--key-file", str(h.key_file), VAULT_KEY_FILE=None)
    add_client(h, "jira")
    directory = tmp_path / "backups"
    directory.mkdir()
    with _pg_connect(h.pg_database) as conn, conn.transaction():
        # the copy reads every table in turn: it waits here, with its temporary copy begun
        conn.execute(f"LOCK TABLE {h.schema}.view_secrets IN ACCESS EXCLUSIVE MODE")
        backup = _spawn(h, "backup", str(directory / "vault.backup"))
        (left,) = _wait_for_entries(directory, backup)
        backup.send_signal(signal.SIGKILL)
        backup.communicate(timeout=60)
    assert os.listdir(directory) == [left]  # kill -9: nothing could clean up
    h.ok("backup", str(directory / "vault.backup"))
    assert os.listdir(directory) == ["vault.backup"]


def test_the_copy_of_a_killed_restore_is_removed_by_the_next_one(sqlite_vault: Harness,
                                                                 tmp_path: Path) -> None:
    add_client(sqlite_vault, "jira")
    backup_file = tmp_path / "vault.backup"
    sqlite_vault.ok("backup", str(backup_file))
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    target = Harness("sqlite", tmp_path / "restored", None, sqlite_vault.key_file)
    target.home.mkdir(mode=0o700)
    os.close(os.open(target.home / "vault.db", os.O_CREAT | os.O_WRONLY, 0o600))
    holder = sqlite3.connect(target.home / "vault.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # the restore waits on its target, copy made
        restore = _spawn(target, "restore", str(backup_file), TMPDIR=str(temporary))
        (left,) = _wait_for_entries(temporary, restore)
        time.sleep(0.2)
        restore.send_signal(signal.SIGKILL)
        restore.communicate(timeout=60)
    finally:
        holder.close()
    assert os.listdir(temporary) == [left]
    again = _spawn(target, "restore", str(backup_file), TMPDIR=str(temporary))
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, out + err
    assert os.listdir(temporary) == []
    assert [c["name"] for c in json.loads(target.ok("client", "list", "--json").out)] == ["jira"]


def test_an_endpoint_url_that_does_not_parse_is_bad_input(vault: Harness) -> None:
    for option, url in (("--token-url", "https://[x/token"), ("--issuer", "https://:443/"),
                        ("--redirect-uri", "https://[::1/cb")):
        extra = ("--authorize-url", "https://login.example/auth") if option == "--token-url" \
            else ()
        result = vault.run("client", "add", "y", "--provider", "custom", "--client-id", "abc",
                           "--secret-stdin", option, url, *extra, "--scopes", "openid mail",
                           *(("--token-url", "https://login.example/token")
                             if option == "--redirect-uri" else ()),
                           input="Abc~defghijklmnopqrstuvwxyz0123")
        assert result.code == 2 and "Traceback" not in result.text, (option, result.text)
