"""`vault token`, `vault refresh`, `vault app-token`, `vault consent`, `vault grant add-app`.

`vault token` is the credential helper mail clients call (mutt, msmtp, mbsync, offlineimap,
getmail): only the token on stdout, nothing there on failure (the reason goes to stderr).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import click

from domain.vocabulary import APP_TOKEN_FORMATS, CONSENT_FLOWS, PROTOCOLS, TOKEN_FORMATS
from vault.cli.main import CliContext, chosen_format, output_format, pass_cli
from vault.errors import BadInput
from vault.render.tables import emit, table
from vault.render.text import say

PROTOCOL = click.Choice(PROTOCOLS)


def register(cli: click.Group) -> None:
    for command in (token, refresh, app_token, consent):
        cli.add_command(command)


@click.command()
@click.argument("mailbox")
@click.option("--client", "client_name", metavar="NAME")
@click.option("--protocol", type=PROTOCOL, default="imap", show_default=True)
@click.option("--format", "fmt", type=click.Choice(TOKEN_FORMATS),
              default="token", show_default=True,
              help="token: the bare access token; xoauth2/oauthbearer: the SASL initial response.")
@click.option("--min-valid", type=click.IntRange(0, 3000), default=300, show_default=True,
              metavar="SECONDS", help="Refresh if the cached token expires sooner than this.")
@click.option("--host", metavar="HOST",
              help="oauthbearer: the server's host [default: the client's server for the "
                   "protocol].")
@click.option("--port", type=click.IntRange(1, 65535), metavar="PORT",
              help="oauthbearer: the server's port [default: the client's].")
@pass_cli
def token(state: CliContext, mailbox: str, client_name: str | None, protocol: str, fmt: str,
          min_valid: int, host: str | None, port: int | None) -> None:
    """Print an access token for MAILBOX (refreshing only when needed).

    --format oauthbearer names the server the response is for (RFC 7628): the client's server
    for the protocol (`vault client set-servers`, else its cloud's), or --host and --port."""
    from vault.render.tokens import render_token

    if (host or port) and fmt != "oauthbearer":
        raise BadInput("--host and --port go with --format oauthbearer")
    result = state.app().tokens.access_token(
        mailbox, client=client_name, protocol=protocol, min_valid=timedelta(seconds=min_valid),
        server=fmt == "oauthbearer" and not (host and port))
    known_host, known_port = result.server or (None, None)
    say(render_token(fmt, token=result.token.reveal(), mailbox=result.mailbox,
                     login=result.login or result.mailbox,
                     expires_at=result.expires_at, resource=result.resource,
                     refreshed=result.refreshed, host=host or known_host,
                     port=port or known_port), lines=True)


@click.command()
@click.argument("mailbox", required=False)
@click.option("--client", "client_name", metavar="NAME")
@click.option("--due", is_flag=True,
              help="Only what needs it: access tokens about to expire, refresh tokens idle for "
                   "--keepalive-days.")
@click.option("--all", "everything", is_flag=True, help="Every active grant.")
@click.option("--keepalive-days", type=click.IntRange(1, 80), default=14, show_default=True,
              help="Refresh a token idle this long (Microsoft drops it after 90 days idle).")
@output_format
@pass_cli
def refresh(state: CliContext, mailbox: str | None, client_name: str | None, due: bool,
            everything: bool, keepalive_days: int, fmt: str, as_json: bool) -> None:
    """Refresh a grant's tokens now, or every grant (--all), or those due (--due, for cron)."""
    from vault.render.tables import progress_bar

    with progress_bar("refreshing") as advance:
        results = state.app().tokens.refresh(mailbox, client=client_name, due=due,
                                             everything=everything, keepalive_days=keepalive_days,
                                             progress=advance)
    emit(results, chosen_format(fmt, as_json), lambda data: table(
        None, ["MAILBOX", "CLIENT", "RESOURCE", "OUTCOME", "EXPIRES / ERROR"],
        [[r.mailbox, r.client, r.resource, r.outcome, (r.expires_at or "")[:19] or r.error]
         for r in data],
        empty="nothing was due"))
    if any(r.outcome == "failed" for r in results):
        raise click.exceptions.Exit(1)


@click.command("app-token")
@click.argument("client_name", metavar="CLIENT")
@click.option("--resource", type=PROTOCOL, default="imap", show_default=True)
@click.option("--scopes", help="App-only scopes (custom providers; Microsoft: <resource>/.default).")
@click.option("--format", "fmt", type=click.Choice(APP_TOKEN_FORMATS), default="token",
              show_default=True)
@pass_cli
def app_token(state: CliContext, client_name: str, resource: str, scopes: str | None,
              fmt: str) -> None:
    """Print an app-only (client credentials) access token; needs a concrete tenant."""
    from domain.scopes import parse_scopes
    from vault.render.tokens import render_app_token

    result = state.app().tokens.app_token(client_name, resource=resource,
                                          scopes=parse_scopes(scopes) if scopes else None)
    say(render_app_token(fmt, token=result.token.reveal(), expires_at=result.expires_at,
                         resource=result.resource), lines=True)


class TerminalConsentUI:
    """Talks to the person on stderr, so stdout carries only the result."""

    def open_browser(self, url: str) -> bool:
        import webbrowser

        for name in ("VAULT_PASSPHRASE", "VAULT_NEW_PASSPHRASE"):
            os.environ.pop(name, None)  # the browser inherits our environment
        try:
            return webbrowser.open(url, new=1)
        except webbrowser.Error:
            return False

    def show_authorize_url(self, url: str, opened: bool) -> None:
        if opened:
            say("A browser window asks for the mailbox's consent. If it did not open, visit:",
                err=True)
        else:
            say("Open this URL in a browser, sign in as the mailbox and accept:", err=True)
        say(url, err=True)

    def read_redirect_url(self) -> str:
        say("After accepting, the browser is sent to an address that may not load. "
            "Paste that whole address here:", err=True)
        line = sys.stdin.readline()
        if not line.strip():
            from vault.errors import BadInput

            raise BadInput("no redirect URL was pasted")
        return line

    def show_device_code(self, device) -> None:
        say(f"On any device, open {device.verification_uri} and enter the code "
            f"{device.user_code} (valid {device.expires_in // 60} minutes).", err=True)


@click.command()
@click.argument("client_name", metavar="CLIENT")
@click.option("--mailbox", required=True, metavar="ADDR")
@click.option("--protocols", required=True, metavar="LIST", help="e.g. imap,smtp or graph")
@click.option("--flow", type=click.Choice(CONSENT_FLOWS), default="browser",
              show_default=True,
              help="browser: loopback redirect; manual: paste the redirect URL; device: a code.")
@click.option("--no-open", is_flag=True, help="Print the URL instead of opening a browser.")
@click.option("--timeout", type=click.IntRange(10, 3600), default=300, show_default=True,
              metavar="SECONDS", help="How long the browser flow waits for the redirect.")
@click.option("--replace", is_flag=True, help="Consent again for a grant that is active.")
@click.option("--account", metavar="NAME",
              help="Who signs in, when not the mailbox itself: a delegate of a shared mailbox, "
                   "or a sign-in name (UPN) that differs from the address.")
@click.option("--login", metavar="NAME",
              help="The user name the mail server expects, where it is not the mailbox "
                   "[default: the mailbox].")
@pass_cli
def consent(state: CliContext, client_name: str, mailbox: str, protocols: str, flow: str,
            no_open: bool, timeout: int, replace: bool, account: str | None,
            login: str | None) -> None:
    """Ask MAILBOX's consent for CLIENT and keep the refresh token it yields.

    The provider's ID token must name MAILBOX (or --account): someone else signing in is
    refused and nothing is stored.
    """
    from domain.scopes import parse_protocols

    result = state.app().consent.consent(client_name, mailbox=mailbox,
                                         protocols=parse_protocols(protocols), flow=flow,
                                         ui=TerminalConsentUI(), open_browser=not no_open,
                                         timeout=timeout, replace=replace, account=account,
                                         login=login)
    signed_in = result.signed_in
    who = (f"signed in as {signed_in['account']}" if signed_in["checked"]
           else "the signed-in account was not checked")
    say(f"Consent recorded for {result.mailbox} under {result.client} "
        f"({', '.join(result.protocols)}); {who}")
