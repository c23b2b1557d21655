"""The same data as a table for people or JSON for programs; field lists; a progress bar. Cells,
titles and labels pass `printable` (text.py) like every other line. A table that rich would draw
without styles or wrapping (output that is not a terminal, ASCII, as wide as it fits) is laid out
here, exactly as rich lays it out (tests/unit/test_tables.py compares the two); rich is imported
only for the rest (a terminal, wide characters, a table that must wrap) and for a progress bar."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from vault.render.text import printable, say, write_out

PLAIN_WIDTH = 200  # the width rich is given when the output is not a terminal


def console():
    from rich.console import Console

    return Console(file=_Stdout(), width=None if sys.stdout.isatty() else PLAIN_WIDTH,
                   soft_wrap=False, highlight=False)


class _Stdout:
    """stdout for rich, written as `say` writes it: text a stream cannot encode (an ASCII
    locale) goes out as UTF-8, never as an encoding error halfway through a table."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        write_out(text)
        return len(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return sys.stdout.isatty()

    def fileno(self) -> int:
        return sys.stdout.fileno()


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]],
          empty: str = "(none)") -> None:
    if not rows:
        if title:
            say(f"{title}: {empty}")
        else:
            say(empty)
        return
    title_text = printable(title) if title else None
    cells = [["" if v is None else printable(v) for v in row] for row in rows]
    laid_out = plain_layout(title_text, columns, cells) if plain_output() else None
    if laid_out is not None:
        say(laid_out, lines=True)
        return
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(title_text) if title_text else None, title_justify="left",
              show_lines=False, box=None, pad_edge=False)
    for column in columns:
        t.add_column(Text(column), overflow="fold")  # a header is text too, never markup
    for row in cells:
        t.add_row(*(Text(v) for v in row))  # data, not markup
    console().print(t)


def plain_output() -> bool:
    """rich would write no style here: stdout is not a terminal, and nothing in the environment
    makes rich treat it as one (TTY_COMPATIBLE=1, a non-empty FORCE_COLOR)."""
    compatible = os.environ.get("TTY_COMPATIBLE", "")
    if compatible == "1":
        return False
    if compatible != "0" and os.environ.get("FORCE_COLOR") not in (None, ""):
        return False
    return not sys.stdout.isatty()


def plain_layout(title: str | None, columns: Sequence[str],
                 rows: Sequence[Sequence[str]]) -> str | None:
    """The table as rich draws it with no box and no edge padding (two spaces between columns,
    each line padded to the table's width, the title on a line of its own), or None where only
    rich can say (a character that is not ASCII, whose width on screen rich measures, or a TAB,
    which rich expands; a table
    wider than PLAIN_WIDTH, or a title wider than the table, which rich wraps; a table of no
    width, which rich widens to one)."""
    widths = [len(c) for c in columns]
    for row in rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    total = sum(widths) + 2 * (len(widths) - 1)
    texts = [title or "", *columns, *(v for row in rows for v in row)]
    if not 0 < total <= PLAIN_WIDTH or len(title or "") > total or \
            not all(t.isascii() and "\t" not in t for t in texts):
        return None
    lines = [title.ljust(total)] if title else []
    for row in (columns, *rows):
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def fields(title: str | None, pairs: Sequence[tuple[str, Any]]) -> None:
    if title:
        say(title)
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        shown = "" if value is None else (
            ", ".join(map(str, value)) if isinstance(value, list) else value)
        say(f"  {key.ljust(width)}  {shown}")


def emit(data: Any, fmt: str, render_table) -> None:
    if fmt == "json":
        from vault.render.machine import to_json

        say(to_json(data), lines=True)
    else:
        render_table(data)


@contextmanager
def progress_bar(what: str) -> Iterator[Callable[..., None]]:
    """Progress on stderr for long runs, when a person is watching; silent under cron."""
    if not sys.stderr.isatty():
        yield lambda *args: None
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress

    with Progress(transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task(what, total=None)

        def advance(done: int, total: int, label: str = "") -> None:
            # a label is data (a mailbox): shown, neither obeyed nor read as rich markup
            progress.update(task, completed=done, total=total,
                            description=escape(printable(f"{what} {label}".strip())))

        yield advance
