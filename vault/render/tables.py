"""The same data as a table for people or JSON for programs; field lists; a progress bar. Cells,
titles and labels pass `printable` (text.py) like every other line; rich is imported only when a
table or a progress bar is drawn."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from vault.render.text import printable, say


def console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False,
                   highlight=False)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]],
          empty: str = "(none)") -> None:
    if not rows:
        if title:
            say(f"{title}: {empty}")
        else:
            say(empty)
        return
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(printable(title)) if title else None, title_justify="left",
              show_lines=False, box=None, pad_edge=False)
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*(Text("" if v is None else printable(v)) for v in row))  # data, not markup
    console().print(t)


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
