"""`vault agent`, issue 13 items 2 and 8: who may ask the agent (peer credentials, checked by a
second user this module creates and runs clients as, through runuser: the suite runs as root),
where it agrees to make its socket, and clients that are hostile or broken, each while a
well-behaved client keeps being served. A real agent process (AgentProcess), real `vault token`
clients, the real oidc-provider behind them."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import VAULT_ENV, Harness
from tests.consent import ALICE
from tests.integration import test_agent as agent_tests
from tests.integration.test_agent import AgentProcess

alice, agent = agent_tests.alice, agent_tests.agent  # its fixtures, used here too

ROOT = Path(__file__).resolve().parents[2]  # what PYTHONPATH names for processes of other users

# A client of the wire protocol (vault/agent/client.py), run as another user: sends each
# argument as one request line and prints each answer line (EOF: "EOF").
RAW_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
s.connect(sys.argv[1])
answers = s.makefile("rb")
for line in sys.argv[2:]:
    try:
        s.sendall(line.encode() + b"\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # it answered (a refusal) and closed before reading: the answer is still there
    try:
        answer = answers.readline()
    except ConnectionResetError:  # closed with our line unread
        answer = b""
    print(answer.decode().strip() or "EOF", flush=True)
"""


# -- another user -----------------------------------------------------------------------------


@dataclass
class OtherUser:
    name: str
    uid: int
    group: str  # a group the user is in (not its primary one), for --allow-group
    gid: int
    python: str  # an interpreter this user may run

    def run(self, *argv: str, **env: str) -> subprocess.CompletedProcess:
        """`argv` as this user, with only the environment given (and what Python needs)."""
        base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1",
                "LANG": "C.UTF-8"}
        return subprocess.run(["runuser", "-u", self.name, "--", "env", "-i",
                               *(f"{k}={v}" for k, v in {**base, **env}.items()), *argv],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    def vault_token(self, h: Harness, socket_path: str) -> subprocess.CompletedProcess:
        """The real `vault token` as this user, pointed at the agent and at `h`'s vault."""
        return self.run(self.python, "-m", "vault", "token", ALICE[0],
                        VAULT_AGENT_SOCK=socket_path, VAULT_HOME=str(h.home))

    def ask(self, socket_path: str, *requests: dict) -> list[dict | None]:
        """Raw requests as this user on one connection; the answers (None: the agent closed)."""
        done = self.run(self.python, "-c", RAW_CLIENT, socket_path,
                        *(json.dumps(r) for r in requests))
        assert done.returncode == 0, done.stderr
        return [None if line == "EOF" else json.loads(line) for line in done.stdout.splitlines()]


def _python_for(user: str) -> str:
    """This virtual environment's interpreter if `user` may run it (its base may live under
    /root), else the system's: the agent's client needs the standard library only."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        done = subprocess.run(["runuser", "-u", user, "--", candidate, "-c", "pass"],
                              capture_output=True, timeout=30)
        if done.returncode == 0:
            return candidate
    pytest.fail(f"no Python interpreter that {user} may run")


@pytest.fixture(scope="module")
def other_user() -> Iterator[OtherUser]:
    """A throw-away system user (and a group it is in besides its own), removed afterwards."""
    suffix = secrets.token_hex(3)
    name, group = f"vaultpeer{suffix}", f"vaultgrp{suffix}"
    subprocess.run(["groupadd", "--system", group], check=True, capture_output=True)
    try:
        subprocess.run(["useradd", "--system", "--no-create-home", "--user-group", "--groups",
                        group, "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)
        try:
            import grp
            import pwd

            yield OtherUser(name, pwd.getpwnam(name).pw_uid, group, grp.getgrnam(group).gr_gid,
                            _python_for(name))
        finally:
            subprocess.run(["userdel", name], check=False, capture_output=True)
    finally:
        subprocess.run(["groupdel", group], check=False, capture_output=True)


@pytest.fixture
def shared_dir(other_user: OtherUser) -> Iterator[Path]:
    """A socket directory the other user can reach: root's, group `other_user.group`, 2750 (the
    set-group-ID bit gives the socket that group), under /tmp (pytest's own is root's 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="vault-agent-", dir="/tmp"))
    os.chown(directory, os.geteuid(), other_user.gid)
    directory.chmod(0o2750)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _agent_entries(h: Harness) -> list[dict]:
    entries = json.loads(h.ok("audit", "log", "--limit", "0", "--json").out)
    return [e for e in entries if e.get("via") == "agent"]


# -- item 2: who may ask ------------------------------------------------------------------------


def test_another_uid_is_refused_by_the_peer_check_with_the_door_open(
        alice: Harness, other_user: OtherUser, shared_dir: Path) -> None:
    agent = AgentProcess(alice, shared_dir, "--socket-mode", "660")
    try:
        # the file modes let the other user connect: the socket is 0660 with a group it is in
        info = os.stat(agent.socket)
        assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_gid == other_user.gid
        assert other_user.gid in os.getgrouplist(other_user.name, other_user.uid)

        refused = other_user.vault_token(alice, agent.socket)
        assert (refused.returncode, refused.stdout) == (2, ""), refused.stderr
        assert refused.stderr == (f"vault: error: uid {other_user.uid} may not use this agent "
                                  "(--allow-uid / --allow-group)\n")
        # the connection was made (the agent answered), and nothing else is answered on it
        raw = other_user.ask(agent.socket, {"v": 1, "op": "status"}, {"v": 1, "op": "status"})
        assert raw[0] is not None and raw[0]["ok"] is False
        assert f"uid {other_user.uid} may not use this agent" in raw[0]["error"]
        assert raw[1] is None
        assert agent.token(ALICE[0], VAULT_KEY_FILE=None).code == 0  # its own user still is
    finally:
        agent.stop()
    assert not [e for e in _agent_entries(alice) if e["peer_uid"] == other_user.uid]


def test_a_refused_client_hears_why_though_the_agent_hung_up_before_it_asked(
        alice: Harness, other_user: OtherUser, shared_dir: Path) -> None:
    """The agent refuses a uid before reading anything; a client that sends its request only
    after the agent closed must still read the refusal (not fall back to the direct path, as
    `vault token` did about once in a hundred runs)."""
    import pwd
    import select

    from vault.agent.client import Connection, token_request

    agent = AgentProcess(alice, shared_dir, "--socket-mode", "660")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other user's client, this module's code already loaded
        try:
            os.close(read_end)
            os.setgroups([other_user.gid])
            os.setgid(pwd.getpwnam(other_user.name).pw_gid)
            os.setuid(other_user.uid)
            conn = Connection(agent.socket, timeout=10)
            hung_up = select.poll()
            hung_up.register(conn.sock, select.POLLRDHUP)
            hung_up.poll(10_000)  # the agent answered and closed: only now the request goes
            os.write(write_end, json.dumps(conn.ask(token_request({}, ALICE[0]))).encode())
        except BaseException as error:
            os.write(write_end, repr(error).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as said:
            heard = said.read()
        os.waitpid(pid, 0)
    finally:
        agent.stop()
    assert heard.startswith("{"), heard
    assert json.loads(heard)["error"] == (f"vault: error: uid {other_user.uid} may not use this "
                                          "agent (--allow-uid / --allow-group)")


@pytest.mark.parametrize("allow", ["--allow-uid", "--allow-group"])
def test_an_allowed_user_is_served_and_each_entry_names_its_uid(
        alice: Harness, other_user: OtherUser, shared_dir: Path, allow: str) -> None:
    direct = alice.ok("token", ALICE[0]).out
    value = str(other_user.uid) if allow == "--allow-uid" else other_user.group
    agent = AgentProcess(alice, shared_dir, "--socket-mode", "660", allow, value)
    try:
        served = [other_user.vault_token(alice, agent.socket) for _ in range(2)]
    finally:
        agent.stop()
    assert all((r.returncode, r.stdout, r.stderr) == (0, direct, "") for r in served), served
    theirs = [e for e in _agent_entries(alice) if e["peer_uid"] == other_user.uid]
    assert len(theirs) == 2
    assert all(e["action"] == "token" and e["peer_user"] == other_user.name for e in theirs)
    alice.ok("audit", "verify")


def test_an_allowed_user_gets_tokens_but_may_not_lock_unlock_or_stop(
        alice: Harness, other_user: OtherUser, shared_dir: Path) -> None:
    agent = AgentProcess(alice, shared_dir, "--socket-mode", "660",
                         "--allow-uid", str(other_user.uid))
    own = os.geteuid()
    try:
        lock, token = other_user.ask(agent.socket, {"v": 1, "op": "lock"},
                                     {"v": 1, "op": "token", "mailbox": ALICE[0]})
        assert lock == {"ok": False, "exit": 2, "reason": None,
                        "error": f"vault: error: only uid {own} may lock this agent"}
        assert token["ok"] is True and token["output"].strip()
        assert agent.ask({"v": 1, "op": "status"})["locked"] is False

        assert agent.ask({"v": 1, "op": "lock"})["ok"]
        [unlock] = other_user.ask(agent.socket,
                                  {"v": 1, "op": "unlock", "key_file": str(alice.key_file)})
        assert unlock["ok"] is False and f"only uid {own} may unlock" in unlock["error"]
        assert agent.ask({"v": 1, "op": "status"})["locked"] is True
        assert agent.ask({"v": 1, "op": "unlock", "key_file": str(alice.key_file)})["ok"]

        [stop] = other_user.ask(agent.socket, {"v": 1, "op": "stop"})
        assert stop["ok"] is False and f"only uid {own} may stop" in stop["error"]
        assert other_user.vault_token(alice, agent.socket).returncode == 0
        assert agent.process.poll() is None
        assert agent.token(ALICE[0], VAULT_KEY_FILE=None).code == 0
    finally:
        agent.stop()


# -- item 2: where the agent agrees to make its socket -----------------------------------------


@dataclass
class Planted:
    """Something at (or around) the socket path before `vault agent start`."""

    path: Path  # the --socket given
    says: str  # what the refusal says
    unchanged: Callable[[], None]  # checks that what was planted is as it was


def _snapshot(path: Path) -> Callable[[], None]:
    before = os.lstat(path)

    def unchanged() -> None:
        after = os.lstat(path)
        assert (after.st_ino, after.st_mode, after.st_uid, after.st_mtime_ns) == \
            (before.st_ino, before.st_mode, before.st_uid, before.st_mtime_ns)
    return unchanged


def _listening_socket(d: Path, other: OtherUser, cleanup: list) -> Planted:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(d / "agent.sock"))
    listener.listen(1)
    cleanup.append(listener.close)
    return Planted(d / "agent.sock", "a socket of a running agent", _snapshot(d / "agent.sock"))


def _socket_of_another_uid(d: Path, other: OtherUser, cleanup: list) -> Planted:
    with socket.socket(socket.AF_UNIX) as planted:  # nothing listens: stale, but not ours
        planted.bind(str(d / "agent.sock"))
    os.chown(d / "agent.sock", other.uid, other.gid)
    return Planted(d / "agent.sock", f"a socket of uid {other.uid}", _snapshot(d / "agent.sock"))


def _symlink_to_a_file(d: Path, other: OtherUser, cleanup: list) -> Planted:
    target = d.parent / "precious"
    target.write_text("do not touch\n")
    (d / "agent.sock").symlink_to(target)
    link, file = _snapshot(d / "agent.sock"), _snapshot(target)

    def unchanged() -> None:
        link()
        file()
        assert target.read_text() == "do not touch\n"
    return Planted(d / "agent.sock", "a symlink", unchanged)


def _dangling_symlink(d: Path, other: OtherUser, cleanup: list) -> Planted:
    target = d.parent / "would-be-created"
    (d / "agent.sock").symlink_to(target)
    link = _snapshot(d / "agent.sock")

    def unchanged() -> None:
        link()
        assert not os.path.lexists(target)
    return Planted(d / "agent.sock", "a symlink", unchanged)


def _a_file(d: Path, other: OtherUser, cleanup: list) -> Planted:
    (d / "agent.sock").write_text("")
    return Planted(d / "agent.sock", "a file", _snapshot(d / "agent.sock"))


def _directory_writable_by_others(d: Path, other: OtherUser, cleanup: list) -> Planted:
    d.chmod(0o777)
    return Planted(d / "agent.sock", f"others may write to {d} (mode 777)",
                   lambda: assert_absent(d / "agent.sock"))


def _directory_of_another_user(d: Path, other: OtherUser, cleanup: list) -> Planted:
    os.chown(d, other.uid, other.gid)
    return Planted(d / "agent.sock", f"{d} belongs to uid {other.uid}",
                   lambda: assert_absent(d / "agent.sock"))


def _symlinked_directory(d: Path, other: OtherUser, cleanup: list) -> Planted:
    (d / "real").mkdir(mode=0o700)
    (d / "link").symlink_to(d / "real")
    return Planted(d / "link" / "agent.sock", "is not a directory (a symlink?)",
                   lambda: assert_absent(d / "real" / "agent.sock"))


def assert_absent(path: Path) -> None:
    assert not os.path.lexists(path), f"{path} was created"


PLANTED = [_listening_socket, _socket_of_another_uid, _symlink_to_a_file, _dangling_symlink,
           _a_file, _directory_writable_by_others, _directory_of_another_user,
           _symlinked_directory]


def _start(h: Harness, path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in VAULT_ENV}
    env.update({k: v for k, v in h.env().items() if v is not None})
    done = subprocess.run([sys.executable, "-m", "vault", "agent", "start", "--socket", str(path),
                           *args], env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    if done.returncode == 0 and "Agent pid" in done.stdout:  # detached: do not leave it running
        os.kill(int(done.stdout.split("Agent pid ")[1].split(";")[0]), 15)
    return done


@pytest.mark.parametrize("plant", PLANTED, ids=[p.__name__.strip("_") for p in PLANTED])
@pytest.mark.parametrize("mode", ["detached", "foreground"])
def test_start_refuses_a_socket_path_it_did_not_make(
        sqlite_vault: Harness, other_user: OtherUser, tmp_path: Path, plant, mode: str) -> None:
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    cleanup: list = []
    try:
        planted = plant(directory, other_user, cleanup)
        done = _start(sqlite_vault, planted.path,
                      *(["--foreground"] if mode == "foreground" else []))
        # exit 1 (OperationFailed, docs/architecture.md), one line, said once, no traceback
        assert (done.returncode, done.stdout) == (1, ""), done
        assert done.stderr.startswith("vault: error: ") and done.stderr.count("\n") == 1, done
        assert done.stderr.count("vault: error:") == 1 and "Traceback" not in done.stderr
        assert planted.says in done.stderr
        planted.unchanged()
    finally:
        for close in cleanup:
            close()


def test_a_stale_socket_of_this_user_is_replaced(alice: Harness, tmp_path: Path) -> None:
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as died:  # an agent of ours that died: its socket stays
        died.bind(str(directory / "agent.sock"))
    with socket.socket(socket.AF_UNIX) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(str(directory / "agent.sock"))  # nothing listens
    agent = AgentProcess(alice, directory)  # returns once the path exists: it already does
    try:
        _wait_serving(agent)
        assert agent.ask({"v": 1, "op": "status"})["pid"] == agent.process.pid
        assert agent.token(ALICE[0], VAULT_KEY_FILE=None).code == 0
    finally:
        agent.stop()


def _wait_serving(agent: AgentProcess) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if agent.ask({"v": 1, "op": "status"}).get("pid") == agent.process.pid:
                return
        except (OSError, ValueError):
            pass
        assert agent.process.poll() is None, agent.process.stderr.read()
        assert time.monotonic() < deadline, "the agent did not serve"
        time.sleep(0.02)


# -- item 8: hostile or broken clients --------------------------------------------------------


def _connect(agent: AgentProcess, timeout: float = 10.0) -> socket.socket:
    """A connection to the agent; while its backlog is full (EAGAIN), tried again."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        try:
            sock.connect(agent.socket)
            return sock
        except BlockingIOError:
            sock.close()
            assert time.monotonic() < deadline, "the agent accepts no connection"
            time.sleep(0.001)


def _answer(sock: socket.socket) -> dict | None:
    """The next answer line on `sock` (and not a byte more), or None once the agent closed it."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536, socket.MSG_PEEK)
        except ConnectionResetError:  # closed with bytes of ours unread
            chunk = b""
        if not chunk:
            assert not data, f"the agent closed mid-answer: {data!r}"
            return None
        end = chunk.find(b"\n")
        data += sock.recv(len(chunk) if end < 0 else end + 1)
        if end >= 0:
            return json.loads(data)


def _served(agent: AgentProcess, token: str) -> None:
    """The well-behaved client: the real `vault token`, which could not get a token but from
    the agent (no key file for a direct path)."""
    result = agent.token(ALICE[0], VAULT_KEY_FILE=None)
    assert (result.code, result.out) == (0, token), result


def _token_request(**extra) -> bytes:
    return json.dumps({"v": 1, "op": "token", "mailbox": ALICE[0], **extra}).encode() + b"\n"


def _still_fine(agent: AgentProcess) -> None:
    assert agent.process.poll() is None, "the agent died"
    assert agent.ask({"v": 1, "op": "status"})["ok"] is True
    agent.stop()
    errors = agent.process.stderr.read()
    assert "Traceback" not in errors and "Exception" not in errors, errors


MALFORMED = [  # (request line, what the error says, whether the agent closes the connection)
    (b"not json at all", "one JSON object per line", True),
    (b"\xff\xfe\x00 invalid UTF-8", "one JSON object per line", True),
    (b"[" * 30000 + b"]" * 30000, "one JSON object per line", True),  # nested past recursion
    (b"[1, 2, 3]", "not an agent request", False),
    (b'"a string"', "not an agent request", False),
    (b"null", "not an agent request", False),
    (b'{"v": 2, "op": "token", "mailbox": "alice@example.test"}', "not an agent request", False),
    (b'{"op": "status"}', "not an agent request", False),
    (b'{"v": 1, "op": "explode"}', "unknown op 'explode'", False),
    (b'{"v": 1}', "unknown op 'None'", False),
    (b'{"v": 1, "op": "token"}', "names a mailbox", False),
    (b'{"v": 1, "op": "token", "mailbox": "alice@example.test", "min_valid": 1e999}',
     "out of range", False),
    (b'{"v": 1, "op": "token", "mailbox": "alice@example.test", "protocol": ["imap"]}',
     "--protocol is one of", False),
    (b'{"v": 1, "op": "token", "mailbox": "alice@example.test", "home": 7}',
     "serves another vault", False),
]


def test_malformed_requests_get_an_error_while_others_are_served(agent: AgentProcess) -> None:
    token = agent.token(ALICE[0]).out
    for line, says, closes in MALFORMED:
        sock = _connect(agent)
        sock.sendall(line[: len(line) // 2])  # half a request: in progress
        _served(agent, token)
        sock.sendall(line[len(line) // 2:] + b"\n")
        answer = _answer(sock)
        assert answer is not None, f"{line[:40]!r}: closed without an answer"
        assert answer["ok"] is False and says in answer["error"], (line[:40], answer)
        assert answer["error"].startswith("vault: ") and answer["exit"] in (1, 2, 3, 4, 5)
        if closes:
            assert _answer(sock) is None, f"{line[:40]!r}: the connection stayed open"
        else:  # the same connection goes on serving
            sock.sendall(_token_request())
            assert _answer(sock) == {"ok": True, "output": token}
        sock.close()
    _still_fine(agent)


def test_an_oversized_request_gets_an_error_and_the_connection_is_closed(
        agent: AgentProcess) -> None:
    token = agent.token(ALICE[0]).out
    # just under the limit, a request is served (the limit is not smaller than it says)
    with _connect(agent) as sock:
        sock.sendall(_token_request()[:-2] + b" " * (64 * 1024 - 200) + b"}\n")
        assert _answer(sock) == {"ok": True, "output": token}
    sock = _connect(agent)
    sock.sendall(b"x" * (60 * 1024))  # in progress
    _served(agent, token)
    sock.sendall(b"x" * (10 * 1024) + b"\n")
    answer = _answer(sock)
    assert answer is not None and answer["ok"] is False and answer["exit"] == 2
    assert "a request is at most 65536 bytes" in answer["error"]
    assert _answer(sock) is None
    sock.close()
    # a line with no end at all
    sock = _connect(agent)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(b"y" * (1024 * 1024))  # the agent answers and closes after 64 KiB
    answer = _answer(sock)
    assert answer is not None and "a request is at most" in answer["error"]
    sock.close()
    _served(agent, token)
    _still_fine(agent)


def _idle_agent(alice: Harness, tmp_path: Path, idle: str = "1") -> AgentProcess:
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    return AgentProcess(alice, directory, VAULT_AGENT_TEST_IDLE_S=idle)


def test_a_silent_client_is_disconnected_after_the_idle_timeout(
        alice: Harness, tmp_path: Path) -> None:
    agent = _idle_agent(alice, tmp_path)
    try:
        token = agent.token(ALICE[0]).out
        silent = _connect(agent)
        started = time.monotonic()
        _served(agent, token)
        with _connect(agent) as persistent:  # a client that talks is not idle
            for _ in range(3):
                persistent.sendall(_token_request())
                assert _answer(persistent) == {"ok": True, "output": token}
        assert _answer(silent) is None  # blocks until the agent closes it (10 s at most)
        assert time.monotonic() - started >= 0.9
        silent.close()
        _served(agent, token)
    finally:
        _still_fine(agent)


def _sockets(pid: int) -> list[str]:
    """The sockets process `pid` holds open."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:"):
                found.append(target)
    return found


def _only_the_listener_left(agent: AgentProcess) -> None:
    """Every connection closed by the agent: the one socket it holds is the one it listens on
    (no HTTP connection is open in these tests: nothing is refreshed)."""
    deadline = time.monotonic() + 10
    while len(_sockets(agent.process.pid)) != 1:
        assert time.monotonic() < deadline, \
            f"the agent keeps {len(_sockets(agent.process.pid)) - 1} connections open"
        time.sleep(0.02)


def test_clients_that_hang_up_mid_answer_do_not_disturb_it(alice: Harness,
                                                          agent: AgentProcess) -> None:
    token = agent.token(ALICE[0]).out  # fetched, then from memory (its audit thread's files)
    _served(agent, token)
    _only_the_listener_left(agent)
    for round in range(30):
        if round % 10 == 5:  # a refresh elsewhere: the next answer is fetched from the store
            alice.ok("refresh", ALICE[0])
            token = alice.ok("token", ALICE[0]).out
        sock = _connect(agent)
        sock.sendall(_token_request(format="xoauth2" if round % 2 else "token"))
        if round % 3 == 0:
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()  # before the answer
        if round % 10 in (0, 6):
            _served(agent, token)
    _only_the_listener_left(agent)
    _served(agent, token)
    alice.ok("audit", "verify")
    _still_fine(agent)


THOUSAND = 1000


def _told_busy(socks: set[socket.socket]) -> set[socket.socket]:
    """Those of `socks` the agent has told it is busy (each says nothing more)."""
    told = set()
    for sock in socks:
        sock.setblocking(False)
        try:
            answer = _answer(sock)
        except BlockingIOError:
            continue
        finally:
            sock.settimeout(10)
        assert answer == {"ok": False, "exit": 1, "reason": None,
                          "error": "vault: error: the agent is busy (too many connections)"}
        told.add(sock)
    return told


def test_a_thousand_connections_at_once(alice: Harness, agent: AgentProcess) -> None:
    from vault.agent.loop import MAX_CONNECTIONS

    token = agent.token(ALICE[0]).out
    _only_the_listener_left(agent)
    flood = [_connect(agent) for _ in range(THOUSAND)]  # each says nothing
    try:
        # the agent takes them all in: as many as it serves at once wait, the others are told
        told: set[socket.socket] = set()
        deadline = time.monotonic() + 30
        while len(told) < THOUSAND - MAX_CONNECTIONS:
            told |= _told_busy(set(flood) - told)
            assert time.monotonic() < deadline, f"{len(told)} were told why they were dropped"
            time.sleep(0.01)
        _served(agent, token)  # room is made for them
        with _connect(agent) as raw:
            raw.sendall(_token_request())
            assert _answer(raw) == {"ok": True, "output": token}
        told |= _told_busy(set(flood) - told)
        assert THOUSAND - MAX_CONNECTIONS < len(told) < THOUSAND  # the rest still wait
    finally:
        for sock in flood:
            sock.close()
    _only_the_listener_left(agent)
    # a thousand requests at once: each is answered, with the token or "busy"
    burst = []
    for _ in range(THOUSAND):
        sock = _connect(agent, timeout=60)
        sock.sendall(_token_request())
        burst.append(sock)
    answers = [_answer(sock) for sock in burst]
    for sock in burst:
        sock.close()
    assert all(a is not None and (a == {"ok": True, "output": token} or "busy" in a["error"])
               for a in answers), [a for a in answers if not a or not a["ok"]][:3]
    assert sum(1 for a in answers if a["ok"]) >= MAX_CONNECTIONS
    _served(agent, token)
    _still_fine(agent)


def test_the_agent_writes_no_token_to_disk(alice: Harness, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # the agent's working directory
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    started = time.time()
    agent = AgentProcess(alice, directory)
    try:
        token = agent.token(ALICE[0]).out.strip()
        assert len(token) >= 20
        for fmt in ("token", "xoauth2", "oauthbearer", "json"):
            answer = agent.ask({"v": 1, "op": "token", "mailbox": ALICE[0], "format": fmt,
                                **({"host": "mail.example.test", "port": 993}
                                   if fmt == "oauthbearer" else {})})
            assert answer["ok"] is True, answer
        alice.ok("refresh", ALICE[0])  # elsewhere: the agent fetches the new token
        fresh = agent.token(ALICE[0]).out.strip()
        assert fresh != token
        # the files it holds open are the vault's own
        pid = agent.process.pid
        held = {os.path.realpath(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        files = {p for p in held if os.path.isfile(p)}
        assert all(p.startswith(os.path.realpath(alice.home) + os.sep) for p in files), files
    finally:
        agent.stop()
    said = agent.process.stdout.read() + agent.process.stderr.read()
    secrets_ = [t.encode() for t in (token, fresh)]
    assert not any(s in said.encode() for s in secrets_)
    assert not any(s in alice.stored_bytes() for s in secrets_)
    written = [p for root in (alice.home, directory, work, Path(tempfile.gettempdir()))
               for p in _files_under(root, since=started)]
    assert alice.home / "vault.db" in written  # the scan sees what the agent wrote
    for path in written:
        data = path.read_bytes()
        assert not any(s in data for s in secrets_), f"a token in {path}"


def _files_under(root: Path, since: float) -> Iterator[Path]:
    """Regular files under `root` changed since `since`, where this user may read them."""
    for folder, _, names in os.walk(root, onerror=lambda e: None):
        for name in names:
            path = Path(folder) / name
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_mtime >= since - 1 and \
                    info.st_size < 64 * 1024 * 1024:
                yield path


def test_a_shell_evaluates_what_a_detached_start_prints(alice: Harness, tmp_path: Path) -> None:
    """`eval "$(vault agent start)"`, as the README says: the shell gets VAULT_AGENT_SOCK and
    runs the echo of the agent's pid, nothing else (the start-up path that any path check
    guards)."""
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    path = directory / "it's an agent.sock"  # a quote to escape, too
    env = {k: v for k, v in os.environ.items() if k not in VAULT_ENV}
    env.update({k: v for k, v in alice.env().items() if v is not None})
    shell = subprocess.run(
        ["sh", "-c", 'eval "$("$0" -m vault agent start --socket "$1")" && '
                     'printf "%s\\n" "$VAULT_AGENT_SOCK"', sys.executable, str(path)],
        env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    try:
        assert (shell.returncode, shell.stderr) == (0, ""), shell
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(path))
            conn.sendall(b'{"v": 1, "op": "status"}\n')
            pid = json.loads(conn.makefile("rb").readline())["pid"]
        assert shell.stdout == f"Agent pid {pid}\n{path}\n"
        served = alice.run("token", ALICE[0], VAULT_AGENT_SOCK=str(path), VAULT_KEY_FILE=None)
        assert served.code == 0, served
    finally:
        if path.exists():  # the agent started, whatever the shell made of its words
            with socket.socket(socket.AF_UNIX) as conn:
                conn.connect(str(path))
                conn.sendall(b'{"v": 1, "op": "stop"}\n')
                conn.recv(1024)


FORGER = r"""
import os, socket, sys
if len(sys.argv) > 2:  # a directory of its own first (0755: nobody else may write there)
    os.mkdir(os.path.dirname(sys.argv[1]), 0o755)
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
s.listen(5)
print("ready", flush=True)
while True:
    conn, _ = s.accept()
    conn.recv(65536)
    conn.sendall(b'{"ok": true, "output": "forged-token\\n"}\n')
    conn.close()
"""


@pytest.mark.parametrize("own_directory", [False, True])
def test_vault_token_does_not_believe_whoever_answers_at_the_path(
        alice: Harness, other_user: OtherUser, tmp_path: Path, own_directory: bool) -> None:
    """Another user got to VAULT_AGENT_SOCK's path first, in a directory anyone may write to
    (as /tmp), or in a directory of its own it made there because it did not exist yet:
    vault token does not print what that process answers; it goes on as without an agent
    (here: the direct path, with the key file)."""
    shared = Path(tempfile.mkdtemp(prefix="vault-forge-", dir="/tmp"))
    shared.chmod(0o1777)
    path = shared / ("theirs" if own_directory else "") / "agent.sock"
    forger = subprocess.Popen(
        ["runuser", "-u", other_user.name, "--", other_user.python, "-c", FORGER, str(path),
         *(["mkdir"] if own_directory else [])],
        stdout=subprocess.PIPE, text=True)
    try:
        assert forger.stdout.readline().strip() == "ready"
        result = alice.run("token", ALICE[0], VAULT_AGENT_SOCK=str(path))
        assert result.code == 0 and "forged" not in result.out
        assert result.out == alice.ok("token", ALICE[0]).out  # the vault's own token
    finally:
        forger.kill()
        forger.wait(10)
        shutil.rmtree(shared, ignore_errors=True)
