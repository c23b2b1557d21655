"""A secret held in memory: it never shows itself in repr(), str(), logs or tracebacks.

Only `reveal()` gives the value, so every place that needs the plaintext is easy to find.
"""

from __future__ import annotations

import hmac


class SecretValue:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("SecretValue holds text")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretValue(<redacted>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretValue):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((SecretValue, len(self._value)))

    def __len__(self) -> int:
        return len(self._value)

    def __reduce__(self):  # pragma: no cover - pickling a secret is a bug
        raise TypeError("SecretValue cannot be pickled")

    def __deepcopy__(self, memo: dict) -> SecretValue:
        return self
