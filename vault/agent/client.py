"""`vault token` through a running agent (`vault agent start`), and the wire protocol every
client of the agent speaks. Imported by vault/entry.py before anything else: json and the
socket module's C core only, so that a mail client's `vault token` costs little more than
starting Python.

The protocol, one UTF-8 JSON object per line each way, over the agent's Unix socket (a client
may send many requests on one connection, one at a time):

    -> {"v": 1, "op": "token", "mailbox": "alice@example.com", "client": null,
        "protocol": "imap", "format": "token", "min_valid": 300, "host": null, "port": null,
        "home": null, "store": null}
    <- {"ok": true, "output": "eyJ0eXAi...\\n"}
    <- {"ok": false, "exit": 4, "error": "vault: error: no grant for ...", "reason": null}

`output` is exactly what `vault token` prints on stdout; `exit` and `error` are its exit code and
its stderr line. `home`/`store` name the vault the client means (VAULT_HOME or --home, and
VAULT_STORE; null: the default): an agent serving another one answers `"reason": "other-vault"`,
and a locked one `"reason": "locked"`. Other ops: `status`, `lock`, `unlock` (with `"key_file":
PATH` or `"passphrase": TEXT`) and `stop`, which only the agent's own user may send. A request
line longer than 64 KiB, or one that is not such an object, gets an error and the connection is
closed. Example: `printf '%s\\n' '{"v":1,"op":"status"}' | socat - UNIX-CONNECT:$VAULT_AGENT_SOCK`.
"""

from __future__ import annotations

# _socket is socket.py's C core: the same socket objects and calls, without socket.py's own
# import (its enums and selectors, about a seventh of this client's CPU)
import _socket
import json
import os
import sys

SOCKET_NAME = "agent.sock"
MAX_LINE = 64 * 1024
MAX_ANSWER = 1024 * 1024
CLIENT_TIMEOUT_S = 60.0  # the agent may be refreshing at the provider (it retries for a while)
LOCKED, OTHER_VAULT = "locked", "other-vault"


def socket_path(home: str | None = None) -> str:
    """VAULT_AGENT_SOCK; else $XDG_RUNTIME_DIR/vault/agent.sock; else agent.sock in the vault's
    home (`home`, VAULT_HOME or the default one)."""
    explicit = os.environ.get("VAULT_AGENT_SOCK")
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "vault", SOCKET_NAME)
    home = home or os.environ.get("VAULT_HOME")
    if not home:
        from platformdirs import user_data_dir

        home = user_data_dir("vault", appauthor=False)
    return os.path.join(os.path.expanduser(home), SOCKET_NAME)


class Connection:
    """One connection to the agent; requests one at a time."""

    def __init__(self, path: str, timeout: float = CLIENT_TIMEOUT_S) -> None:
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise
        self.buffer = b""

    def peer_uid(self) -> int:
        creds = self.sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
        return int.from_bytes(creds[4:8], sys.byteorder, signed=True)  # struct ucred's uid

    def ask(self, request: dict) -> dict:
        try:  # noqa: SIM105 - contextlib is one import more for the light client
            self.sock.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # it may have answered before reading (a refused uid): its answer is read below
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the agent closed the connection")
            self.buffer += chunk
            if len(self.buffer) > MAX_ANSWER:
                raise ConnectionError("the agent's answer is too long")
        line, _, self.buffer = self.buffer.partition(b"\n")
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise ConnectionError("the agent's answer is not an object")
        return answer

    def close(self) -> None:
        self.sock.close()


def token_request(options: dict[str, str], mailbox: str) -> dict:
    """The agent request for `vault token MAILBOX [options]` (options as vault/lightargs.py
    parsed them; the agent checks their values as the CLI does)."""
    return {"v": 1, "op": "token", "mailbox": mailbox, "client": options.get("--client"),
            "protocol": options.get("--protocol", "imap"),
            "format": options.get("--format", "token"),
            "min_valid": options.get("--min-valid", "300"),
            "host": options.get("--host"), "port": options.get("--port"),
            "home": options.get("--home") or os.environ.get("VAULT_HOME") or None,
            "store": os.environ.get("VAULT_STORE") or None}


def _trusted(uid: int, path: str) -> bool:
    """Whether the process answering at `path` (its uid, as the kernel says) may be believed:
    this user's own, root's, or that of the user who owns the socket's directory where nobody
    else may write to it, in a parent nobody else may write to (a service account's agent in
    its 0750 directory under /run; never whoever got to a shared /tmp first)."""
    if uid in (os.geteuid(), 0):
        return True
    where = os.path.dirname(os.path.abspath(path))
    try:
        directory, parent = os.stat(where), os.stat(os.path.dirname(where))
    except OSError:
        return False
    # ...and nobody else could have made that directory (a parent others may write to, as
    # /tmp, lets anyone create it first)
    return (directory.st_uid == uid and not directory.st_mode & 0o022
            and not parent.st_mode & 0o002)


def _unattended_unlock(options: dict[str, str]) -> bool:
    """Whether the direct path can unlock without a person: a key file (--key-file,
    VAULT_KEY_FILE, a systemd credential) or VAULT_PASSPHRASE."""
    if options.get("--key-file") or os.environ.get("VAULT_KEY_FILE") or \
            os.environ.get("VAULT_PASSPHRASE"):
        return True
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    return bool(credentials) and os.path.isfile(os.path.join(credentials, "vault.key"))


def agent_token(args: list[str]) -> int | None:
    """`vault token ARGS` through the agent: the exit code once it answered (its output
    printed), or None when no agent serves this vault (the direct paths run, as without one)."""
    from vault.lightargs import parse

    parsed = parse(args)
    if parsed is None or parsed[0] != ("token",):
        return None
    _, options, positional = parsed
    path = socket_path(options.get("--home"))
    try:
        conn = Connection(path)
    except OSError:
        return None  # no agent (or a stale socket): as without one
    try:
        if not _trusted(conn.peer_uid(), path):
            return None  # whoever answers there could hand out any token: as without an agent
        answer = conn.ask(token_request(options, positional[0]))
    except (OSError, ValueError):
        return None  # the agent went away mid-answer, or answered nonsense
    finally:
        conn.close()
    if answer.get("ok") is True and isinstance(answer.get("output"), str):
        sys.stdout.write(answer["output"])
        sys.stdout.flush()
        return 0
    reason = answer.get("reason")
    if reason == OTHER_VAULT or (reason == LOCKED and _unattended_unlock(options)):
        return None
    code = answer.get("exit")
    error = answer.get("error")
    text = error if isinstance(error, str) else "vault: error: the agent failed"
    sys.stderr.write("".join(c if c.isprintable() else "?" for c in text) + "\n")
    sys.stderr.flush()
    return code if isinstance(code, int) and 1 <= code <= 5 else 1
