"""The `vault` program. `vault token` asks a running agent first (vault/agent/client.py); a
cached `vault token` and the plain `vault status`, `vault expiry` and `vault grant list` are
served by a light path next (vault/fastpath.py); everything else, and anything those cannot
serve, runs the full CLI.

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


def _light(args: list[str]) -> int | None:
    """The exit code of a command a light path served (vault/fastpath.py), or None. Ends as
    the full CLI ends: Ctrl-C is "aborted", a reader gone away (`| head`) a quiet exit 1, any
    other output error one line on stderr."""
    from vault.fastpath import light_output
    from vault.render.text import say, write_out

    try:
        output = light_output(args)
        if output is None:
            return None
        write_out(output)
        return 0
    except KeyboardInterrupt:
        say("vault: aborted", err=True)
        return 1
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        return 1
    except OSError as error:
        from vault.cli.main import report_error

        return report_error(error)


def _agent(args: list[str]) -> int | None:
    """The exit code of `vault token` as a running agent answered it, or None (no agent)."""
    from vault.agent.client import agent_token

    try:
        return agent_token(args)
    except KeyboardInterrupt:
        sys.stderr.write("vault: aborted\n")
        return 1
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def main(args: list[str] | None = None) -> None:
    forbid_core_dumps()
    args = list(sys.argv[1:] if args is None else args)
    from vault.lightargs import WORDS

    if any(arg in WORDS for arg in args):
        os.umask(0o077)
        served = _agent(args) if "token" in args else None
        if served is None:
            served = _light(args)
        if served is not None:
            sys.exit(served)
    from vault.cli.main import main as full_cli

    full_cli(args)
