"""`vault agent`: a real agent process on a Unix socket, real `vault token` clients, the real
oidc-provider (rotating refresh tokens, reuse detection) behind them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import VAULT_ENV, Harness, add_oidc_client
from tests.consent import ALICE, oidc_consent


class AgentProcess:
    """`vault agent start --foreground` for a harness, with its socket under `directory`."""

    def __init__(self, h: Harness, directory: Path, *args: str, **env: str) -> None:
        self.h = h
        self.socket = str(directory / "agent.sock")
        self.clock_file = directory / "clock"
        self.clock_file.write_text("0")
        full_env = {k: v for k, v in os.environ.items() if k not in VAULT_ENV}
        full_env.update({k: v for k, v in h.env().items() if v is not None})
        full_env.update({"VAULT_AGENT_TEST_CLOCK": str(self.clock_file), **env})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vault", "agent", "start", "--foreground", "--socket",
             self.socket, *args], env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket):
            if self.process.poll() is not None:
                raise RuntimeError(f"the agent exited: {self.process.stderr.read()}")
            if time.monotonic() > deadline:
                raise RuntimeError("the agent did not start")
            time.sleep(0.02)

    def move_clock(self, seconds: float) -> None:
        self.clock_file.write_text(str(seconds))

    def ask(self, request: dict) -> dict:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(self.socket)
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)

    def token(self, *args: str, **env: str | None):
        return self.h.run("token", *args, VAULT_AGENT_SOCK=self.socket, **env)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def alice(sqlite_vault: Harness, oidc) -> Harness:
    add_oidc_client(sqlite_vault, oidc)
    oidc_consent(sqlite_vault, oidc)
    return sqlite_vault


@pytest.fixture
def agent(alice: Harness, tmp_path: Path):
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    process = AgentProcess(alice, directory)
    yield process
    process.stop()


def _entries(h: Harness) -> list[dict]:
    return json.loads(h.ok("audit", "log", "--limit", "0", "--json").out)


def test_tokens_come_from_the_agent_and_each_is_audited(alice: Harness, agent) -> None:
    direct = alice.ok("token", ALICE[0]).out
    served = [agent.token(ALICE[0]) for _ in range(3)]
    assert all(r.code == 0 and r.out == direct for r in served), served
    via_agent = [e for e in _entries(alice) if e.get("via") == "agent"]
    assert len(via_agent) == 3
    assert all(e["action"] == "token" and e["peer_uid"] == os.geteuid()
               and e["detail"]["revealed"] == "access_token" for e in via_agent)
    alice.ok("audit", "verify")


def test_a_grant_revoked_elsewhere_is_refused_at_the_next_request(alice_anywhere: Harness,
                                                                   tmp_path: Path) -> None:
    """On SQLite and on PostgreSQL (another connection: the "other host")."""
    h = alice_anywhere
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    agent = AgentProcess(h, directory)
    try:
        assert agent.token(ALICE[0]).code == 0
        assert agent.token(ALICE[0]).code == 0  # held: served from memory
        h.ok("grant", "revoke", ALICE[0], "--reason", "left")
        refused = agent.token(ALICE[0])
        assert refused.code != 0 and "revoked" in refused.err and refused.out == ""
    finally:
        agent.stop()


def test_lock_and_stop_end_serving(alice: Harness, agent) -> None:
    assert agent.token(ALICE[0]).code == 0
    assert agent.ask({"v": 1, "op": "lock"})["ok"]
    locked = agent.token(ALICE[0], VAULT_KEY_FILE=None)  # no key file: it cannot go direct
    assert locked.code == 3 and "vault agent unlock" in locked.err
    assert agent.ask({"v": 1, "op": "unlock", "key_file": str(alice.key_file)})["ok"]
    assert agent.token(ALICE[0]).code == 0
    assert agent.ask({"v": 1, "op": "stop"})["ok"]
    agent.process.wait(10)
    assert not os.path.exists(agent.socket)


# -- many clients, another process forcing refreshes, strict rotation at the provider ------------

CLIENTS = 8
RACE_S = 30.0


@pytest.fixture
def alice_anywhere(vault: Harness, oidc) -> Harness:
    """alice's grant at the oidc peer, in a SQLite or a PostgreSQL vault."""
    add_oidc_client(vault, oidc)
    oidc_consent(vault, oidc)
    return vault


def _process_env(h: Harness, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in VAULT_ENV}
    env.update({k: v for k, v in h.env().items() if v is not None})
    env.update(extra)
    return env


def test_clients_and_a_forced_refresh_loop_never_spend_a_refresh_token_twice(
        alice_anywhere: Harness, oidc, tmp_path: Path) -> None:
    """8 `vault token` processes through the agent and, for 30 s, another vault process (its
    own connection: the "other host" on PostgreSQL) forcing refreshes of the same grant in a
    loop. oidc-provider rotates refresh tokens and revokes the whole grant when one is
    replayed: every token the clients got was active when they got it, the grant is alive at
    the end, and each token handed out has its audit entry."""
    import threading

    h = alice_anywhere
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    agent = AgentProcess(h, directory)
    stop = threading.Event()
    failures: list[str] = []
    handed: list[str] = []
    forced = []

    def client() -> None:
        env = _process_env(h, VAULT_AGENT_SOCK=agent.socket)
        while not stop.is_set():
            run = subprocess.run([sys.executable, "-m", "vault", "token", ALICE[0]], env=env,
                                 capture_output=True, text=True, timeout=60)
            token = run.stdout.strip()
            if run.returncode != 0 or not token:
                failures.append(f"exit {run.returncode}: {run.stderr.strip()}")
            elif not oidc.introspect(token).get("active"):
                failures.append("a token handed out was not active")
            else:
                handed.append(token)

    def forcer() -> None:
        env = _process_env(h)
        while not stop.is_set():
            run = subprocess.run([sys.executable, "-m", "vault", "refresh", ALICE[0], "--json"],
                                 env=env, capture_output=True, text=True, timeout=60)
            forced.append(run.returncode)
            if run.returncode != 0:
                failures.append(f"forced refresh: exit {run.returncode}: {run.stderr.strip()}")

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    threads.append(threading.Thread(target=forcer))
    try:
        for thread in threads:
            thread.start()
        stop.wait(RACE_S)
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
        agent.stop()
    assert not failures, failures[:5]
    assert len(handed) >= CLIENTS and len(forced) >= 2, (len(handed), len(forced))
    # alive: one more rotation at the provider works (a replay would have revoked the grant)
    assert json.loads(h.ok("refresh", ALICE[0], "--json").out)[0]["outcome"] == "refreshed"
    h.ok("audit", "verify")
    entries = [e for e in _entries(h) if e["action"] == "token" and e.get("via") == "agent"]
    assert len([e for e in entries if e["outcome"] == "ok"]) == len(handed)


def test_lock_after_idle_time(alice: Harness, tmp_path: Path) -> None:
    """--lock-after counts idle time on the agent's clock, which the test moves (the
    VAULT_AGENT_TEST_CLOCK hook) instead of sleeping."""
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    agent = AgentProcess(alice, directory, "--lock-after", "15m")
    try:
        assert agent.token(ALICE[0]).code == 0
        agent.move_clock(14 * 60)
        assert agent.token(ALICE[0], VAULT_KEY_FILE=None).code == 0  # 14 min idle: still open
        agent.move_clock(14 * 60 + 15 * 60 + 1)
        locked = agent.token(ALICE[0], VAULT_KEY_FILE=None)
        assert locked.code == 3 and "vault agent unlock" in locked.err
        assert agent.ask({"v": 1, "op": "status"})["locked"] is True
        # a client that can unlock on its own goes direct instead
        assert agent.token(ALICE[0]).code == 0
    finally:
        agent.stop()


def test_a_key_rotation_elsewhere_locks_the_agent(alice: Harness, agent, tmp_path: Path) -> None:
    from tests.conftest import PASSPHRASE

    assert agent.token(ALICE[0]).code == 0
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE)
    alice.ok("key", "rotate", "--other-passphrase-file", str(passphrase))
    locked = agent.token(ALICE[0], VAULT_KEY_FILE=None)
    assert locked.code == 3 and "header changed" in locked.err
    assert agent.ask({"v": 1, "op": "status"})["locked"] is True
    assert agent.ask({"v": 1, "op": "unlock", "key_file": str(alice.key_file)})["ok"]
    assert agent.token(ALICE[0], VAULT_KEY_FILE=None).code == 0


def _wait_for(condition, what: str, timeout: float = 20.0):
    """Poll for what the agent's background work does (it looks every second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def _generation(h: Harness) -> int:
    return json.loads(h.ok("grant", "show", ALICE[0], "--json").out)["tokens"]["generation"]


def test_tokens_asked_for_are_refreshed_ahead_and_a_failure_is_told_at_once(
        alice: Harness, oidc, webhook, tmp_path: Path) -> None:
    """A grant asked for is refreshed once its token has lived three quarters of its life (the
    agent's clock moved, not slept through); when that refresh fails, the --on-event hook runs
    with the event and the mailbox (never a secret) and the alert channels are tried."""
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    events = tmp_path / "events"
    url_file = tmp_path / "webhook-url"
    url_file.write_text(webhook.url)
    agent = AgentProcess(alice, directory, "--on-event",
                         f"env | grep '^VAULT_' | sort >> {events}; echo -- >> {events}",
                         "--webhook-file", str(url_file))
    try:
        token = agent.token(ALICE[0]).out
        assert _generation(alice) == 1
        agent.move_clock(50 * 60)  # an hour's token, 50 minutes on
        _wait_for(lambda: _generation(alice) == 2, "a refresh ahead of time")
        assert agent.token(ALICE[0]).out != token  # the new token, from the agent
        oidc.revoke_grants(ALICE[0])
        agent.move_clock(100 * 60)
        text = _wait_for(lambda: events.exists() and events.read_text(), "the event hook")
        assert "VAULT_EVENT=refresh-failed" in text and f"VAULT_MAILBOX={ALICE[0]}" in text
        assert token.strip() not in text and "VAULT_KEY_FILE" not in text
        assert webhook.alerts() == []  # refused once: not yet broken (the refusal interval)
        agent.move_clock(115 * 60)
        refused = agent.token(ALICE[0])  # refused again, 15 minutes later: broken
        assert refused.code == 1 and "invalid_grant" in refused.err
        sent = _wait_for(webhook.alerts, "the alert of the broken grant")
        assert [(a["mailbox"], a["severity"]) for a in sent] == [(ALICE[0], "critical")]
    finally:
        agent.stop()


def test_systemd_hears_ready_once_it_serves(alice: Harness, tmp_path: Path) -> None:
    """--foreground under Type=notify: READY=1 on $NOTIFY_SOCKET once the socket answers."""
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    agent = AgentProcess(alice, directory, NOTIFY_SOCKET=str(tmp_path / "notify"))
    try:
        assert notify.recv(100) == b"READY=1"
        assert agent.token(ALICE[0]).code == 0
    finally:
        notify.close()
        agent.stop()


def test_start_detaches_and_prints_the_line_for_a_shell(alice: Harness, tmp_path: Path) -> None:
    """Without --foreground: it detaches, prints what `eval` needs, and keeps serving."""
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    path = directory / "agent.sock"
    env = _process_env(alice)
    started = subprocess.run([sys.executable, "-m", "vault", "agent", "start", "--socket",
                              str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith(f"VAULT_AGENT_SOCK='{path}'; export VAULT_AGENT_SOCK;")
    shell = subprocess.run(["sh", "-c", 'eval "$1" >/dev/null; exec "$2" -m vault agent status',
                            "sh", started.stdout, sys.executable], env=env, capture_output=True,
                           text=True, timeout=60)
    assert shell.returncode == 0 and "unlocked" in shell.stdout, shell.stderr
    assert alice.run("token", ALICE[0], VAULT_AGENT_SOCK=str(path), VAULT_KEY_FILE=None).code == 0
    stopped = subprocess.run([sys.executable, "-m", "vault", "agent", "stop", "--socket",
                              str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    _wait_for(lambda: not path.exists(), "the socket removed")


def test_start_says_why_it_cannot_unlock(alice: Harness, tmp_path: Path) -> None:
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    wrong = tmp_path / "wrong.key"  # a key file, of another vault
    other = Harness("sqlite", tmp_path / "other-home", None, wrong)
    other.ok("init", "--no-passphrase", "--key-file", str(wrong), VAULT_KEY_FILE=None)
    env = _process_env(alice, VAULT_KEY_FILE=str(wrong))
    started = subprocess.run([sys.executable, "-m", "vault", "agent", "start", "--socket",
                              str(directory / "agent.sock")], env=env, capture_output=True,
                             text=True, timeout=60)
    assert started.returncode == 3 and started.stderr.startswith("vault: "), started.stderr
    assert "Traceback" not in started.stderr and not (directory / "agent.sock").exists()


def test_an_agent_of_another_vault_is_not_asked(alice: Harness, agent, tmp_path: Path) -> None:
    """VAULT_AGENT_SOCK names alice's agent, but the command is for another vault (its own
    VAULT_HOME): the agent says so and the command runs on that vault, which has no grant."""
    other = Harness("sqlite", tmp_path / "other-home", None, tmp_path / "other.key")
    other.ok("init", "--no-passphrase", "--key-file", str(other.key_file), VAULT_KEY_FILE=None)
    result = other.run("token", ALICE[0], VAULT_AGENT_SOCK=agent.socket)
    assert result.code == 4 and "no grant" in result.err and result.out == ""
    assert agent.token(ALICE[0]).code == 0  # its own vault's clients are served
