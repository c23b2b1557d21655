"""`vault maintain`: what a timer runs, in order: refresh what is due (and keep idle refresh
tokens alive), probe what was not probed lately, alert on new or worsened findings, write the
metrics file, export an audit checkpoint. Each step is its own audited use case; one step failing
does not stop the next. Safe on several hosts at once over one PostgreSQL store: refreshes are
serialised per grant and re-checked under the lock, alerts are claimed before they are sent."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.persistence import PersistenceError

from adapters.errors import IntegrityViolation, SubjectPurged
from adapters.files import check_output, write_atomically
from adapters.keyring import ROWS_KEY_ID, SETTINGS_KEY_ID
from adapters.keyslots import seal_header
from adapters.store import Head, ViewChange
from adapters.store.changes import Changes
from adapters.store.failures import explain_store_failure
from adapters.store.schema import SCHEMA_VERSION
from domain.errors import DomainError
from domain.secret_value import SecretValue
from domain.vocabulary import ACTIVE, CLIENT_ACTIVE
from vault.audit import TrustedCheckpoint, parse_checkpoint
from vault.core import use_case
from vault.errors import BadInput, VaultError
from vault.projections import client_changes, grant_changes, rotation_changes
from vault.reads import REQUIRED_SETTINGS
from vault.render.alerts import delivery_summary, pending_lines
from vault.render.text import printable
from vault.services.alerts import METRICS_FILE, RESEND_AFTER, AlertRun, check_alert_channels
from vault.services.audit import CHECKPOINT_FILE

if TYPE_CHECKING:
    from vault.core import VaultCore
    from vault.services.alerts import AlertService
    from vault.services.audit import AuditService
    from vault.services.entra import EntraService
    from vault.services.probes import ProbeOutcome, ProbeService
    from vault.services.tokens import RefreshOutcome, TokenService


Progress = Callable[[int, int], None]  # (done, total), for a progress bar


@dataclass(frozen=True, kw_only=True)
class ProbeNotRun:
    """A probe that was due and could not run (no server known, the grant unusable ...)."""

    mailbox: str
    client: str
    protocol: str
    outcome: str = "error"
    diagnosis: str


@dataclass(frozen=True)
class MaintainStep:
    """One step of `maintain`: its outcome (ok, failed or skipped) and a summary for people (a
    line, then a line per problem). The steps that ran say more in their own class."""

    step: str
    outcome: str
    summary: str


@dataclass(frozen=True)
class RefreshStep(MaintainStep):
    results: list[RefreshOutcome]


@dataclass(frozen=True)
class ProbeStep(MaintainStep):
    results: list[ProbeOutcome | ProbeNotRun]


@dataclass(frozen=True)
class AlertStep(AlertRun, MaintainStep):
    """The step's fields, then the alert run's (a dataclass takes its bases' fields in reverse
    order of their lookup: MaintainStep's first)."""


@dataclass(frozen=True)
class CheckpointStep(MaintainStep):
    size: int  # the entries the checkpoint covers


@dataclass(frozen=True)
class RebuiltReadModels:
    """How many clients and grants were replayed, and how many of them are purged (skipped)."""

    clients: int
    grants: int
    purged: int


RENEW_VERIFY_S = 60  # maintain's patience with a new credential propagating; the next run goes on


def _ok_unless(failed: bool) -> str:
    return "failed" if failed else "ok"


@dataclass
class MaintainPlan:
    keepalive_days: int = 14
    probe_every: timedelta | None = timedelta(hours=24)  # None: no probes
    probe_budget: timedelta = timedelta(minutes=5)  # no probe starts after this long
    webhook: SecretValue | None = None
    email_to: str | None = None
    via: str | None = None
    min_severity: str = "warning"
    resend_after: timedelta = RESEND_AFTER
    metrics_file: str | None = None
    checkpoint_dir: str | None = None
    force: bool = False  # replace a metrics or checkpoint file vault did not write
    renew_within: int | None = None  # renew secrets Entra says end within so many days

    def check(self) -> None:
        """Refuse a plan that would fail halfway, before anything is done."""
        if self.webhook is not None or self.email_to:
            self.webhook = check_alert_channels(self.webhook, self.email_to, self.via,
                                                self.min_severity)
        if self.checkpoint_dir and not os.path.isdir(self.checkpoint_dir):
            raise BadInput(f"--checkpoint-dir {self.checkpoint_dir}: no such directory")
        if self.metrics_file and not os.path.isdir(os.path.dirname(
                os.path.abspath(self.metrics_file))):
            raise BadInput(f"--metrics-file {self.metrics_file}: its directory does not exist")
        if self.metrics_file:
            check_output(self.metrics_file, force=self.force, **METRICS_FILE)


@dataclass(eq=False)
class MaintenanceService:
    core: VaultCore
    tokens: TokenService
    probes: ProbeService
    alerts: AlertService
    audit: AuditService
    entra: EntraService

    def maintain(self, plan: MaintainPlan) -> list[MaintainStep]:
        """Every step's outcome, in the order they ran."""
        plan.check()
        if plan.checkpoint_dir:
            check_output(self._checkpoint_path(plan, self.core.header.vault_id), force=plan.force,
                         **CHECKPOINT_FILE)
        if plan.email_to:
            self.alerts.check_sender(plan.via or "")
        previous = self._previous_checkpoint(plan) if plan.checkpoint_dir else None
        if previous is not None:
            # First: a store rolled back to an older copy must not be acted on (its refresh
            # tokens may be spent; refreshing them could make the provider revoke the grant).
            self.audit.verified_audit_rows(trusted=previous)
        steps: list[MaintainStep] = []

        def step(name: str, run: Callable[[], MaintainStep], skip: str | None = None) -> None:
            if skip:
                steps.append(MaintainStep(name, "skipped", skip))
                return
            try:
                steps.append(run())
            except (IntegrityViolation, DomainError):
                # tampering stops everything (exit 5: nothing else is trusted); so does a refusal by
                # the domain's rules
                raise
            except (VaultError, PersistenceError) as e:  # the next step still runs
                summary = explain_store_failure(e, f"the vault's store {self.core.store.description}",
                                                getattr(self.core.store, "home", None))
                steps.append(MaintainStep(name, "failed", summary or str(e)))

        synced = [c for c in self.core.reads.models().clients
                  if c.status == CLIENT_ACTIVE and c.entra_foreign is not None]
        # before the alerts, so that what Entra says now is what they send
        step("sync", lambda: self._sync(synced), None if synced else
             "no client synced with Entra yet (`vault client sync NAME` switches it on)")
        step("refresh", lambda: self._refresh_due(plan))
        # after the refresh (a renewal may wait on Entra for a minute), before the alerts
        models = self.core.reads.models()
        renewing = [c for c in models.clients if c.status == CLIENT_ACTIVE and c.renewal]
        step("renew", lambda: self._renew(renewing, synced, plan.renew_within),
             None if renewing or plan.renew_within is not None else
             "no renewal under way and no --renew-within")
        step("probe", lambda: self._probe_due(plan), None if plan.probe_every else "disabled")
        step("alert", lambda: self._alert(plan), None if plan.webhook or plan.email_to
             else "no --webhook-file, VAULT_WEBHOOK_URL or --email-to")
        step("metrics", lambda: self._metrics(plan), None if plan.metrics_file
             else "no --metrics-file")
        step("checkpoint", lambda: self._checkpoint(plan, previous), None if plan.checkpoint_dir
             else "no --checkpoint-dir")
        return steps

    def _sync(self, rows: list[Any]) -> MaintainStep:
        """`client sync` of each client synced before (each its own use case and audit entry),
        with the reader it used then."""
        changed, problems = 0, []
        for row in rows:
            try:
                seen = self.core.load_client(row.client_uuid).entra or {}
                changed += self.entra.sync(row.name, via=seen.get("via"),
                                           home_tenant=seen.get("home_tenant")).recorded
            except (IntegrityViolation, DomainError):
                raise
            except VaultError as e:
                problems.append(f"{row.name}: {printable(str(e))}")
        summary = (f"{len(rows)} synced with Entra, {changed} with something new"
                   + "".join(f"\n  {p}" for p in problems))
        return MaintainStep("sync", _ok_unless(bool(problems)), summary)

    def _renew(self, renewing: list[Any], synced: list[Any],
               within: int | None) -> MaintainStep:
        """Finish the renewals under way (an interrupted run's, old credentials whose
        --retire-after is over), then, with --renew-within, renew the secrets of synced clients
        that Entra says end within so many days: one client at a time, each its own use case,
        decided again under the client's lock."""
        from vault.services.entra import renewal_due

        done, waiting, problems = [], [], []
        names = {c.name for c in renewing}
        today = self.core.now().date()
        due = [] if within is None else [
            c for c in synced if c.name not in names and c.auth_method != "private_key_jwt"
            and renewal_due(self.core.load_client(c.client_uuid), within, today)]
        runs = [*((c, lambda n: self.entra.finish_renewal(n, verify_for=RENEW_VERIFY_S))
                  for c in renewing), *((c, self._renew_one(within)) for c in due)]
        for row, run in runs:
            try:
                result = run(row.name)
            except IntegrityViolation:
                raise
            except (VaultError, DomainError) as e:  # this client's; the next one still runs
                problems.append(f"{row.name}: {printable(str(e))}")
                continue
            if result.stage == "waiting":
                waiting.append(f"{row.name} ({result.new})")
            elif result.stage != "not due":
                done.append(f"{row.name} ({result.stage}"
                            + (f", {result.new}" if result.new else "") + ")")
        summary = "; ".join(x for x in (
            f"{len(due)} due within {within} days" if within is not None else "",
            f"renewed or finished: {', '.join(done) or 'none'}",
            f"old credentials kept at Entra for now: {', '.join(waiting)}" if waiting else "")
            if x) + "".join(f"\n  {p}" for p in problems)
        return MaintainStep("renew", _ok_unless(bool(problems)), summary)

    def _renew_one(self, within: int | None) -> Callable[[str], Any]:
        """A due secret renewed as the last sync read: with its reader and home tenant."""

        def renew(name: str) -> Any:
            row = next(c for c in self.core.reads.models().clients if c.name == name)
            seen = self.core.load_client(row.client_uuid).entra or {}
            return self.entra.renew_secret(name, via=seen.get("via"),
                                           home_tenant=seen.get("home_tenant"),
                                           verify_for=RENEW_VERIFY_S, due_within=within)

        return renew

    def _refresh_due(self, plan: MaintainPlan) -> RefreshStep:
        results = self.tokens.refresh(due=True, keepalive_days=plan.keepalive_days)
        count = {o: sum(r.outcome == o for r in results)
                 for o in ("refreshed", "fresh", "failed")}
        failed = [r.error for r in results if r.outcome == "failed"]
        summary = (f"{count['refreshed']} refreshed, {count['fresh']} already fresh, "
                   f"{count['failed']} failed"
                   + "".join(f"\n  {printable(f)}" for f in failed))  # a line each: shown
        return RefreshStep("refresh", _ok_unless(bool(failed)), summary, results)

    def probes_due(self, now: datetime, every: timedelta) -> list[tuple[str, str, str]]:
        """(mailbox, client, protocol) of active grants not probed within `every`."""
        due = []
        for row in self.core.reads.models().grants:
            if row.status != ACTIVE:
                continue
            last = json.loads(row.probes or "{}")
            for protocol in filter(None, row.protocols.split(",")):
                at = last.get(protocol, {}).get("at")
                if at is None or now - datetime.fromisoformat(at) >= every:
                    due.append((row.mailbox, row.client_name, protocol))
        return due

    def _probe_due(self, plan: MaintainPlan) -> ProbeStep:
        assert plan.probe_every is not None
        results, problems = [], []
        started = self.core.now()
        due = self.probes_due(started, plan.probe_every)
        for mailbox, client, protocol in due:
            if results and self.core.now() - started >= plan.probe_budget:
                break  # what is left stays due: the next run starts with it
            result: ProbeOutcome | ProbeNotRun
            try:
                (outcome,) = self.probes.probe(mailbox, client=client, protocol=protocol)
                result = replace(outcome, mailbox=mailbox, client=client)
            except (IntegrityViolation, DomainError):
                raise
            except VaultError as e:  # no server known, grant unusable ...
                result = ProbeNotRun(mailbox=mailbox, client=client, protocol=protocol,
                                     diagnosis=str(e))
            results.append(result)
            if result.outcome != "ok":
                problems.append(f"{mailbox} {protocol}: {result.outcome}")
        left = len(due) - len(results)
        summary = (f"{len(results)} probed, {len(results) - len(problems)} ok"
                   + (f", {left} left for the next run (--probe-budget)" if left else "")
                   + "".join(f"\n  {p}" for p in problems))
        return ProbeStep("probe", _ok_unless(bool(problems)), summary, results)

    def _alert(self, plan: MaintainPlan) -> AlertStep:
        result = self.alerts.alert(webhook=plan.webhook, email_to=plan.email_to, via=plan.via,
                                   min_severity=plan.min_severity, resend_after=plan.resend_after)
        summary = "\n".join([delivery_summary(result), *pending_lines(result)])
        return AlertStep(**vars(result), step="alert", outcome=_ok_unless(bool(result.pending)),
                         summary=summary)

    def _metrics(self, plan: MaintainPlan) -> MaintainStep:
        assert plan.metrics_file is not None
        write_atomically(plan.metrics_file, self.alerts.prometheus(), 0o644, force=plan.force,
                         **METRICS_FILE)
        return MaintainStep("metrics", "ok", f"written to {plan.metrics_file}")

    @staticmethod
    def _checkpoint_path(plan: MaintainPlan, vault_id: str) -> str:
        assert plan.checkpoint_dir is not None
        return os.path.join(plan.checkpoint_dir, f"vault-{vault_id}.checkpoint")

    def _previous_checkpoint(self, plan: MaintainPlan) -> TrustedCheckpoint | None:
        path = self._checkpoint_path(plan, self.core.header.vault_id)
        try:
            with open(path, encoding="utf-8") as f:
                return parse_checkpoint(f.read(64 * 1024))
        except FileNotFoundError:
            return None
        except ValueError as e:
            if plan.force:  # not a checkpoint, and the admin said to replace it anyway
                return None
            raise BadInput(f"cannot read the last checkpoint {path}: {e}") from None
        except OSError as e:
            raise BadInput(f"cannot read the last checkpoint {path}: {e}") from None

    def _checkpoint(self, plan: MaintainPlan,
                    previous: TrustedCheckpoint | None) -> CheckpointStep:
        path = self._checkpoint_path(plan, self.core.header.vault_id)
        checkpoint = self.audit.export_checkpoint(previous)
        write_atomically(path, checkpoint.text, 0o644, force=plan.force, **CHECKPOINT_FILE)
        return CheckpointStep("checkpoint", "ok", f"{checkpoint.size} entries, written to {path}",
                              checkpoint.size)

    def rebuilt_views(self, progress: Progress | None = None,
                      load: Callable[[UUID], Any] | None = None,
                      ) -> tuple[list[ViewChange], RebuiltReadModels]:
        return rebuilt_views(self.core, progress, load)


    @use_case("admin rebuild-projections")
    def rebuild_projections(self, progress: Progress | None = None) -> RebuiltReadModels:
        """Clear the read models and replay every aggregate, in one transaction during which
        other writers wait (nothing committed meanwhile can be missed)."""
        return self._rebuild(Changes(), progress)

    def _rebuild(self, changes: Changes, progress: Progress | None = None) -> RebuiltReadModels:
        replayed: list[RebuiltReadModels] = []

        def replay(changes: Changes) -> None:
            views, counts = self.rebuilt_views(progress)
            changes.views.extend(views)
            replayed.append(counts)
            self.core.broker.record.detail.update(asdict(counts))

        changes.clear_views, changes.prepare = True, replay
        self.core.commit(changes=changes)
        return replayed[-1]

    def upgrade(self) -> None:
        """Bring a vault from before sealed rows (schema 1) up to date, once, in one transaction:
        columns added, read models rebuilt from the events and sealed, settings and purges sealed
        as they are found, and the header marked (so this never runs again on that vault). A
        sealed vault of an earlier schema (2: no login column) gets the columns it lacks and
        its read models rebuilt."""
        if not self.core.header.row_macs:
            self._upgrade()
        elif not self.core.store.schema_is_current():
            self._add_columns()

    @use_case("upgrade")
    def _add_columns(self) -> None:
        self.core.broker.record.detail["to"] = f"schema {SCHEMA_VERSION}: columns added"
        self._rebuild(Changes(add_columns=True))

    @use_case("upgrade")
    def _upgrade(self) -> None:
        header = self.core.header._replace(row_macs=True)
        sealed = seal_header(header, self.core.root)
        self.core.broker.record.detail["to"] = "schema 2: sealed read models, settings and purges"
        now = self.core.now().isoformat()
        keys = [self.core.keyring.create(key_id, key_id, now) for key_id in (ROWS_KEY_ID,
                                                                             SETTINGS_KEY_ID)]
        self._rebuild(Changes(
            header=(self.core.header_checksum, sealed), upgrade=True, keys=keys,
            settings=dict(REQUIRED_SETTINGS), settings_version=1,
            heads=[Head(SETTINGS_KEY_ID, 1, self.core.keyring.head_mac(SETTINGS_KEY_ID, 1),
                        self.core.keyring.generation_of(SETTINGS_KEY_ID))]))
        self.core.header, self.core.header_checksum = header, sealed.checksum
        self.core.keyring.purges_unsealed = False


def rebuilt_views(core: VaultCore, progress: Progress | None = None,
                  load: Callable[[UUID], Any] | None = None,
                  ) -> tuple[list[ViewChange], RebuiltReadModels]:
    """The read models as the events give them (every aggregate replayed, by `load` if given;
    purged subjects have none), and how many clients, grants and purged subjects that took."""
    load = load or core.load
    views: list[ViewChange] = []
    ids = core.aggregate_ids()
    total, done, purged = len(ids["client"]) + len(ids["grant"]), 0, 0
    providers: dict[UUID, tuple[str, bool]] = {}
    for kind in ("client", "grant"):
        for aggregate_id in ids[kind]:
            try:
                if kind == "client":
                    client = load(aggregate_id)
                    views.extend(client_changes(client))
                    providers[client.id] = (client.provider, client.google_testing)
                else:
                    grant = load(aggregate_id)
                    provider, testing = providers.get(grant.client_id, ("custom", False))
                    views.extend(grant_changes(grant, provider, testing))
                    views.extend(rotation_changes(load(grant.rotation_id)))
            except SubjectPurged:
                purged += 1
            done += 1
            if progress:
                progress(done, total)
    return views, RebuiltReadModels(clients=len(ids["client"]), grants=len(ids["grant"]),
                                    purged=purged)
