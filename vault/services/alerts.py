"""Alerting and metrics: expiry findings and failed probes, sent once per finding and severity
(claim-then-send, so hosts sharing a PostgreSQL store never send one twice); and a Prometheus
textfile for node_exporter's textfile collector."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from adapters.errors import IntegrityViolation
from adapters.store.changes import Changes
from domain.alerts import AlertState, alert_id_for, alert_key
from domain.errors import DomainError
from domain.expiry import SEVERITY_RANK, due_items, evaluate
from domain.mailboxes import mailbox_key
from domain.rotation import rotation_id_for
from domain.secret_value import SecretValue
from domain.vocabulary import ACTIVE, REVOKED
from vault.core import use_case
from vault.errors import BadInput, VaultError
from vault.listings import expiry_facts, renewal_facts
from vault.render.alerts import email_body, email_subject, webhook_payload
from vault.render.prometheus import METRICS_MARKER, Exposition

if TYPE_CHECKING:
    from vault.core import VaultCore
    from vault.providers import Providers
    from vault.services.grants import GrantService
    from vault.services.probes import ProbeService
    from vault.services.reports import ReportService
    from vault.services.tokens import TokenService

RESEND_AFTER = timedelta(hours=24)
_METRICS_BEFORE_MARKER = b"# HELP vault_secret_expiry_timestamp_seconds "


def written_metrics(path: str, head: bytes) -> bool:
    """A metrics file vault wrote (the file-replacement check of adapters/files.py)."""
    return head.startswith((METRICS_MARKER.encode() + b"\n", _METRICS_BEFORE_MARKER))


METRICS_FILE = {"what": "metrics file", "written_by_vault": written_metrics}


@dataclass(frozen=True)
class PendingAlert:
    """A finding that did not go out on `channel`: how many deliveries failed in a row, the
    last error, and when that channel is tried next."""

    channel: str
    severity: str
    kind: str
    client: str
    mailbox: str | None
    ref: str | None
    failures: int
    error: str | None
    next_try: str | None


@dataclass(frozen=True)
class AlertRun:
    """What an alert run did: `alerts` are the findings delivered on some channel, as the
    webhook receives them (expiry findings and failed probes, each as its own mapping);
    `delivered` counts them per channel; `errors` has a line per channel that failed now."""

    sent: int
    alerts: list[dict[str, Any]]
    resolved: int
    delivered: dict[str, int]
    errors: list[str]
    pending: list[PendingAlert]


@dataclass(eq=False)
class AlertService:
    core: VaultCore
    grants: GrantService
    reports: ReportService
    probes: ProbeService
    tokens: TokenService
    providers: Providers
    sleep: Callable[[float], None]

    def alert_items(self, as_of: date, min_severity: str) -> list[dict[str, Any]]:
        """Expiry findings and failed probes at or above `min_severity`, each with the subject
        (grant or client id) it concerns."""
        models = self.core.reads.models()
        secrets, grants = expiry_facts(models)
        grant_rows = models.grants
        grant_ids = {(r.client_name.casefold(), r.mailbox_key): r.grant_uuid
                     for r in grant_rows}
        client_ids = {r.name.casefold(): r.client_uuid for r in models.clients}
        items = []
        for finding in evaluate(secrets, grants, as_of, self.grants.thresholds(),
                                renewals=renewal_facts(models)):
            item = finding.as_dict()
            item["subject"] = (grant_ids.get((item["client"].casefold(),
                                              mailbox_key(item["mailbox"])))
                               if item["mailbox"] else client_ids.get(item["client"].casefold()))
            items.append(item)
        for row in grant_rows:
            if row.status != ACTIVE:
                continue
            for protocol, probe in json.loads(row.probes or "{}").items():
                if probe["outcome"] == "ok":
                    continue
                items.append({
                    "severity": "critical" if probe["outcome"] == "refused" else "warning",
                    "kind": "probe_failed", "client": row.client_name,
                    "mailbox": row.mailbox, "due": None, "days_left": None,
                    "expired": False, "ref": protocol, "subject": row.grant_uuid,
                    "advice": f"the last {protocol} probe of {row.mailbox} "
                              f"({probe['at'][:16]}) was {probe['outcome']}: run "
                              f"`vault probe {row.mailbox} --protocol {protocol}`",
                })
        floor = SEVERITY_RANK[min_severity]
        return [i for i in items if i["subject"] and SEVERITY_RANK[i["severity"]] >= floor]

    def alert_state_ids(self) -> list[UUID]:
        """Every AlertState not purged. Its key row sits under the grant or client it concerns
        and is neither that subject's own row nor (for a grant) its token lineage's. (Not found
        from creation topics, as reports find clients and grants: that scans every stored event,
        millions of token refreshes, and `alert` runs every half hour.)"""
        ids = []
        for row in self.core.store.key_rows():
            if row.wrapped is None or row.originator_id == row.subject_id:
                continue
            try:
                if row.originator_id != str(rotation_id_for(UUID(row.subject_id))):
                    ids.append(UUID(row.originator_id))
            except ValueError:
                raise IntegrityViolation(f"the key row of {row.originator_id} names no subject "
                                         "vault wrote: the key table was edited") from None
        return ids

    def _resolve_gone(self, findings: list[dict[str, Any]], now: datetime) -> int:
        """Record as resolved every announced finding that is no longer found at all, so that it
        is news again if it comes back (a grant broken, re-consented, broken again)."""
        present = {alert_id_for(alert_key(i["subject"], i["kind"], i.get("ref")))
                   for i in findings}
        resolved = 0
        for state_id in self.alert_state_ids():
            if state_id in present:
                continue
            state: AlertState = self.core.load(state_id)
            if not state.is_open or state.is_being_sent(now):
                continue
            state.resolve(now=now)
            try:
                self.core.commit(state)
                resolved += 1
            except IntegrityError:
                pass  # another host changed it meanwhile: it resolves it, or it is back
        return resolved

    @use_case("alert")
    def alert(
        self, *, webhook: SecretValue | None = None, email_to: str | None = None,
        via: str | None = None, min_severity: str = "warning",
        resend_after: timedelta = RESEND_AFTER,
    ) -> AlertRun:
        """Send what is due on each channel given."""
        webhook = check_alert_channels(webhook, email_to, via, min_severity)
        if email_to:
            self.check_sender(via or "")
        senders: dict[str, Callable[[list[dict[str, Any]], datetime], None]] = {}
        if webhook is not None:
            senders["webhook"] = lambda alerts, now: self._webhook(webhook, alerts, now)
        if email_to:
            senders["email"] = lambda alerts, now: self._email(alerts, email_to, via or "", now)
        now = self.core.now()
        findings = self.alert_items(now.date(), "info")
        floor = SEVERITY_RANK[min_severity]
        # what is due where: per finding, the channels that have not delivered it lately
        due = []
        for item in findings:
            if SEVERITY_RANK[item["severity"]] < floor:
                continue
            state = self._alert_state(item, now)
            if state.is_being_sent(now):
                continue  # another host is sending it right now
            channels = [c for c in senders if state.due_on(c, item["severity"], now,
                                                           resend_after)]
            if channels:
                due.append((item, state, channels))
        # a channel that failed a moment ago waits (doubling) before it is tried again, with
        # everything due on it: a dead receiver is not hammered, a live one is not held back
        waiting = {c: wait for c in senders
                   if (wait := _latest([s.retry_at(c) for _, s, cs in due if c in cs]))
                   and wait > now}
        claimed, pending = [], []
        for item, state, channels in due:
            pending += [_pending(item, c, waiting[c], state) for c in channels if c in waiting]
            sending = [c for c in channels if c not in waiting]
            if sending and self._claim(state, item, now):
                claimed.append((item, state, sending))
        resolved = self._resolve_gone(findings, now)
        delivered, failed = {}, {}
        for channel, send in senders.items():
            alerts = [_public(item) for item, _, sending in claimed if channel in sending]
            if not alerts:
                continue
            try:
                send(alerts, now)
                delivered[channel] = len(alerts)
            except (IntegrityViolation, DomainError):
                raise
            except VaultError as e:
                failed[channel] = str(e)
        if failed or pending:  # audited as failed: each settling commit seals the record so
            self.core.broker.record.outcome = "failed"
        self.core.broker.record.detail.update({"due": len(claimed), "resolved": resolved,
                                               "delivered": delivered, "failed": failed})
        sent, lost_on = [], []
        for item, state, sending in claimed:
            ok = [c for c in sending if c in delivered]
            lost = [c for c in sending if c in failed]

            def record(fresh: AlertState, severity: str = item["severity"], ok: list = ok,
                       lost: list = lost) -> None:
                if lost:
                    fresh.record_failed(now=self.core.now(), channels=lost,
                                        error="; ".join(failed[c] for c in lost))
                if ok:
                    fresh.record_sent(now=self.core.now(), severity=severity, channels=ok)

            settled = self._settle(state, record)
            if ok:
                sent.append(_public(item))
            lost_on += [(item, c, settled) for c in lost]
        # what failed now waits as long as the longest streak on its channel: they go together
        retry = {c: _latest([s.retry_at(c) for _, lost, s in lost_on if lost == c])
                 for c in failed}
        pending += [_pending(item, c, retry[c], settled, failed[c])
                    for item, c, settled in lost_on]
        if pending:
            self.core.broker.record.detail["pending"] = {
                c: sum(p.channel == c for p in pending) for c in senders
                if any(p.channel == c for p in pending)}
        return AlertRun(sent=len(sent), alerts=sent, resolved=resolved, delivered=delivered,
                        errors=[f"{c}: {e}" for c, e in failed.items()], pending=pending)

    def _alert_state(self, item: dict[str, Any], now: datetime) -> AlertState:
        """The finding's AlertState (a new one, not yet stored, for its first alert)."""
        key = alert_key(item["subject"], item["kind"], item.get("ref"))
        if self.core.store.key_row(str(alert_id_for(key))) is None:
            return AlertState.open(key=key, now=now)
        return self.core.load(alert_id_for(key))

    def _claim(self, state: AlertState, item: dict[str, Any], now: datetime) -> bool:
        """Record that this host sends the finding; False when another host claimed it first."""
        changes = Changes()
        if state.version == 1 and self.core.store.key_row(str(state.id)) is None:
            # its first alert: its data key is filed under the grant's (or client's) subject,
            # so purging that shreds its alerts too
            changes.keys = self.core.new_key_rows(state.id, UUID(item["subject"]))
        state.claim_for(now=now, severity=item["severity"], host=socket.gethostname())
        try:
            self.core.commit(state, changes=changes)
        except IntegrityError:
            return False  # another host claimed it first: it sends
        return True

    def _settle(self, state: AlertState, record) -> AlertState:
        def attempt() -> AlertState:
            fresh: AlertState = self.core.load(state.id)
            record(fresh)
            self.core.commit(fresh)
            return fresh

        return self.core.retrying(attempt)

    def check_sender(self, via: str) -> None:
        """The grant that sends e-mail alerts exists and covers SMTP: refused before anything is
        claimed, and by `maintain` before anything is done. (One that is broken or revoked is a
        failure of that channel when it sends, so the other channel and maintain's other steps
        still run.)"""
        rows = self.core.reads.rows("view_grants", mailbox_key=mailbox_key(via))
        if not rows:
            raise BadInput(f"--via {via}: no such grant (see `vault grant list`)")
        if not any("smtp" in r.protocols.split(",") for r in rows):
            raise BadInput(f"--via {via}: its grant does not cover smtp "
                           f"({rows[0].protocols})")

    def _webhook(self, url: SecretValue, alerts: list[dict[str, Any]], now: datetime) -> None:
        from adapters.notify import post_webhook

        post_webhook(self.providers.http, url,
                     webhook_payload(alerts, self.core.header.vault_id, now), sleep=self.sleep)

    def _email(self, alerts: list[dict[str, Any]], to: str, via: str, now: datetime) -> None:
        from email.message import EmailMessage

        from adapters.mail import probe
        from adapters.notify import NotifyFailed

        row = self.grants.grant_row(via)
        credential = self.core.load_client(row.client_uuid)
        target = self.probes.target(credential, self.core.load_grant(row.grant_uuid), "smtp", None,
                                    None, None, "xoauth2", 30.0)
        token = self.tokens.usable_token(row, "smtp").token
        message = EmailMessage()
        message["From"] = row.mailbox
        message["To"] = to
        message["Subject"] = email_subject(alerts)
        message.set_content(email_body(alerts, self.core.header.vault_id, now))
        result = probe(target, token, self.providers.tls_context(), message=message)
        if result.outcome != "ok":
            raise NotifyFailed(f"e-mail via {via} failed: {result.diagnosis}")

    # -- Prometheus ----------------------------------------------------------------------------

    @use_case("expiry --format prometheus")
    def prometheus(self) -> str:
        """The textfile-collector exposition (node_exporter's --collector.textfile)."""
        now = self.core.now()
        models = self.core.reads.models()
        secrets, grants = expiry_facts(models)
        t = self.grants.thresholds()
        metrics = Exposition()
        secret_end = metrics.family("vault_secret_expiry_timestamp_seconds",
                                    "End of a client secret or certificate (UTC, end of its "
                                    "last valid day).")
        for item in due_items(secrets, [], t):
            end = datetime.combine(item.due + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
            secret_end.append(end.timestamp(), client=item.client, ref=item.ref or "",
                              kind=item.kind, assumed=str(item.assumed).lower())
        idle = metrics.family("vault_refresh_token_idle_days",
                              "Days since a grant's refresh token was issued or last used.")
        status = metrics.family("vault_grant_status", "1 for the grant's current status.")
        for g in grants:
            status.append(1, client=g.client, mailbox=g.mailbox, status=g.status)
            if g.app_only:
                continue  # no refresh token to idle
            idle.append((now.date() - (g.last_activity_on or g.granted_on)).days,
                        client=g.client, mailbox=g.mailbox)
        success = metrics.family("vault_probe_success", "1 if the last probe succeeded.")
        latency = metrics.family("vault_probe_latency_seconds", "Latency of the last probe.")
        probed = metrics.family("vault_probe_timestamp_seconds", "When the last probe ran.")
        for row in models.grants:
            if row.status == REVOKED:
                continue
            for protocol, probe in json.loads(row.probes or "{}").items():
                labels = {"client": row.client_name, "mailbox": row.mailbox,
                          "protocol": protocol}
                success.append(int(probe["outcome"] == "ok"), **labels)
                if probe["latency_ms"] is not None:
                    latency.append(probe["latency_ms"] / 1000, **labels)
                if probe["at"]:
                    probed.append(datetime.fromisoformat(probe["at"]).timestamp(), **labels)
        findings = evaluate(secrets, grants, now.date(), t, renewals=renewal_facts(models),
                            now=now)
        by_severity = metrics.family("vault_expiry_findings", "Expiry findings by severity.")
        for severity in SEVERITY_RANK:
            by_severity.append(sum(f.severity == severity for f in findings), severity=severity)
        metrics.family("vault_metrics_timestamp_seconds",
                       "When vault wrote this file.").append(now.timestamp())
        return metrics.text()


def check_webhook_url(url: SecretValue) -> SecretValue:
    """The URL as it will be used (stripped): https only, since it is a credential, except to a
    receiver on this host."""
    import httpx  # here: only the alert commands check a webhook URL

    value = url.reveal().strip()
    try:
        parts = httpx.URL(value)
    except httpx.InvalidURL:
        raise BadInput("the webhook URL is not a URL") from None
    loopback = parts.host in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise BadInput("the webhook URL must be https:// (http:// only to this host): it "
                       "carries a secret")
    return SecretValue(value)


def check_alert_channels(webhook: SecretValue | None, email_to: str | None, via: str | None,
                         min_severity: str) -> SecretValue | None:
    """Refuse what cannot work before anything is claimed or sent; the webhook URL to use."""
    if webhook is None and not email_to:
        raise BadInput("give --webhook-file (or VAULT_WEBHOOK_URL) or --email-to")
    if min_severity not in SEVERITY_RANK:
        raise BadInput("--min-severity is info, warning or critical")
    if email_to:
        from email.utils import getaddresses

        if not via:
            raise BadInput("--email-to needs --via MAILBOX: the grant that sends it")
        addresses = getaddresses([email_to])
        if any(c in email_to for c in "\r\n") or not addresses or not all(
                "@" in address for _, address in addresses):
            raise BadInput(f"--email-to {email_to!r} is not a list of e-mail addresses")
    return check_webhook_url(webhook) if webhook is not None else None


def _public(item: dict[str, Any]) -> dict[str, Any]:
    """A finding as sent: without the subject's internal id."""
    return {k: v for k, v in item.items() if k != "subject"}


def _latest(moments: list[datetime | None]) -> datetime | None:
    known = [m for m in moments if m is not None]
    return max(known) if known else None


def _pending(item: dict[str, Any], channel: str, next_try: datetime | None, state: AlertState,
             error: str | None = None) -> PendingAlert:
    """A finding that did not go out on `channel`, and when that channel is tried next."""
    record = state.channel(channel)
    return PendingAlert(channel=channel, severity=item["severity"], kind=item["kind"],
                        client=item["client"], mailbox=item["mailbox"], ref=item.get("ref"),
                        failures=record["failures"], error=error or record["error"],
                        next_try=next_try.isoformat() if next_try else None)

