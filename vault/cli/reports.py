"""`vault status`, `vault expiry`, `vault history`."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import click

from domain.vocabulary import EXPIRY_FORMATS
from vault.cli.inputs import parse_date, parse_date_or_moment
from vault.cli.main import CliContext, chosen_format, output_format, pass_cli
from vault.errors import BadInput
from vault.render.listings import expiry_table, status_table
from vault.render.machine import fields_of, to_json
from vault.render.tables import emit, fields, table
from vault.render.text import days, say

if TYPE_CHECKING:
    from vault.services.reports import History


def register(cli: click.Group) -> None:
    cli.add_command(status)
    cli.add_command(expiry)
    cli.add_command(history)


@click.command()
@output_format
@pass_cli
def status(state: CliContext, fmt: str, as_json: bool) -> None:
    """One overview: clients, secrets, grants, token state, what expires next."""
    emit(state.app().reports.status(), chosen_format(fmt, as_json), status_table)


@click.command()
@click.option("--as-of", metavar="DATE", help="Evaluate as of this UTC date [default: today].")
@click.option("--within", type=int, metavar="DAYS",
              help="Also list anything due within DAYS; leave out what is due later.")
@click.option("--check", is_flag=True,
              help="Monitoring-plugin mode: one status line; exit 0 ok, 1 warning, 2 critical, "
                   "3 unknown (any error).")
@click.option("--json", "as_json", is_flag=True, help="Shorthand for --format json.")
@click.option("--format", "fmt", type=click.Choice(EXPIRY_FORMATS),
              default="table", show_default=True,
              help="prometheus: a textfile-collector file (with --output, written atomically).")
@click.option("--output", "-o", metavar="FILE", help="Where to write --format prometheus.")
@click.option("--force", is_flag=True,
              help="Replace FILE even if it is not a metrics file vault wrote (never a link, a "
                   "directory or a device).")
@pass_cli
def expiry(state: CliContext, as_of: str | None, within: int | None, check: bool, fmt: str,
           as_json: bool, output: str | None, force: bool) -> None:
    """What will stop working, and when: secrets, refresh tokens, broken grants.

    With --format prometheus -o FILE, FILE may replace a metrics file vault wrote; any other
    existing file needs --force."""
    if output and fmt != "prometheus":
        raise BadInput("--output is for --format prometheus")
    if fmt == "prometheus":
        from adapters.files import check_output
        from vault.cli.operations import write_or_echo
        from vault.services.alerts import METRICS_FILE

        if output:
            check_output(output, force=force, **METRICS_FILE)
        write_or_echo(state.app().alerts.prometheus(), output, 0o644,  # node_exporter reads it
                      force=force, **METRICS_FILE)
        return
    data = state.app().reports.expiry(as_of=parse_date(as_of, "--as-of"), within=within)
    findings = data.findings
    fmt = chosen_format(fmt, as_json)
    if check:
        worst = next((s for s in ("critical", "warning") if any(
            f.severity == s for f in findings)), None)
        code = {"critical": 2, "warning": 1, None: 0}[worst]
        if fmt == "json":
            say(to_json({**fields_of(data), "status": worst or "ok", "exit_code": code}),
                lines=True)
        else:
            alarming = [f for f in findings if f.severity in ("critical", "warning")]
            summary = "; ".join(f"{f.mailbox or f.client}: {f.kind.replace('_', ' ')} "
                                f"{days(f.days_left)}" for f in alarming[:5])
            counts = (f"{sum(f.severity == 'critical' for f in findings)} critical, "
                      f"{sum(f.severity == 'warning' for f in findings)} warning")
            say(f"VAULT {(worst or 'ok').upper()} - {counts}"
                + (f" - {summary}" if summary else "")
                + f" | critical={sum(f.severity == 'critical' for f in findings)}"
                f" warning={sum(f.severity == 'warning' for f in findings)}")
        raise click.exceptions.Exit(code)

    emit(data, fmt, expiry_table)


@click.command()
@click.argument("subject")
@click.option("--client", "client_name", metavar="NAME",
              help="When SUBJECT is a mailbox granted under several clients.")
@click.option("--as-of", metavar="DATE",
              help="Show the state as it was at the end of DATE (UTC), or at a date-time "
                   "(e.g. 2026-03-11T10:00, UTC unless it names a zone).")
@click.option("--limit", type=int, default=50, show_default=True,
              help="Show at most this many (most recent) events.")
@output_format
@pass_cli
def history(state: CliContext, subject: str, client_name: str | None, as_of: str | None,
            limit: int, fmt: str, as_json: bool) -> None:
    """The event history of a client or mailbox, and its state as of a date (secrets redacted)."""
    data = state.app().reports.history(subject, client=client_name,
                                       as_of=parse_date_or_moment(as_of, "--as-of"), limit=limit)

    def render(d: History) -> None:
        shown = len(d.events)
        table(f"history of {d.kind} {d.subject}"
              + (f" up to {d.as_of}" if d.as_of else "")
              + (f" (last {shown} of {d.total_events} events)" if shown < d.total_events
                 else ""),
              ["AT", "EVENT", "DETAILS"],
              [[e.at[:19], e.event, _summary(e.data)] for e in d.events],
              empty="no events up to that date")
        if d.state is not None:
            state = d.state if isinstance(d.state, dict) else fields_of(d.state)
            say()
            fields(f"state{' as of ' + d.as_of if d.as_of else ''}",
                   [(k, _summary(v) if isinstance(v, dict | list) or dataclasses.is_dataclass(v)
                     else v) for k, v in state.items()])

    emit(data, chosen_format(fmt, as_json), render)


def _summary(value: object) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = fields_of(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_summary(v)}" for k, v in value.items() if v not in (None, {}, []))
    if isinstance(value, list):
        return "[" + ", ".join(_summary(v) for v in value) + "]"
    return str(value)
