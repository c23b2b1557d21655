"""`vault import mutt-oauth2 | email-oauth2-proxy`: bring in what the old tool holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vault.cli.inputs import read_secret
from vault.cli.main import CliContext, chosen_format, output_format, pass_cli
from vault.errors import BadInput
from vault.render.tables import emit, table

if TYPE_CHECKING:
    from vault.services.importers import ImportOutcome


def register(cli: click.Group) -> None:
    cli.add_command(import_group)


@click.group("import")
def import_group() -> None:
    """Import accounts from mutt_oauth2.py or email-oauth2-proxy: each becomes a client (reused
    when the vault already has that app) plus a grant whose history starts now."""


def _finish(results: list[ImportOutcome], fmt: str, as_json: bool) -> None:
    def render(rows: list[ImportOutcome]) -> None:
        table(None, ["MAILBOX", "CLIENT", "OUTCOME", "DETAIL"],
              [[r.mailbox, r.client or "", r.outcome, r.detail or ""] for r in rows])

    emit(results, chosen_format(fmt, as_json), render)
    if any(r.outcome == "skipped" for r in results):
        raise click.exceptions.Exit(1)


@import_group.command("mutt-oauth2")
@click.option("--token-file", metavar="FILE",
              help="The decrypted token file [default: standard input, e.g. "
                   "`gpg --decrypt TOKENFILE | vault import mutt-oauth2`].")
@click.option("--client", "client_name", metavar="NAME",
              help="Name for the client [default: PROVIDER-CLIENTID8].")
@click.option("--client-id", metavar="ID",
              help="The app's client id, when the token file has none (mutt's own script keeps "
                   "it in its registrations table; NeoMutt's writes it into the file).")
@click.option("--client-secret-file", metavar="FILE",
              help="The app's client secret, likewise (never on the command line).")
@output_format
@pass_cli
def import_mutt(state: CliContext, token_file: str | None, client_name: str | None,
                client_id: str | None, client_secret_file: str | None, fmt: str,
                as_json: bool) -> None:
    """A mutt_oauth2.py token file (its JSON, decrypted). Microsoft registrations use the
    `common` tenant, as mutt_oauth2.py does."""
    from adapters.other_tools import parse_mutt_oauth2

    if token_file is None and client_secret_file == "-":
        raise BadInput("standard input carries the token file: give the secret in a file")
    secret = (read_secret("client-secret", False, client_secret_file)
              if client_secret_file else None)
    text = read_secret("token", token_file is None, token_file)
    account = parse_mutt_oauth2(text.reveal(), client_id, secret)
    _finish(state.app().importers.import_accounts([account], client=client_name), fmt, as_json)


@import_group.command("email-oauth2-proxy")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--password-stdin", is_flag=True,
              help="The account password the proxy's tokens are encrypted with, on stdin ...")
@click.option("--password-file", metavar="FILE", help="... or in a file.")
@click.option("--client", "client_name", metavar="NAME",
              help="Name for the client, when every account uses one app.")
@output_format
@pass_cli
def import_proxy(state: CliContext, config: str, password_stdin: bool, password_file: str | None,
                 client_name: str | None, fmt: str, as_json: bool) -> None:
    """An emailproxy.config: every [account@domain] section with a refresh token. Sections
    without one, or whose tokens the password does not open, are listed as skipped (exit 1)."""
    from adapters.other_tools import parse_email_oauth2_proxy

    password = (read_secret("password", password_stdin, password_file)
                if password_stdin or password_file else None)
    try:
        with open(config, encoding="utf-8") as f:
            text = f.read(4 * 1024 * 1024)
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {config}: {getattr(e, 'strerror', None) or e}") from None
    accounts = parse_email_oauth2_proxy(text, password)
    _finish(state.app().importers.import_accounts(accounts, client=client_name), fmt, as_json)
