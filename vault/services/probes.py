"""The probe use case: can this grant read or send mail, and if not, why. Each result is recorded
on the grant (ProbeRecorded) and shown by `vault status` and `vault grant show`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from adapters.store.changes import Changes
from domain.credentials import ClientCredential
from domain.grants import ConsentGrant
from domain.vocabulary import SASL_MECHANISMS, TLS_MODES
from vault.core import apply_views, use_case
from vault.errors import BadInput
from vault.projections import grant_changes

if TYPE_CHECKING:  # the mail clients (ssl, email) are imported by the probes themselves
    from adapters.mail import ProbeResult, Target
    from vault.core import VaultCore
    from vault.providers import Providers
    from vault.services.grants import GrantService
    from vault.services.tokens import TokenService


@dataclass(frozen=True, kw_only=True)
class ProbeOutcome:
    """One protocol probed: the outcome, the server's greeting and reply, what vault makes of
    it (`diagnosis`, `checklist`) and protocol facts (`detail`, e.g. Graph's folder count).
    `mailbox` and `client` are named where one run probes several grants (maintain)."""

    mailbox: str | None = field(default=None, metadata={"omit_if_none": True})
    client: str | None = field(default=None, metadata={"omit_if_none": True})
    protocol: str
    outcome: str
    latency_ms: int | None
    greeting: str | None
    diagnosis: str | None
    detail: dict[str, Any]
    checklist: list[str]
    server_reply: str | None


@dataclass(eq=False)
class ProbeService:
    core: VaultCore
    grants: GrantService
    tokens: TokenService
    providers: Providers

    @use_case("probe")
    def probe(
        self, mailbox: str, *, client: str | None = None, protocol: str = "all",
        host: str | None = None, port: int | None = None, tls: str | None = None,
        mechanism: str = "xoauth2", send_test: bool = False, timeout: float = 20.0,
    ) -> list[ProbeOutcome]:
        from concurrent.futures import ThreadPoolExecutor

        from domain.mail_verdicts import OK

        row = self.grants.grant_row(mailbox, client)
        grant: ConsentGrant = self.core.load_grant(row.grant_uuid)
        credential: ClientCredential = self.core.load_client(row.client_uuid)
        protocols = list(grant.protocols) if protocol == "all" else [protocol]
        if protocol != "all" and protocol not in grant.protocols:
            raise BadInput(f"the grant of {grant.mailbox} covers {', '.join(grant.protocols)}, "
                           f"not {protocol}")
        if port is not None and len(protocols) > 1:
            raise BadInput("--port applies to one protocol: add --protocol")
        if mechanism not in SASL_MECHANISMS or (tls is not None and tls not in TLS_MODES):
            raise BadInput("--mechanism is xoauth2 or oauthbearer; --tls implicit, starttls "
                           "or plain")
        self.core.broker.record.detail.update({"protocols": protocols, "send_test": send_test})
        jobs = []
        for name in protocols:
            target = self.target(credential, grant, name, host, port, tls, mechanism, timeout)
            jobs.append((target, self.tokens.usable_token(row, name).token))
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            results = list(pool.map(lambda job: self._run(grant, credential, *job, send_test),
                                    jobs))
        self._record_probes(grant, credential, results)
        self.core.broker.record.detail["outcomes"] = {r.protocol: r.outcome for r in results}
        if any(r.outcome != OK for r in results):
            self.core.broker.record.outcome = "failed"
        return [ProbeOutcome(**r.as_dict()) for r in results]

    def target(self, credential: ClientCredential, grant: ConsentGrant, protocol: str,
               host: str | None, port: int | None, tls: str | None, mechanism: str,
               timeout: float) -> Target:
        from adapters.mail import Target
        from domain.mail_verdicts import DEFAULT_PORTS, mail_server

        default_port, default_tls = DEFAULT_PORTS[protocol]
        known = mail_server(credential.profile, credential.mail_servers, protocol) or {}
        host = host or known.get("host")
        if not host:
            raise BadInput(f"no {protocol} server is known for client {credential.name!r}: give "
                           f"--host, or record it with `vault client set-servers`")
        return Target(protocol=protocol, host=host,
                      port=port or known.get("port") or default_port,
                      tls=tls or known.get("tls") or default_tls, mechanism=mechanism,
                      user=grant.sasl_user, timeout=timeout, provider=credential.provider,
                      mailbox=grant.mailbox)

    def _run(self, grant: ConsentGrant, credential: ClientCredential, target: Target,
             token: Any, send_test: bool) -> ProbeResult:
        from adapters.mail import ProbeResult, probe, probe_graph
        from domain.mail_verdicts import NETWORK

        try:
            context = self.providers.tls_context()
        except Exception as e:  # noqa: BLE001 - reported as the probe's outcome
            return ProbeResult(target.protocol, NETWORK, diagnosis=str(e))
        if target.protocol != "graph":
            return probe(target, token, context, send_test=send_test and target.protocol == "smtp")
        scheme = "http" if target.tls == "plain" else "https"
        base = f"{scheme}://{target.host}" + (f":{target.port}" if target.port != 443 else "")
        return probe_graph(self.providers.http, base, grant.mailbox, token,
                           app_only=grant.app_only)

    def _record_probes(self, grant: ConsentGrant, credential: ClientCredential,
                       results: list[ProbeResult]) -> None:
        def attempt() -> None:
            fresh: ConsentGrant = self.core.load(UUID(str(grant.id)))
            for r in results:
                fresh.record_probe(now=self.core.now(), protocol=r.protocol, outcome=r.outcome,
                                   latency_ms=r.latency_ms, greeting=r.greeting,
                                   diagnosis=r.diagnosis)
            self.core.commit(fresh, changes=apply_views(Changes(), grant_changes(
                fresh, credential.provider, credential.google_testing)))

        self.core.retrying(attempt)
