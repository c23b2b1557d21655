"""What every tier shares: where the repository is, the one test clock and the one test sleep.

Time and waiting reach vault only by injection (`open_vault(clock=..., sleep=...)`, a
service's `clock`/`sleep`): a test hands it a `Clock` it moves by hand and a `Sleeps` that
records each wait and returns at once, never a patched module attribute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

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
