"""`vault status`, `vault expiry` and `vault grant list` as tables: shared by their commands and
the light read path (vault/fastpath.py), so the two print the same bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vault.render.tables import table
from vault.render.text import days, say

if TYPE_CHECKING:
    from vault.listings import ExpiryReport, GrantListing, Status


def grant_status(g: GrantListing) -> str:
    """A grant's status for tables: an active grant whose refresh token was refused says so."""
    return g.status + (", refresh refused once" if g.refresh_refused else "")


def refusal_line(refused: dict | None) -> str | None:
    if not refused:
        return None
    return (f"once, at {refused['since'][:16]} UTC; a further refusal from "
            f"{refused['counts_from'][:16]} UTC on marks the grant for re-consent")


def status_table(d: Status) -> None:
    table("clients", ["NAME", "PROVIDER", "CLOUD", "TENANT", "SECRETS", "SECRET DUE", ""],
          [[c.name, c.provider, c.cloud, c.tenant, c.active_secrets,
            (c.next_due or "") + (" (assumed)" if c.next_due_assumed else ""),
            days(c.days_left)] for c in d.clients])
    say()
    table("grants", ["MAILBOX", "CLIENT", "PROTOCOLS", "STATUS", "ACCESS EXPIRES",
                     "LAST REFRESH", "IDLE", "TOKEN DUE", "LAST PROBE"],
          [[g.mailbox, g.client, g.protocols, grant_status(g),
            (g.access_expires or "")[:16], (g.last_refresh_at or "")[:16],
            "" if g.idle_days is None else f"{g.idle_days}d", g.refresh_token_due,
            " ".join(f"{p}:{o}" for p, o in g.probes.items())] for g in d.grants])
    for g in d.grants:
        if g.refresh_refused:
            say(f"refresh refused once: {g.mailbox} ({g.client}) "
                f"{refusal_line(g.refresh_refused)}")
    say()
    nxt = d.next_expiry
    counts = d.findings
    say("next expiry: " + (
        f"{nxt.due} ({days(nxt.days_left)}) {nxt.kind.replace('_', ' ')} of "
        f"{nxt.mailbox or nxt.client}" + (" (assumed)" if nxt.assumed else "")
        if nxt else "nothing dated"))
    say(f"findings: {counts['critical']} critical, {counts['warning']} warning, "
        f"{counts['info']} info (details: vault expiry)")


def expiry_table(d: ExpiryReport) -> None:
    table(f"expiry as of {d.as_of}", ["SEVERITY", "KIND", "CLIENT", "MAILBOX", "DUE", "",
                                      "SOURCE", "ADVICE"],
          [[f.severity + (" (expired)" if f.expired else ""), f.kind, f.client, f.mailbox,
            (f.due.isoformat() if f.due else "") + (" (assumed)" if f.assumed else ""),
            days(f.days_left), f.source, f.advice] for f in d.findings],
          empty="nothing expires soon")


def grant_list_table(data: list[GrantListing]) -> None:
    table(None, ["MAILBOX", "CLIENT", "PROTOCOLS", "STATUS", "GRANTED", "LAST REFRESH",
                 "ACCESS EXPIRES", "LAST ERROR"],
          [[g.mailbox, g.client, g.protocols, grant_status(g), (g.granted_at or "")[:10],
            (g.last_refresh_at or "")[:16], (g.access_expires or "")[:16], g.last_error]
           for g in data],
          empty="no grants yet: `vault grant import --client NAME --mailbox ADDR ...`")
