"""Red-team checks of `vault agent` (hostile clients and impostors)."""

from __future__ import annotations

import json
import os
import socket
import time

from tests.consent import ALICE
from tests.integration import test_agent as agent_tests

alice, agent = agent_tests.alice, agent_tests.agent


def _raw(path: str, line: bytes) -> dict | None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(line)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
    return json.loads(data)


def test_a_host_that_cannot_be_encoded_is_refused_and_the_agent_keeps_serving(alice, agent):
    assert agent.token(ALICE[0]).code == 0  # now held: the next one is the loop's fast path
    line = (b'{"v":1,"op":"token","mailbox":"' + ALICE[0].encode()
            + b'","format":"oauthbearer","host":"\\ud800","port":993}\n')
    answer = _raw(agent.socket, line)
    time.sleep(0.3)
    assert agent.process.poll() is None, agent.process.stderr.read()
    assert answer is not None and answer["ok"] is False
    assert agent.token(ALICE[0]).code == 0


def _impostor(path: str):
    """Another user (nobody) listening at `path`: what it is sent comes back on the pipe."""
    read_end, write_end = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as listener:
                listener.bind(path)
                listener.listen(1)
                os.write(ready_w, b"r")
                conn, _ = listener.accept()
                conn.settimeout(10)
                data = conn.recv(65536)
                conn.sendall(b'{"ok":true,"locked":false}\n')
                os.write(write_end, data)
        finally:
            os._exit(0)
    os.close(write_end)
    os.read(ready_r, 1)
    return pid, read_end


def test_agent_unlock_never_sends_the_passphrase_to_another_users_socket(alice, tmp_path):
    from tests.conftest import PASSPHRASE

    path = f"/tmp/vault-rt-{os.getpid()}.sock"  # a shared, sticky directory, as --socket allows
    pid, told = _impostor(path)
    try:
        result = alice.run("agent", "unlock", "--socket", path, VAULT_PASSPHRASE=PASSPHRASE,
                           VAULT_KEY_FILE=None)
    finally:
        with open(told, "rb", closefd=True) as f:
            heard = f.read()
        os.waitpid(pid, 0)
        os.unlink(path)
    print("impostor heard:", heard, "vault said:", result)
    assert PASSPHRASE.encode() not in heard
    assert result.code != 0


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _hold_grant_locks(h):
    """Take every grant's lock, as a `vault refresh` elsewhere would: the agent's worker waits."""
    import fcntl

    h.ok("refresh", ALICE[0])  # makes the lock file
    held = []
    for lock in (h.home / "locks").iterdir():
        f = open(lock, "a")  # noqa: SIM115 - kept open while the test runs
        fcntl.flock(f, fcntl.LOCK_EX)
        held.append(f)
    return held


def test_data_sent_ahead_of_an_answer_is_bounded(alice, agent):
    locks = _hold_grant_locks(alice)
    agent.move_clock(3000)  # the token is near its end: the next request refreshes it
    before = _rss_kib(agent.process.pid)
    x = socket.socket(socket.AF_UNIX)
    x.connect(agent.socket)
    # a refresh is needed (min_valid): it waits for the grant's lock, held above
    x.sendall(b'{"v":1,"op":"token","mailbox":"' + ALICE[0].encode() + b'","min_valid":3000}\n')
    time.sleep(0.2)
    x.settimeout(5)
    chunk = b"\n" * (1 << 20)
    sent = 0
    try:
        for _ in range(64):
            x.sendall(chunk)
            sent += len(chunk)
    except OSError as e:
        print("hung up on:", e)  # what it sent ahead is not kept
    after = _rss_kib(agent.process.pid)
    print(f"sent {sent >> 20} MiB ahead; the agent's RSS {before >> 10} -> {after >> 10} MiB")
    x.close()
    for f in locks:
        f.close()  # the refresh goes ahead
    assert after - before < 32 * 1024
    assert agent.token(ALICE[0]).code == 0
