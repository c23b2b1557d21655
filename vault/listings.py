"""The listings vault shows from its read models: `client list`, `grant list`, `status` and
`expiry`. Pure functions from checked rows (vault/reads.py) and the shared thresholds to typed
results, used by the services and by the light read path (vault/fastpath.py), which must not
import eventsourcing or the aggregates: nothing here does."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from adapters.store.queries import GrantRow, SecretRow
from domain.expiry import (
    CRITICAL,
    INFO,
    WARNING,
    DueItem,
    ExpiryThresholds,
    Finding,
    GrantFacts,
    RenewalFacts,
    SecretFacts,
    due_items,
    evaluate,
)
from domain.vocabulary import ACTIVE, CLIENT_ACTIVE, REVOKED
from vault.errors import BadInput
from vault.reads import THRESHOLDS_KEY, ReadModels


class ClientListing(NamedTuple):
    """A client as `client list` shows it."""

    name: str
    provider: str
    cloud: str
    tenant: str | None
    client_id: str
    status: str
    active_secrets: int
    current_secret: str | None
    current_secret_expires: str | None


class GrantListing(NamedTuple):
    """A grant as `grant list` shows it: `refresh_refused` says since when and from when a further
    refusal counts; `probes` the last outcome per protocol."""

    mailbox: str
    client: str
    protocols: str
    status: str
    status_reason: str | None
    method: str
    granted_at: str
    refresh_token_issued_at: str | None
    last_refresh_at: str | None
    access_expires: str | None
    last_error: str | None
    refresh_refused: dict[str, str] | None
    probes: dict[str, str]


class Due(NamedTuple):
    """Something dated that stops working: what (`kind`), whose, when, and whether the date is
    assumed (a secret's 730-day limit) rather than recorded."""

    kind: str
    client: str
    mailbox: str | None
    due: str
    days_left: int
    assumed: bool


def extended(base: type, name: str, doc: str, **more: str) -> Any:
    """A NamedTuple with `base`'s fields and then `more` (name: annotation), as a dataclass
    subclass would have them."""
    cls = NamedTuple(name, [*base.__annotations__.items(), *more.items()])  # type: ignore[misc]
    cls.__doc__, cls.__module__ = doc, __name__
    return cls


ClientStatus = extended(
    ClientListing, "ClientStatus", "A client in `status`: its listing and its next dated expiry.",
    next_due="str | None", next_due_assumed="bool", days_left="int | None")
GrantStatus = extended(
    GrantListing, "GrantStatus", "A grant in `status`: its listing, how long its refresh token "
    "has been idle, and when that runs out.", idle_days="int | None",
    refresh_token_due="str | None")


class Status(NamedTuple):
    """`vault status`: clients, grants, what expires next, and the findings by severity."""

    as_of: str
    clients: list[ClientStatus]
    grants: list[GrantStatus]
    next_expiry: Due | None
    findings: dict[str, int]


class ExpiryReport(NamedTuple):
    """What will stop working, evaluated as of a date."""

    as_of: str
    findings: list[Finding]


def _date(value: str | None) -> date | None:
    if not value:
        return None
    return (datetime.fromisoformat(value).astimezone(UTC).date() if "T" in value
            else date.fromisoformat(value))


def refusal_state(refused_since: datetime | str | None, status: str,
                  interval: timedelta) -> dict[str, str] | None:
    """"Refresh refused once": since when, and from when a further refusal marks the grant
    for re-consent. None unless an active grant's refresh token was refused and not since
    accepted."""
    if not refused_since or status != ACTIVE:
        return None
    since = (datetime.fromisoformat(refused_since) if isinstance(refused_since, str)
             else refused_since)
    return {"since": since.isoformat(), "counts_from": (since + interval).isoformat()}


def grant_listing(r: GrantRow, refusal_interval: timedelta) -> GrantListing:
    access = json.loads(r.access_expires or "{}")
    return GrantListing(
        mailbox=r.mailbox, client=r.client_name, protocols=r.protocols, status=r.status,
        status_reason=r.status_reason, method=r.method, granted_at=r.granted_at,
        refresh_token_issued_at=r.rt_issued_at, last_refresh_at=r.last_refresh_at,
        access_expires=min(access.values()) if access else None, last_error=r.last_error,
        refresh_refused=refusal_state(r.refused_since, r.status, refusal_interval),
        probes={p: v["outcome"] for p, v in json.loads(r.probes or "{}").items()})


def thresholds_of(settings: dict[str, str]) -> ExpiryThresholds:
    """The thresholds every host shares (`vault config`), from the checked settings: expiry
    rules, and how far apart two refusals of a refresh token must be to mark its grant for
    re-consent."""
    stored = settings.get(THRESHOLDS_KEY)
    if not stored:
        return ExpiryThresholds()
    try:
        return ExpiryThresholds().with_changes(**json.loads(stored))
    except (ValueError, TypeError) as e:
        raise BadInput(f"stored expiry thresholds are invalid: {e}") from None


def refusal_interval(thresholds: ExpiryThresholds) -> timedelta:
    return timedelta(minutes=thresholds.invalid_grant_interval_minutes)


def client_listing(models: ReadModels) -> list[ClientListing]:
    by_client: dict[str, list[SecretRow]] = {}
    for s in models.secrets:
        if s.retired_at is None:
            by_client.setdefault(s.client_uuid, []).append(s)
    result = []
    for c in models.clients:
        current = next((s for s in by_client.get(c.client_uuid, []) if s.is_current), None)
        result.append(ClientListing(
            name=c.name, provider=c.provider, cloud=c.cloud, tenant=c.tenant,
            client_id=c.client_id, status=c.status, active_secrets=c.active_secrets,
            current_secret=current.ref if current else None,
            current_secret_expires=current.expires_on if current else None))
    return result


def expiry_facts(models: ReadModels) -> tuple[list[SecretFacts], list[GrantFacts]]:
    clients = {c.client_uuid: c for c in models.clients}
    secrets = [
        SecretFacts(client=c.name, provider=c.provider, ref=r.ref,
                    secret_id=r.secret_id, created_on=_date(r.created_on),
                    expires_on=_date(r.expires_on), kind=r.kind,
                    entra_expires_on=_date(r.entra_expires_on),
                    at_entra=None if r.at_entra is None else bool(r.at_entra))
        for r in models.secrets
        if r.retired_at is None and (c := clients[r.client_uuid]).status == CLIENT_ACTIVE
    ]
    for c in models.clients:  # what Entra lists that vault does not hold
        if c.status != CLIENT_ACTIVE or not c.entra_foreign:
            continue
        for f in json.loads(c.entra_foreign):
            secrets.append(SecretFacts(
                client=c.name, provider=c.provider, ref=f"entra:{f['key_id'][:8]}",
                secret_id=f["key_id"], created_on=None, expires_on=_date(f["end"]),
                kind=f["kind"], held=False, name=f["display_name"]))
    grants = []
    for r in models.grants:
        if r.status == REVOKED:
            continue
        activity = [d for d in (_date(r.rt_issued_at), _date(r.rt_last_used_at)) if d]
        grants.append(GrantFacts(
            client=r.client_name, mailbox=r.mailbox, provider=r.provider,
            status=r.status, status_reason=r.status_reason,
            status_changed_on=_date(r.status_changed_at),
            granted_on=_date(r.granted_at) or date.min,
            last_activity_on=max(activity) if activity else None,
            google_testing=bool(r.google_testing), app_only=r.method == "app-only",
            protocols=r.protocols,
        ))
    return secrets, grants


def renewal_facts(models: ReadModels) -> list[RenewalFacts]:
    """Renewals through Graph under way, from the clients' read-model rows."""
    facts = []
    for c in models.clients:
        if c.status != CLIENT_ACTIVE or not c.renewal:
            continue
        r = json.loads(c.renewal)
        facts.append(RenewalFacts(
            client=c.name, kind=r["kind"], stage=r["stage"],
            started_on=datetime.fromisoformat(r["started_at"]).date(),
            remove_at=datetime.fromisoformat(r["remove_at"]) if r["remove_at"] else None,
            display_name=r["display_name"], new_ref=r["new_ref"]))
    return facts


def expiry_of(models: ReadModels, thresholds: ExpiryThresholds, as_of: date,
              within: int | None = None) -> ExpiryReport:
    if within is not None and within < 0:
        raise BadInput("--within takes a number of days >= 0")
    secrets, grants = expiry_facts(models)
    return ExpiryReport(as_of=as_of.isoformat(),
                        findings=evaluate(secrets, grants, as_of, thresholds, within,
                                          renewal_facts(models)))


def status_of(models: ReadModels, thresholds: ExpiryThresholds, today: date) -> Status:
    secrets, grants = expiry_facts(models)
    findings = evaluate(secrets, grants, today, thresholds, renewals=renewal_facts(models))
    items = due_items(secrets, grants, thresholds)
    due_by_client: dict[str, DueItem] = {}
    for item in items:
        if item.mailbox is None:
            due_by_client.setdefault(item.client, item)
    clients = []
    for c in client_listing(models):
        item = due_by_client.get(c.name)
        clients.append(ClientStatus(
            **c._asdict(), next_due=item.due.isoformat() if item else None,
            next_due_assumed=bool(item and item.assumed),
            days_left=(item.due - today).days if item else None))
    interval = refusal_interval(thresholds)
    idle_due = {(i.client, i.mailbox): i for i in items if i.kind == "refresh_token_idle"}
    facts_of = {(f.client, f.mailbox): f for f in grants}
    grant_rows = []
    for r in models.grants:
        g = grant_listing(r, interval)
        facts = facts_of.get((g.client, g.mailbox))
        last = facts.last_activity_on if facts else None
        item = idle_due.get((g.client, g.mailbox))
        grant_rows.append(GrantStatus(
            **g._asdict(), idle_days=(today - last).days if last else None,
            refresh_token_due=item.due.isoformat() if item else None))
    upcoming = [i for i in items if i.due >= today]
    nxt = upcoming[0] if upcoming else None
    counts = {s: sum(1 for f in findings if f.severity == s) for s in (CRITICAL, WARNING, INFO)}
    return Status(
        as_of=today.isoformat(), clients=clients, grants=grant_rows,
        next_expiry=Due(kind=nxt.kind, client=nxt.client, mailbox=nxt.mailbox,
                        due=nxt.due.isoformat(), days_left=(nxt.due - today).days,
                        assumed=nxt.assumed) if nxt else None,
        findings=counts)
