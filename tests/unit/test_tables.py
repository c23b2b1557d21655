"""Tables drawn without rich are drawn as rich draws them: any ASCII table that fits, byte for
byte; anything else (wide characters, a table or title that rich would wrap) is left to rich."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vault.render.tables import PLAIN_WIDTH, plain_layout

CELL = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, include_characters="\t"),
               max_size=24)


def drawn_by_rich(title: str | None, columns: list[str], rows: list[list[str]]) -> str:
    """What vault/render/tables.py asks rich for, on output that is not a terminal."""
    out = io.StringIO()
    console = Console(file=out, width=PLAIN_WIDTH, soft_wrap=False, highlight=False)
    t = Table(title=Text(title) if title else None, title_justify="left", show_lines=False,
              box=None, pad_edge=False)
    for column in columns:
        t.add_column(Text(column), overflow="fold")  # a header is text too, never markup
    for row in rows:
        t.add_row(*(Text(v) for v in row))
    console.print(t)
    return out.getvalue()


@st.composite
def tables(draw, cell=CELL):
    columns = draw(st.lists(cell, min_size=1, max_size=9))
    rows = draw(st.lists(st.lists(cell, min_size=len(columns), max_size=len(columns)),
                         min_size=1, max_size=6))
    return draw(st.none() | cell), columns, rows


@settings(max_examples=400, deadline=None)
@given(tables())
def test_an_ascii_table_is_laid_out_as_rich_lays_it_out(table) -> None:
    title, columns, rows = table
    laid_out = plain_layout(title or None, columns, rows)
    if laid_out is None:  # only where rich expands a TAB, wraps the title or widens nothing
        natural = sum(max(map(len, col)) for col in zip(columns, *rows, strict=True))
        tabs = any("\t" in text for text in (title or "", *columns, *(v for r in rows for v in r)))
        assert tabs or len(title or "") > natural + 2 * (len(columns) - 1) or natural == 0
        return
    assert laid_out + "\n" == drawn_by_rich(title, columns, rows)


def test_what_only_rich_can_lay_out_is_left_to_it() -> None:
    assert plain_layout(None, ["MAILBOX"], [["\u6771\u4eac@example.jp"]]) is None  # wide
    assert plain_layout(None, ["A"], [["Gr\u00fc\u00dfe"]]) is None  # not ASCII: rich measures
    assert plain_layout(None, ["A", "B"], [["x" * 100, "y" * 100]]) is None  # wider than 200
    assert plain_layout("a title wider than its table", ["A"], [["x"]]) is None  # wrapped
    assert plain_layout("t", ["A", "B"], [["x" * 99, "y" * 99]]) is not None  # 200 fits


def test_a_tab_is_left_to_rich() -> None:
    """`printable` lets a TAB through; rich expands it, so only rich lays that table out."""
    assert plain_layout(None, ["REASON"], [["left\tcompany"]]) is None
