"""`vault probe`: connect the way a mail client does and say whether the grant works."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from domain.vocabulary import PROTOCOLS, SASL_MECHANISMS, TLS_MODES
from vault.cli.main import CliContext, chosen_format, output_format, pass_cli
from vault.render.tables import emit, table
from vault.render.text import say

if TYPE_CHECKING:
    from vault.services.probes import ProbeOutcome


def register(cli: click.Group) -> None:
    cli.add_command(probe)


@click.command()
@click.argument("mailbox")
@click.option("--client", "client_name", metavar="NAME")
@click.option("--protocol", type=click.Choice((*PROTOCOLS, "all")),
              default="all", show_default=True, help="all: every protocol the grant covers.")
@click.option("--host", help="Server to probe [default: the cloud's, e.g. outlook.office365.com].")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (with one --protocol).")
@click.option("--tls", type=click.Choice(TLS_MODES),
              help="implicit (993/995/443), starttls (587), or plain: no TLS at all, only when "
                   "asked for explicitly [default: per protocol].")
@click.option("--mechanism", type=click.Choice(SASL_MECHANISMS), default="xoauth2",
              show_default=True)
@click.option("--send-test", is_flag=True, help="SMTP: send a short message to the mailbox itself.")
@click.option("--timeout", type=click.IntRange(1, 300), default=20, show_default=True,
              metavar="SECONDS", help="Per protocol.")
@output_format
@pass_cli
def probe(state: CliContext, mailbox: str, client_name: str | None, protocol: str,
          host: str | None, port: int | None, tls: str | None, mechanism: str,
          send_test: bool, timeout: int, fmt: str, as_json: bool) -> None:
    """Probe MAILBOX over IMAP, POP3, SMTP or Graph with its grant's token.

    Exit 0 when every probe succeeded, 1 when one failed (2, 3, 4 keep their meaning).
    """
    results = state.app().probes.probe(mailbox, client=client_name, protocol=protocol, host=host,
                                       port=port, tls=tls, mechanism=mechanism, send_test=send_test,
                                       timeout=timeout)

    def render(data: list[ProbeOutcome]) -> None:
        table(None, ["PROTOCOL", "OUTCOME", "LATENCY", "DETAIL", "DIAGNOSIS"],
              [[r.protocol, r.outcome, f"{r.latency_ms} ms",
                " ".join(f"{k}={v}" for k, v in r.detail.items()) or (r.greeting or ""),
                r.diagnosis or ""] for r in data])
        for r in data:
            if r.checklist:
                say()
                say(f"{r.protocol}: check")
                for item in r.checklist:
                    say(f"  - {item}")

    emit(results, chosen_format(fmt, as_json), render)
    if any(r.outcome != "ok" for r in results):
        raise click.exceptions.Exit(1)
