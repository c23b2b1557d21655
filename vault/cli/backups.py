"""`vault backup`, `vault restore`, `vault migrate`: whole-vault copies, each proven."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from vault.cli.main import CliContext, chosen_format, output_format, pass_cli
from vault.errors import BadInput
from vault.render.tables import emit
from vault.render.text import say

if TYPE_CHECKING:
    from vault.services.backups import BackupProof


def register(cli: click.Group) -> None:
    cli.add_command(backup)
    cli.add_command(restore)
    cli.add_command(migrate)


def _render(verb: str, where: str):
    def render(data: BackupProof) -> None:
        say(f"{verb} {where}: {data.tables['stored_events']} events, "
            f"{data.aggregates} aggregates ({data.purged} purged), "
            f"{data.audit_entries} audit entries")
        views = ("read models match the events" if not data.stale
                 else "read models rebuilt from the events" if data.warnings
                 else "read models differ from the events (see the warning)")
        say("proof: every table identical to the snapshot copied, audit log verified, "
            f"unlocks to the same state, {views}")
        for warning in data.warnings or []:
            say(f"vault: warning: {warning}", err=True)

    return render


@contextmanager
def _sigterm_discards_copies() -> Iterator[None]:
    """SIGTERM (a timer's job stopped) removes the unfinished temporary copy, then ends the
    process as SIGTERM would have (the database rolls back what was not committed)."""
    from adapters.store.copying import discard_unfinished_copies

    def stop(signum: int, frame: object) -> None:
        discard_unfinished_copies()
        say("vault: stopped by SIGTERM; the unfinished copy was removed", err=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _open_target(settings):
    """The empty store to copy into. A directory others can read is a wrong --to or home here
    (exit 2), not a key that fails to unlock."""
    from adapters.errors import UnsafeFile
    from vault.bootstrap import open_settings_store

    try:
        return open_settings_store(settings, create=True)
    except UnsafeFile as e:
        raise BadInput(f"{e}; or name a directory that does not exist yet (vault creates it "
                       "with mode 0700)") from None


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True,
              help="Replace FILE even if it is not a vault backup (never a link, a directory or "
                   "a device).")
@output_format
@pass_cli
def backup(state: CliContext, file: Path, force: bool, fmt: str, as_json: bool) -> None:
    """Write a consistent, still encrypted copy of the vault to FILE (mode 0600).

    Safe while other processes write; FILE is replaced only once the copy is proven, and must lie
    outside the vault's home. An existing FILE must be a vault backup (or give --force). The
    copy opens with the keyslots the vault had when it was taken: a passphrase changed later
    does not change the backup's.
    """
    from adapters.files import check_output
    from adapters.store.copying import BACKUP_FILE

    check_output(file, force=force, **BACKUP_FILE)  # before unlocking
    with _sigterm_discards_copies():
        result = state.app().backups.backup(file, force)
    emit(result, chosen_format(fmt, as_json), _render("backed up to", str(file)))


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@output_format
@pass_cli
def restore(state: CliContext, file: Path, fmt: str, as_json: bool) -> None:
    """Restore FILE into an empty home or store (--home / VAULT_HOME / VAULT_STORE).

    The backup must unlock with the key given and its audit log must verify before anything is
    written; the restored vault records the restore in its audit log.
    """
    from vault.cli.inputs import material_source
    from vault.services.backups import restore as restore_backup

    with _sigterm_discards_copies():
        result = restore_backup(file, lambda: _open_target(state.settings),
                                material_source(state.key_file))
    emit(result, chosen_format(fmt, as_json), _render("restored into", state.settings.location))


@click.command()
@click.option("--to", "to", required=True, metavar="URL|DIR",
              help="postgresql://user@host/db?schema=s (password in ~/.pgpass or PGPASSWORD), "
                   "or the directory of a new SQLite home (created 0700, or already 0700).")
@output_format
@pass_cli
def migrate(state: CliContext, to: str, fmt: str, as_json: bool) -> None:
    """Copy the whole vault, every event in order, into an empty store and prove the copy.

    Stop the writers first: events written to the old store afterwards are not copied, and any
    written during the copy make it fail. Then point every host at the new store.
    """
    from vault.bootstrap import Settings

    if to.startswith(("postgresql://", "postgres://")):
        try:
            password = urlsplit(to).password
        except ValueError as e:  # an unclosed '['
            raise BadInput(f"--to is not a valid URL ({e})") from None
        if password:
            raise BadInput("--to must not carry a password (it would show in `ps`): put it in "
                           "~/.pgpass or PGPASSWORD")
        target_settings = Settings(home=state.settings.home, store_url=to)
    else:
        target_settings = Settings(home=Path(to).expanduser())
    target = _open_target(target_settings)
    try:
        result = state.app().backups.migrate(target)
    finally:
        target.close()
    emit(result, chosen_format(fmt, as_json), _render("migrated to", target_settings.location))
