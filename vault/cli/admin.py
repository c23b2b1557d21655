"""`vault audit ...` and `vault admin ...`."""

from __future__ import annotations

import click

from adapters.files import check_output, write_atomically
from vault.cli.main import CliContext, chosen_format, output_format, pass_cli
from vault.errors import BadInput
from vault.render.machine import to_json
from vault.render.tables import emit, table
from vault.render.text import say


def register(cli: click.Group) -> None:
    cli.add_command(audit)
    cli.add_command(admin)


@click.group()
def audit() -> None:
    """The tamper-evident audit log: who did what, when, from where, with what outcome."""


@audit.command("log")
@click.option("--limit", type=int, default=100, show_default=True,
              help="Show the last N entries (0: all).")
@output_format
@pass_cli
def audit_log(state: CliContext, limit: int, fmt: str, as_json: bool) -> None:
    """Show the decrypted audit log (it is verified first; secrets are never in it)."""
    entries = state.app().audit.audit_log(limit=limit or None)
    emit(entries, chosen_format(fmt, as_json), lambda data: table(
        None, ["SEQ", "AT", "USER", "HOST", "ACTION", "SUBJECT", "OUTCOME", "DETAIL"],
        [[e.seq, e.at[:19], e.user, e.host, e.action,
          " ".join(f"{k}={v}" for k, v in e.subject.items()), e.outcome,
          " ".join(f"{k}={v}" for k, v in e.detail.items())] for e in data]))


@audit.command("verify")
@click.option("--trusted", "trusted_file", metavar="FILE",
              help="A checkpoint exported earlier: also detect a rollback to an older copy.")
@output_format
@pass_cli
def audit_verify(state: CliContext, trusted_file: str | None, fmt: str, as_json: bool) -> None:
    """Check the chain and the signed checkpoint. Needs no key and writes nothing."""
    from vault.audit import Handover, parse_checkpoint, verify_log
    from vault.bootstrap import read_public_header

    trusted = None
    if trusted_file:
        try:
            with open(trusted_file, encoding="utf-8") as f:
                trusted = parse_checkpoint(f.read(64 * 1024))
        except OSError as e:
            raise BadInput(f"cannot read {trusted_file}: {e.strerror}") from None
        except ValueError as e:
            raise BadInput(f"{trusted_file}: {e}") from None
    store, header = read_public_header(state.settings)
    try:
        with store.audit_log() as (checkpoint, rows, handovers):
            report = verify_log(rows, checkpoint, header.vault_id, header.audit_public_key,
                                trusted, [Handover.from_json(h) for h in handovers])
    finally:
        store.close()
    data = {"ok": report.ok, "entries": report.entries,
            "checkpoint_size": report.checkpoint_size, "trusted_size": report.trusted_size,
            "handovers_followed": report.handovers_followed, "problems": report.problems}
    if chosen_format(fmt, as_json) == "json":
        say(to_json(data), lines=True)
    elif report.ok:
        say(f"audit log OK: {report.entries} entries, signed checkpoint covers "
            f"{report.checkpoint_size}"
            + (f", extends the trusted checkpoint ({report.trusted_size})" if trusted
               else " (pin it: vault audit checkpoint --export FILE)")
            + (f", across {report.handovers_followed} signing-key hand-over(s) (key rotate "
               "--reencrypt): whoever held the old signing key could sign a hand-over, so pin "
               "a checkpoint exported since" if report.handovers_followed else ""))
    else:
        for problem in report.problems:
            say(f"vault: integrity: {problem}", err=True)
    if not report.ok:
        raise click.exceptions.Exit(5)


@audit.command("checkpoint")
@click.option("--export", "export_file", required=True, metavar="FILE",
              help="Write the signed head of the log to FILE ('-' for stdout); keep it elsewhere.")
@click.option("--force", is_flag=True,
              help="Replace FILE even if it is not a checkpoint vault wrote (never a link, a "
                   "directory or a device).")
@pass_cli
def audit_checkpoint(state: CliContext, export_file: str, force: bool) -> None:
    """Export the signed checkpoint, to detect a rollback later (`audit verify --trusted`).

    Unlocking authenticates the vault header, so the exported public key is the vault's own.
    FILE may replace a checkpoint exported earlier; any other existing file needs --force.
    """
    from vault.services.audit import CHECKPOINT_FILE

    if export_file != "-":
        check_output(export_file, force=force, **CHECKPOINT_FILE)  # before any work
    checkpoint = state.app().audit.export_checkpoint()
    if export_file == "-":
        say(checkpoint.text, nl=False, lines=True)
        return
    write_atomically(export_file, checkpoint.text, 0o644, force=force, **CHECKPOINT_FILE)
    say(f"checkpoint of {checkpoint.size} entries written to {export_file}")


@click.group()
def admin() -> None:
    """Maintenance."""


@admin.command("rebuild-projections")
@pass_cli
def rebuild_projections(state: CliContext) -> None:
    """Clear the read models and rebuild them from the events (one transaction)."""
    from vault.render.tables import progress_bar

    app = state.app()
    with progress_bar("replaying aggregates") as advance:
        result = app.maintenance.rebuild_projections(advance)
    say(f"read models rebuilt: {result.clients} clients, {result.grants} grants"
        + (f" ({result.purged} purged, skipped)" if result.purged else ""))

