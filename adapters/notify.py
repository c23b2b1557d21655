"""Notifiers for alerts: a webhook (JSON POST, retried with back-off) and e-mail (SMTP with
XOAUTH2, through adapters/mail.py, using one of the vault's own grants)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from adapters.errors import AdapterError
from adapters.retry import Backoff, retry_after_seconds
from domain.errors import OperationFailed
from domain.secret_value import SecretValue

BACKOFF = Backoff(attempts=4, cap=30.0)  # waits 1, 2, 4 s


class NotifyFailed(OperationFailed, AdapterError):
    pass


def redact_url(url: str) -> str:
    """Webhook URLs carry secrets in their path or query: show only scheme and host."""
    parts = httpx.URL(url)
    return f"{parts.scheme}://{parts.host}/..."


def post_webhook(http: httpx.Client, url: SecretValue, payload: dict[str, Any],
                 sleep: Callable[[float], None] = time.sleep) -> int:
    """POST the payload as JSON; retry 429/5xx and network errors with back-off honouring
    Retry-After. Returns the number of attempts it took."""
    shown = redact_url(url.reveal())
    last = "no attempt"
    for attempt in range(1, BACKOFF.attempts + 1):
        retry_after = None
        try:
            response = http.post(url.reveal(), json=payload)
        except httpx.TransportError as e:
            last = type(e).__name__
        else:
            if response.status_code < 300:
                return attempt
            last = f"HTTP {response.status_code}"
            if response.status_code not in (408, 429) and response.status_code < 500:
                break  # the receiver refuses this request: retrying will not help
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        delay = BACKOFF.delay(attempt, retry_after)
        if delay is not None:
            sleep(delay)
    raise NotifyFailed(f"webhook {shown} failed: {last}")
