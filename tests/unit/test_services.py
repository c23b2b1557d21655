"""Each service built alone, as the composition root would build it, over a core on a temporary
SQLite vault (KDF at its floor); HTTP answered by httpx's MockTransport. The same paths are
proven end to end against the real peers elsewhere (oidc-provider, the sandbox, Dovecot)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from adapters.keyslots import write_key_file
from adapters.other_tools import Account
from domain.secret_value import SecretValue
from tests.support import Clock, Sleeps
from vault.bootstrap import Settings, init_vault, open_settings_store, unlock_store
from vault.errors import BadInput
from vault.providers import Providers
from vault.render.machine import to_json
from vault.services.alerts import AlertService
from vault.services.audit import AuditService
from vault.services.backups import BackupService
from vault.services.clients import ClientService
from vault.services.consent import ConsentService
from vault.services.entra import EntraService
from vault.services.grants import GrantService
from vault.services.importers import ImportService
from vault.services.keys import KeyService
from vault.services.maintenance import MaintainPlan, MaintenanceService
from vault.services.probes import ProbeService
from vault.services.reports import ReportService
from vault.services.tokens import TokenService

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ISSUER = "https://idp.example.test"
SECRET = "corp-secret-value-0123"


class Provider:
    """An identity provider as MockTransport answers it: discovery and a token endpoint; every
    request is kept."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.token_answers: list[httpx.Response] = []
        self.issued = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={
                "issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/authorize",
                "token_endpoint": f"{ISSUER}/token"})
        if request.url.path == "/token":
            if self.token_answers:
                return self.token_answers.pop(0)
            self.issued += 1
            return httpx.Response(200, json={
                "access_token": f"AT-{self.issued}", "token_type": "Bearer", "expires_in": 3600,
                "refresh_token": f"RT-{self.issued}-rotated", "scope": "mail"})
        if request.url.path == "/hook":
            return httpx.Response(204)
        return httpx.Response(404)


@pytest.fixture
def core(tmp_path: Path):
    settings = Settings(home=tmp_path / "home")
    material = write_key_file(str(tmp_path / "key"))
    clock = Clock(NOW)
    init_vault(settings, [(material, "test")], kdf="interactive", clock=clock)
    core = unlock_store(open_settings_store(settings), lambda header: material, clock=clock)
    yield core
    core.close()


@pytest.fixture
def provider() -> Provider:
    return Provider()


@pytest.fixture
def providers(provider: Provider):
    providers = Providers(transport=httpx.MockTransport(provider))
    yield providers
    providers.close()


def _clients(core, providers, sleeps: Sleeps | None = None) -> ClientService:
    return ClientService(core, providers=providers, sleep=sleeps if sleeps is not None else Sleeps())


def _with_grant(core, providers) -> tuple[ClientService, GrantService]:
    clients = _clients(core, providers)
    grants = GrantService(core, clients=clients, providers=providers)
    clients.add_client(name="corp", provider="custom", client_id="corp-client",
                       secret=SecretValue(SECRET), scopes=("mail",),
                       endpoints={"issuer": ISSUER, "token_url": None})
    grants.import_grant(client="corp", mailbox="ops@example.test", protocols=("imap",),
                        refresh_token=SecretValue("RT-0-seed"))
    return clients, grants


def test_clients_discovers_a_custom_provider_through_the_one_http_client(
        core, providers, provider) -> None:
    clients = _clients(core, providers)
    added = clients.add_client(name="corp", provider="custom", client_id="corp-client",
                               secret=SecretValue(SECRET),
                               endpoints={"issuer": ISSUER, "token_url": None})
    assert added.name == "corp"
    assert [str(r.url) for r in provider.requests] == [
        f"{ISSUER}/.well-known/openid-configuration"]
    shown = clients.show_client("corp")
    assert shown.endpoints["token_url"] == f"{ISSUER}/token"
    assert SECRET not in to_json(shown) and SECRET not in repr(shown)
    revealed = clients.show_client("corp", reveal_secret=True)
    assert revealed.secret.reveal() == SECRET  # a SecretValue: redacted until revealed
    assert SECRET not in to_json(revealed) and SECRET not in repr(revealed)


def test_grants_import_and_list(core, providers) -> None:
    _, grants = _with_grant(core, providers)
    (row,) = grants.list_grants()
    assert (row.mailbox, row.client, row.status) == ("ops@example.test", "corp", "active")


def test_tokens_refresh_at_the_token_endpoint_and_back_off_with_the_injected_sleep(
        core, providers, provider) -> None:
    clients, grants = _with_grant(core, providers)
    sleeps = Sleeps()
    tokens = TokenService(core, clients=clients, grants=grants, providers=providers,
                          sleep=sleeps)
    provider.token_answers.append(httpx.Response(503, headers={"Retry-After": "7"}))
    token = tokens.access_token("ops@example.test")
    assert token.token.reveal() == "AT-1" and token.refreshed
    assert sleeps == [7.0]
    sent = provider.requests[-1].content.decode()
    assert "refresh_token=RT-0-seed" in sent and "client_secret" in sent


def test_consent_refuses_an_unknown_flow_before_anything_is_sent(
        core, providers, provider) -> None:
    clients, grants = _with_grant(core, providers)
    provider.requests.clear()
    consent = ConsentService(core, clients=clients, grants=grants, providers=providers,
                             sleep=Sleeps())
    with pytest.raises(BadInput, match="--flow must be one of"):
        consent.consent("corp", mailbox="new@example.test", protocols=("imap",), flow="carrier",
                        ui=None)  # type: ignore[arg-type]
    assert provider.requests == []


def test_probes_need_a_known_mail_server(core, providers) -> None:
    clients, grants = _with_grant(core, providers)
    tokens = TokenService(core, clients=clients, grants=grants, providers=providers,
                          sleep=Sleeps())
    probes = ProbeService(core, grants=grants, tokens=tokens, providers=providers)
    with pytest.raises(BadInput, match="no imap server is known for client 'corp'"):
        probes.probe("ops@example.test", protocol="imap")


def test_keys_list_the_keyslots(core) -> None:
    (slot,) = KeyService(core).list_keyslots()
    assert (slot.kind, slot.label) == ("keyfile", "test")


def test_audit_log_holds_every_use_case(core, providers) -> None:
    _with_grant(core, providers)
    actions = [e.action for e in AuditService(core).audit_log()]
    assert actions == ["init", "client add", "grant import"]


def test_reports_status_from_the_read_models(core, providers) -> None:
    clients, grants = _with_grant(core, providers)
    status = ReportService(core, clients=clients, grants=grants,
                           audit=AuditService(core)).status()
    assert [c.name for c in status.clients] == ["corp"]
    assert [g.mailbox for g in status.grants] == ["ops@example.test"]


def test_alerts_post_a_finding_to_the_webhook(core, providers, provider) -> None:
    clients, grants = _with_grant(core, providers)
    tokens = TokenService(core, clients=clients, grants=grants, providers=providers,
                          sleep=Sleeps())
    alerts = AlertService(
        core, grants=grants, reports=ReportService(core, clients=clients, grants=grants,
                                                   audit=AuditService(core)),
        probes=ProbeService(core, grants=grants, tokens=tokens, providers=providers),
        tokens=tokens, providers=providers, sleep=Sleeps())
    # the client's secret has no recorded expiry: an info finding
    result = alerts.alert(webhook=SecretValue(f"{ISSUER}/hook"), min_severity="info")
    assert result.sent == 1, result
    (posted,) = [r for r in provider.requests if r.url.path == "/hook"]
    assert "client_secret_expiry_unknown" in posted.content.decode()


def test_maintenance_runs_its_steps(core, providers) -> None:
    clients, grants = _with_grant(core, providers)
    tokens = TokenService(core, clients=clients, grants=grants, providers=providers,
                          sleep=Sleeps())
    probes = ProbeService(core, grants=grants, tokens=tokens, providers=providers)
    audit = AuditService(core)
    reports = ReportService(core, clients=clients, grants=grants, audit=audit)
    alerts = AlertService(core, grants=grants, reports=reports, probes=probes, tokens=tokens,
                          providers=providers, sleep=Sleeps())
    entra = EntraService(core, clients=clients, providers=providers, sleep=Sleeps())
    maintenance = MaintenanceService(core, tokens=tokens, probes=probes, alerts=alerts,
                                     audit=audit, entra=entra)
    steps = maintenance.maintain(MaintainPlan(probe_every=None))
    assert [(s.step, s.outcome) for s in steps][:3] == [
        ("sync", "skipped"), ("refresh", "ok"), ("renew", "skipped")]
    assert all(s.outcome != "failed" for s in steps), steps


def test_backups_write_a_proven_copy(core, providers, tmp_path: Path) -> None:
    _with_grant(core, providers)
    result = BackupService(core).backup(tmp_path / "vault.backup")
    assert result.aggregates == 3 and (tmp_path / "vault.backup").exists()


def test_importers_register_the_app_once_and_import_each_mailbox(core, providers) -> None:
    clients = _clients(core, providers)
    importers = ImportService(core, clients=clients, grants=GrantService(
        core, clients=clients, providers=providers))
    accounts = [Account(source="test", mailbox=m, provider="google", client_id="abc",
                        refresh_token=SecretValue(f"1//0g-{m}"), protocols=("imap",))
                for m in ("a@example.test", "b@example.test")]
    results = importers.import_accounts(accounts)
    assert [r.outcome for r in results] == ["imported", "imported"]
    assert len(clients.list_clients()) == 1
