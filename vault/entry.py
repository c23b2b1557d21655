"""The `vault` program. `vault token` with a cached token is served by a light path first
(vault/fastpath.py); everything else, and any token that needs more, runs the full CLI."""

from __future__ import annotations

import os
import sys


def main(args: list[str] | None = None) -> None:
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
