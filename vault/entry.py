"""The `vault` program. `vault token` with a cached token is served by a light path first
(vault/fastpath.py); everything else, and any token that needs more, runs the full CLI.

Before anything else, and so before any key is read, the process gives up core dumps: a crash
must not leave the root key or a secret in a core file."""

from __future__ import annotations

import os
import sys

PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def forbid_core_dumps() -> None:
    """No core file (RLIMIT_CORE 0, soft and hard, so no child can raise it again) and, on
    Linux, not dumpable: no core even through a core_pattern pipe, and the same user cannot
    ptrace the process or read its memory (its /proc/PID files become root's). Best effort
    elsewhere: a platform without these simply keeps its default."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def main(args: list[str] | None = None) -> None:
    forbid_core_dumps()
    args = list(sys.argv[1:] if args is None else args)
    if "token" in args:
        os.umask(0o077)
        from vault.fastpath import cached_token

        output = cached_token(args)
        if output is not None:
            sys.stdout.write(output + "\n")
            sys.stdout.flush()
            sys.exit(0)
    from vault.cli.main import main as full_cli

    full_cli(args)
