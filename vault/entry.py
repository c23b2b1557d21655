"""The `vault` program. `vault token` asks a running agent first (vault/agent/client.py); a
cached `vault token` and the plain `vault status`, `vault expiry` and `vault grant list` are
served by a light path next (vault/fastpath.py); everything else, and anything those cannot
serve, runs the full CLI.

Before anything else, the process gives up core files, and before any key is read it also
makes itself not dumpable: a crash must not leave the root key or a secret in a core file."""

from __future__ import annotations

import os
import sys

PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def no_core_files() -> None:
    """RLIMIT_CORE 0, soft and hard, so no child can raise it again. Best effort elsewhere: a
    platform without it simply keeps its default."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass


def not_dumpable() -> None:
    """On Linux, PR_SET_DUMPABLE 0: no core even through a core_pattern pipe, and the same user
    cannot ptrace the process or read its memory (its /proc/PID files become root's)."""
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
    no_core_files()
    args = list(sys.argv[1:] if args is None else args)
    from vault.lightargs import WORDS

    light = any(arg in WORDS for arg in args)
    if light:
        os.umask(0o077)
    if light and "token" in args:
        # Through the agent the process holds no key, only the token it prints, which any
        # process of this user may ask the agent for: no core file is enough, and it spares
        # ctypes (a tenth of this path's CPU). Every other path is made not dumpable first.
        served = _agent(args)
        if served is not None:
            sys.exit(served)
    not_dumpable()
    if light:
        served = _light(args)
        if served is not None:
            sys.exit(served)
    from vault.cli.main import main as full_cli

    full_cli(args)
