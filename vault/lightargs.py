"""The command lines the light paths serve (vault/fastpath.py, and `vault token` through a
running agent, vault/agent/client.py), parsed without importing anything: the agent's client
must start in about twice the time of a bare interpreter."""

from __future__ import annotations

GLOBAL_OPTIONS = {"--home", "--key-file", "--keyslot", "--ca-file"}
# each command: (options taking a value, flags, positional arguments)
COMMANDS: dict[tuple[str, ...], tuple[set[str], set[str], int]] = {
    ("token",): ({"--client", "--protocol", "--format", "--min-valid", "--host", "--port"},
                 set(), 1),
    ("status",): ({"--format"}, {"--json"}, 0),
    ("expiry",): ({"--format"}, {"--json"}, 0),
    ("grant", "list"): ({"--format"}, {"--json"}, 0),
}
WORDS = {word for command in COMMANDS for word in command}  # vault/entry.py tries a light path


def parse(args: list[str]) -> tuple[tuple[str, ...], dict[str, str], list[str]] | None:
    """`[global options] COMMAND [options] [arguments]` for a command above, or None."""
    options: dict[str, str] = {}
    words: list[str] = []
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        command = COMMANDS.get(tuple(words))
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            takes, flags, _ = command if command else (GLOBAL_OPTIONS, set(), 0)
            if words and not command:
                return None  # an option between a group and its command
            if name in flags and not eq:
                value = "yes"
            elif name not in takes:
                return None
            elif not eq:
                if i + 1 >= len(args):
                    return None
                value = args[i + 1]
                i += 1
            options[name] = value
        elif arg.startswith("-"):
            return None  # a short option (or one click reads so): click's business
        elif command:
            positional.append(arg)
        else:
            words.append(arg)
            if not any(c[:len(words)] == tuple(words) for c in COMMANDS):
                return None
        i += 1
    command = tuple(words)
    if command not in COMMANDS or len(positional) != COMMANDS[command][2]:
        return None
    return command, options, positional
