"""The formats programs read: JSON (escapes every control character itself) and CSV (cells
shown by `printable`, and never a formula)."""

from __future__ import annotations

from typing import Any

from vault.render.text import printable


def fields_of(value: Any) -> dict[str, Any]:
    """A use case's result (a dataclass) as the fields a program reads, in their order; a field
    whose metadata says `omit_if_none` is left out while it is None (it is only there for some
    results, as `verified` of a rotation checked at the provider)."""
    import dataclasses

    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)
            if not (f.metadata.get("omit_if_none") and getattr(value, f.name) is None)}


def as_mapping(row: Any) -> dict[str, Any]:
    """A row of a report (a mapping, or a use case's dataclass) by column name."""
    return row if isinstance(row, dict) else fields_of(row)


def _default(value: Any) -> Any:
    import dataclasses

    from domain.secret_value import SecretValue

    if isinstance(value, SecretValue):
        return "<redacted>"  # a secret reaches output only when a command reveals it on purpose
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return fields_of(value)
    return str(value)


def to_json(data: Any) -> str:
    """JSON escapes C0 and (ASCII only) everything past U+007E itself; DEL, which it passes as
    it is, is escaped here: the document holds no control character, and parses the same."""
    import json

    return json.dumps(data, indent=2, sort_keys=False, default=_default).replace(
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
