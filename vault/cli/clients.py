"""`vault client ...`: app registrations and their secrets."""

from __future__ import annotations

import click

from domain.vocabulary import MICROSOFT_CLOUD_NAMES, PROVIDERS, SECRET_AUTH_METHODS
from vault.cli.inputs import parse_date, parse_duration, read_secret
from vault.cli.main import CliContext, chosen_format, output_format, pass_cli
from vault.errors import BadInput
from vault.render.machine import fields_of, to_json
from vault.render.tables import emit, fields, table
from vault.render.text import say


def register(cli: click.Group) -> None:
    cli.add_command(client)


def secret_options(f):
    f = click.option("--secret-expires", metavar="DATE",
                     help="The secret's expiry date (Entra ID shows it as 'Expires').")(f)
    f = click.option("--secret-created", metavar="DATE",
                     help="When the secret was created (without --secret-expires, Microsoft's "
                          "730-day maximum is assumed).")(f)
    f = click.option("--secret-id", metavar="GUID",
                     help="The Secret ID (a GUID) as shown beside the Value, for reference.")(f)
    f = click.option("--secret-file", metavar="FILE", help="Read the secret Value from FILE.")(f)
    return click.option("--secret-stdin", is_flag=True,
                        help="Read the secret Value from standard input.")(f)


@click.group()
def client() -> None:
    """App registrations: client id, tenant, cloud, endpoints, secrets."""


@client.command("add")
@click.argument("name")
@click.option("--provider", type=click.Choice(PROVIDERS), required=True)
@click.option("--cloud", type=click.Choice(MICROSOFT_CLOUD_NAMES),
              help="Microsoft national cloud [default: global].")
@click.option("--tenant", help="Microsoft Directory (tenant) ID or domain.")
@click.option("--client-id", required=True, help="The Application (client) ID.")
@secret_options
@click.option("--no-secret", is_flag=True, help="A public client without a secret.")
@click.option("--certificate-file", metavar="PEM",
              help="Authenticate with a certificate (private_key_jwt): a PEM file holding the "
                   "private key and its certificate.")
@click.option("--auth-method",
              type=click.Choice(SECRET_AUTH_METHODS),
              help="How to send the secret [default: basic for custom providers, else post].")
@click.option("--redirect-uri", help="Redirect URI registered for consent flows.")
@click.option("--scopes", help="Default scopes (space or comma separated); custom providers.")
@click.option("--resource", "resources", multiple=True, metavar="[PROTOCOL=]URI",
              help="Custom providers: the RFC 8707 resource indicator token requests name, for "
                   "every protocol or (PROTOCOL=URI, repeatable) for one.")
@click.option("--authorize-url", help="Custom provider: authorization endpoint.")
@click.option("--token-url", help="Custom provider: token endpoint.")
@click.option("--issuer", help="OpenID issuer: where discovery finds a custom provider's "
              "endpoints and the keys that verify consent ID tokens.")
@click.option("--device-url", help="Device authorization endpoint (overrides the profile's).")
@click.option("--revoke-url", help="Token revocation endpoint, RFC 7009.")
@click.option("--google-testing", is_flag=True,
              help="Google: the OAuth app is External and in Testing status (7-day tokens).")
@pass_cli
def client_add(state: CliContext, name: str, provider: str, cloud: str | None,
               tenant: str | None, client_id: str, secret_stdin: bool, secret_file: str | None,
               secret_id: str | None, secret_created: str | None, secret_expires: str | None,
               no_secret: bool, certificate_file: str | None, auth_method: str | None,
               redirect_uri: str | None, scopes: str | None, authorize_url: str | None,
               token_url: str | None, issuer: str | None, device_url: str | None,
               revoke_url: str | None, google_testing: bool, resources: tuple[str, ...]) -> None:
    """Register client NAME; its secret comes from stdin or a file, never the command line."""
    from domain.scopes import parse_resource_options, parse_scopes

    if sum(map(bool, (no_secret, certificate_file, secret_stdin or secret_file))) != 1:
        raise BadInput("give exactly one of --secret-stdin, --secret-file, --certificate-file "
                       "or --no-secret")
    secret = certificate = None
    if certificate_file:
        certificate = _read_certificate(certificate_file)
        auth_method = "private_key_jwt"
    elif no_secret:
        auth_method = "none"
    else:
        secret = read_secret("secret", secret_stdin, secret_file)
        auth_method = auth_method or ("client_secret_basic" if provider == "custom"
                                      else "client_secret_post")
    endpoints = {"authorize_url": authorize_url, "token_url": token_url, "issuer": issuer,
                 "device_url": device_url, "revoke_url": revoke_url}
    app = state.app()
    result = app.clients.add_client(
        name=name, provider=provider, cloud=cloud, tenant=tenant, client_id=client_id,
        secret=secret, certificate=certificate, auth_method=auth_method, secret_id=secret_id,
        secret_created=parse_date(secret_created, "--secret-created"),
        secret_expires=parse_date(secret_expires, "--secret-expires"),
        redirect_uri=redirect_uri, scopes=parse_scopes(scopes) if scopes else (),
        endpoints=endpoints, google_testing=google_testing,
        resources=parse_resource_options(resources),
    )
    say(f"Added client {result.name} ({result.provider}, {result.cloud})")
    if result.provider == "microsoft" and not result.redirect_uri:
        from vault.services.consent import MANUAL_REDIRECT

        # Microsoft's "Redirect URI (reply URL) restrictions": the portal refuses an http
        # 127.0.0.1 address (manifest only) but takes http://localhost, port ignored.
        say(f"warning: without --redirect-uri, consent (--flow browser or manual) sends "
            f"{MANUAL_REDIRECT} (any port), which the Entra portal cannot register: "
            "register it in the app's manifest (replyUrlsWithType), or register "
            "http://localhost/callback as a Web redirect URI (the port is ignored for "
            "localhost) and add this client again with --redirect-uri "
            "http://localhost/callback. --flow device needs neither.", err=True)
    if result.tenant in ("common", "organizations", "consumers"):
        say(f"note: tenant '{result.tenant}' serves delegated consent only; app-only "
            "tokens need the tenant's ID or domain (AADSTS9001023)", err=True)


@client.command("list")
@output_format
@pass_cli
def client_list(state: CliContext, fmt: str, as_json: bool) -> None:
    """List clients (from the read model)."""
    rows = state.app().clients.list_clients()
    emit(rows, chosen_format(fmt, as_json), lambda data: table(
        None, ["NAME", "PROVIDER", "CLOUD", "TENANT", "CLIENT ID", "STATUS", "SECRETS",
               "CURRENT", "EXPIRES"],
        [[c.name, c.provider, c.cloud, c.tenant, c.client_id, c.status, c.active_secrets,
          c.current_secret, c.current_secret_expires] for c in data],
        empty="no clients yet: `vault client add NAME --provider ...`"))


@client.command("show")
@click.argument("name")
@click.option("--reveal-secret", is_flag=True,
              help="Print the current secret Value (audited as a reveal).")
@output_format
@pass_cli
def client_show(state: CliContext, name: str, reveal_secret: bool, fmt: str,
                as_json: bool) -> None:
    """Show client NAME; its secret only with --reveal-secret."""
    from domain.scopes import EVERY_PROTOCOL

    data = state.app().clients.show_client(name, reveal_secret=reveal_secret)
    if chosen_format(fmt, as_json) == "json":
        shown = fields_of(data)
        if data.secret is not None:  # asked for with --reveal-secret: the one place it shows
            shown["secret"] = data.secret.reveal()
        say(to_json(shown), lines=True)
        return
    fields(f"client {data.name}", [
        ("provider", data.provider), ("cloud", data.cloud), ("tenant", data.tenant),
        ("client id", data.client_id), ("status", data.status),
        ("token url", data.endpoints.get("token_url")),
        ("authorize url", data.endpoints.get("authorize_url")),
        ("redirect uri", data.redirect_uri), ("scopes", data.scopes),
        *[("resource" if p == EVERY_PROTOCOL else f"resource [{p}]", uri)
          for p, uri in data.resources.items()],
        ("google testing", "yes" if data.google_testing else None),
        *[(f"{p} server", f"{v['host']}:{v['port']} ({v['tls']}, {v['source']}"
           + (", unverified" if v["unverified"] else "") + ")")
          for p, v in data.servers.items()],
        ("registered", data.registered_at),
        *([("renewal", f"{data.renewal['stage']} since {data.renewal['started_at'][:16]} "
                       f"({data.renewal['display_name']}): `vault maintain` finishes it")]
          if data.renewal else []),
    ])
    table("secrets", ["REF", "SECRET ID", "CREATED", "EXPIRES", "ADDED", "RETIRED", "CURRENT"],
          [[s.ref, s.secret_id, s.created_on, s.expires_on, s.added_at[:10],
            (s.retired_at or "")[:10], "yes" if s.current else "pending" if s.pending else ""]
           for s in data.secrets])
    if data.secret is not None:
        say(f"secret: {data.secret.reveal()}")


def graph_options(f):
    """Where Graph is asked, and how long a renewal waits and keeps the old credential."""
    f = click.option("--verify-timeout", type=click.IntRange(0, 900), default=180,
                     show_default=True, metavar="SECONDS",
                     help="How long to retry the new credential at the token endpoint while "
                          "it propagates.")(f)
    f = click.option("--retire-after", metavar="DURATION", default="0",
                     help="Keep the old credential at Entra this long after the new one works "
                          "(e.g. 7d, for consumers outside vault; `vault maintain` removes it "
                          "then) [default: at once].")(f)
    f = click.option("--home-tenant", metavar="TENANT",
                     help="The app's home tenant, where a client that signs in through common "
                          "or organizations gets its app-only Graph token.")(f)
    return click.option("--via", metavar="CLIENT",
                        help="Write with this management client's app-only token (Graph "
                             "application permissions; see the README).")(f)


@client.command("rotate-secret")
@click.argument("name")
@secret_options
@click.option("--overlap", is_flag=True,
              help="Keep the older secrets active until `client retire-secret`.")
@click.option("--verify", is_flag=True,
              help="First check the new secret at the token endpoint (client credentials), "
                   "retrying while a new Microsoft secret propagates; nothing changes if it fails.")
@click.option("--via-graph", is_flag=True,
              help="Ask Entra for the new secret (Microsoft Graph addPassword), verify it, make "
                   "it current and remove the old one at Entra; nothing is read from you.")
@click.option("--lifetime-days", type=click.IntRange(1, 3650), metavar="DAYS",
              help="With --via-graph: how long the new secret lives [default: Entra's, 2 "
                   "years].")
@click.option("--reveal", is_flag=True,
              help="With --via-graph: print the new secret's Value (audited as a reveal).")
@graph_options
@output_format
@pass_cli
def client_rotate_secret(state: CliContext, name: str, secret_stdin: bool,
                         secret_file: str | None, secret_id: str | None,
                         secret_created: str | None, secret_expires: str | None,
                         overlap: bool, verify: bool, verify_timeout: int, via_graph: bool,
                         lifetime_days: int | None, reveal: bool, via: str | None,
                         home_tenant: str | None, retire_after: str, fmt: str,
                         as_json: bool) -> None:
    """Add a new secret to NAME as its current one (older ones retire unless --overlap); with
    --via-graph, Entra makes it."""
    if via_graph:
        given = [o for o, v in (("--secret-stdin", secret_stdin), ("--secret-file", secret_file),
                                ("--secret-id", secret_id), ("--secret-created", secret_created),
                                ("--secret-expires", secret_expires), ("--overlap", overlap),
                                ("--verify", verify)) if v]
        if given:
            raise BadInput(f"--via-graph takes no {', '.join(given)}: Entra makes the secret, "
                           "and it is always verified")
        result = state.app().entra.renew_secret(
            name, via=via, home_tenant=home_tenant, lifetime_days=lifetime_days,
            retire_after=parse_duration(retire_after, "--retire-after", zero=True),
            verify_for=verify_timeout, reveal=reveal)
        _say_renewal(result, chosen_format(fmt, as_json))
        return
    graph_only = [o for o, v in (("--lifetime-days", lifetime_days), ("--reveal", reveal),
                                 ("--via", via), ("--home-tenant", home_tenant),
                                 ("--retire-after", retire_after != "0")) if v]
    if graph_only:
        raise BadInput(f"{', '.join(graph_only)} go with --via-graph")
    secret = read_secret("secret", secret_stdin, secret_file)
    options = dict(secret_id=secret_id,
                   created_on=parse_date(secret_created, "--secret-created"),
                   expires_on=parse_date(secret_expires, "--secret-expires"), overlap=overlap)
    app = state.app()
    result = app.clients.rotate_secret(name, secret=secret, **options,
                                       verify_for=verify_timeout if verify else None)
    if chosen_format(fmt, as_json) == "json":
        say(to_json(result), lines=True)
        return
    say(f"Client {name}: secret {result.new_secret} is now current"
        + (" (checked at the token endpoint)" if verify else "")
        + (" (older secrets stay active)" if overlap else ""))


@client.command("rotate-certificate")
@click.argument("name")
@click.option("--via-graph", is_flag=True, required=True,
              help="Upload the new certificate to the app (Microsoft Graph addKey, proven by "
                   "the current certificate), verify it, make it current and remove the old one "
                   "at Entra.")
@click.option("--certificate-file", required=True, metavar="PEM",
              help="PEM file holding the new private key and its certificate.")
@graph_options
@output_format
@pass_cli
def client_rotate_certificate(state: CliContext, name: str, via_graph: bool,
                              certificate_file: str, via: str | None, home_tenant: str | None,
                              retire_after: str, verify_timeout: int, fmt: str,
                              as_json: bool) -> None:
    """Renew NAME's certificate through Microsoft Graph (private_key_jwt clients)."""
    result = state.app().entra.renew_certificate(
        name, _read_certificate(certificate_file), via=via, home_tenant=home_tenant,
        retire_after=parse_duration(retire_after, "--retire-after", zero=True),
        verify_for=verify_timeout)
    _say_renewal(result, chosen_format(fmt, as_json))


@client.command("abandon-renewal")
@click.argument("name")
@click.option("--via", metavar="CLIENT",
              help="Ask Graph with this management client instead of the one the renewal used.")
@pass_cli
def client_abandon_renewal(state: CliContext, name: str, via: str | None) -> None:
    """Give up NAME's renewal through Graph: its new credential is removed at Entra and retired;
    the old ones stay."""
    result = state.app().entra.abandon(name, via=via)
    say(f"Client {result.client}: the renewal is given up; {result.resumed}")


def _say_renewal(result, fmt: str) -> None:
    if fmt == "json":
        shown = fields_of(result)
        if result.secret is not None:  # asked for with --reveal
            shown["secret"] = result.secret.reveal()
        say(to_json(shown), lines=True)
        return
    what = "certificate" if result.kind == "certificate" else "secret"
    if result.resumed:
        say(f"Client {result.client}: {result.resumed}", err=True)
    if result.stage in ("abandoned", "not due"):
        return
    say(f"Client {result.client}: {what} {result.new} (Entra keyId {result.key_id}, ends "
        f"{result.expires_on}) is current, checked at the token endpoint")
    if result.retired:
        say(f"retired in vault: {', '.join(result.retired)}")
    if result.kept:
        say(f"left at Entra, not identified there as vault's (remove them in the app "
            f"registration if nobody else uses them): {', '.join(result.kept)}", err=True)
    if result.stage == "waiting":
        say(f"the old {what} stays at Entra until {result.remove_at} UTC; `vault maintain` "
            "removes it then")
    elif result.removed:
        say(f"removed at Entra: {', '.join(result.removed)}")
    if result.secret is not None:
        say(f"secret: {result.secret.reveal()}")


@client.command("add-certificate")
@click.argument("name")
@click.option("--certificate-file", required=True, metavar="PEM",
              help="PEM file holding the private key and its certificate.")
@click.option("--overlap", is_flag=True, help="Keep older certificates active.")
@pass_cli
def client_add_certificate(state: CliContext, name: str, certificate_file: str,
                           overlap: bool) -> None:
    """Add a certificate credential to NAME as its current one (private_key_jwt)."""
    result = state.app().clients.add_certificate(name, _read_certificate(certificate_file),
                                                 overlap=overlap)
    say(f"Client {name}: certificate {result.ref} ({result.thumbprint}) is current, "
        f"valid until {result.not_after}")


def _read_certificate(path: str):
    from adapters.certificates import CertificateError, load_certificate_credential

    try:
        return load_certificate_credential(read_secret("certificate", False, path))
    except CertificateError as e:
        raise BadInput(f"{path}: {e}") from None


@client.command("retire-secret")
@click.argument("name")
@click.argument("ref")
@pass_cli
def client_retire_secret(state: CliContext, name: str, ref: str) -> None:
    """Retire secret REF (s1, s2 ... or its Secret ID) of client NAME."""
    state.app().clients.retire_secret(name, ref)
    say(f"Client {name}: secret {ref} retired")


@client.command("set-secret-dates")
@click.argument("name")
@click.argument("ref")
@click.option("--created", metavar="DATE")
@click.option("--expires", metavar="DATE")
@pass_cli
def client_set_secret_dates(state: CliContext, name: str, ref: str, created: str | None,
                            expires: str | None) -> None:
    """Record when secret REF of NAME was created and when it expires."""
    if not created and not expires:
        raise BadInput("give --created and/or --expires")
    state.app().clients.set_secret_dates(name, ref, created_on=parse_date(created, "--created"),
                                         expires_on=parse_date(expires, "--expires"))
    say(f"Client {name}: dates of secret {ref} recorded")


@client.command("sync")
@click.argument("name")
@click.option("--via", metavar="CLIENT",
              help="Read with this management client's app-only token instead of NAME's own.")
@click.option("--home-tenant", metavar="TENANT",
              help="The app's home tenant, where a client that signs in through common or "
                   "organizations gets its app-only Graph token.")
@output_format
@pass_cli
def client_sync(state: CliContext, name: str, via: str | None, home_tenant: str | None,
                fmt: str, as_json: bool) -> None:
    """Read NAME's secrets and certificates at Entra (Microsoft Graph, with the client's own
    app-only token, or --via CLIENT's: Application.Read.All, or Application.ReadWrite.OwnedBy
    with the reader's service principal an owner of the app) and match them to the ones vault
    holds."""
    result = state.app().entra.sync(name, via=via, home_tenant=home_tenant)
    if chosen_format(fmt, as_json) == "json":
        say(to_json(result), lines=True)
        return
    table(f"client {result.client} at Entra (object id {result.object_id})",
          ["KEY ID", "KIND", "NAME", "HINT / THUMBPRINT", "START", "END", "IN VAULT"],
          [[c.key_id, c.kind, c.display_name, c.hint, c.start, c.end, c.ref or "no"]
           for c in result.credentials], empty="Entra lists no credentials for this app")
    for ref in result.gone:
        say(f"vault: {ref} is not at Entra any more (deleted in the portal?): it will fail",
            err=True)
    for change in result.changed_dates:
        say(f"{change['ref']}: Entra says it ends {change['entra']}, not {change['entered']} "
            "as entered", err=True)
    say("recorded" if result.recorded else "nothing new since the last sync", err=True)


@client.command("set-servers")
@click.argument("name")
@click.option("--imap", metavar="HOST:PORT[/TLS]", help="TLS: implicit, starttls or plain.")
@click.option("--pop", metavar="HOST:PORT[/TLS]")
@click.option("--smtp", metavar="HOST:PORT[/TLS]")
@click.option("--graph", metavar="HOST:PORT[/TLS]")
@pass_cli
def client_set_servers(state: CliContext, name: str, imap: str | None, pop: str | None,
                       smtp: str | None, graph: str | None) -> None:
    """Record where NAME's mailboxes are served (probes use it; '' clears one)."""
    given = {k: v for k, v in {"imap": imap, "pop": pop, "smtp": smtp, "graph": graph}.items()
             if v is not None}
    if not given:
        raise BadInput("give at least one of --imap, --pop, --smtp, --graph")
    recorded = state.app().clients.set_mail_servers(name, given)
    for protocol, server in sorted(recorded.servers.items()):
        say(f"{protocol}: {server['host']}:{server['port']}"
            + (f" ({server['tls']})" if server["tls"] else ""))


@client.command("remove")
@click.argument("name")
@click.option("--reason", default="removed by admin", show_default=True)
@click.option("--purge", is_flag=True,
              help="Also destroy its data key (crypto-shred): its events become unreadable.")
@pass_cli
def client_remove(state: CliContext, name: str, reason: str, purge: bool) -> None:
    """Remove client NAME (its grants must be revoked first)."""
    result = state.app().clients.remove_client(name, reason=reason, purge=purge)
    say(f"Client {result.client} removed" + (" and purged" if purge else ""))
