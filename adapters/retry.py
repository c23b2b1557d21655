"""How long to wait before trying a call to a server again: doubling back-off with a cap, or what
the server asked for in Retry-After. Arithmetic only: callers sleep, through a sleep they are
given (tests pass one that records)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    attempts: int  # tries in all, the first one included
    cap: float  # seconds; a Retry-After asking for more is cut to this too
    first: float = 1.0  # the wait after the first failure, doubled after each further one
    jitter: float = 0.0  # up to this many seconds added at random, so clients drift apart

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """The wait after try number `attempt` (from 1) failed; None when no try is left."""
        if attempt >= self.attempts:
            return None
        if retry_after is not None:
            return min(retry_after, self.cap)
        wait = self.first * 2 ** (attempt - 1)
        if self.jitter:
            wait += random.uniform(0, self.jitter)  # noqa: S311 - spreads clients, not a secret
        return min(wait, self.cap)


def retry_after_seconds(value: str | None,
                        now: Callable[[], float] = time.time) -> float | None:
    """A Retry-After header in seconds from now (it is a number of seconds or an HTTP date);
    None when it is absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime  # here: the read commands load no email

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - now())
        except (TypeError, ValueError):
            return None
