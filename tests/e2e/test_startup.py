"""Start-up: each command imports what it uses. The lazily registered commands are the ones their
modules define, `vault --help` lists them without importing them, the read commands load no HTTP
client or server, and the shared vocabulary imports nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from domain import clouds, credentials, expiry, grants, vocabulary
from tests.conftest import Harness, add_client, import_grant
from vault.cli.main import COMMANDS

# What a read command has no use for: HTTP (client and server), TLS, mail, the OAuth and
# ID-token adapters, the importers' cryptography.
NOT_FOR_READS = ("httpx", "http.server", "http.client", "ssl", "email", "cryptography",
                 "concurrent.futures", "adapters.oauth", "adapters.id_token", "adapters.loopback",
                 "adapters.mail", "adapters.notify", "adapters.importers", "adapters.http")


LIST_MODULES = """
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["MODULES_FILE"], "w").write(json.dumps(list(sys.modules))))
from vault.entry import main
main(sys.argv[1:])
"""


def imported(h: Harness | None, tmp_path: Path, *args: str) -> set[str]:
    """The modules `vault ARGS` has loaded when it exits, run as a separate process (which must
    succeed). (`-X importtime` would miss the command modules: importlib loads them.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    if h is not None:
        env.update({k: v for k, v in h.env().items() if v is not None})
    env["MODULES_FILE"] = str(tmp_path / "modules.json")
    result = subprocess.run([sys.executable, "-c", LIST_MODULES, *args], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(json.loads((tmp_path / "modules.json").read_text()))


def test_help_imports_no_command_module(tmp_path: Path) -> None:
    modules = imported(None, tmp_path, "--help")
    command_modules = {f"vault.cli.{module}" for module, _ in COMMANDS.values()}
    assert "vault.cli.main" in modules and not modules & command_modules
    assert not [m for m in modules if m.split(".")[0] in ("adapters", "eventsourcing")]


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("expiry",),
                                  ("expiry", "--format", "json"), ("grant", "list")])
def test_read_commands_load_no_http_or_mail(sqlite_vault: Harness, tmp_path: Path,
                                            args: tuple[str, ...]) -> None:
    add_client(sqlite_vault)
    import_grant(sqlite_vault)
    modules = imported(sqlite_vault, tmp_path, *args)
    assert "vault.listings" in modules  # it did run
    assert not [m for m in NOT_FOR_READS if m in modules]
    # served by the light path: not even the CLI, the event store's library or the aggregates
    assert not [m for m in modules if m.split(".")[0] in ("click", "eventsourcing", "rich")
                or m in ("vault.core", "domain.grants", "domain.rotation", "domain.credentials")]


def test_the_vocabulary_imports_nothing_and_is_the_domains() -> None:
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import domain.vocabulary"],
                            capture_output=True, text=True, check=True)
    modules = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert {m for m in modules if m.split(".")[0] in ("domain", "vault", "adapters")} == {
        "domain", "domain.vocabulary"}
    assert tuple(clouds.MICROSOFT_CLOUDS) == vocabulary.MICROSOFT_CLOUD_NAMES
    assert clouds.PROTOCOLS is vocabulary.PROTOCOLS and clouds.PROVIDERS is vocabulary.PROVIDERS
    assert clouds.MAIL_PROTOCOLS is vocabulary.MAIL_PROTOCOLS
    assert credentials.AUTH_METHODS is vocabulary.AUTH_METHODS
    assert (grants.ACTIVE, grants.NEEDS_RECONSENT, grants.REVOKED) == vocabulary.GRANT_STATUSES
    assert tuple(expiry.SEVERITY_RANK) == vocabulary.SEVERITIES


CLICKS_OWN_WIDTH = """
import sys
from vault.cli import main
main.help_width = lambda: None  # click works the width out itself, through shutil
main.main(sys.argv[1:])
"""


def _output(argv: list[str], columns: str | None, tty_columns: int | None) -> str:
    """What `argv` writes (stdout and stderr), COLUMNS set or not, on a pipe or on a terminal
    that many columns wide."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns is not None:
        env["COLUMNS"] = columns
    if tty_columns is None:
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        return result.stdout + result.stderr
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, tty_columns, 0, 0))
    try:
        subprocess.run(argv, env=env, stdout=follower, stderr=follower, timeout=60, check=False)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(leader)


@pytest.mark.parametrize("args", [("--help",), ("grant", "--help"), ("grant", "list", "--bogus"),
                                  ("expiry", "--help")])
def test_help_and_usage_are_as_wide_as_click_makes_them(args: tuple[str, ...]) -> None:
    """vault works out click's width without shutil: the same text at every width."""
    for columns, tty_columns in [(None, None), ("", None), ("0", None), ("abc", None),
                                 ("-4", None), ("30", None), ("52", None), ("79", None),
                                 ("100", None), ("101", None), ("250", None), (None, 60),
                                 (None, 130), ("70", 120)]:
        ours = _output([sys.executable, "-m", "vault", *args], columns, tty_columns)
        clicks = _output([sys.executable, "-c", CLICKS_OWN_WIDTH, *args], columns, tty_columns)
        assert ours == clicks, (columns, tty_columns)
        assert "Usage: vault" in ours
