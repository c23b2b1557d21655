"""The formats programs read: JSON (escapes every control character itself) and CSV (cells
shown by `printable`, and never a formula)."""

from __future__ import annotations

from typing import Any

from vault.render.text import printable


def fields_of(value: Any) -> dict[str, Any]:
    """A use case's result (a NamedTuple or a dataclass) as the fields a program reads, in their
    order; a dataclass field whose metadata says `omit_if_none` is left out while it is None (it
    is only there for some results, as `verified` of a rotation checked at the provider)."""
    if isinstance(value, tuple):
        return value._asdict()
    import dataclasses

    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)
            if not (f.metadata.get("omit_if_none") and getattr(value, f.name) is None)}


def as_mapping(row: Any) -> dict[str, Any]:
    """A row of a report (a mapping, or a use case's result) by column name."""
    return row if isinstance(row, dict) else fields_of(row)


def _plain(value: Any) -> Any:
    """Results as JSON documents hold them: a NamedTuple or a dataclass as an object (json
    itself would write a NamedTuple as an array), a tuple as a list; the rest as it is."""
    if (isinstance(value, tuple) and hasattr(value, "_fields")) or \
            (hasattr(value, "__dataclass_fields__") and not isinstance(value, type)):
        return {k: _plain(v) for k, v in fields_of(value).items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _default(value: Any) -> Any:
    from domain.secret_value import SecretValue

    if isinstance(value, SecretValue):
        return "<redacted>"  # a secret reaches output only when a command reveals it on purpose
    return str(value)


def to_json(data: Any) -> str:
    """JSON escapes C0 and (ASCII only) everything past U+007E itself; DEL, which it passes as
    it is, is escaped here: the document holds no control character, and parses the same."""
    import json

    return json.dumps(_plain(data), indent=2, sort_keys=False, default=_default).replace(
        "\x7f", "\\u007f")


def _cell(value: Any) -> str:
    """A spreadsheet runs a cell starting with = + - @ (or a tab/CR) as a formula: free text
    such as a revocation reason or a provider's error must not become one; and control
    characters are shown, not sent (a CSV often goes to a terminal)."""
    text = "" if value is None else printable(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(rows: list[Any], columns: list[str]) -> str:
    """`rows` (mappings or dataclasses) as CSV with the given columns."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = as_mapping(row)
        writer.writerow({c: _cell(values.get(c)) for c in columns})
    return out.getvalue()
