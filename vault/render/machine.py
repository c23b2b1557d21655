"""The formats programs read: JSON (escapes every control character itself) and CSV (cells
shown by `printable`, and never a formula)."""

from __future__ import annotations

from typing import Any

from vault.render.text import printable


def _default(value: Any) -> Any:
    from domain.secret_value import SecretValue

    if isinstance(value, SecretValue):
        return "<redacted>"  # a secret reaches output only when a command reveals it on purpose
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


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    return out.getvalue()
