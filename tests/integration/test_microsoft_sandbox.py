"""Microsoft-shaped behaviour, from `vault sandbox` (a real HTTP peer answering Microsoft's error
JSON): diagnosis of each error class, transient retries, secret verification, certificates,
app-only tokens, device code."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from domain.secret_value import SecretValue
from tests.conftest import Harness, add_sandbox_client
from tests.consent import SANDBOX_MAILBOX as MAILBOX
from tests.consent import sandbox_consent as consent
from tests.consent import sandbox_fail_next as fail_next
from tests.support import Sleeps


def refresh_in_process(h: Harness, sleeps: Sleeps | None = None):
    with h.app(sleep=sleeps if sleeps is not None else Sleeps()) as app:
        return app.tokens.refresh(MAILBOX)


@pytest.mark.parametrize("flow", ["browser", "manual", "device"])
def test_consent_flows_against_the_sandbox(vault: Harness, sandbox, flow: str) -> None:
    add_sandbox_client(vault, sandbox)
    result = consent(vault, sandbox, flow, protocols=("imap", "graph"))
    assert result.status == "active"
    imap = vault.ok("token", MAILBOX).out.strip()
    graph = vault.ok("token", MAILBOX, "--protocol", "graph").out.strip()
    assert imap.startswith("sbx-at.") and graph.startswith("sbx-at.") and imap != graph
    assert sandbox.state.stats["refresh_token"] == 1  # the second resource, from the one RT


def test_each_error_class_reaches_the_admin_with_its_advice(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    consent(vault, sandbox)
    for code, words in ((7000222, "client secret has expired"),
                        (700082, "refresh token or code has expired"),
                        (65001, "consent is missing"), (53003, "Conditional Access")):
        fail_next(sandbox, code)
        (result,) = refresh_in_process(vault)
        assert result.outcome == "failed" and words in result.error, result
        assert f"AADSTS{code}" in result.error and "trace id" in result.error
    shown = json.loads(vault.ok("grant", "show", MAILBOX, "--json").out)
    # refusals seconds apart never mark a grant for re-consent: it is "refused once"
    assert shown["status"] == "active" and shown["tokens"]["refresh_refused"]


def test_transient_answers_are_retried_honouring_retry_after(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    consent(vault, sandbox)
    fail_next(sandbox, status=429)
    fail_next(sandbox, status=503)
    sleeps = Sleeps()
    (result,) = refresh_in_process(vault, sleeps)
    assert result.outcome == "refreshed"
    assert sleeps[0] == 1.0  # Retry-After: 1
    assert 2.0 <= sleeps[1] <= 2.5  # exponential back-off
    events = json.loads(vault.ok("history", MAILBOX, "--json").out)["events"]
    failures = [e["data"] for e in events if e["event"] == "RotationFailed"]
    assert [(f["error_class"], f["transient"]) for f in failures] == [
        ("throttled", True), ("transient", True)]
    assert json.loads(vault.ok("grant", "show", MAILBOX, "--json").out)["status"] == "active"


def test_a_provider_that_cannot_be_reached_is_not_a_credential_problem(vault: Harness,
                                                                       sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    consent(vault, sandbox, clock=lambda: datetime.now(UTC) - timedelta(hours=2))
    sandbox.stop()
    with vault.app(sleep=Sleeps()) as app, \
            pytest.raises(Exception, match="could not be reached") as caught:
        app.tokens.access_token(MAILBOX)
    assert "secret" not in str(caught.value)
    assert f"127.0.0.1:{sandbox.server_address[1]}" in str(caught.value)
    assert json.loads(vault.ok("grant", "show", MAILBOX, "--json").out)["status"] == "active"


def test_invalid_grant_70000_is_retried_once_and_a_retry_that_works_clears_it(
        vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    consent(vault, sandbox)
    fail_next(sandbox, 70000)
    assert refresh_in_process(vault)[0].outcome == "refreshed"  # the retry worked
    shown = json.loads(vault.ok("grant", "show", MAILBOX, "--json").out)
    assert shown["status"] == "active" and shown["tokens"]["refresh_refused"] is None


def test_rotate_secret_verify_waits_for_a_new_secret_to_work(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    consent(vault, sandbox)
    new_secret = "Brand~New.Secret-value-0123456789"
    sandbox.state.secret = new_secret  # the app registration now has only the new secret
    sleeps = Sleeps()
    with vault.app(sleep=sleeps) as app:
        fail_next(sandbox, 7000215, count=2)  # not working yet: it is still propagating
        result = app.clients.rotate_secret("demo", secret=SecretValue(new_secret),
                                                    verify_for=60)
    assert result.verified and sleeps == [5.0, 5.0]
    secrets = json.loads(vault.ok("client", "show", "demo", "--json").out)["secrets"]
    assert [(s["ref"], s["current"], s["retired_at"] is None) for s in secrets] == [
        ("s1", False, False), ("s2", True, True)]
    assert refresh_in_process(vault)[0].outcome == "refreshed"


def test_app_only_tokens_need_a_concrete_tenant(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    token = vault.ok("app-token", "demo").out.strip()
    assert token.startswith("sbx-app.")
    vault.ok("client", "add", "generic", "--provider", "microsoft", "--tenant", "common",
             "--client-id", "5a1db0c0-0000-4000-8000-00000000c11e", "--secret-stdin",
             input="Sandbox~Secret.Value-not-for-real-use-0123")
    refused = vault.run("app-token", "generic")
    assert refused.code == 2 and "AADSTS9001023" in refused.err
    assert sandbox.state.stats["client_credentials"] == 1


def add_certificate_client(h: Harness, sandbox, tmp_path, days: int = 20) -> None:
    """`demo`, a sandbox client that authenticates with a certificate the sandbox knows."""
    import trustme
    from cryptography import x509

    from sandbox import settings_line

    pem = trustme.CA().issue_cert("vault-app.example.test", key_type=trustme.KeyType.RSA,
                                  not_after=datetime.now(UTC) + timedelta(days=days))
    path = tmp_path / "app.pem"
    path.write_bytes(pem.private_key_pem.bytes() + pem.cert_chain_pems[0].bytes())
    sandbox.state.certificates.append(x509.load_pem_x509_certificate(
        pem.cert_chain_pems[0].bytes()))
    s = json.loads(settings_line(sandbox))
    h.ok("client", "add", "demo", "--provider", "microsoft", "--tenant", s["tenant"],
         "--client-id", s["client_id"], "--certificate-file", str(path), "--token-url",
         s["token_url"], "--authorize-url", s["authorize_url"])


def test_a_certificate_credential_signs_its_client_assertions(vault: Harness, sandbox,
                                                              tmp_path) -> None:
    add_certificate_client(vault, sandbox, tmp_path)
    shown = json.loads(vault.ok("client", "show", "demo", "--json").out)
    assert shown["auth_method"] == "private_key_jwt"
    assert shown["secrets"][0]["kind"] == "certificate" and shown["secrets"][0]["expires_on"]
    assert vault.ok("app-token", "demo").out.startswith("sbx-app.")
    assert b"PRIVATE KEY" not in vault.stored_bytes()
    expiry = json.loads(vault.ok("expiry", "--json").out)["findings"]
    assert [(f["kind"], f["severity"], f["days_left"]) for f in expiry] == [
        ("certificate_expiry", "warning", 20)]


def test_device_polling_honours_slow_down(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    sandbox.state.slow_downs = 2
    sleeps = Sleeps()
    consent(vault, sandbox, "device", sleep=sleeps)
    assert sleeps == [1, 6, 11]  # the given interval, then +5 s for each slow_down


def test_one_token_is_for_one_resource_as_the_domain_reads_scopes(sandbox) -> None:
    """The sandbox reads scopes with domain/scopes.py: mail and Graph in one request is AADSTS700022;
    Exchange's two global resources (delegated and app-only) are one resource."""
    from sandbox import settings_line

    s = json.loads(settings_line(sandbox))

    def answer(scope: str) -> dict:
        return httpx.post(s["token_url"], data={
            "grant_type": "refresh_token", "refresh_token": "sbx-rt.unknown", "scope": scope,
            "client_id": s["client_id"], "client_secret": s["client_secret"]}).json()

    mixed = answer("https://outlook.office.com/IMAP.AccessAsUser.All Mail.Read offline_access")
    assert mixed["error_codes"] == [700022]
    one = answer("https://outlook.office.com/IMAP.AccessAsUser.All "
                 "https://outlook.office365.com/SMTP.Send offline_access openid")
    assert one["error_codes"] == [70000]  # past the resource check: the refresh token is unknown
    other_cloud = answer("https://outlook.office365.us/IMAP.AccessAsUser.All Mail.Read")
    assert other_cloud["error_codes"] == [700022]  # another cloud's: one more resource


def test_the_sandbox_is_a_peer_only_its_command_imports() -> None:
    """Nothing in vault/, adapters/ or domain/ imports the sandbox but `vault sandbox`'s command,
    inside its function, so no other command loads it."""
    import ast
    import subprocess
    import sys

    from tests.support import ROOT as root
    importers = []
    for package in ("vault", "adapters", "domain"):
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            top_level = set(map(id, tree.body))
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                         else [])
                if any(n == "sandbox" or n.startswith("sandbox.") for n in names):
                    importers.append((str(path.relative_to(root)), id(node) in top_level))
    assert importers == [("vault/cli/sandbox.py", False)]
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "vault", "status", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Usage:" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert "vault" in imported
    assert not {m for m in imported if m == "sandbox" or m.startswith("sandbox.")}
