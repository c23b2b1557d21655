"""`vault grant ...`: consent grants, one per (client, mailbox)."""

from __future__ import annotations

import click

from vault.cli.inputs import parse_moment, read_secret
from vault.cli.main import CliContext, chosen_format, output_format, pass_cli
from vault.render.listings import grant_list_table, refusal_line
from vault.render.machine import to_json
from vault.render.tables import emit, fields
from vault.render.text import say


def register(cli: click.Group) -> None:
    cli.add_command(grant)


@click.group()
def grant() -> None:
    """Consent grants: which mailbox a client may reach, and its tokens."""


@grant.command("import")
@click.option("--client", "client_name", required=True, metavar="NAME")
@click.option("--mailbox", required=True, metavar="ADDR")
@click.option("--protocols", required=True, metavar="LIST",
              help="Comma-separated: imap,pop,smtp,graph.")
@click.option("--scopes", help="Override the scopes derived from the protocols.")
@click.option("--refresh-token-stdin", is_flag=True, help="Read the refresh token from stdin.")
@click.option("--refresh-token-file", metavar="FILE", help="Read the refresh token from FILE.")
@click.option("--granted-at", metavar="DATE",
              help="When the refresh token was issued (idle expiry counts from it).")
@click.option("--login", metavar="NAME",
              help="The user name the mail server expects, where it is not the mailbox "
                   "[default: the mailbox].")
@pass_cli
def grant_import(state: CliContext, client_name: str, mailbox: str, protocols: str,
                 scopes: str | None, refresh_token_stdin: bool,
                 refresh_token_file: str | None, granted_at: str | None,
                 login: str | None) -> None:
    """Import a refresh token obtained elsewhere (mutt_oauth2.py, a manual flow, ...)."""
    from domain.scopes import parse_protocols, parse_scopes

    token = read_secret("refresh-token", refresh_token_stdin, refresh_token_file)
    result = state.app().grants.import_grant(
        client=client_name, mailbox=mailbox, protocols=parse_protocols(protocols),
        scopes=parse_scopes(scopes) if scopes else None, refresh_token=token,
        granted_at=parse_moment(granted_at, "--granted-at"), login=login)
    resources = ", ".join(f"{r}: {' '.join(s)}" for r, s in result.scopes.items())
    say(f"Imported grant for {result.mailbox} under {result.client} ({resources})")


@grant.command("add-app")
@click.option("--client", "client_name", required=True, metavar="NAME")
@click.option("--mailbox", required=True, metavar="ADDR")
@click.option("--protocols", required=True, metavar="LIST", help="e.g. imap,smtp or graph")
@click.option("--scopes", help="Override the app-only scopes (custom providers).")
@click.option("--login", metavar="NAME",
              help="The user name the mail server expects, where it is not the mailbox "
                   "[default: the mailbox].")
@pass_cli
def grant_add_app(state: CliContext, client_name: str, mailbox: str, protocols: str,
                  scopes: str | None, login: str | None) -> None:
    """Record that CLIENT reaches MAILBOX app-only (client credentials, no user consent).

    In Exchange Online this needs a service principal made from the Enterprise Application's
    object id (not the App Registration's) and mailbox permission for it.
    """
    from domain.scopes import parse_protocols, parse_scopes

    result = state.app().grants.add_app_grant(client=client_name, mailbox=mailbox,
                                              protocols=parse_protocols(protocols),
                                              scopes=parse_scopes(scopes) if scopes else None,
                                              login=login)
    say(f"Recorded app-only access of {result.client} to {result.mailbox}")


@grant.command("list")
@click.option("--client", "client_name", metavar="NAME", help="Only this client's grants.")
@output_format
@pass_cli
def grant_list(state: CliContext, client_name: str | None, fmt: str, as_json: bool) -> None:
    """List grants and their token state (from the read model)."""
    rows = state.app().grants.list_grants(client_name)
    emit(rows, chosen_format(fmt, as_json), grant_list_table)


@grant.command("show")
@click.argument("mailbox")
@click.option("--client", "client_name", metavar="NAME")
@output_format
@pass_cli
def grant_show(state: CliContext, mailbox: str, client_name: str | None, fmt: str,
               as_json: bool) -> None:
    """Show the grant of MAILBOX (tokens are never shown)."""
    data = state.app().grants.show_grant(mailbox, client=client_name)
    if chosen_format(fmt, as_json) == "json":
        say(to_json(data), lines=True)
        return
    tokens = data.tokens
    fields(f"grant {data.mailbox} under {data.client}", [
        ("status", data.status + (f" ({data.status_reason})" if data.status_reason else "")),
        ("protocols", data.protocols),
        *[(f"scopes [{r}]", s) for r, s in data.scopes.items()],
        *[(f"resource [{r}]", url) for r, url in data.resources.items() if url],
        *[(f"resource indicator [{p}]", uri) for p, uri in data.indicators.items()],
        ("granted", f"{data.granted_at} by {data.granted_by} ({data.method})"),
        ("signed in", signed_in_line(data.signed_in, data.mailbox)),
        ("login", data.login + (" (the mailbox)" if data.login == data.mailbox else "")),
        ("refresh token", f"{tokens.refresh_token}, generation {tokens.generation}, "
                          f"issued {tokens.refresh_token_issued_at}"),
        ("last refresh", tokens.last_refresh_at),
        *[(f"access token [{r}]", f"expires {a['expires_at']}")
          for r, a in tokens.access_tokens.items()],
        ("last failure", (f"{tokens.last_failure['error_class']} at "
                          f"{tokens.last_failure['at']}") if tokens.last_failure else None),
        ("refresh refused", refusal_line(tokens.refresh_refused)),
        *[(f"probe [{p}]", f"{r['outcome']} at {r['at']} ({r['latency_ms']} ms)"
           + (f": {r['diagnosis']}" if r["diagnosis"] else "")) for p, r in data.probes.items()],
    ])


def signed_in_line(signed_in: dict, mailbox: str) -> str:
    """Who signed in at the provider when the grant was consented, as the ID token said."""
    if not signed_in.get("checked"):
        return f"not checked ({signed_in.get('reason')})"
    text = f"{signed_in['account']} ({signed_in['claim']}"
    if signed_in.get("oid") or signed_in.get("tid"):
        text += f"; oid {signed_in.get('oid')}, tid {signed_in.get('tid')}"
    text += ")"
    if signed_in.get("expected", mailbox).casefold() != mailbox.casefold():
        text += " with --account, for this mailbox"
    return text


@grant.command("set-login")
@click.argument("mailbox")
@click.argument("login")
@click.option("--client", "client_name", metavar="NAME")
@pass_cli
def grant_set_login(state: CliContext, mailbox: str, login: str, client_name: str | None) -> None:
    """Log in to the mail server as LOGIN for MAILBOX's grant.

    LOGIN is the SASL user of probes and of `vault token --format xoauth2|oauthbearer`, e.g.
    `alice` where the server's users have no domain; LOGIN = MAILBOX logs in as the mailbox
    again. It is not who signs in at the provider (`consent --account`)."""
    result = state.app().grants.set_login(mailbox, login, client=client_name)
    say(f"{result.mailbox} under {result.client} logs in as {result.login}")


@grant.command("revoke")
@click.argument("mailbox")
@click.option("--client", "client_name", metavar="NAME")
@click.option("--reason", required=True, help="Why (kept in the history and the audit log).")
@click.option("--purge", is_flag=True,
              help="Also destroy its data key (crypto-shred its tokens and history).")
@pass_cli
def grant_revoke(state: CliContext, mailbox: str, client_name: str | None, reason: str,
                 purge: bool) -> None:
    """Revoke the grant of MAILBOX: vault stops handing out its tokens."""
    result = state.app().grants.revoke(mailbox, client=client_name, reason=reason, purge=purge)
    say(f"Revoked grant of {result.mailbox} under {result.client}"
        + (" and purged it" if purge else ""))
    if result.provider_revocation:
        say(f"At the provider: {result.provider_revocation}")
