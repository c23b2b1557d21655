"""The unit tier: the domain, the services built alone over a temporary SQLite vault, HTTP
answered by httpx's MockTransport. No network, no other process, no server, no root: each test is
held to it."""

from __future__ import annotations

import socket
import subprocess

import pytest


@pytest.fixture(autouse=True)
def _no_network_and_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("a unit test opens no connection and starts no process: "
                             "it belongs in tests/integration or tests/e2e")

    monkeypatch.setattr(socket.socket, "connect", refused)
    monkeypatch.setattr(socket.socket, "connect_ex", refused)
    monkeypatch.setattr(subprocess.Popen, "__init__", refused)
