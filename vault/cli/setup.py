"""`vault init`, `vault key ...` and `vault config ...`."""

from __future__ import annotations

import click

from vault.cli.main import CliContext, chosen_format, output_format, pass_cli
from vault.errors import BadInput
from vault.render.machine import fields_of, to_json
from vault.render.tables import emit, fields, table
from vault.render.text import say

# adapters/keyslots.py KDF_PROFILES, not imported for a choice list (tests/unit/test_cli_choices.py compares)
KDF_CHOICE = click.Choice(["interactive", "moderate", "sensitive"])


def register(cli: click.Group) -> None:
    cli.add_command(init)
    cli.add_command(key)
    cli.add_command(config)


@click.command()
@click.option("--kdf", type=KDF_CHOICE, default="moderate", show_default=True,
              help="Argon2id cost for passphrase keyslots (moderate: about 1 s, 256 MiB).")
@click.option("--key-file", "new_key_file", metavar="PATH",
              help="Also create a key file (0600) with its own keyslot, for services.")
@click.option("--no-passphrase", is_flag=True,
              help="No passphrase keyslot (needs --key-file).")
@click.option("--passphrase-file", metavar="FILE",
              help="Read the new passphrase from FILE (else VAULT_PASSPHRASE, else a prompt).")
@pass_cli
def init(state: CliContext, kdf: str, new_key_file: str | None, no_passphrase: bool,
         passphrase_file: str | None) -> None:
    """Create a new vault (in VAULT_HOME, or the PostgreSQL database of VAULT_STORE)."""
    from adapters.keyslots import write_key_file
    from vault.bootstrap import init_vault
    from vault.cli.inputs import new_passphrase

    if no_passphrase and not new_key_file:
        raise BadInput("--no-passphrase needs --key-file: the vault must open somehow")
    materials = []
    if not no_passphrase:
        materials.append((new_passphrase("VAULT_PASSPHRASE", passphrase_file,
                                         "New vault passphrase"), "passphrase"))
    created_key_file = None
    if new_key_file:
        try:
            created_key_file = write_key_file(new_key_file)
        except FileExistsError:
            raise BadInput(f"{new_key_file} already exists; vault never overwrites a key "
                           "file") from None
        except OSError as e:
            raise BadInput(f"cannot create key file {new_key_file}: {e.strerror or e}") from None
        materials.append((created_key_file, "key file"))
    try:
        result = init_vault(state.settings, materials, kdf=kdf)
    except BaseException:
        if created_key_file is not None:
            import os

            os.unlink(created_key_file.path)
        raise
    say(f"Initialised vault {result['vault_id']} in {result['location']}")
    for slot in result["keyslots"]:
        say(f"  keyslot {slot['id']}: {slot['kind']}")
    if created_key_file is not None:
        say(f"Key file written to {created_key_file.path} (keep it private; it opens "
            "the vault on its own)")


@click.group()
def key() -> None:
    """Keyslots (passphrases, key files) and root-key rotation."""


@key.command("list")
@output_format
@pass_cli
def key_list(state: CliContext, fmt: str, as_json: bool) -> None:
    """List the keyslots that open this vault."""
    slots = state.app().keys.list_keyslots()
    emit(slots, chosen_format(fmt, as_json), lambda data: table(
        None, ["ID", "KIND", "LABEL", "KDF", "CREATED", "IN USE"],
        [[s.id, s.kind, s.label, s.kdf, s.created_at[:10], "yes" if s.used_now else ""]
         for s in data]))


@key.command("add-passphrase")
@click.option("--label", default="passphrase", show_default=True)
@click.option("--kdf", type=KDF_CHOICE, default="moderate", show_default=True)
@click.option("--new-passphrase-file", metavar="FILE",
              help="Read the new passphrase from FILE (else VAULT_NEW_PASSPHRASE, else a prompt).")
@pass_cli
def key_add_passphrase(state: CliContext, label: str, kdf: str,
                       new_passphrase_file: str | None) -> None:
    """Add a passphrase keyslot (the vault must be unlocked with an existing one)."""
    from vault.cli.inputs import new_passphrase

    app = state.app()
    material = new_passphrase("VAULT_NEW_PASSPHRASE", new_passphrase_file, "New passphrase")
    slot = app.keys.add_keyslot(material, label=label, kdf=kdf)
    say(f"Added keyslot {slot.id} ({slot.kdf})")


@key.command("add-keyfile")
@click.argument("path")
@click.option("--label", default="key file", show_default=True)
@pass_cli
def key_add_keyfile(state: CliContext, path: str, label: str) -> None:
    """Create a key file at PATH (0600) and a keyslot it opens."""
    import os

    from adapters.keyslots import write_key_file

    app = state.app()
    try:
        material = write_key_file(path)
    except FileExistsError:
        raise BadInput(f"{path} already exists; vault never overwrites a key file") from None
    except OSError as e:
        raise BadInput(f"cannot create key file {path}: {e.strerror or e}") from None
    try:
        slot = app.keys.add_keyslot(material, label=label)
    except BaseException:
        os.unlink(path)
        raise
    say(f"Added keyslot {slot.id}; key file written to {path}")


@key.command("remove")
@click.argument("slot_id", type=int)
@pass_cli
def key_remove(state: CliContext, slot_id: int) -> None:
    """Remove keyslot SLOT_ID (the last keyslot cannot be removed)."""
    result = state.app().keys.remove_keyslot(slot_id)
    say(f"Removed keyslot {result.removed}; remaining: {', '.join(map(str, result.remaining))}")
    say("This is not revocation: the root key is unchanged, so the removed key file or "
        "passphrase still opens any earlier copy of the database, and with it what is "
        "written from now on. `vault key rotate` gives a new root key (existing data keys "
        "stay: an old copy still reads newer events of existing clients and grants).")


@key.command("passwd")
@click.option("--kdf", type=KDF_CHOICE, help="New Argon2id cost (default: keep the slot's).")
@click.option("--new-passphrase-file", metavar="FILE",
              help="Read the new passphrase from FILE (else VAULT_NEW_PASSPHRASE, else a prompt).")
@pass_cli
def key_passwd(state: CliContext, kdf: str | None, new_passphrase_file: str | None) -> None:
    """Change the passphrase that unlocked the vault (rewraps the root key only)."""
    from vault.cli.inputs import new_passphrase

    app = state.app()
    material = new_passphrase("VAULT_NEW_PASSPHRASE", new_passphrase_file, "New passphrase")
    result = app.keys.change_passphrase(material, kdf=kdf)
    say(f"Passphrase of keyslot {result.slot} changed ({result.kdf})")


@key.command("rotate")
@click.option("--other-key-file", multiple=True, metavar="PATH",
              help="Key file of another keyslot (repeatable).")
@click.option("--other-passphrase-file", multiple=True, metavar="FILE",
              help="File holding the passphrase of another keyslot (repeatable).")
@click.option("--drop-slot", multiple=True, type=int, metavar="N",
              help="Remove keyslot N instead of rewrapping it (repeatable).")
@click.option("--reencrypt", is_flag=True,
              help="Revoke for real: also a new data key for every client and grant with all "
                   "their events re-encrypted, and new audit and signing keys (resumes an "
                   "unfinished one).")
@click.option("--batch-size", type=click.IntRange(1, 10000), default=50, show_default=True,
              metavar="N", help="With --reencrypt: subjects per transaction.")
@output_format
@pass_cli
def key_rotate(state: CliContext, other_key_file: tuple[str, ...],
               other_passphrase_file: tuple[str, ...], drop_slot: tuple[int, ...],
               reencrypt: bool, batch_size: int, fmt: str, as_json: bool) -> None:
    """New root key term: rewrap every data key and every keyslot.

    Every keyslot other than the one that unlocked must be opened to receive the new root key:
    give its key file or passphrase file, or drop it. With --reencrypt the data keys, the audit
    key and the signing key are made anew too, so an earlier copy of the database and a removed
    key file open nothing written afterwards.
    """
    from vault.cli.inputs import other_materials

    app = state.app()
    if reencrypt:
        result = app.keys.reencrypt(other_materials(other_key_file, other_passphrase_file),
                                    drop=drop_slot, progress=_progress_bar(), batch=batch_size)
        if chosen_format(fmt, as_json) == "json":
            say(to_json(result), lines=True)
            return
        say(("Resumed: " if result.resumed else "")
            + f"generation {result.generation} (root key term {result.root_term}): "
            f"{result.subjects} clients and grants re-encrypted ({result.events} events and "
            f"snapshots) in {result.batches} transactions; proven: {result.aggregates_proven} "
            f"aggregates load under their new keys, the audit log verifies across the hand-over "
            f"at entry {result.handover_at} ({result.audit_entries} entries)")
        return
    result = app.keys.rotate_root_key(other_materials(other_key_file, other_passphrase_file),
                                      drop=drop_slot)
    say(f"Root key rotated to term {result.root_term}: "
        f"{result.data_keys_rewrapped} data keys rewrapped, keyslots "
        f"{', '.join(map(str, result.keyslots))}"
        + (f"; dropped {', '.join(map(str, result.dropped))}" if result.dropped else ""))


def _progress_bar():
    """A progress line on stderr when it is a terminal (nothing otherwise)."""
    import sys

    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else width
        sys.stderr.write(f"\rre-encrypting [{'#' * filled}{'.' * (width - filled)}] "
                         f"{done}/{total} subjects")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


@click.group()
def config() -> None:
    """Settings shared by every host of this vault (expiry thresholds, the refusal interval)."""


@config.command("show")
@output_format
@pass_cli
def config_show(state: CliContext, fmt: str, as_json: bool) -> None:
    """Show the thresholds in force."""
    data = state.app().reports.show_config()
    emit(data, chosen_format(fmt, as_json), lambda d: fields(
        "thresholds (days; *_minutes in minutes)",
        sorted(fields_of(d.expiry_thresholds).items())))


@config.command("set")
@click.argument("name")
@click.argument("value", type=click.IntRange(min=0))
@pass_cli
def config_set(state: CliContext, name: str, value: int) -> None:
    """Set a threshold, e.g. `vault config set secret_warning_days 45` (days), or `vault config
    set invalid_grant_interval_minutes 30` (how far apart two refusals of a refresh token must
    be to mark its grant for re-consent)."""
    state.app().reports.set_threshold(name, value)
    say(f"{name} = {value}")
