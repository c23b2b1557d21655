"""One rendering path: the same data as a table for people or JSON for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from domain.secret_value import SecretValue


def _default(value: Any) -> Any:
    if isinstance(value, SecretValue):
        return "<redacted>"  # a secret reaches output only when a command reveals it on purpose
    return str(value)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=_default)


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0)) if chr(c) != "\t"}


def printable(value: Any) -> str:
    """Text as it may reach a terminal: control characters shown, not obeyed. A revocation
    reason or a provider's error text holding ESC sequences could otherwise rewrite the lines
    an auditor reads (or, with OSC 52, the clipboard)."""
    return str(value).translate(_CONTROL)


def console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False,
                   highlight=False)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]],
          empty: str = "(none)") -> None:
    if not rows:
        if title:
            click.echo(f"{title}: {empty}")
        else:
            click.echo(empty)
        return
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(title) if title else None, title_justify="left", show_lines=False,
              box=None, pad_edge=False)
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*(Text("" if v is None else printable(v)) for v in row))  # data, not markup
    console().print(t)


def fields(title: str | None, pairs: Sequence[tuple[str, Any]]) -> None:
    if title:
        click.echo(title)
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        shown = "" if value is None else (
            ", ".join(map(str, value)) if isinstance(value, list) else value)
        click.echo(f"  {key.ljust(width)}  {printable(shown)}")


def emit(data: Any, fmt: str, render_table) -> None:
    if fmt == "json":
        click.echo(to_json(data))
    else:
        render_table(data)


def days(n: int | None) -> str:
    if n is None:
        return ""
    if n < 0:
        return f"{-n}d ago"
    return "today" if n == 0 else f"in {n}d"


@contextmanager
def progress_bar(what: str) -> Iterator[Callable[..., None]]:
    """Progress on stderr for long runs, when a person is watching; silent under cron."""
    if not sys.stderr.isatty():
        yield lambda *args: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task(what, total=None)

        def advance(done: int, total: int, label: str = "") -> None:
            progress.update(task, completed=done, total=total,
                            description=f"{what} {label}".strip())

        yield advance
