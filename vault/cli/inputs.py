"""Reading what commands need: secrets from stdin, files or the environment (never argv), dates,
and the material that unlocks the vault."""

from __future__ import annotations

import os
import re
import sys
from datetime import UTC, date, datetime, timedelta

import click

from adapters.errors import UnlockFailed
from adapters.keyslots import (
    MIN_PASSPHRASE,
    Header,
    KeyFile,
    Passphrase,
    UnlockMaterial,
    key_file_from_environment,
    read_key_file,
)
from domain.secret_value import SecretValue
from vault.errors import BadInput
from vault.render.text import say

MAX_SECRET_BYTES = 64 * 1024


def _strip_newline(text: str) -> str:
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def read_secret(what: str, use_stdin: bool, path: str | None) -> SecretValue:
    """A secret from stdin or a file; exactly one of them."""
    if use_stdin == bool(path):
        raise BadInput(f"give the {what} with exactly one of --{what}-stdin or --{what}-file")
    if use_stdin:
        if sys.stdin is None or sys.stdin.closed:
            raise BadInput(f"--{what}-stdin given but there is no standard input")
        text = read_typed_secret(what) if _interactive() else sys.stdin.read(MAX_SECRET_BYTES + 1)
        source = "standard input"
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read(MAX_SECRET_BYTES + 1)
        except OSError as e:
            raise BadInput(f"cannot read {what} file {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise BadInput(f"{what} file {path} is not UTF-8 text") from None
        source = path
    if len(text) > MAX_SECRET_BYTES:
        raise BadInput(f"the {what} from {source} is larger than 64 KiB")
    value = _strip_newline(text)
    if not value:
        raise BadInput(f"the {what} from {source} is empty")
    return SecretValue(value)


# A terminal in canonical mode keeps at most 4095 bytes of a line (Linux's N_TTY_BUF_SIZE less
# one) and drops the rest without a word: a line that long may be a truncated secret.
TERMINAL_LINE_LIMIT = 4095


def read_typed_secret(what: str) -> str:
    """One line typed (or pasted) at the terminal on stdin, not echoed: a prompt on stderr, the
    line ends at Enter (no Ctrl-D). Like getpass, but on stdin itself and refusing a line the
    terminal may have cut."""
    import termios

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    hidden = list(saved)
    hidden[3] &= ~(termios.ECHO | termios.ECHONL)  # lflag; canonical mode stays: line editing
    # what was typed ahead of the prompt (and echoed) is dropped; the prompt comes after, so
    # nothing typed once it shows is echoed
    termios.tcsetattr(fd, termios.TCSAFLUSH, hidden)
    try:
        say(f"{what.replace('-', ' ').capitalize()} (typing is not shown): ", err=True, nl=False)
        chunks: list[bytes] = []
        while not chunks or not chunks[-1].endswith(b"\n"):
            data = os.read(fd, 4096)  # canonical mode: at most one line per read
            if not data:  # Ctrl-D
                break
            chunks.append(data)
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)
        say("", err=True)  # the Enter was not echoed either
    line = b"".join(chunks).rstrip(b"\r\n")
    if len(line) >= TERMINAL_LINE_LIMIT:
        raise BadInput(f"the {what} typed at the terminal is {TERMINAL_LINE_LIMIT} bytes or "
                       "longer, where a terminal cuts a line: it may be truncated. Give it "
                       f"with --{what}-file, or through a pipe")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"the {what} typed at the terminal is not UTF-8 text") from None


EARLIEST, LATEST = date(1970, 1, 1), date(2199, 12, 31)


def _in_range(day: date, value: str, option: str) -> None:
    if not EARLIEST <= day <= LATEST:
        raise click.BadParameter(f"{value!r} is outside {EARLIEST}..{LATEST}", param_hint=option)


def parse_date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
        else:
            moment = datetime.fromisoformat(value)
            day = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).date()
    except (ValueError, OverflowError):
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option) from None
    _in_range(day, value, option)
    return day


def parse_moment(value: str | None, option: str, *, end: bool = False) -> datetime | None:
    """A date (midnight UTC; with `end`, the next midnight, so that an inclusive --until covers
    the whole day) or an ISO date-time (UTC unless it says otherwise), taken as given."""
    day = parse_date(value, option)
    if day is None:
        return None
    if len(value) == 10:
        return datetime.combine(day + timedelta(days=int(end)), datetime.min.time(), tzinfo=UTC)
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def parse_date_or_moment(value: str | None, option: str) -> date | datetime | None:
    """A date (YYYY-MM-DD) as a date, or a date-time as that exact UTC instant: a caller that
    means "the end of the day" for a date keeps knowing which one it was given."""
    if value is not None and len(value) == 10:
        return parse_date(value, option)
    return parse_moment(value, option)


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def unlock_material(key_file: str | None) -> UnlockMaterial:
    """Key file (--key-file, VAULT_KEY_FILE or a systemd credential), else VAULT_PASSPHRASE,
    else a prompt."""
    passphrase = take_env_passphrase("VAULT_PASSPHRASE")  # removed even when unused
    path = key_file or key_file_from_environment()
    if path:
        return read_key_file(path)
    if passphrase is not None:
        return passphrase
    if _interactive():
        return Passphrase(SecretValue(click.prompt("Vault passphrase", hide_input=True,
                                                   err=True)))
    raise UnlockFailed("cannot unlock: no key file or passphrase (set VAULT_KEY_FILE or "
                       "VAULT_PASSPHRASE, or run on a terminal)")


def material_source(key_file: str | None):
    def source(header: Header) -> UnlockMaterial:
        return unlock_material(key_file)

    return source


def take_env_passphrase(variable: str) -> Passphrase | None:
    """Read a passphrase from the environment once, and remove it so no child inherits it."""
    value = os.environ.pop(variable, None)
    if value is None:
        return None
    return Passphrase(SecretValue(value))


def new_passphrase(variable: str, file: str | None, prompt: str) -> Passphrase:
    """A new passphrase: from a file, an environment variable, or typed twice."""
    if file:
        passphrase = Passphrase(read_secret("passphrase", False, file))
    else:
        passphrase = take_env_passphrase(variable)
        if passphrase is None:
            if not _interactive():
                raise BadInput(f"no new passphrase: set {variable}, give a file, or run on a "
                               "terminal")
            passphrase = Passphrase(SecretValue(click.prompt(
                prompt, hide_input=True, confirmation_prompt=True, err=True)))
    if len(passphrase.value.reveal()) < MIN_PASSPHRASE:
        raise BadInput(f"a vault passphrase needs at least {MIN_PASSPHRASE} characters")
    return passphrase


def other_materials(key_files: tuple[str, ...], passphrase_files: tuple[str, ...]) -> list:
    materials: list[UnlockMaterial] = [read_key_file(p) for p in key_files]
    materials += [Passphrase(read_secret("passphrase", False, p)) for p in passphrase_files]
    return materials


__all__ = ["KeyFile", "material_source", "new_passphrase", "parse_date", "read_secret"]


_DURATION = re.compile(r"^(\d+)([smhd]?)$")


def parse_duration(text: str, option: str, *, zero: bool = False) -> int:
    """Seconds from 900, 15m, 8h or 1d (0 only where `zero` allows it)."""
    match = _DURATION.match(text.strip())
    if not match or (int(match.group(1)) == 0 and not zero):
        raise BadInput(f"{option} takes a duration such as 900, 15m, 8h or 1d")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
