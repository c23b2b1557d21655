"""The `vault` command: options -> one use case -> rendering. Errors become one line and an exit
code (README, "Exit codes"; vault's own errors carry theirs: domain/errors.py); never a traceback,
never a secret.

Exit codes: 0 ok, 1 operation failed, 2 bad input, 3 cannot unlock, 4 not found, 5 integrity
violation. Under `vault expiry --check` (monitoring-plugin convention): 0 ok, 1 warning,
2 critical, and every error is 3 (unknown), so a typo never pages as critical.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from domain.vocabulary import LISTING_FORMATS
from vault import errors as codes
from vault.render.text import one_line, say

CHECK_UNKNOWN = 3
MAX_CONTENT_WIDTH = 100


class CliContext:
    """What the global options say, and the vault once a command opens it. A plain class: the
    dataclasses module (with inspect) would be the largest import `vault --help` makes."""

    def __init__(self, home: str | None, key_file: str | None, keyslot: int | None,
                 ca_file: str | None = None) -> None:
        self.home = home
        self.key_file = key_file
        self.keyslot = keyslot
        self.ca_file = ca_file
        self._app: Any = None

    @property
    def settings(self):
        from vault.bootstrap import settings_from_env

        return settings_from_env(self.home, self.ca_file)

    def app(self):
        """Open and unlock the vault once per command."""
        if self._app is None:
            from vault.bootstrap import open_vault
            from vault.cli.inputs import material_source

            self._app = open_vault(self.settings, material_source(self.key_file),
                                   slot_id=self.keyslot)
        return self._app

    def store_failure(self, error: BaseException) -> str | None:
        """A full disk, a read-only file system or a lost database connection behind `error`,
        said plainly and naming the store; None for anything else."""
        from adapters.store.failures import explain_store_failure

        try:
            settings = self.settings
        except Exception:  # noqa: BLE001 - the settings are what failed: nothing to add
            return None
        home = None if settings.store_url else settings.home
        return explain_store_failure(error, f"the vault's store {settings.location}", home)

    def close(self) -> None:
        if self._app is not None:
            for warning in self._app.warnings:
                say(f"vault: warning: {warning}", err=True)
            self._app.close()
            self._app = None


def output_format(f):
    """`--format table|json` with `--json` as its shorthand, on every listing."""
    f = click.option("--json", "as_json", is_flag=True, help="Shorthand for --format json.")(f)
    return click.option("--format", "fmt", type=click.Choice(LISTING_FORMATS),
                        default="table", show_default=True, help="Output format.")(f)


def chosen_format(fmt: str, as_json: bool) -> str:
    return "json" if as_json else fmt


pass_cli = click.make_pass_decorator(CliContext)
_current: CliContext | None = None  # this command's, for the error handler of `main`

# Each top-level command: the module that defines it (vault/cli/<module>.py, whose `register`
# adds it) and its summary, the first sentence of its help, which `vault --help` lists. A command's
# module, and what that imports, is loaded only when the command runs or its own help is shown.
# tests/e2e/test_startup.py holds both to the commands themselves.
COMMANDS: dict[str, tuple[str, str]] = {
    "admin": ("admin", "Maintenance."),
    "agent": ("agent", "Unlock once and serve tokens from memory on a Unix socket (start, stop, "
              "status, lock, unlock)."),
    "alert": ("operations", "Send new or worsened expiry findings and failed probes, once per "
              "finding and severity on each channel (recorded as events: hosts sharing a store "
              "never send one twice)."),
    "app-token": ("tokens", "Print an app-only (client credentials) access token; needs a "
                  "concrete tenant."),
    "audit": ("admin", "The tamper-evident audit log: who did what, when, from where, with what "
              "outcome."),
    "backup": ("backups", "Write a consistent, still encrypted copy of the vault to FILE (mode "
               "0600)."),
    "client": ("clients", "App registrations: client id, tenant, cloud, endpoints, secrets."),
    "config": ("setup", "Settings shared by every host of this vault (expiry thresholds, the "
               "refusal interval)."),
    "consent": ("tokens", "Ask MAILBOX's consent for CLIENT and keep the refresh token it yields."),
    "expiry": ("reports", "What will stop working, and when: secrets, refresh tokens, broken "
               "grants."),
    "grant": ("grants", "Consent grants: which mailbox a client may reach, and its tokens."),
    "history": ("reports", "The event history of a client or mailbox, and its state as of a date "
                "(secrets redacted)."),
    "import": ("importing", "Import accounts from mutt_oauth2.py or email-oauth2-proxy: each "
               "becomes a client (reused when the vault already has that app) plus a grant whose "
               "history starts now."),
    "init": ("setup", "Create a new vault (in VAULT_HOME, or the PostgreSQL database of "
             "VAULT_STORE)."),
    "key": ("setup", "Keyslots (passphrases, key files) and root-key rotation."),
    "maintain": ("operations", "Everything a timer should run: sync with Entra and renew, "
                 "refresh due grants and keep idle ones alive, probe on a schedule, alert, write "
                 "metrics, export an audit checkpoint."),
    "migrate": ("backups", "Copy the whole vault, every event in order, into an empty store and "
                "prove the copy."),
    "probe": ("probes", "Probe MAILBOX over IMAP, POP3, SMTP or Graph with its grant's token."),
    "refresh": ("tokens", "Refresh a grant's tokens now, or every grant (--all), or those due "
                "(--due, for cron)."),
    "report": ("operations", "Reports for auditors and admins: audit, revocations, expiry."),
    "restore": ("backups", "Restore FILE into an empty home or store (--home / VAULT_HOME / "
                "VAULT_STORE)."),
    "sandbox": ("sandbox", "A local identity provider behaving like Microsoft's v2.0 endpoints, "
                "for trying vault without a tenant."),
    "status": ("reports", "One overview: clients, secrets, grants, token state, what expires "
               "next."),
    "token": ("tokens", "Print an access token for MAILBOX (refreshing only when needed)."),
}


class LazyGroup(click.Group):
    """The top-level group: a command is registered by its module when first named."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(f"vault.cli.{COMMANDS[cmd_name][0]}").register(self)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own listing, over stand-ins that carry a summary: listing every command
        would otherwise import every module (a sixth of what `vault --help` costs)."""
        listing = click.Group(commands=[
            self.commands.get(name) or click.Command(name, help=COMMANDS[name][1])
            if name in COMMANDS else self.get_command(ctx, name)
            for name in self.list_commands(ctx)])
        click.Group.format_commands(listing, ctx, formatter)


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"],
                               "max_content_width": MAX_CONTENT_WIDTH})
@click.option("--home", envvar="VAULT_HOME", metavar="DIR",
              help="Vault directory for the embedded SQLite store [env: VAULT_HOME; default: "
                   "the user data directory]. PostgreSQL: set VAULT_STORE=postgresql://...")
@click.option("--key-file", metavar="PATH",
              help="Unlock with this key file [env: VAULT_KEY_FILE]. Otherwise VAULT_PASSPHRASE "
                   "or a prompt.")
@click.option("--keyslot", type=int, metavar="N", help="Try only this keyslot when unlocking.")
@click.option("--ca-file", metavar="PEM",
              help="Also trust this CA for HTTPS (a private CA or a TLS-inspecting proxy) "
                   "[env: VAULT_CA_FILE]. Public roots, or SSL_CERT_FILE, stay trusted.")
@click.version_option(package_name="mail-oauth-vault", prog_name="vault")
@click.pass_context
def cli(ctx: click.Context, home: str | None, key_file: str | None, keyslot: int | None,
        ca_file: str | None) -> None:
    """vault: an event-sourced, encrypted vault for the OAuth2 credentials of mail integrations.

    Secrets are read from stdin, a file or the environment, never from the command line.
    """
    global _current
    state = _current = CliContext(home=home, key_file=key_file, keyslot=keyslot, ca_file=ca_file)
    ctx.obj = state
    ctx.call_on_close(state.close)


def all_commands() -> dict[str, click.Command]:
    """Every top-level command, each module loaded (for the tests that walk the whole CLI)."""
    ctx = click.Context(cli)
    return {name: command for name in cli.list_commands(ctx)
            if (command := cli.get_command(ctx, name)) is not None}


def help_width() -> int | None:
    """The width click gives help and usage text, worked out as click does (the terminal's
    columns from shutil.get_terminal_size, clamped to MAX_CONTENT_WIDTH) but without importing
    shutil, which brings the compression modules in: 0.4x of a bare interpreter, a twelfth of
    what `vault --help` costs. None under click's test runner, whose fixed width click applies
    itself. tests/e2e/test_startup.py compares the help at many widths with click's own."""
    from click import formatting

    if formatting.FORCED_WIDTH is not None:
        return None
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(min(columns, MAX_CONTENT_WIDTH) - 2, 50)


def _is_check_mode(args: list[str]) -> bool:
    """`vault [global options] expiry ... --check`: errors must then exit 3 (unknown)."""
    return "expiry" in args and "--check" in args[args.index("expiry"):]


def main(args: list[str] | None = None) -> None:
    global _current
    _current = None
    args = list(sys.argv[1:] if args is None else args)
    os.umask(0o077)  # whatever vault creates is private to its owner
    check = _is_check_mode(args)
    try:
        code = cli.main(args=args, prog_name="vault", standalone_mode=False,
                        terminal_width=help_width())
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.exceptions.NoArgsIsHelpError as e:
        say(e.ctx.get_help(), lines=True)
        code = CHECK_UNKNOWN if check else codes.BAD_INPUT
    except click.UsageError as e:
        say(e.format_message() if e.ctx is None else
            f"{e.ctx.get_usage()}\nTry '{e.ctx.command_path} -h' for help.\n\n"
            f"vault: error: {one_line(e.format_message())}", err=True, lines=True)
        code = CHECK_UNKNOWN if check else codes.BAD_INPUT
    except click.Abort:
        say("vault: aborted", err=True)
        code = CHECK_UNKNOWN if check else codes.FAILED
    except click.ClickException as e:
        say(f"vault: error: {one_line(e.format_message())}", err=True)
        code = CHECK_UNKNOWN if check else codes.BAD_INPUT
    except KeyboardInterrupt:
        say("vault: interrupted", err=True)
        code = CHECK_UNKNOWN if check else 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, no traceback
        reported = report_error(e, _current)
        code = CHECK_UNKNOWN if check else reported
    sys.exit(code if isinstance(code, int) else 0)


def report_error(error: Exception, context: CliContext | None = None) -> int:
    """Say `error` in one line on stderr; its exit code."""
    code, line = error_report(error, context)
    if line.startswith("vault: internal error") and os.environ.get("VAULT_DEBUG") == "1":
        import traceback

        traceback.print_exc()
    say(line, err=True)
    return code


def error_report(error: Exception, context: CliContext | None = None) -> tuple[int, str]:
    """`error`'s exit code and the one line that says it. vault's own errors carry both their
    words and their code (domain/errors.py draws the tree); the rest is said here, naming the
    store of `context` (the command's) when a full disk or a lost connection is behind it."""
    from eventsourcing.persistence import PersistenceError

    from adapters.store.failures import undecodable_text

    error = undecodable_text(error) or error
    # a full disk or a lost connection behind any error is the news, but it never hides tampering
    failure = None
    if not isinstance(error, codes.IntegrityViolation) and context is not None:
        failure = context.store_failure(error)
    if failure:
        return codes.FAILED, f"vault: error: {one_line(failure)}"
    if isinstance(error, codes.VaultError):
        return error.exit_code, f"vault: {error.prefix}: {one_line(str(error))}"
    if isinstance(error, PersistenceError):
        return codes.FAILED, f"vault: error: the database failed: {one_line(str(error))[:300]}"
    if isinstance(error, OverflowError):
        return codes.BAD_INPUT, "vault: error: a date or number is out of range"
    return codes.FAILED, (f"vault: internal error ({type(error).__name__}); nothing secret is "
                          "shown. Run with VAULT_DEBUG=1 for a traceback (it may contain data).")


if __name__ == "__main__":
    main()
