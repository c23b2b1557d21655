"""What every tier shares: where the repository is, the one test clock and the one test sleep.

Time and waiting reach vault only by injection (`open_vault(clock=..., sleep=...)`, a
service's `clock`/`sleep`): a test hands it a `Clock` it moves by hand and a `Sleeps` that
records each wait and returns at once, never a patched module attribute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    """The time it says until a test moves it (`at`, `advance`); with a `tick`, each reading
    moves it on by that much first, so that what one command records keeps its order."""

    def __init__(self, at: datetime | None = None, tick: timedelta = timedelta(0)) -> None:
        self.at = at if at is not None else datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
        self.tick = tick

    def __call__(self) -> datetime:
        self.at += self.tick
        return self.at

    def advance(self, **delta: float) -> datetime:
        self.at += timedelta(**delta)
        return self.at


class Sleeps(list[float]):
    """A sleep that waits for nothing: each call records how long vault asked to wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def microsoft_error(code: int, error: str, text: str, status: int = 400) -> httpx.Response:
    """An error body as Microsoft's token endpoint sends it (shape from its error reference)."""
    trace, correlation = "0b9e3c56-7c1e-4f36-9d8a-1a2b3c4d5e6f", "5d1f2a3b-4c5d-6e7f-8a9b-0c1d2e3f4a5b"
    return httpx.Response(status, json={
        "error": error,
        "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: "
                             f"{correlation}\r\nTimestamp: 2026-11-01 09:14:03Z",
        "error_codes": [code], "timestamp": "2026-11-01 09:14:03Z", "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}"})
