"""Expiry policy: pure functions of recorded facts and a date. What will stop working, and when.

Days are UTC calendar days and thresholds are inclusive. The due date is always the last day
something still works: the due day itself is critical, and a finding is `expired` once past it.
- an end date (a client secret or certificate) is valid through that day;
- an idle or lifetime window (refresh tokens) of N days, counted from its start, ends on day N-1:
  a Microsoft refresh token idle 89 days still works, idle 90 days it is dead.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple

from domain.vocabulary import ACTIVE, CRITICAL, INFO, REVOKED, WARNING

MAX_THRESHOLD_DAYS = 3650
MAX_INTERVAL_MINUTES = 10080  # a week
SEVERITY_RANK = {INFO: 0, WARNING: 1, CRITICAL: 2}


class _Thresholds(NamedTuple):
    secret_warning_days: int = 30
    secret_critical_days: int = 7
    microsoft_secret_max_days: int = 730
    microsoft_idle_warning_days: int = 75
    microsoft_idle_critical_days: int = 85
    microsoft_idle_limit_days: int = 90
    google_testing_warning_days: int = 5
    google_testing_critical_days: int = 6
    google_testing_limit_days: int = 7
    google_idle_warning_days: int = 150
    google_idle_critical_days: int = 170
    google_idle_limit_days: int = 180
    # Not an expiry: how far apart two invalid_grant answers must be, in separate attempts, to
    # mark a grant for re-consent (domain/rotation.py). Kept here so every host shares it.
    invalid_grant_interval_minutes: int = 10


class ExpiryThresholds(_Thresholds):
    """The thresholds, each checked when they are made (never made unchecked: no `_replace`)."""

    __slots__ = ()

    def __new__(cls, *args: int, **kwargs: int) -> ExpiryThresholds:
        self = super().__new__(cls, *args, **kwargs)
        self.check()
        return self

    def check(self) -> None:
        for name, value in self._asdict().items():
            unit, top = (("minutes", MAX_INTERVAL_MINUTES) if name.endswith("_minutes")
                         else ("days", MAX_THRESHOLD_DAYS))
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                raise ValueError(f"{name} must be a whole number of {unit} from 0 to {top}")
        windows = [
            ("secret", self.secret_critical_days, self.secret_warning_days, None),
            ("microsoft_idle", self.microsoft_idle_warning_days,
             self.microsoft_idle_critical_days, self.microsoft_idle_limit_days),
            ("google_testing", self.google_testing_warning_days,
             self.google_testing_critical_days, self.google_testing_limit_days),
            ("google_idle", self.google_idle_warning_days, self.google_idle_critical_days,
             self.google_idle_limit_days),
        ]
        for name, low, high, limit in windows:
            if low > high or (limit is not None and high > limit):
                raise ValueError(f"{name} thresholds must increase towards the limit")

    def with_changes(self, **changes: int) -> ExpiryThresholds:
        unknown = set(changes) - set(self._fields)
        if unknown:
            raise ValueError(f"unknown threshold {', '.join(sorted(unknown))}")
        return ExpiryThresholds(**{**self._asdict(), **changes})

    def as_dict(self) -> dict[str, int]:
        return self._asdict()


class SecretFacts(NamedTuple):
    client: str
    provider: str
    ref: str
    secret_id: str | None
    created_on: date | None
    expires_on: date | None
    kind: str = "client_secret"  # or "certificate"
    # what the last `client sync` saw at Entra: the end date Entra gives it, and whether Entra
    # still lists it (None: never synced)
    entra_expires_on: date | None = None
    at_entra: bool | None = None
    held: bool = True  # False: a credential Entra lists that vault does not hold
    name: str | None = None  # its display name at Entra


class GrantFacts(NamedTuple):
    client: str
    mailbox: str
    provider: str
    status: str  # active | needs-reconsent | revoked
    status_reason: str | None
    status_changed_on: date | None
    granted_on: date
    last_activity_on: date | None  # refresh token issued or last redeemed
    google_testing: bool = False
    app_only: bool = False
    protocols: str = "imap"

    @property
    def reconsent(self) -> str:
        return (f"`vault consent {self.client} --mailbox {self.mailbox} --protocols "
                f"{self.protocols} --replace`")


class Finding(NamedTuple):
    severity: str
    kind: str
    client: str
    mailbox: str | None
    due: date | None
    days_left: int | None
    expired: bool
    advice: str
    assumed: bool = False
    ref: str | None = None
    # where a credential's date comes from: "entra" (what `client sync` read), "entered"
    # (recorded in vault), "assumed" (Microsoft's 730-day maximum from the creation date); None
    # for findings without one
    source: str | None = None

    def as_dict(self) -> dict[str, object]:
        data = self._asdict()
        data["due"] = self.due.isoformat() if self.due else None
        return data


def _end_date_severity(days_left: int, t: ExpiryThresholds) -> str | None:
    if days_left <= t.secret_critical_days:
        return CRITICAL
    if days_left <= t.secret_warning_days:
        return WARNING
    return None


def _window_severity(elapsed: int, warning: int, critical: int) -> str | None:
    if elapsed >= critical:
        return CRITICAL
    if elapsed >= warning:
        return WARNING
    return None


ENTERED, ASSUMED, ENTRA = "entered", "assumed", "entra"


def date_source(assumed: bool) -> str:
    return ASSUMED if assumed else ENTERED


def secret_source(s: SecretFacts, assumed: bool) -> str:
    return ENTRA if s.entra_expires_on else date_source(assumed)


def secret_due(s: SecretFacts, t: ExpiryThresholds) -> tuple[date | None, bool]:
    """The secret's end date — Entra's where a sync read it, else the one entered — and
    whether it is assumed (Microsoft's 730-day maximum from the creation date)."""
    if s.entra_expires_on:
        return s.entra_expires_on, False
    if s.expires_on:
        return s.expires_on, False
    if s.created_on and s.provider == "microsoft":
        return s.created_on + timedelta(days=t.microsoft_secret_max_days), True
    return None, False


def credential_findings(
    secrets: list[SecretFacts], as_of: date, t: ExpiryThresholds
) -> list[Finding]:
    """Findings for one client's active secrets.

    What matters is whether the client keeps working: the secret that lasts longest decides the
    client's severity. Older secrets still active during an overlap get an info finding to retire.
    """
    if not secrets:
        return []
    findings: list[Finding] = []
    for s in secrets:
        if not s.held:
            what = "certificate" if s.kind == "certificate" else "secret"
            findings.append(Finding(
                severity=INFO, kind="entra_credential_not_held", client=s.client, mailbox=None,
                due=s.expires_on, days_left=(s.expires_on - as_of).days if s.expires_on else None,
                expired=bool(s.expires_on and s.expires_on < as_of), ref=s.ref, source=ENTRA,
                advice=(f"Entra lists a {what} of this app that vault does not hold "
                        f"({s.name or 'no name'}, keyId {s.secret_id}): someone else uses it, "
                        "or it is left over; delete it in the app registration if nobody does")))
        elif s.at_entra is False:
            what = "certificate" if s.kind == "certificate" else "client secret"
            findings.append(Finding(
                severity=CRITICAL, kind=f"{s.kind}_gone_at_entra", client=s.client, mailbox=None,
                due=None, days_left=None, expired=True, ref=s.ref, source=ENTRA,
                advice=(f"{what} {s.ref} is no longer at Entra (deleted in the app "
                        "registration?): token requests with it fail; make one Entra has "
                        f"current (`vault client rotate-secret {s.client}`) and retire it")))
    secrets = [s for s in secrets if s.held and s.at_entra is not False]
    dated = [(secret_due(s, t), s) for s in secrets]
    known = [(due, assumed, s) for (due, assumed), s in dated if due is not None]
    unknown = [s for (due, _), s in dated if due is None]
    for s in unknown:
        what = "certificate" if s.kind == "certificate" else "secret"
        missing = "expiry date" if s.created_on else "creation or expiry date"
        findings.append(Finding(
            severity=INFO, kind=f"{s.kind}_expiry_unknown", client=s.client, mailbox=None,
            due=None, days_left=None, expired=False, ref=s.ref,
            advice=(f"no {missing} recorded for {what} {s.ref}: record it with "
                    f"`vault client set-secret-dates {s.client} {s.ref} --expires DATE`"),
        ))
    if not known:
        return findings
    known.sort(key=lambda item: item[0])
    due, assumed, last = known[-1]
    days_left = (due - as_of).days
    severity = _end_date_severity(days_left, t)
    if severity is not None:
        expired = days_left < 0
        what = "certificate" if last.kind == "certificate" else "client secret"
        when = (f"expired {-days_left} day(s) ago" if expired
                else "expires today" if days_left == 0 else f"expires in {days_left} day(s)")
        basis = (f" (assumed: created {last.created_on}, Microsoft's {t.microsoft_secret_max_days}"
                 "-day maximum)" if assumed else "")
        synced = last.entra_expires_on is not None  # Graph can renew it (issue 14)
        renew = (f"create a new certificate and run `vault client rotate-certificate "
                 f"{last.client} --via-graph --certificate-file PEM`" if last.kind ==
                 "certificate" and synced else
                 f"create a new certificate, upload its public part to the app registration "
                 f"and run `vault client add-certificate {last.client} --certificate-file PEM`"
                 if last.kind == "certificate" else
                 f"renew it through Graph: `vault client rotate-secret {last.client} "
                 "--via-graph`" if synced else
                 f"create a new one in the app registration and run `vault client rotate-secret "
                 f"{last.client}`")
        findings.append(Finding(
            severity=severity, kind=f"{last.kind}_expiry", client=last.client, mailbox=None,
            due=due, days_left=days_left, expired=expired, assumed=assumed, ref=last.ref,
            source=secret_source(last, assumed),
            advice=f"{what} {last.ref} {when}{basis}: {renew}",
        ))
    for older_due, older_assumed, s in known[:-1]:
        what = "certificate" if s.kind == "certificate" else "secret"
        findings.append(Finding(
            severity=INFO, kind="secret_superseded", client=s.client, mailbox=None,
            due=older_due, days_left=(older_due - as_of).days,
            expired=(older_due - as_of).days < 0, assumed=older_assumed, ref=s.ref,
            source=secret_source(s, older_assumed),
            advice=(f"{what} {s.ref} is still active beside a newer one: once every host uses "
                    f"the new {what}, run `vault client retire-secret {s.client} {s.ref}` and "
                    "delete it in the app registration"),
        ))
    return findings


def _window_finding(
    g: GrantFacts, start: date, as_of: date, warning: int, critical: int, limit: int,
    kind: str, advice: str,
) -> Finding | None:
    elapsed = (as_of - start).days
    severity = _window_severity(elapsed, warning, critical)
    if severity is None:
        return None
    due = window_end(start, limit)
    return Finding(
        severity=severity, kind=kind, client=g.client, mailbox=g.mailbox, due=due,
        days_left=(due - as_of).days, expired=as_of > due, advice=advice,
    )


def window_end(start: date, limit_days: int) -> date:
    """The last day a token with an N-day window still works."""
    return start + timedelta(days=limit_days - 1)


def grant_findings(g: GrantFacts, as_of: date, t: ExpiryThresholds) -> list[Finding]:
    if g.status == REVOKED:
        return []
    if g.status != ACTIVE:
        since = g.status_changed_on or as_of
        return [Finding(
            severity=CRITICAL, kind="grant_broken", client=g.client, mailbox=g.mailbox,
            due=since, days_left=(since - as_of).days, expired=True,
            advice=(f"the grant of {g.mailbox} stopped working"
                    f"{': ' + g.status_reason if g.status_reason else ''}; run a new consent "
                    f"({g.reconsent})"),
        )]
    if g.app_only:
        return []
    findings: list[Finding] = []
    last = g.last_activity_on or g.granted_on
    idle = (as_of - last).days
    if g.provider == "microsoft":
        f = _window_finding(
            g, last, as_of, t.microsoft_idle_warning_days, t.microsoft_idle_critical_days,
            t.microsoft_idle_limit_days, "refresh_token_idle",
            (f"the refresh token of {g.mailbox} has been idle {idle} day(s); Microsoft drops it "
             f"after {t.microsoft_idle_limit_days} (AADSTS700082): run `vault refresh {g.mailbox}`"
             " or schedule `vault refresh --due`"),
        )
        if f and f.expired:
            f = f._replace(advice=(f"the refresh token of {g.mailbox} was idle {idle} day(s) and "
                                   "Microsoft no longer accepts it (AADSTS700082): run a new "
                                   f"consent ({g.reconsent})"))
        findings += [f] if f else []
    elif g.provider == "google":
        if g.google_testing:
            f = _window_finding(
                g, g.granted_on, as_of, t.google_testing_warning_days,
                t.google_testing_critical_days, t.google_testing_limit_days,
                "google_testing_expiry",
                (f"the OAuth app of {g.client} is in Testing status: Google kills its refresh "
                 f"tokens {t.google_testing_limit_days} days after consent. Publish the app "
                 "(In production) or re-consent every week"),
            )
            findings += [f] if f else []
        f = _window_finding(
            g, last, as_of, t.google_idle_warning_days, t.google_idle_critical_days,
            t.google_idle_limit_days, "refresh_token_idle",
            (f"the refresh token of {g.mailbox} has been idle {idle} day(s); Google drops unused "
             f"tokens after about six months: run `vault refresh {g.mailbox}`"),
        )
        findings += [f] if f else []
    return findings


def upcoming(finding_due: date | None, as_of: date, within: int | None) -> bool:
    """Whether a dated finding falls inside a `--within DAYS` horizon (undated ones always do)."""
    if within is None or finding_due is None:
        return True
    return (finding_due - as_of).days <= within


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(
        findings,
        key=lambda f: (-SEVERITY_RANK[f.severity], f.due or date.max, f.client, f.mailbox or ""),
    )


class DueItem(NamedTuple):
    """Something with a date on which it stops working, whatever the thresholds say."""

    kind: str
    client: str
    mailbox: str | None
    due: date
    assumed: bool = False
    ref: str | None = None
    source: str | None = None  # a credential's: Finding.source


def due_items(
    secrets: list[SecretFacts], grants: list[GrantFacts], t: ExpiryThresholds
) -> list[DueItem]:
    items: list[DueItem] = []
    for s in secrets:
        due, assumed = secret_due(s, t)
        if due is not None and s.held and s.at_entra is not False:
            items.append(DueItem(f"{s.kind}_expiry", s.client, None, due, assumed, s.ref,
                                 secret_source(s, assumed)))
    for g in grants:
        if g.status != ACTIVE or g.app_only:
            continue
        last = g.last_activity_on or g.granted_on
        if g.provider == "microsoft":
            items.append(DueItem("refresh_token_idle", g.client, g.mailbox,
                                 window_end(last, t.microsoft_idle_limit_days)))
        elif g.provider == "google":
            items.append(DueItem("refresh_token_idle", g.client, g.mailbox,
                                 window_end(last, t.google_idle_limit_days)))
            if g.google_testing:
                items.append(DueItem("google_testing_expiry", g.client, g.mailbox,
                                     window_end(g.granted_on, t.google_testing_limit_days)))
    return sorted(items, key=lambda i: i.due)


class RenewalFacts(NamedTuple):
    """A renewal through Microsoft Graph under way (issue 14): where it stopped."""

    client: str
    kind: str  # client_secret | certificate
    stage: str  # started | received | verified
    started_on: date
    remove_at: datetime | None  # verified: when the old credentials go at Entra
    display_name: str  # the new credential's name at Entra (it carries the nonce)
    new_ref: str | None


def renewal_findings(renewals: list[RenewalFacts], now: datetime) -> list[Finding]:
    """A renewal that stopped halfway is a warning until a run finishes it: before vault held
    the new secret, Entra may hold one vault has no copy of; after, the new credential waits
    unused. Old credentials kept at Entra past their time are a warning too."""
    findings = []
    for r in renewals:
        command = (f"`vault client rotate-{'secret' if r.kind == 'client_secret' else 'certificate'}"
                   f" {r.client} --via-graph` or `vault maintain`")
        if r.stage == "started":
            advice = (f"a renewal through Graph started {r.started_on} stopped before vault held "
                      f"the new secret: Entra may list one named {r.display_name!r} that vault "
                      f"has no copy of; {command} removes it and starts again")
        elif r.stage == "received":
            advice = (f"a renewal through Graph started {r.started_on} holds {r.new_ref}, not "
                      f"yet seen working at the token endpoint (so not used): {command} goes on")
        elif r.remove_at is not None and r.remove_at <= now:
            advice = (f"the credentials {r.new_ref} replaced stay at Entra past "
                      f"{r.remove_at:%Y-%m-%d %H:%M} UTC: {command} removes them")
        else:
            continue  # waiting, as asked (--retire-after)
        findings.append(Finding(
            severity=WARNING, kind="renewal_unfinished", client=r.client, mailbox=None,
            due=None, days_left=None, expired=False, ref=r.new_ref, advice=advice))
    return findings


def evaluate(
    secrets: list[SecretFacts], grants: list[GrantFacts], as_of: date, t: ExpiryThresholds,
    within: int | None = None, renewals: list[RenewalFacts] = (),
    now: datetime | None = None,
) -> list[Finding]:
    """All findings as of a date; `within` adds info findings for anything due inside the horizon
    and leaves out dated findings beyond it. `now` (default: the end of `as_of`) decides whether
    a renewal's old credentials are overdue at Entra."""
    by_client: dict[str, list[SecretFacts]] = {}
    for s in secrets:
        by_client.setdefault(s.client, []).append(s)
    findings: list[Finding] = renewal_findings(
        list(renewals), now or datetime.combine(as_of, time.max, tzinfo=UTC))
    for client_secrets in by_client.values():
        findings += credential_findings(client_secrets, as_of, t)
    for g in grants:
        findings += grant_findings(g, as_of, t)
    if within is not None:
        seen = {(f.kind, f.client, f.mailbox, f.ref) for f in findings}
        for item in due_items(secrets, grants, t):
            days_left = (item.due - as_of).days
            if (item.kind, item.client, item.mailbox, item.ref) in seen or days_left > within:
                continue
            subject = item.mailbox or f"{item.client} {item.ref or ''}".strip()
            findings.append(Finding(
                severity=INFO, kind=item.kind, client=item.client, mailbox=item.mailbox,
                due=item.due, days_left=days_left, expired=False, assumed=item.assumed,
                ref=item.ref, source=item.source,
                advice=f"{subject}: due {item.due} ({days_left} days)",
            ))
        findings = [f for f in findings if upcoming(f.due, as_of, within) or f.expired]
    return sort_findings(findings)
