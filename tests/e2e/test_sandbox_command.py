"""`vault sandbox` as a person starts it from the Quick Start: the `vault client add` line it
prints registers it, and a consent and a token work through that client."""

from __future__ import annotations

import json
import os
import queue
import shlex
import subprocess
import sys
import threading

import pytest

from tests.conftest import Harness
from tests.consent import ScriptedConsent, consent


def _lines(stream) -> queue.Queue[str]:
    """The stream's lines as they come, read by a thread: a line that never comes fails the
    test (an empty string after a timeout), it does not hang it."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


def _next(lines: queue.Queue[str], timeout: float = 10) -> str:
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


@pytest.mark.peers
def test_the_printed_client_add_line_works(vault: Harness) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    process = subprocess.Popen([sys.executable, "-m", "vault", "sandbox"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stderr is not None
        settings = json.loads(process.stdout.readline())
        stderr = _lines(process.stderr)
        said = [_next(stderr) for _ in range(2)]
        assert settings["client_secret"] in said[0]  # named, so the person can paste it
        line = shlex.split(said[1].strip())
        assert line[:3] == ["vault", "client", "add"] and "--secret-stdin" in line
        vault.ok(*line[1:], input=settings["client_secret"])
        shown = json.loads(vault.ok("client", "show", "demo", "--json").out)
        assert shown["endpoints"]["token_url"] == settings["token_url"]
        granted = consent(vault, ScriptedConsent.at_sandbox("dave@contoso.com"), client="demo",
                          mailbox="dave@contoso.com")
        assert granted.status == "active"
        assert vault.ok("token", "dave@contoso.com").out.startswith("sbx-at.")
    finally:
        process.terminate()
        process.wait(timeout=30)
