"""The one path to the terminal: `say` prints every line vault writes to stdout or stderr, after
`printable` has made its control characters visible. Imports nothing heavy (the cached-token path
uses `printable`), not even click.

What counts as a control character here, shown as an escape instead of sent:
- C0 (U+0000-U+001F) but TAB, and DEL (U+007F): ESC starts CSI and OSC sequences (clear the
  screen, move the cursor over lines already printed, set the window title, OSC 52 writes the
  clipboard), BEL rings or ends an OSC, CR returns to overwrite the start of the line, LF starts
  a line the reader did not get from vault. Shown as \\xNN.
- C1 (U+0080-U+009F): U+009B is a one-character CSI, U+009D an OSC, for terminals that take
  8-bit controls (and for those that read the output as Latin-1). Shown as \\xNN.
- Bidirectional formatting (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) and the line
  and paragraph separators (U+2028, U+2029): they send no command, but they reorder or break
  what is displayed, so a mailbox or a reason can read as something it is not ("Trojan
  Source"). Shown as \\uNNNN.
TAB stays (it only moves to the next stop); so do zero-width joiners and every printable
character of every script: names are not transliterated.

The output of `printable` holds no control character, and `printable` of it is itself (a
backslash is printable), so text may pass it twice.
"""

from __future__ import annotations

import sys
from typing import Any

_BIDI_AND_SEPARATORS = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A),
                        0x2028, 0x2029)
_SHOWN = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}
_SHOWN.update({c: f"\\u{c:04x}" for c in _BIDI_AND_SEPARATORS})
_SHOWN_BUT_LINES = {c: shown for c, shown in _SHOWN.items() if c != 0x0A}


def printable(value: Any, *, lines: bool = False) -> str:
    """Text as it may reach a terminal: control characters shown, not obeyed. A revocation
    reason, a provider's error or trace id, or a mail server's greeting holding ESC sequences
    could otherwise rewrite the lines an auditor reads (or, with OSC 52, the clipboard).
    `lines`: keep line feeds, for text vault lays out over several lines itself (documents,
    help); one line (the default) shows them too."""
    return str(value).translate(_SHOWN_BUT_LINES if lines else _SHOWN)


def say(text: Any = "", *, err: bool = False, nl: bool = True, lines: bool = False) -> None:
    """Print to stdout (stderr with `err`): every line vault shows goes through here, flushed
    at once. A stream that cannot encode the text (an ASCII locale) gets it as UTF-8, as
    click.echo would give it, never an encoding error."""
    write_out(printable(text, lines=lines) + ("\n" if nl else ""), err=err)


def write_out(text: str, *, err: bool = False) -> None:
    """Write text `printable` has already passed, and flush it."""
    stream = sys.stderr if err else sys.stdout
    if stream is None:  # no console at all
        return
    try:
        stream.write(text)
    except UnicodeEncodeError:
        stream.flush()
        stream.buffer.write(text.encode("utf-8", "replace"))
    stream.flush()


def one_line(text: str) -> str:
    """Free text (an error message, a provider's words) on one line: runs of whitespace, line
    breaks included, become one space."""
    return printable(" ".join(text.split()))


def days(n: int | None) -> str:
    if n is None:
        return ""
    if n < 0:
        return f"{-n}d ago"
    return "today" if n == 0 else f"in {n}d"
