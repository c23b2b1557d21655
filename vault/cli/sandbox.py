"""`vault sandbox`: run the local Microsoft-like identity provider (sandbox/, a peer of vault,
not a part of it) in the foreground."""

from __future__ import annotations

import sys

import click


def register(cli: click.Group) -> None:
    cli.add_command(sandbox)


@click.command()
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--tenant", default="sandbox.onmicrosoft.com", show_default=True)
@click.option("--fail", "failures", multiple=True, type=int, metavar="AADSTS",
              help="Answer the next token request with this AADSTS error (repeatable, in order).")
def sandbox(port: int, tenant: str, failures: tuple[int, ...]) -> None:
    """A local identity provider behaving like Microsoft's v2.0 endpoints, for trying vault
    without a tenant. Prints one JSON line of settings (and, on stderr, the `vault client add`
    that registers it), then serves until interrupted.

    Every password is "sandbox"; the client secret it prints is not a secret. Inject errors
    while it runs: curl -X POST 'http://127.0.0.1:PORT/sandbox/fail?code=700082'.
    """
    import json
    import shlex

    from sandbox import (  # no other command loads it
        SandboxServer,
        client_add_args,
        settings_line,
        tenant_id,
    )
    from vault.errors import BadInput
    from vault.render.text import say

    try:
        server = SandboxServer(port)
    except OSError as e:
        raise BadInput(f"--port {port}: cannot listen on 127.0.0.1:{port} ({e.strerror}); "
                       "pick another port, or 0 for any free one") from None
    server.state.failures.extend((code, None) for code in failures)
    server.state.application.tenant = tenant_id(tenant)  # where Graph finds its application
    settings = settings_line(server, tenant)
    say(settings)
    sys.stdout.flush()
    say(f"vault sandbox on {server.base_url} (tenant {tenant}); Ctrl-C stops it. Add it to a "
        f"vault as client demo (the client secret, {json.loads(settings)['client_secret']}, "
        "on stdin: it is not a real one):", err=True)
    say("  " + shlex.join(["vault", *client_add_args(server, tenant)]), err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
