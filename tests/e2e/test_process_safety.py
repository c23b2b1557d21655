"""What the vault process does to protect itself and its keys: no core dumps, a vault directory
that must be the user's own, and secrets typed at a terminal never echoed."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from uuid import UUID

import pytest
from click.testing import CliRunner

from tests.conftest import (
    MS_CLIENT_ID,
    MS_TENANT,
    VAULT_ENV,
    Harness,
    add_client,
)
from tests.consent import SANDBOX_MAILBOX as MAILBOX

# -- core dumps ---------------------------------------------------------------------------------


def _spawn(*args: str, **kwargs) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in VAULT_ENV}
    return subprocess.Popen([sys.executable, "-m", "vault", *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_the_vault_process_cannot_dump_core() -> None:
    """A running `vault` (the sandbox command blocks, so it can be looked at) has RLIMIT_CORE 0
    and is not dumpable. The kernel shows the dumpable flag as the owner of /proc/PID: the
    process's own user and group when dumpable, root:root when not. Run as root, the child gets
    another group so that the two differ."""
    as_root = os.geteuid() == 0
    process = _spawn("sandbox", **({"group": 65534, "extra_groups": []} if as_root else {}))
    try:
        assert process.stdout.readline().startswith("{")  # up and serving
        owner = os.stat(f"/proc/{process.pid}/status")
        with open(f"/proc/{process.pid}/limits") as f:
            core = next(line.split()[4:6] for line in f if line.startswith("Max core file size"))
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert core == ["0", "0"]  # soft and hard: a child cannot raise it again
    assert (owner.st_uid, owner.st_gid) == (0, 0), "the vault process is dumpable"


# -- the vault directory must be the user's own ---------------------------------------------------

NOBODY = 65534


def test_a_vault_directory_owned_by_another_user_is_refused(sqlite_vault: Harness) -> None:
    """Whoever owns the directory (or the database file) can swap or roll back vault.db: root
    included, vault opens only a vault that is the effective user's own (exit 3, as for a
    directory others can read). PostgreSQL has no directory: SQLite only."""
    h = sqlite_vault
    database = h.home / "vault.db"
    for chowned in ((h.home,), (database,), (h.home, database)):
        for path in chowned:
            os.chown(path, NOBODY, NOBODY)
        for command in (("status",), ("audit", "verify"), ("client", "list")):
            result = h.run(*command)
            assert result.code == 3, (chowned, command, result.text)
            assert f"belongs to user id {NOBODY}" in result.err and "Traceback" not in result.err
        for path in chowned:
            os.chown(path, os.geteuid(), os.getegid())
    h.ok("status")


def test_the_cached_token_path_refuses_another_users_directory_too(granted: Harness) -> None:
    assert granted.cached_token(MAILBOX) is not None  # served from the cache while the home is ours
    os.chown(granted.home, NOBODY, NOBODY)
    assert granted.cached_token(MAILBOX) is None  # the full CLI runs, and refuses
    result = granted.run("token", MAILBOX)
    assert result.code == 3 and result.out == "" and "belongs to user id" in result.err


def test_an_unreadable_home_is_an_error_on_the_cached_token_path(granted: Harness) -> None:
    """A home this user cannot reach (here: root's private temporary directory, looked at with
    the effective user id of nobody) is one line and exit 1, not a traceback."""
    from vault.entry import main

    assert os.geteuid() == 0, "this test switches its effective user id (the suite runs as root)"
    os.seteuid(NOBODY)
    try:
        served = granted.cached_token(MAILBOX)
        with pytest.raises(SystemExit) as exit_, CliRunner().isolation(
                env=granted.env()) as (_, err, _):
            main(["token", MAILBOX])
        stderr = err.getvalue().decode()
    finally:
        os.seteuid(0)
    assert served is None
    assert exit_.value.code == 1, stderr
    assert "cannot open the vault directory" in stderr and "Permission denied" in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


# -- secrets typed at a terminal ------------------------------------------------------------------

TYPED_SECRET = "Abc~typed-at-a-terminal-0123456789"


def _at_a_terminal(h: Harness, *args: str, typed: bytes) -> tuple[int | None, bytes]:
    """Run `vault ARGS` with a pseudo-terminal as its stdin, stdout and stderr, type `typed`
    once the prompt shows, and return (exit code or None if it hung, what the terminal showed:
    the prompt, the echo if any, the output)."""
    env = {k: v for k, v in os.environ.items() if k not in VAULT_ENV}
    env.update({k: v for k, v in h.env().items() if v is not None})
    primary, secondary = os.openpty()
    process = subprocess.Popen([sys.executable, "-m", "vault", *args], env=env,
                               stdin=secondary, stdout=secondary, stderr=secondary,
                               start_new_session=True)
    os.close(secondary)
    shown = bytearray()

    def read_until(marker: bytes, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while marker not in shown and time.monotonic() < deadline:
            if select.select([primary], [], [], 0.05)[0]:
                try:
                    shown.extend(os.read(primary, 65536))
                except OSError:  # the process closed the terminal
                    return
            elif process.poll() is not None:
                return

    try:
        read_until(b"not shown", 10)  # the prompt
        os.write(primary, typed)
        read_until(b"\x00never", 1)  # whatever comes back: an echo, the result
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # still waiting for more input (Ctrl-D)
            process.kill()
            process.wait()
            code = None
        read_until(b"\x00never", 0.2)
    finally:
        os.close(primary)
    return code, bytes(shown)


def test_a_secret_typed_at_a_terminal_is_not_echoed_and_needs_no_ctrl_d(vault: Harness) -> None:
    code, shown = _at_a_terminal(
        vault, "client", "add", "jira", "--provider", "microsoft", "--tenant", MS_TENANT,
        "--client-id", MS_CLIENT_ID, "--secret-stdin", typed=TYPED_SECRET.encode() + b"\r")
    assert code == 0, shown
    assert b"Secret (typing is not shown): " in shown and b"Added client jira" in shown
    assert TYPED_SECRET[:8].encode() not in shown  # not echoed, not even in part
    shown_secret = json.loads(vault.ok("client", "show", "jira", "--reveal-secret",
                                       "--json").out)["secret"]
    assert shown_secret == TYPED_SECRET


def test_a_refresh_token_typed_at_a_terminal_is_not_echoed(sqlite_vault: Harness) -> None:
    add_client(sqlite_vault, "jira")
    token = "M.R3_BAY.typed-refresh-token-0123456789"
    code, shown = _at_a_terminal(
        sqlite_vault, "grant", "import", "--client", "jira", "--mailbox", "help@contoso.com",
        "--protocols", "imap", "--refresh-token-stdin", typed=token.encode() + b"\n")
    assert code == 0, shown
    assert b"Refresh token (typing is not shown): " in shown and token[:12].encode() not in shown
    with sqlite_vault.app() as app:
        (row,) = app.core.reads.rows("view_grants")
        rotation = app.core.load(UUID(row.rotation_uuid))
        assert rotation.refresh_token.reveal() == token


def test_a_line_the_terminal_may_have_cut_is_refused(sqlite_vault: Harness) -> None:
    """A terminal in canonical mode keeps 4095 bytes of a line and drops the rest: a secret of
    that length may be cut short, so it is refused (exit 2) rather than stored."""
    for length in (5000, 4095):
        code, shown = _at_a_terminal(
            sqlite_vault, "client", "add", "jira", "--provider", "microsoft", "--tenant",
            MS_TENANT, "--client-id", MS_CLIENT_ID, "--secret-stdin",
            typed=b"A" * length + b"\n")
        assert code == 2, shown
        assert b"4095 bytes or longer" in shown and b"--secret-file" in shown
        assert b"AAAAAAAA" not in shown
    assert sqlite_vault.ok("client", "list", "--json").out.strip() == "[]"
    code, shown = _at_a_terminal(
        sqlite_vault, "client", "add", "jira", "--provider", "microsoft", "--tenant",
        MS_TENANT, "--client-id", MS_CLIENT_ID, "--secret-stdin", typed=b"A" * 4094 + b"\n")
    assert code == 0, shown
