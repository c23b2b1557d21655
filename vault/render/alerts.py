"""Alert messages: the webhook's JSON payload, the e-mail's subject and body, and the lines that
say what an alert run sent and what is pending. E-mail is often read in a terminal (mutt), so
its values are shown by `printable`; JSON escapes control characters itself."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from domain.expiry import SEVERITY_RANK
from vault.render.text import printable

if TYPE_CHECKING:
    from vault.services.alerts import AlertRun


def _worst(alerts: list[dict[str, Any]]) -> str:
    return max((a["severity"] for a in alerts), key=SEVERITY_RANK.__getitem__)


def webhook_payload(alerts: list[dict[str, Any]], vault_id: str, now: datetime) -> dict[str, Any]:
    return {"source": "vault", "vault_id": vault_id, "at": now.isoformat(),
            "severity": _worst(alerts), "alerts": alerts}


def email_subject(alerts: list[dict[str, Any]]) -> str:
    return f"[vault {_worst(alerts)}] {len(alerts)} credential alert(s)"


def email_body(alerts: list[dict[str, Any]], vault_id: str, now: datetime) -> str:
    return "\n\n".join(
        f"{a['severity'].upper()} {a['kind'].replace('_', ' ')}: "
        f"{printable(a['mailbox'] or a['client'])}\n  due {a['due'] or '-'}\n"
        f"  {printable(a['advice'])}"
        for a in alerts) + f"\n\n(vault {vault_id}, {now:%Y-%m-%d %H:%M} UTC)\n"


def delivery_summary(result: AlertRun) -> str:
    """One line on what an alert run sent, and on which channels something is pending."""
    sent = (f"{result.sent} alert(s) sent by {', '.join(result.delivered)}"
            if result.sent else "nothing sent" if result.pending else "nothing new to send")
    channels = list(dict.fromkeys(p.channel for p in result.pending))
    return sent + (f"; pending on {', '.join(channels)}" if channels else "")


def pending_lines(result: AlertRun) -> list[str]:
    """Per channel, what did not go out on it, why, and when it is tried next. The why can be a
    receiver's or a mail server's words: shown on its one line."""
    lines = []
    for channel in dict.fromkeys(p.channel for p in result.pending):
        items = [p for p in result.pending if p.channel == channel]
        named = ", ".join(f"{p.mailbox or p.client} {p.kind.replace('_', ' ')} "
                          f"({p.severity})" for p in items[:3])
        more = f" and {len(items) - 3} more" if len(items) > 3 else ""
        failures = max(p.failures for p in items)
        error = next((p.error for p in items if p.error), None)
        tries = [datetime.fromisoformat(p.next_try) for p in items if p.next_try]
        lines.append(
            f"{len(items)} finding(s) pending on {channel} ({named}{more}): "
            f"{failures} delivery attempt(s) failed in a row"
            + (f", the last: {printable(error)}" if error else "")
            + (f"; next try at {max(tries):%Y-%m-%d %H:%M} UTC" if tries else ""))
    return lines
