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


def test_a_grant_revoked_elsewhere_is_refused_at_the_next_request(alice: Harness, agent) -> None:
    assert agent.token(ALICE[0]).code == 0
    alice.ok("grant", "revoke", ALICE[0], "--reason", "left")
    refused = agent.token(ALICE[0])
    assert refused.code != 0 and "revoked" in refused.err and refused.out == ""


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
