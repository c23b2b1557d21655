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
from datetime import date, timedelta
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
ABANDON_AFTER = timedelta(minutes=5)  # Graph's lists may lag its writes this long
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
    kept: list[str] = field(default_factory=list)  # retired, but not identified at Entra: left
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
                     retire_after: int = 0, verify_for: float = 300, reveal: bool = False,
                     due_within: int | None = None) -> Renewal:
        """A new secret from Entra (addPassword), held, verified, made current; the old ones
        removed at Entra after `retire_after` seconds. An earlier run's unfinished renewal is
        finished first (and is then the answer, unless it had not got a secret yet).
        `due_within`: renew only if Entra says the current secret ends within so many days
        (decided under the client's lock: `maintain` on two hosts renews once)."""
        self.core.broker.record.detail["via_graph"] = True
        return self._renew(name, CLIENT_SECRET, verify_for, reveal, dict(
            via=via, home_tenant=home_tenant, lifetime_days=lifetime_days,
            retire_after=retire_after), due_within=due_within)

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
            certificate=certificate)

    @use_case("client renewal")
    def finish_renewal(self, name: str, *, verify_for: float = 300) -> Renewal:
        """Take an unfinished renewal as far as it may go now (`vault maintain`)."""
        return self._renew(name, None, verify_for, False, None)

    def _renew(self, name: str, kind: str | None, verify_for: float, reveal: bool,
               start: dict[str, Any] | None, *, certificate: Any = None,
               due_within: int | None = None) -> Renewal:
        try:
            return self._renewing(name, kind, verify_for, reveal, start, certificate,
                                  due_within)
        except VaultError as e:
            record = self.core.broker.record
            if record.written:  # a step was committed (and audited): so is the failure
                record.outcome, record.detail["error"] = "failed", str(e)[:300]
                self.core.broker.write(record, quiet=True)
            raise

    def _renewing(self, name: str, kind: str | None, verify_for: float, reveal: bool,
                  start: dict[str, Any] | None, certificate: Any,
                  due_within: int | None) -> Renewal:
        credential = self.clients.credential(name)
        client_id = str(credential.id)
        with self._locked(credential):
            client = self.core.load_client(client_id)
            resumed, result = None, None
            if client.renewal is not None:
                self._check_resumable(client, kind, start, certificate)
                resumed = f"a renewal started {client.renewal['started_at']:%Y-%m-%d %H:%M} UTC"
                via = (start or {}).get("via") or client.renewal["via"]  # --via may name another
                graph = self._graph(client, via, client.renewal["home_tenant"])
                result = self._drive(client_id, graph, graph.read(), verify_for, fresh=False,
                                     certificate=certificate)
                if result.stage == "waiting" and start is not None:
                    raise OperationFailed(
                        f"{resumed} waits to remove the old credential at Entra until "
                        f"{result.remove_at} UTC (--retire-after); `vault client abandon-renewal "
                        f"{client.name}` ends it now, keeping the old one at Entra, and a new "
                        "renewal can start then")
                if result.stage == "abandoned" and start is not None:
                    resumed += f" was given up ({result.resumed})"
                    result = None
                else:
                    resumed += f": {result.stage}"
            if result is None:
                if start is None:
                    raise BadInput(f"client {credential.name!r} has no renewal under way")
                client = self.core.load_client(client_id)
                if due_within is not None and not renewal_due(client, due_within,
                                                              self.core.now().date()):
                    return Renewal(client=client.name, kind=kind, stage="not due")
                # Graph first: a reader that may not read or a wrong tenant records nothing
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
        if reveal and result.new and result.stage in ("done", "waiting"):
            record = self.core.broker.record  # audited before it is shown
            record.detail.update({"step": "revealed", "revealed": result.new})
            self.core.broker.write(record)
            new = self.core.load_client(client_id).secret(result.new)
            result = replace(result, secret=new["value"])
        return replace(result, resumed=resumed or result.resumed)

    @staticmethod
    def _check_resumable(client: ClientCredential, kind: str | None,
                         start: dict[str, Any] | None, certificate: Any) -> None:
        """A command asking for a new renewal finishes the one under way only where that is
        what it asked for: the same kind, and a certificate renewal the same certificate."""
        renewal = client.renewal
        if kind is not None and kind != renewal["kind"]:
            raise OperationFailed(
                f"client {client.name!r} has a renewal of its "
                f"{renewal['kind'].replace('_', ' ')} under way: finish it with `vault maintain`"
                f" or give it up with `vault client abandon-renewal {client.name}`")
        held = client.secret(renewal["new_ref"]) if renewal["new_ref"] else None
        if certificate is not None and held is not None and \
                held["secret_id"] != certificate.thumbprint_sha1:
            raise OperationFailed(
                f"client {client.name!r} has a renewal under way with certificate "
                f"{held['secret_id']}, not this file's {certificate.thumbprint_sha1}: give that "
                f"certificate's file, or give the renewal up (`vault client abandon-renewal "
                f"{client.name}`)")

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
        renewal = dict(client.renewal)
        kind, home_tenant = renewal["kind"], renewal["home_tenant"]
        retired: list[str] = []
        kept: list[str] = []
        while True:
            stage = client.renewal["stage"]
            new_ref = client.renewal["new_ref"]
            if stage == "started" and fresh and kind == CLIENT_SECRET:
                made = self._add_password(client_id, client, graph, app.object_id)
                self.core.broker.record.detail["key_id"] = made.key_id
                client, _ = self._step(client_id, "received", lambda c, made=made: c.add_secret(
                    now=self.core.now(), value=made.secret, secret_id=made.key_id,
                    created_on=made.start, expires_on=made.end, pending=True))
            elif stage == "started":
                return self._abandon(client_id, client, graph, app, asked=False)
            elif stage == "received":
                new = client.secret(new_ref)
                if kind == CERTIFICATE:
                    app = self._upload(client_id, client, graph, app, new, certificate)
                elif not fresh and new["secret_id"].lower() not in {
                        p.key_id.lower() for p in app.passwords} and \
                        self.core.now() - client.renewal["started_at"] >= ABANDON_AFTER:
                    return self._give_up(client_id, client, "the new secret is no longer at "
                                                            "Entra (deleted there?)")
                self._verify(client, new, verify_for)
                app = graph.read()
                key_ids = self._removable(client, app)

                def verified(c: ClientCredential, key_ids: dict[str, str] = key_ids,
                             app: EntraApplication = app) -> list[str]:
                    old = c.verify_renewal(now=self.core.now(), key_ids=key_ids,
                                           by=self.core.who)
                    self._observe(c, app, home_tenant)
                    return old

                client, retired = self._step(client_id, "verified", verified)
                kept = [r for r in retired if r not in key_ids]
            elif self.core.now() < client.renewal["remove_at"]:
                return self._outcome(client, kind, "waiting", new_ref, retired=retired,
                                     kept=kept)
            else:
                removed = self._remove_old(client, graph, app)
                seen = graph.read() if removed else app
                refs = [old["ref"] for old in client.renewal["remove"]]

                def ended(c: ClientCredential, removed: list[str] = removed,
                          seen: EntraApplication = seen) -> None:
                    c.end_renewal(now=self.core.now(), outcome="finished", removed=removed)
                    self._observe(c, seen, home_tenant)

                client, _ = self._step(client_id, "finished", ended)
                return self._outcome(client, kind, "done", new_ref, retired=retired,
                                     removed=refs, kept=kept)

    def _removable(self, client: ClientCredential, app: EntraApplication) -> dict[str, str]:
        """{ref: keyId at Entra} of the old credentials the renewal may remove there: matched
        by Secret ID or thumbprint, or matched by hint alone and shown to be that credential
        (the old value still works at the token endpoint, and it is the only one at Entra with
        its hint). Anything else is left at Entra: it may be someone else's."""
        from adapters.oauth import OAuthFailure

        held, matches = self._matches(client, app)
        by_ref = {h.ref: h for h in held}
        removable = {}
        for ref, key_id in matches.items():
            h = by_ref[ref]
            if ref == client.renewal["new_ref"]:
                continue
            if h.kind == CERTIFICATE or (h.secret_id and h.secret_id.lower() == key_id.lower()):
                removable[ref] = key_id
                continue
            try:
                self.providers.oauth(client, use=client.secret(ref),
                                     tenant=client.renewal["home_tenant"]).client_credentials(
                    f"{client.profile.graph_resource}.default")
            except OAuthFailure:
                continue  # not the secret Entra lists with this hint, or already dead
            removable[ref] = key_id
        return removable

    def _add_password(self, client_id: str, client: ClientCredential, graph: GraphApps,
                      object_id: str) -> NewPassword:
        """addPassword (a refusal: `_end_if_refused`; left started, the next run looks for the
        secret by its nonce)."""
        from adapters.graph_apps import GraphRefused

        renewal = client.renewal
        try:
            return graph.add_password(object_id, renewal["display_name"], renewal["ends_at"])
        except GraphRefused as refused:
            self._end_if_refused(client_id, refused)
            raise

    def _end_if_refused(self, client_id: str, refused: Any) -> None:
        """A refusal that says Entra made nothing (a policy, a permission, a wrong request)
        ends the renewal; anything else (no answer, a 5xx, throttling) leaves it where it is:
        the next run looks at Entra again."""
        if refused.status in (400, 401, 403, 404):
            why = f"refused: {refused}"[:300]
            self._step(client_id, "refused", lambda c: c.end_renewal(
                now=self.core.now(), outcome=why, removed=[], by=self.core.who))

    def _abandon(self, client_id: str, client: ClientCredential, graph: GraphApps,
                 app: EntraApplication, *, asked: bool) -> Renewal:
        """A run died after the intent and before vault held the new secret: Entra may have
        made it (its display name carries the nonce). vault has no copy of it: remove it.
        Graph's reads may lag its writes: a renewal younger than ABANDON_AFTER is given up only
        when asked to."""
        renewal = client.renewal
        made = [p for p in app.passwords if renewal["nonce"] in (p.display_name or "")]
        if not made and not asked and \
                self.core.now() - renewal["started_at"] < ABANDON_AFTER:
            raise RenewalUnfinished(
                f"{client.name}: a renewal started at {renewal['started_at']:%H:%M} UTC stopped "
                "before vault held its secret, and Entra lists none for it yet (its lists can "
                "lag a few minutes): run it again in a few minutes")
        for p in made:
            graph.remove_password(app.object_id, p.key_id)
        what = (f"the secret Entra had made for it ({', '.join(p.key_id for p in made)}), which "
                "vault never held, is removed at Entra" if made else
                "Entra lists no secret made for it")
        self._step(client_id, "abandoned", lambda c: c.end_renewal(
            now=self.core.now(), outcome=f"given up: {what}", removed=[p.key_id for p in made],
            by=self.core.who))
        return Renewal(client=client.name, kind=CLIENT_SECRET, stage="abandoned", resumed=what)

    def _give_up(self, client_id: str, client: ClientCredential, why: str) -> Renewal:
        new_ref = client.renewal["new_ref"]
        self._step(client_id, "abandoned", lambda c: c.end_renewal(
            now=self.core.now(), outcome=f"given up: {why}", removed=[], by=self.core.who))
        return Renewal(client=client.name, kind=client.renewal["kind"], stage="abandoned",
                       new=new_ref, resumed=f"given up: {why}")

    @use_case("client abandon-renewal")
    def abandon(self, name: str, *, via: str | None = None) -> Renewal:
        """Give a renewal up: the new credential it holds (or one Entra made for it) is removed
        at Entra and retired in vault; the old credentials stay where they are."""
        credential = self.clients.credential(name)
        client_id = str(credential.id)
        with self._locked(credential):
            client = self.core.load_client(client_id)
            renewal = client.renewal
            if renewal is None:
                raise BadInput(f"client {client.name!r} has no renewal under way")
            graph = self._graph(client, via or renewal["via"], renewal["home_tenant"])
            app = graph.read()
            if renewal["stage"] == "started":
                return self._abandon(client_id, client, graph, app, asked=True)
            removed = []
            if renewal["stage"] == "received":
                new = client.secret(renewal["new_ref"])
                if new["kind"] == CLIENT_SECRET:
                    listed = [p.key_id for p in app.passwords
                              if p.key_id.lower() == new["secret_id"].lower()]
                    for key_id in listed:
                        graph.remove_password(app.object_id, key_id)
                else:
                    listed = [c.key_id for c in app.certificates
                              if c.thumbprint == new["secret_id"].upper()]
                    for key_id in listed:
                        graph.remove_key(app.object_id, key_id, self._proof(client, app.object_id))
                removed = listed
            what = ("the old credentials stay at Entra" if renewal["stage"] == "verified" else
                    f"{renewal['new_ref']} retired"
                    + (", removed at Entra" if removed else " (Entra did not list it)"))
            self._step(client_id, "abandoned", lambda c: c.end_renewal(
                now=self.core.now(), outcome=f"given up by {self.core.who}: {what}",
                removed=removed, by=self.core.who))
            return Renewal(client=client.name, kind=renewal["kind"], stage="abandoned",
                           new=renewal["new_ref"], resumed=what)

    def _upload(self, client_id: str, client: ClientCredential, graph: GraphApps,
                app: EntraApplication, new: dict[str, Any], certificate: Any) -> EntraApplication:
        """addKey, unless Entra lists the certificate already (an earlier run got that far; a
        refusal: `_end_if_refused`). Entra's listing after."""
        from adapters.graph_apps import GraphRefused

        if any(c.thumbprint == new["secret_id"].upper() for c in app.certificates):
            return app
        if certificate is None or certificate.thumbprint_sha1 != new["secret_id"]:
            raise RenewalUnfinished(
                f"certificate {new['ref']} of {client.name!r} is held but not at Entra yet: run "
                f"`vault client rotate-certificate {client.name} --via-graph "
                "--certificate-file PEM` with the same file to upload it, or give the renewal "
                f"up (`vault client abandon-renewal {client.name}`)")
        try:
            graph.add_key(app.object_id, certificate.der, client.renewal["display_name"],
                          self._proof(client, app.object_id))
        except GraphRefused as refused:
            self._end_if_refused(client_id, refused)
            raise
        return graph.read()

    def _proof(self, client: ClientCredential, object_id: str) -> str:
        from adapters.graph_apps import proof_of_possession

        current = client.current_secret(CERTIFICATE)
        if current is None:
            raise BadInput(f"client {client.name!r} holds no certificate to sign Graph's proof")
        return proof_of_possession(current["value"], current["secret_id"], object_id,
                                   self.core.now().timestamp())

    def _verify(self, client: ClientCredential, new: dict[str, Any], verify_for: float) -> None:
        """The new credential at the token endpoint (client credentials), retried while Entra
        propagates it (Entra lists it: checked before); one that never works in `verify_for`
        seconds stays held, unused, for the next run."""
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
                        "not used: run the same command again (or `vault maintain`) to go on, "
                        f"or give it up (`vault client abandon-renewal {client.name}`)"
                    ) from None
                waited += delay
                self.sleep(delay)
                delay = min(delay * 2, VERIFY_DELAY_MAX_S)  # 2, 4, 8, 15, 15 ... seconds

    def _remove_old(self, client: ClientCredential, graph: GraphApps,
                    app: EntraApplication) -> list[str]:
        """Remove at Entra the old credentials the renewal retired (those Entra no longer lists
        are gone already); their keyIds."""
        listed = {c.key_id.lower() for c in (*app.passwords, *app.certificates)}
        removed = []
        for old in client.renewal["remove"]:
            if old["key_id"].lower() in listed:
                if client.renewal["kind"] == CLIENT_SECRET:
                    graph.remove_password(app.object_id, old["key_id"])
                else:
                    graph.remove_key(app.object_id, old["key_id"],
                                     self._proof(client, app.object_id))
                removed.append(old["key_id"])
        return removed

    @staticmethod
    def _outcome(client: ClientCredential, kind: str, stage: str, new_ref: str, *,
                 retired: list[str], removed: list[str] | None = None,
                 kept: list[str] | None = None) -> Renewal:
        new = client.secret(new_ref)
        renewal = client.renewal or {}
        return Renewal(client=client.name, kind=kind, stage=stage, new=new_ref,
                       key_id=new["secret_id"], expires_on=_iso(new["expires_on"]),
                       retired=retired, removed=removed or [], kept=kept or [],
                       remove_at=_iso(renewal.get("remove_at")))


def renewal_due(client: ClientCredential, within_days: int, today: date) -> bool:
    """Whether the client's current secret ends (by Entra's date) within `within_days`."""
    current = client.current_secret(CLIENT_SECRET)
    if current is None or not client.entra:
        return False
    ends = {c["ref"]: c["end"] for c in client.entra.get("credentials", []) if c["ref"]}
    end = ends.get(current["ref"])
    return end is not None and (date.fromisoformat(end) - today).days <= within_days
