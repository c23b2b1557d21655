"""`vault report ...`, `vault alert`, `vault maintain`: what keeps vault running unattended."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import click

from adapters.files import Recogniser, check_output, write_atomically
from domain.vocabulary import EXPIRY_REPORT_FORMATS, REPORT_FORMATS, SEVERITIES
from vault.cli.inputs import parse_date, parse_moment, read_secret
from vault.cli.main import CliContext, chosen_format, output_format, pass_cli
from vault.errors import BadInput
from vault.render.machine import to_json
from vault.render.tables import emit, table
from vault.render.text import say

REPORT_FORMAT = click.Choice(REPORT_FORMATS)
AUDIT_COLUMNS = ["seq", "at", "user", "sudo_user", "host", "action", "client", "mailbox", "outcome",
                 "revealed", "detail"]
REVOCATION_COLUMNS = ["at", "kind", "what", "client", "mailbox", "by", "reason",
                      "access_valid_until"]


def register(cli: click.Group) -> None:
    cli.add_command(report)
    cli.add_command(alert)
    cli.add_command(maintain)


def emit_report(title: str, rows: list[dict], columns: list[str], fmt: str,
                output: str | None, force: bool = False) -> None:
    from vault.render import html, machine
    from vault.render.machine import as_mapping

    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if fmt == "table":
        table(None, [c.upper().replace("_", " ") for c in columns],
              [[as_mapping(r).get(c) for c in columns] for r in rows], empty="nothing to report")
        return
    text = {"json": lambda: to_json(rows) + "\n",
            "csv": lambda: machine.to_csv(rows, columns),
            "html": lambda: html.html_table(title, rows, columns, generated)}[fmt]()
    write_or_echo(text, output, force=force)


def write_or_echo(text: str, output: str | None, mode: int = 0o600, *, force: bool = False,
                  what: str = "file", written_by_vault: Recogniser | None = None) -> None:
    """To FILE, whole and atomically (saying so), or to stdout. An existing FILE is replaced
    only if vault wrote it (`written_by_vault`) or with --force (adapters/files.py)."""
    if output:
        write_atomically(output, text, mode, force=force, what=what,
                         written_by_vault=written_by_vault)
        say(f"written to {output}")
    else:
        say(text, nl=False, lines=True)


def _check_output(fmt: str, output: str | None, force: bool) -> None:
    if output and fmt == "table":
        raise BadInput("--output writes json, csv or html: add --format")
    if output:
        check_output(output, force=force)  # before the report is made


FORCE_HELP = ("Replace an existing FILE that vault did not write (never a link, a directory or "
              "a device).")


@click.group()
def report() -> None:
    """Reports for auditors and admins: audit, revocations, expiry."""


def _report_options(f):
    f = click.option("--force", is_flag=True, help=FORCE_HELP)(f)
    f = click.option("--output", "-o", metavar="FILE", help="Write to FILE (atomically).")(f)
    return click.option("--format", "fmt", type=REPORT_FORMAT, default="table",
                        show_default=True)(f)


@report.command("audit")
@click.option("--since", metavar="DATE", help="From this UTC date, or from this date-time.")
@click.option("--until", metavar="DATE",
              help="To the end of this UTC date, or up to this date-time.")
@click.option("--client", "client_name", metavar="NAME")
@click.option("--mailbox", metavar="ADDR")
@_report_options
@pass_cli
def report_audit(state: CliContext, since: str | None, until: str | None,
                 client_name: str | None, mailbox: str | None, fmt: str,
                 output: str | None, force: bool) -> None:
    """Who did what, when, from where, with what outcome; reads of secrets and tokens included."""
    _check_output(fmt, output, force)
    rows = state.app().reports.audit_report(start=parse_moment(since, "--since"),
                                            end=parse_moment(until, "--until", end=True),
                                            client=client_name, mailbox=mailbox)
    emit_report("vault audit report", rows, AUDIT_COLUMNS, fmt, output, force)


@report.command("revocations")
@_report_options
@pass_cli
def report_revocations(state: CliContext, fmt: str, output: str | None, force: bool) -> None:
    """Revoked grants and retired or removed credentials: when, by whom, why, and until when
    the access tokens already handed out stay valid."""
    _check_output(fmt, output, force)
    rows = state.app().reports.revocation_report()
    emit_report("vault revocations", rows, REVOCATION_COLUMNS, fmt, output, force)


@report.command("expiry")
@click.option("--as-of", metavar="DATE")
@click.option("--horizon", type=click.IntRange(30, 3650), default=365, show_default=True,
              metavar="DAYS")
@click.option("--format", "fmt", type=click.Choice(EXPIRY_REPORT_FORMATS), default="html",
              show_default=True)
@click.option("--output", "-o", metavar="FILE", help="Write to FILE (atomically).")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@pass_cli
def report_expiry(state: CliContext, as_of: str | None, horizon: int, fmt: str,
                  output: str | None, force: bool) -> None:
    """One self-contained page: a timeline of what expires when, and the findings."""
    from vault.render.html import expiry_page

    if output:
        check_output(output, force=force)
    data = state.app().reports.expiry_timeline(as_of=parse_date(as_of, "--as-of"), horizon_days=horizon)
    text = (expiry_page(data, datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
            if fmt == "html" else to_json(data) + "\n")
    write_or_echo(text, output, force=force)


def webhook_secret(url_file: str | None) -> object:
    """A webhook URL carries a secret: from a file or VAULT_WEBHOOK_URL, never argv."""
    from domain.secret_value import SecretValue

    value = os.environ.pop("VAULT_WEBHOOK_URL", None)  # read once; no child inherits it
    if url_file:
        return read_secret("webhook", False, url_file)
    return SecretValue(value) if value else None


def alert_options(f):
    """The channels and policy of `vault alert`, shared with `vault maintain`."""
    for option in reversed([
        click.option("--webhook-file", metavar="FILE",
                     help="File holding the webhook URL; it usually carries a secret, so it is "
                          "never an argument [env: VAULT_WEBHOOK_URL]."),
        click.option("--email-to", metavar="ADDR", help="Mail the alerts to ADDR ..."),
        click.option("--via", metavar="MAILBOX",
                     help="... sending through this mailbox's own grant (SMTP, XOAUTH2)."),
        click.option("--min-severity", type=click.Choice(SEVERITIES),
                     default="warning", show_default=True),
        click.option("--resend-after", type=click.IntRange(1, 24 * 90), default=24,
                     show_default=True, metavar="HOURS",
                     help="Send an unchanged finding again after this long."),
    ]):
        f = option(f)
    return f


@click.command()
@alert_options
@pass_cli
def alert(state: CliContext, webhook_file: str | None, email_to: str | None, via: str | None,
          min_severity: str, resend_after: int) -> None:
    """Send new or worsened expiry findings and failed probes, once per finding and severity
    on each channel (recorded as events: hosts sharing a store never send one twice).

    Exit 1 while anything is pending on a channel (it failed, or waits after failing): stderr
    says what, on which channel, and when it is tried next."""
    from vault.render.alerts import delivery_summary, pending_lines

    result = state.app().alerts.alert(webhook=webhook_secret(webhook_file), email_to=email_to,
                                      via=via, min_severity=min_severity,
                                      resend_after=timedelta(hours=resend_after))
    say(delivery_summary(result))
    for line in pending_lines(result):  # a channel that failed (or still waits) is news
        say(f"vault: alert: {line}", err=True)
    if result.pending:
        raise click.exceptions.Exit(1)


@click.command()
@click.option("--keepalive-days", type=click.IntRange(1, 80), default=14, show_default=True,
              help="Refresh a grant whose refresh token has been idle this long (Microsoft "
                   "drops it after 90 days unused).")
@click.option("--probe-every", type=click.IntRange(0, 24 * 30), default=24, show_default=True,
              metavar="HOURS", help="Probe each protocol of each grant this often (0: never).")
@click.option("--probe-budget", type=click.IntRange(0, 24 * 60), default=5, show_default=True,
              metavar="MINUTES", help="Start no probe after this long; the rest stay due for "
                                      "the next run (an unreachable server must not delay the "
                                      "alerts).")
@alert_options
@click.option("--metrics-file", metavar="FILE", envvar="VAULT_METRICS_FILE",
              help="Write the Prometheus textfile here [env: VAULT_METRICS_FILE].")
@click.option("--checkpoint-dir", metavar="DIR", envvar="VAULT_CHECKPOINT_DIR",
              help="Export the signed audit checkpoint here, after checking that the log "
                   "extends the one exported last time [env: VAULT_CHECKPOINT_DIR].")
@click.option("--force", is_flag=True,
              help="Replace a metrics or checkpoint file vault did not write (never a link, a "
                   "directory or a device).")
@click.option("--renew-within", type=click.IntRange(0, 365), metavar="DAYS",
              envvar="VAULT_RENEW_WITHIN",
              help="Renew through Microsoft Graph the client secrets Entra says end within DAYS "
                   "(clients synced with `vault client sync`; off unless given) "
                   "[env: VAULT_RENEW_WITHIN].")
@output_format
@pass_cli
def maintain(state: CliContext, keepalive_days: int, probe_every: int, probe_budget: int,
             webhook_file: str | None,
             email_to: str | None, via: str | None, min_severity: str, resend_after: int,
             metrics_file: str | None, checkpoint_dir: str | None, force: bool,
             renew_within: int | None, fmt: str, as_json: bool) -> None:
    """Everything a timer should run: sync with Entra and renew, refresh due grants and keep
    idle ones alive, probe on a schedule, alert, write metrics, export an audit checkpoint.

    Clients synced once (`vault client sync`) are synced again; renewals through Graph left
    unfinished are finished, and with --renew-within what is due is renewed. Safe on several
    hosts at once.

    Exit 0 when every step succeeded, 1 when one failed (the others still ran).
    """
    from vault.services.maintenance import MaintainPlan, MaintainStep

    plan = MaintainPlan(
        keepalive_days=keepalive_days,
        probe_every=timedelta(hours=probe_every) if probe_every else None,
        probe_budget=timedelta(minutes=probe_budget),
        webhook=webhook_secret(webhook_file), email_to=email_to, via=via,
        min_severity=min_severity, resend_after=timedelta(hours=resend_after),
        metrics_file=metrics_file, checkpoint_dir=checkpoint_dir, force=force,
        renew_within=renew_within)
    steps = state.app().maintenance.maintain(plan)

    def render(data: list[MaintainStep]) -> None:
        for s in data:
            first, *rest = s.summary.split("\n")
            say(f"{s.step:<11}{s.outcome:<8}{first}")
            for line in rest:
                say(f"{'':<19}{line.strip()}")

    emit(steps, chosen_format(fmt, as_json), render)
    failed = [s for s in steps if s.outcome == "failed"]
    for s in failed:  # also on stderr: cron mails it, and a timer's journal marks it
        say(f"vault: maintain: {s.step} failed: {s.summary.splitlines()[0]}", err=True)
    if failed:
        raise click.exceptions.Exit(1)
