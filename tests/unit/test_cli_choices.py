"""The CLI's declarations, read without running a command: no option takes a secret as its
value, the choices it offers are the domain's, and the summaries `vault --help` shows without
importing a command are the commands' own."""

from __future__ import annotations

import click

from vault.cli.main import COMMANDS, all_commands, cli


def test_no_option_takes_a_secret_as_its_value() -> None:
    secretish = ("secret", "token", "passphrase", "password")
    allowed_suffixes = ("-stdin", "-file", "-id", "-created", "-expires", "-url")

    def walk(command: click.Command, path: str) -> None:
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if any(word in opt for word in secretish) and not getattr(param, "is_flag", False):
                    assert opt.endswith(allowed_suffixes), f"{path} {opt} takes a secret value"
        commands = all_commands() if command is cli else getattr(command, "commands", {})
        for name, sub in commands.items():  # the top-level commands are loaded when named
            walk(sub, f"{path} {name}")

    walk(cli, "vault")


def test_the_kdf_choices_are_the_kdf_profiles() -> None:
    from adapters.keyslots import KDF_PROFILES
    from vault.cli.setup import KDF_CHOICE

    assert list(KDF_CHOICE.choices) == list(KDF_PROFILES)


def test_each_module_registers_the_commands_the_table_names() -> None:
    for module in {m for m, _ in COMMANDS.values()}:
        group = click.Group()
        __import__(f"vault.cli.{module}", fromlist=["register"]).register(group)
        assert set(group.commands) == {n for n, (m, _) in COMMANDS.items() if m == module}, module


def test_the_help_lists_each_command_as_the_command_itself_would() -> None:
    """The summaries `vault --help` shows without importing a command are what click makes of
    the command's own help, at every width a terminal can give."""
    for name, command in all_commands().items():
        stand_in = click.Command(name, help=COMMANDS[name][1])
        assert not command.hidden and not command.deprecated and command.short_help is None
        for limit in range(0, 200):
            assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit), (
                f"{name}: update its summary in vault/cli/main.py's COMMANDS")
