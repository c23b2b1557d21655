"""Use cases over an app's credentials at Entra, through Microsoft Graph (issue 14): read them
(`client sync`) and renew them (`client rotate-secret --via-graph`,
`client rotate-certificate --via-graph`, and `vault maintain`'s renew step).

A renewal is a sequence of commits on the client, each the outcome of one step and the intent of
the next (domain/credentials.py): started (the nonce that goes into the new credential's
display name) -> received (the new credential held, not yet used) -> verified (it worked at the
token endpoint: current; the older ones retired in vault and due for removal at Entra) -> ended.
A process killed between two steps leaves the renewal at its stage; the next run (or
`vault maintain`) takes it from there under the client's lock: a secret Entra made for a run
that died before vault held it is found by its nonce and removed, so vault never leaves a
secret at Entra that it has no copy of without saying so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING, Any

from domain.clouds import require_concrete_tenant
from domain.credentials import CERTIFICATE, CLIENT_SECRET, ClientCredential
from domain.secret_value import SecretValue
from vault.core import VaultCore, apply_views, use_case
from vault.errors import BadInput, Conflict, OperationFailed, VaultError
from vault.providers import TokenRefreshFailed

if TYPE_CHECKING:
    from adapters.graph_apps import EntraApplication, GraphApps, NewPassword
    from vault.providers import Providers
    from vault.services.clients import ClientService

LOCK_WAIT_S = 5.0
VERIFY_DELAY_MAX_S = 15.0


def _iso(value: Any) -> Any:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class EntraCredentialSeen:
    """One credential Entra lists for the app, and the one vault holds that it is (`ref`)."""

    key_id: str
    kind: str  # client_secret | certificate
    display_name: str | None
    hint: str | None  # a secret's first three characters; a certificate's SHA-1 thumbprint
    start: str | None
    end: str | None
    ref: str | None  # None: vault does not hold it


@dataclass(frozen=True)
class SyncResult:
    """What `client sync` found: Entra's credentials, vault's that Entra no longer has
    (`gone`), end dates Entra gives otherwise than entered, and whether anything was new."""

    client: str
    object_id: str
    credentials: list[EntraCredentialSeen]
    gone: list[str]
    changed_dates: list[dict[str, str | None]]
    recorded: bool


@dataclass(frozen=True)
class Renewal:
    """What a renewal through Graph did. `stage`: done, or waiting (the old credentials stay at
    Entra until `remove_at`; `vault maintain` removes them then). `resumed`: what an earlier,
    interrupted run had left and what became of it. `secret`: the new secret's value, only when
    revealed on purpose."""

    client: str
    kind: str
    stage: str
    new: str | None = None
    key_id: str | None = None
    expires_on: str | None = None
    retired: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    remove_at: str | None = None
    resumed: str | None = None
    secret: SecretValue | None = field(default=None, metadata={"omit_if_none": True})


class RenewalUnfinished(OperationFailed):
    """A step failed; the renewal stays where it is and the next run takes it from there."""


@dataclass(eq=False)
class EntraService:
    core: VaultCore
    clients: ClientService
    providers: Providers
    sleep: Callable[[float], None]

    # -- Graph, as the client or its management client ---------------------------------------

    def _graph(self, credential: ClientCredential, via: str | None,
               home_tenant: str | None) -> GraphApps:
        """Graph's application endpoints with an app-only token: the client's own (from its home
        tenant where given) or that of `via`, a management client."""
        from adapters.graph_apps import GraphApps
        from adapters.oauth import OAuthFailure
        from domain.mail_verdicts import mail_server
        from domain.scopes import GRAPH, plan_app_only

        if not credential.profile.is_microsoft:
            raise BadInput(f"client {credential.name!r} is not a Microsoft app registration: "
                           "only Entra lists an app's credentials")
        reader = self.core.load_client(self.clients.client_row(via).client_uuid) if via \
            else credential
        if via:
            self.core.broker.record.detail["via"] = reader.name
        if reader.cloud != credential.cloud:
            raise BadInput(f"{reader.name!r} is in {reader.cloud}, {credential.name!r} in "
                           f"{credential.cloud}: a management client reads its own cloud only")
        tenant = home_tenant if home_tenant and not via else None
        if tenant is None:
            require_concrete_tenant(reader.tenant)
        server = mail_server(credential.profile, credential.mail_servers, "graph")
        if server is None:
            raise BadInput(f"no Graph host is known for client {credential.name!r}")
        scheme = "http" if server["tls"] == "plain" else "https"
        base = f"{scheme}://{server['host']}" + (f":{server['port']}"
                                                  if server["port"] != 443 else "")
        scope = plan_app_only(credential.profile, ("graph",))[GRAPH][0]
        try:
            token = self.providers.oauth(reader, tenant=tenant).client_credentials(scope)
        except OAuthFailure as failure:
            raise TokenRefreshFailed(failure.diagnosis, False, reader.name) from None
        cloud = (f"{credential.cloud}, whose Graph is "
                 f"{credential.profile.graph_resource.rstrip('/')}")
        return GraphApps(self.providers.http, base, token.access_token, credential.name,
                         credential.client_id, reader.client_id, cloud)

    @staticmethod
    def _matches(credential: ClientCredential, app: EntraApplication) -> tuple[list, dict]:
        """The credentials vault holds (in use, held by a renewal, or retired and waiting for
        their removal at Entra), and {ref: Entra's keyId} of those Entra lists."""
        from domain.entra import HeldCredential, match, secret_hint

        waiting = {r["ref"] for r in (credential.renewal or {}).get("remove", [])}
        held = [HeldCredential(
            s["ref"], s["kind"], s["secret_id"] if s["kind"] == CLIENT_SECRET else None,
            secret_hint(s["value"].reveal()) if s["kind"] == CLIENT_SECRET else None,
            s["secret_id"] if s["kind"] != CLIENT_SECRET else None)
            for s in credential.secrets if s["retired_at"] is None or s["ref"] in waiting]
        return held, match(held, app.passwords, app.certificates)

    def _save(self, client: ClientCredential, step: str) -> None:
        """Commit one step: its events, the read models and an audit entry saying which."""
        from adapters.store.changes import Changes
        from vault.projections import client_changes

        self.core.broker.record.detail["step"] = step
        self.core.commit(client, changes=apply_views(Changes(), client_changes(client)))

    @contextlib.contextmanager
    def _locked(self, credential: ClientCredential) -> Iterator[None]:
        """One renewal of a client at a time, across processes and hosts (the store's lock; the
        kernel or the server releases it when the process dies)."""
        from adapters.store.base import LockTimeout

        try:
            with self.core.store.grant_lock(f"client-{credential.id}", LOCK_WAIT_S):
                yield
        except LockTimeout:
            raise Conflict(f"another process is renewing client {credential.name!r}; try "
                           "again when it is done") from None

    # -- sync ---------------------------------------------------------------------------------

    @use_case("client sync")
    def sync(self, name: str, *, via: str | None = None,
             home_tenant: str | None = None) -> SyncResult:
        """Read the app's credentials at Entra, match them to the ones vault holds, and record
        what was seen (only when it changed)."""
        credential = self.clients.credential(name)
        app = self._graph(credential, via, home_tenant).read()

        def attempt() -> tuple[bool, SyncResult]:
            client = self.core.load_client(str(credential.id))
            result = self._observe(client, app, home_tenant)
            if result.recorded:
                self._save(client, "observed")
            return result

        result = self.core.retrying(attempt)
        self.core.broker.record.detail.update({
            "recorded": result.recorded, "credentials": len(result.credentials),
            "gone": result.gone, "changed_dates": result.changed_dates,
            "foreign": [c.key_id for c in result.credentials if c.ref is None]})
        return result

    def _observe(self, client: ClientCredential, app: EntraApplication,
                 home_tenant: str | None) -> SyncResult:
        """Match what Entra lists to what vault holds, and record it on the client (an event
        only when it differs from what was last seen)."""
        from domain.entra import compare

        held, matches = self._matches(client, app)
        ends = {s["ref"]: s["expires_on"] for s in client.secrets}
        found = compare(held, ends, app.passwords, app.certificates, matches)
        by_key = {key: ref for ref, key in matches.items()}
        seen = [EntraCredentialSeen(p.key_id, CLIENT_SECRET, p.display_name, p.hint,
                                    _iso(p.start), _iso(p.end), by_key.get(p.key_id))
                for p in app.passwords]
        seen += [EntraCredentialSeen(c.key_id, CERTIFICATE, c.display_name, c.thumbprint,
                                     _iso(c.start), _iso(c.end), by_key.get(c.key_id))
                 for c in app.certificates]
        observation = {"object_id": app.object_id, "matches": matches,
                       "credentials": [asdict(c) for c in seen],
                       # what maintain reads with
                       "via": self.core.broker.record.detail.get("via"),
                       "home_tenant": home_tenant}
        recorded = client.observe_entra(now=self.core.now(), observation=observation)
        return SyncResult(
            client=client.name, object_id=app.object_id, credentials=seen, gone=found.gone,
            changed_dates=[{"ref": ref, "entered": _iso(entered), "entra": _iso(entra)}
                           for ref, entered, entra in found.changed_dates],
            recorded=recorded)

    # -- renewal ------------------------------------------------------------------------------

    @use_case("client rotate-secret")
    def renew_secret(self, name: str, *, via: str | None = None,
                     home_tenant: str | None = None, lifetime_days: int | None = None,
                     retire_after: int = 0, verify_for: float = 300,
                     reveal: bool = False) -> Renewal:
        """A new secret from Entra (addPassword), held, verified, made current; the old ones
        removed at Entra after `retire_after` seconds. An earlier run's unfinished renewal is
        finished first (and is then the answer, unless it had not got a secret yet)."""
        self.core.broker.record.detail["via_graph"] = True
        return self._renew(name, CLIENT_SECRET, verify_for, reveal, dict(
            via=via, home_tenant=home_tenant, lifetime_days=lifetime_days,
            retire_after=retire_after))

    @use_case("client rotate-certificate")
    def renew_certificate(self, name: str, certificate: Any, *, via: str | None = None,
                          home_tenant: str | None = None, retire_after: int = 0,
                          verify_for: float = 300) -> Renewal:
        """Upload `certificate` (a CertificateCredential) with addKey, proven by the current
        certificate; then as for a secret."""
        self.core.broker.record.detail.update({"via_graph": True,
                                               "thumbprint": certificate.thumbprint_sha1})
        return self._renew(name, CERTIFICATE, verify_for, False, dict(
            via=via, home_tenant=home_tenant, lifetime_days=None, retire_after=retire_after),
            certificate)

    @use_case("client renewal")
    def finish_renewal(self, name: str, *, verify_for: float = 300) -> Renewal:
        """Take an unfinished renewal as far as it may go now (`vault maintain`)."""
        return self._renew(name, None, verify_for, False, None)

    def _renew(self, name: str, kind: str | None, verify_for: float, reveal: bool,
               start: dict[str, Any] | None, certificate: Any = None) -> Renewal:
        try:
            return self._renewing(name, kind, verify_for, reveal, start, certificate)
        except VaultError as e:
            record = self.core.broker.record
            if record.written:  # a step was committed (and audited): so is the failure
                record.outcome, record.detail["error"] = "failed", str(e)[:300]
                self.core.broker.write(record, quiet=True)
            raise

    def _renewing(self, name: str, kind: str | None, verify_for: float, reveal: bool,
                  start: dict[str, Any] | None, certificate: Any) -> Renewal:
        credential = self.clients.credential(name)
        client_id = str(credential.id)
        with self._locked(credential):
            client = self.core.load_client(client_id)
            resumed, result = None, None
            if client.renewal is not None:
                resumed = f"a renewal started {client.renewal['started_at']:%Y-%m-%d %H:%M} UTC"
                graph = self._graph(client, client.renewal["via"], client.renewal["home_tenant"])
                result = self._drive(client_id, graph, graph.read(), verify_for, fresh=False,
                                     certificate=certificate)
                if result.stage == "abandoned" and start is not None:
                    resumed += f" was given up ({result.resumed})"
                    result = None
                else:
                    resumed += f": {result.stage}"
            if result is None:
                if start is None:
                    raise BadInput(f"client {credential.name!r} has no renewal under way")
                # Graph first: a reader that may not read or a wrong tenant records nothing
                client = self.core.load_client(client_id)
                graph = self._graph(client, start["via"], start["home_tenant"])
                app = graph.read()
                nonce = self.core.new_id().hex[:12]
                self.core.broker.record.detail["nonce"] = nonce

                def intend(client: ClientCredential) -> None:
                    client.start_renewal(now=self.core.now(), nonce=nonce, kind=kind, **start)
                    if certificate is not None:  # held before Entra hears of it
                        client.add_certificate(
                            now=self.core.now(), private_key=certificate.private_key,
                            thumbprint=certificate.thumbprint_sha1, subject=certificate.subject,
                            not_before=certificate.not_before, not_after=certificate.not_after,
                            thumbprint_sha256=certificate.thumbprint_sha256, pending=True)

                self._step(client_id, "started", intend)
                result = self._drive(client_id, graph, app, verify_for, fresh=True,
                                     certificate=certificate)
        if reveal and result.new:  # audited before it is shown
            record = self.core.broker.record
            record.detail.update({"step": "revealed", "revealed": result.new})
            self.core.broker.write(record)
            new = self.core.load_client(client_id).secret(result.new)
            result = replace(result, secret=new["value"])
        return replace(result, resumed=resumed or result.resumed)

    def _step(self, client_id: str, step: str,
              apply: Callable[[ClientCredential], Any]) -> tuple[ClientCredential, Any]:
        """Commit one step on the client as it is now: `apply` again on a fresh copy when
        another process changed the client first (a renewal's own writers are locked out; other
        commands are not)."""

        def attempt() -> tuple[ClientCredential, Any]:
            client = self.core.load_client(client_id)
            outcome = apply(client)
            self._save(client, step)
            return client, outcome

        return self.core.retrying(attempt)

    def _drive(self, client_id: str, graph: GraphApps, app: EntraApplication,
               verify_for: float, fresh: bool, certificate: Any = None) -> Renewal:
        """Take the renewal through its steps, committing each; stop where it must wait.
        `fresh`: this run recorded the intent (else a run that died did); `certificate`: the
        new certificate this run was given."""
        client = self.core.load_client(client_id)
        kind, home_tenant = client.renewal["kind"], client.renewal["home_tenant"]
        retired: list[str] = []
        while True:
            stage = client.renewal["stage"]
            if stage == "started" and fresh and kind == CLIENT_SECRET:
                made = self._add_password(client_id, client, graph, app.object_id)
                self.core.broker.record.detail["key_id"] = made.key_id
                client, _ = self._step(client_id, "received", lambda c, made=made: c.add_secret(
                    now=self.core.now(), value=made.secret, secret_id=made.key_id,
                    created_on=made.start, expires_on=made.end, pending=True))
            elif stage == "started":
                return self._abandon(client_id, client, graph, app)
            elif stage == "received":
                new = client.secret(client.renewal["new_ref"])
                if kind == CERTIFICATE:
                    self._upload(client, graph, app, new, certificate)
                self._verify(client, new, verify_for)
                app = graph.read()

                def verified(c: ClientCredential, app: EntraApplication = app) -> list[str]:
                    _, matches = self._matches(c, app)
                    old = c.verify_renewal(now=self.core.now(), key_ids=matches,
                                           by=self.core.who)
                    self._observe(c, app, home_tenant)
                    return old

                client, retired = self._step(client_id, "verified", verified)
            elif self.core.now() < client.renewal["remove_at"]:
                return self._outcome(client, kind, "waiting", retired=retired)
            else:
                removed = self._remove_old(client, graph, app)
                seen = graph.read() if removed else app

                def ended(c: ClientCredential, removed: list[str] = removed,
                          seen: EntraApplication = seen) -> None:
                    c.end_renewal(now=self.core.now(), outcome="finished", removed=removed)
                    self._observe(c, seen, home_tenant)

                client, _ = self._step(client_id, "finished", ended)
                return self._outcome(client, kind, "done", retired=retired, removed=removed)

    def _add_password(self, client_id: str, client: ClientCredential, graph: GraphApps,
                      object_id: str) -> NewPassword:
        """addPassword; a refusal that says Entra made nothing (a policy, a permission) ends
        the renewal. Anything else (no answer, a 5xx, throttling) leaves it started: the next
        run looks for the secret by its nonce."""
        from adapters.graph_apps import GraphRefused

        renewal = client.renewal
        try:
            return graph.add_password(object_id, renewal["display_name"], renewal["ends_on"])
        except GraphRefused as refused:
            if refused.status is not None and 400 <= refused.status < 500 \
                    and refused.status != 429:
                why = f"refused: {refused}"[:300]
                self._step(client_id, "refused", lambda c: c.end_renewal(
                    now=self.core.now(), outcome=why, removed=[]))
            raise

    def _abandon(self, client_id: str, client: ClientCredential, graph: GraphApps,
                 app: EntraApplication) -> Renewal:
        """A run died after the intent and before vault held the new secret: Entra may have
        made it (its display name carries the nonce). vault has no copy of it: remove it."""
        nonce = client.renewal["nonce"]
        made = [p for p in app.passwords if nonce in (p.display_name or "")]
        for p in made:
            graph.remove_password(app.object_id, p.key_id)
        what = (f"Entra had made its secret ({', '.join(p.key_id for p in made)}), which vault "
                "never held: removed at Entra" if made else "Entra had made no secret for it")
        self._step(client_id, "abandoned", lambda c: c.end_renewal(
            now=self.core.now(), outcome=f"abandoned: {what}", removed=[p.key_id for p in made]))
        return Renewal(client=client.name, kind=CLIENT_SECRET, stage="abandoned", resumed=what)

    def _upload(self, client: ClientCredential, graph: GraphApps, app: EntraApplication,
                new: dict[str, Any], certificate: Any) -> None:
        """addKey, unless Entra lists the certificate already (an earlier run got that far)."""
        if any(c.thumbprint == new["secret_id"].upper() for c in app.certificates):
            return
        if certificate is None or certificate.thumbprint_sha1 != new["secret_id"]:
            raise RenewalUnfinished(
                f"certificate {new['ref']} of {client.name!r} is held but not at Entra yet: run "
                f"`vault client rotate-certificate {client.name} --via-graph "
                "--certificate-file PEM` with the same file to upload it")
        proof = self._proof(client, app.object_id)
        graph.add_key(app.object_id, certificate.der, client.renewal["display_name"], proof)

    def _proof(self, client: ClientCredential, object_id: str) -> str:
        from adapters.graph_apps import proof_of_possession

        current = client.current_secret(CERTIFICATE)
        if current is None:
            raise BadInput(f"client {client.name!r} holds no certificate to sign Graph's proof")
        return proof_of_possession(current["value"], current["secret_id"], object_id,
                                   self.core.now().timestamp())

    def _verify(self, client: ClientCredential, new: dict[str, Any], verify_for: float) -> None:
        """The new credential at the token endpoint (client credentials), retried while Entra
        propagates it; a renewal whose credential never works stays where it is."""
        from adapters.oauth import OAuthFailure

        scope = f"{client.profile.graph_resource}.default"
        tenant = client.renewal["home_tenant"]
        waited, delay = 0.0, 2.0
        while True:
            try:
                self.providers.oauth(client, use=new, tenant=tenant).client_credentials(scope)
                return
            except OAuthFailure as failure:
                d = failure.diagnosis
                retryable = d.name in ("secret_invalid", "app_or_tenant_not_found",
                                       "certificate_assertion") or d.transient
                if not retryable or waited + delay > verify_for:
                    raise RenewalUnfinished(
                        f"{client.name}: the new {new['kind'].replace('_', ' ')} {new['ref']} "
                        f"does not work at the token endpoint yet ({d.message()}); it is held, "
                        "not used: run the same command again (or `vault maintain`) to go on"
                    ) from None
                waited += delay
                self.sleep(delay)
                delay = min(delay * 2, VERIFY_DELAY_MAX_S)  # 2, 4, 8, 15, 15 ... seconds

    def _remove_old(self, client: ClientCredential, graph: GraphApps,
                    app: EntraApplication) -> list[str]:
        """Remove at Entra the old credentials the renewal retired; those Entra no longer lists
        are gone already."""
        listed = {c.key_id.lower() for c in (*app.passwords, *app.certificates)}
        removed = []
        for old in client.renewal["remove"]:
            if old["key_id"].lower() in listed:
                if client.renewal["kind"] == CLIENT_SECRET:
                    graph.remove_password(app.object_id, old["key_id"])
                else:
                    graph.remove_key(app.object_id, old["key_id"],
                                     self._proof(client, app.object_id))
            removed.append(old["ref"])
        return removed

    @staticmethod
    def _outcome(client: ClientCredential, kind: str, stage: str, *, retired: list[str],
                 removed: list[str] | None = None) -> Renewal:
        new = next((s for s in reversed(client.secrets) if s["kind"] == kind), None)
        renewal = client.renewal or {}
        return Renewal(client=client.name, kind=kind, stage=stage,
                       new=new["ref"] if new else None, key_id=new and new["secret_id"],
                       expires_on=_iso(new and new["expires_on"]), retired=retired,
                       removed=removed or [], remove_at=_iso(renewal.get("remove_at")))


def renewal_due(client: ClientCredential, within_days: int, today: date) -> bool:
    """Whether the client's current secret ends (by Entra's date) within `within_days`."""
    current = client.current_secret(CLIENT_SECRET)
    if current is None or not client.entra:
        return False
    ends = {c["ref"]: c["end"] for c in client.entra.get("credentials", []) if c["ref"]}
    end = ends.get(current["ref"])
    return end is not None and (date.fromisoformat(end) - today).days <= within_days
