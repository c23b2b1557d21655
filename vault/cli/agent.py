"""`vault agent start | stop | status | lock | unlock`: the agent of vault/agent/server.py.

Test hook (documented in docs/operations.md): VAULT_AGENT_TEST_CLOCK names a file holding a
number of seconds the agent adds to its clocks (wall time and idle time), read on every look at
the clock, so a test moves time without sleeping. VAULT_AGENT_TEST_IDLE_S sets how many seconds
a connection may stay silent before the agent closes it (60), so a test of a silent client
waits a second, not a minute.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys

import click

from vault.cli.inputs import parse_duration
from vault.cli.main import CliContext, pass_cli
from vault.cli.operations import alert_options, webhook_secret
from vault.errors import BadInput, OperationFailed
from vault.render.text import say


def register(cli: click.Group) -> None:
    cli.add_command(agent)


@click.group()
def agent() -> None:
    """Unlock once and serve tokens from memory on a Unix socket (start, stop, status, lock,
    unlock)."""


def _clocks():
    """The agent's clocks, moved by VAULT_AGENT_TEST_CLOCK's file where it is set."""
    import time
    from datetime import UTC, datetime, timedelta

    hook = os.environ.get("VAULT_AGENT_TEST_CLOCK")
    if not hook:
        return (lambda: datetime.now(UTC)), time.monotonic

    def offset() -> float:
        try:
            with open(hook) as f:
                return float(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0.0

    return (lambda: datetime.now(UTC) + timedelta(seconds=offset())), \
        (lambda: time.monotonic() + offset())


def _group_id(text: str) -> int:
    if text.isdigit():
        return int(text)
    import grp

    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise BadInput(f"--allow-group: no group named {text!r}") from None


@agent.command("start")
@click.option("--socket", "socket_path", metavar="PATH",
              help="Where to listen [default: $XDG_RUNTIME_DIR/vault/agent.sock, else agent.sock "
                   "in the vault's home].")
@click.option("--socket-mode", default="600", show_default=True, metavar="OCTAL",
              help="The socket's file mode (e.g. 660 for a group named with --allow-group).")
@click.option("--foreground", is_flag=True,
              help="Stay in the foreground (systemd: Type=notify; READY=1 once it serves).")
@click.option("--locked", is_flag=True,
              help="Start locked: nothing is asked for now; `vault agent unlock` opens it later "
                   "(e.g. a user unit started at login, unlocked from a terminal).")
@click.option("--lock-after", metavar="DURATION",
              help="Lock (forget the keys) after this long without a token request: 900, 15m, 8h.")
@click.option("--allow-uid", "allow_uids", multiple=True, type=click.IntRange(0),
              metavar="UID", help="Also serve tokens to this user (repeatable).")
@click.option("--allow-group", "allow_groups", multiple=True, metavar="GROUP",
              help="Also serve tokens to members of this group (repeatable).")
@click.option("--on-event", metavar="CMD",
              help="Run CMD (sh -c) when a refresh fails or the agent locks: VAULT_EVENT, "
                   "VAULT_MAILBOX and VAULT_EVENT_DETAIL in its environment, never a secret.")
@alert_options
@pass_cli
def agent_start(state: CliContext, socket_path: str | None, socket_mode: str, foreground: bool,
                locked: bool, lock_after: str | None, allow_uids: tuple[int, ...],
                allow_groups: tuple[str, ...], on_event: str | None, webhook_file: str | None,
                email_to: str | None, via: str | None, min_severity: str,
                resend_after: int) -> None:
    """Unlock the vault once and serve `vault token` from memory.

    Without --foreground it detaches and prints the VAULT_AGENT_SOCK line for a shell
    (eval "$(vault agent start)"). With alert channels (as `vault alert` takes them), a
    refresh that fails is sent at once."""
    from datetime import timedelta

    from vault.agent.client import socket_path as default_socket
    from vault.agent.server import Agent
    from vault.cli.inputs import unlock_material
    from vault.services.alerts import check_alert_channels

    if not re.fullmatch(r"[0-7]{3}", socket_mode) or int(socket_mode, 8) & 0o117:
        raise BadInput("--socket-mode is an octal mode without execute bits or access for "
                       "others, e.g. 600 or 660")
    settings = state.settings
    settings = type(settings)(home=settings.home.resolve(), store_url=settings.store_url,
                              ca_file=settings.ca_file)
    path = os.path.abspath(socket_path or default_socket(str(settings.home)))
    wall, monotonic = _clocks()
    webhook = webhook_secret(webhook_file)
    alerts = None
    if webhook is not None or email_to:
        alerts = {"webhook": check_alert_channels(webhook, email_to, via, min_severity),
                  "email_to": email_to, "via": via, "min_severity": min_severity,
                  "resend_after": timedelta(hours=resend_after)}
    server = Agent(settings, socket_path=path, allow_uids=allow_uids,
                   allow_gids=tuple(_group_id(g) for g in allow_groups),
                   lock_after=parse_duration(lock_after, "--lock-after") if lock_after else None,
                   on_event=on_event, alerts=alerts, clock=wall, monotonic=monotonic)
    with contextlib.suppress(KeyError, ValueError):
        server.idle_timeout = max(0.1, float(os.environ["VAULT_AGENT_TEST_IDLE_S"]))
    # asked for here, on the terminal, if at all; dropped once the vault is open
    materials = [] if locked else [unlock_material(state.key_file)]
    if foreground:
        _run(server, materials, int(socket_mode, 8), None)
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the agent
        os.close(read_end)
        os.setsid()
        _run(server, materials, int(socket_mode, 8), write_end)
        os._exit(0)
    materials.clear()
    os.close(write_end)
    with os.fdopen(read_end) as report:
        outcome = report.read()
    if outcome != "ok":
        os.waitpid(pid, 0)
        code, _, line = outcome.partition("\n")
        if not code.isdigit() or not line:
            raise OperationFailed("the agent did not start")
        say(line, err=True)
        sys.exit(int(code))
    quoted = "'" + path.replace("'", "'\\''") + "'"
    say(f"VAULT_AGENT_SOCK={quoted}; export VAULT_AGENT_SOCK;\necho Agent pid {pid};", lines=True)


def _run(server, materials: list, mode: int, report_fd: int | None) -> None:
    """Unlock with the material in `materials` (taken out of it: nothing keeps a passphrase
    while the agent serves), listen and serve; `report_fd` (detached) hears "ok" or the error
    first."""
    from vault.cli.main import error_report

    try:
        if materials:
            server.unlock(lambda header, held=materials: held.pop())
        server.listen(mode)
    except Exception as error:
        server.lock("start failed")
        if report_fd is None:
            raise
        code, line = error_report(error)
        os.write(report_fd, f"{code}\n{line}".encode())
        os.close(report_fd)
        os._exit(1)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: server.stopping.set())
    if report_fd is not None:
        os.write(report_fd, b"ok")
        os.close(report_fd)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.chdir("/")
    _notify_ready()
    server.serve()


def _notify_ready() -> None:
    """sd_notify(READY=1) for Type=notify units."""
    import socket

    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.sendto(b"READY=1", address)


def _ask(socket_path: str | None, request: dict) -> dict:
    from vault.agent.client import Connection, _trusted
    from vault.agent.client import socket_path as default_socket

    path = socket_path or default_socket(None)
    try:
        conn = Connection(path, timeout=120.0)
    except OSError as e:
        raise OperationFailed(f"no agent answers at {path} ({e.strerror or e}): start one with "
                              "`vault agent start`") from None
    try:
        # the passphrase goes only to an agent of this very user (only it may be unlocked by
        # us); any other answer only from one `vault token` would believe (client._trusted)
        peer = conn.peer_uid()
        believed = (peer == os.geteuid() if request.get("op") == "unlock"
                    else _trusted(peer, path))
        if not believed:
            raise OperationFailed(f"the process answering at {path} is uid {peer}'s, not an "
                                  "agent of yours: nothing was sent to it")
        answer = conn.ask({"v": 1, **request})
    except (OSError, ValueError) as e:
        raise OperationFailed(f"the agent at {path} did not answer ({e})") from None
    finally:
        conn.close()
    if not answer.get("ok"):
        say(str(answer.get("error", "vault: error: the agent refused")), err=True)
        sys.exit(answer.get("exit") if isinstance(answer.get("exit"), int) else 1)
    return answer


SOCKET_OPTION = click.option("--socket", "socket_path", metavar="PATH",
                             help="The agent's socket [default: VAULT_AGENT_SOCK, else the "
                                  "default path].")


@agent.command("status")
@SOCKET_OPTION
def agent_status(socket_path: str | None) -> None:
    """Whether an agent runs, for which vault, and whether it is locked (exit 1: none runs)."""
    from vault.render.text import printable

    answer = _ask(socket_path, {"op": "status"})
    say(f"agent pid {answer.get('pid')} on {printable(str(answer.get('socket')))} for "
        f"{printable(str(answer.get('vault')))}: "
        + ("locked" if answer.get("locked") else f"unlocked, {answer.get('tokens_held')} "
           "token(s) held"))


@agent.command("lock")
@SOCKET_OPTION
def agent_lock(socket_path: str | None) -> None:
    """Make the agent forget the keys (it keeps running; `vault agent unlock` again)."""
    _ask(socket_path, {"op": "lock"})
    say("agent locked")


@agent.command("unlock")
@SOCKET_OPTION
@pass_cli
def agent_unlock(state: CliContext, socket_path: str | None) -> None:
    """Give the agent the vault's key again: the key file (--key-file, VAULT_KEY_FILE), else
    VAULT_PASSPHRASE, else a passphrase typed here."""
    from adapters.keyslots import key_file_from_environment
    from vault.cli.inputs import unlock_material

    key_file = state.key_file or key_file_from_environment()
    if key_file:
        request = {"op": "unlock", "key_file": os.path.abspath(key_file)}
    else:
        material = unlock_material(None)
        request = {"op": "unlock", "passphrase": material.value.reveal()}
    _ask(socket_path, request)
    say("agent unlocked")


@agent.command("stop")
@SOCKET_OPTION
def agent_stop(socket_path: str | None) -> None:
    """Stop the agent (it forgets the keys and removes its socket)."""
    _ask(socket_path, {"op": "stop"})
    say("agent stopping")
