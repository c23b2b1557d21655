"""What the vault process does to protect itself and its keys: no core dumps, a vault directory
that must be the user's own, and secrets typed at a terminal never echoed."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import VAULT_ENV

# -- core dumps ---------------------------------------------------------------------------------


def _spawn(*args: str, **kwargs) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in VAULT_ENV}
    return subprocess.Popen([sys.executable, "-m", "vault", *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_the_vault_process_cannot_dump_core() -> None:
    """A running `vault` (the sandbox command blocks, so it can be looked at) has RLIMIT_CORE 0
    and is not dumpable. The kernel shows the dumpable flag as the owner of /proc/PID: the
    process's own user and group when dumpable, root:root when not. Run as root, the child gets
    another group so that the two differ."""
    as_root = os.geteuid() == 0
    process = _spawn("sandbox", **({"group": 65534, "extra_groups": []} if as_root else {}))
    try:
        assert process.stdout.readline().startswith("{")  # up and serving
        owner = os.stat(f"/proc/{process.pid}/status")
        with open(f"/proc/{process.pid}/limits") as f:
            core = next(line.split()[4:6] for line in f if line.startswith("Max core file size"))
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert core == ["0", "0"]  # soft and hard: a child cannot raise it again
    assert (owner.st_uid, owner.st_gid) == (0, 0), "the vault process is dumpable"
