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

