"""A passing fault never costs a grant, and every fault says what it is (issue 9, items 8, 9,
10, 17 and 18): Microsoft's transient codes retried, a refused refresh token "refused once"
until a later attempt is refused too, network failures named by host, port and cause, client
assertions as Microsoft documents them, and each documented AADSTS code with its own advice.

Recorded Microsoft error bodies test the classification (tests/unit/test_error_classification.py);
`vault sandbox` (a real HTTP peer
answering Microsoft's error JSON), a closed port and a TLS server with an untrusted certificate
test the whole path."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from adapters.oauth import diagnose
from sandbox import settings_line
from tests.conftest import Harness, add_sandbox_client
from tests.consent import SANDBOX_MAILBOX as MAILBOX
from tests.consent import ScriptedConsent, sandbox_sign_in
from tests.consent import consent as run_consent
from tests.consent import sandbox_consent as consent
from tests.consent import sandbox_fail_next as fail_next
from tests.support import Sleeps, microsoft_error


def in_process(h: Harness, clock=None, sleeps: Sleeps | None = None):
    app = h.app(clock=clock, sleep=sleeps if sleeps is not None else Sleeps())
    return app


def grant_shown(h: Harness) -> dict:
    return json.loads(h.ok("grant", "show", MAILBOX, "--json").out)


# -- item 8: transient means retried ---------------------------------------------------------------


def test_transient_codes_from_the_sandbox_are_retried_with_back_off(vault: Harness,
                                                                    sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    consent(vault, sandbox)
    for code in (90006, 90033, 90090):
        fail_next(sandbox, code)
    sleeps = Sleeps()
    with in_process(vault, sleeps=sleeps) as app:
        (result,) = app.tokens.refresh(MAILBOX)
    assert result.outcome == "refreshed"  # the fourth attempt worked
    assert len(sleeps) == 3 and 1.0 <= sleeps[0] <= 1.5 and 2.0 <= sleeps[1] <= 2.5
    events = json.loads(vault.ok("history", MAILBOX, "--json").out)["events"]
    failures = [e["data"] for e in events if e["event"] == "RotationFailed"]
    assert [(f["error_code"], f["error_class"], f["transient"]) for f in failures] == [
        ("AADSTS90006", "transient", True), ("AADSTS90033", "transient", True),
        ("AADSTS90090", "transient", True)]
    shown = grant_shown(vault)
    assert shown["status"] == "active" and shown["tokens"]["refresh_refused"] is None


def test_a_transient_code_that_persists_is_reported_as_transient(vault: Harness,
                                                                 sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    consent(vault, sandbox)
    fail_next(sandbox, 90090, count=4)
    with in_process(vault) as app:
        (result,) = app.tokens.refresh(MAILBOX, due=False, everything=False)
    assert result.outcome == "failed"
    error = result.error
    assert "a temporary problem at the provider (AADSTS90090)" in error
    assert "tried 4 times" in error and "nothing retries it until `vault refresh`" in error
    assert "app registration" not in error and "re-consent" not in error
    assert grant_shown(vault)["status"] == "active"


# -- item 9: "second consecutive failure" means two attempts apart in time --------------------------


def test_a_refusal_twice_within_one_command_leaves_the_grant_refused_once(vault: Harness,
                                                                          sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    consent(vault, sandbox)
    fail_next(sandbox, 70000, count=2)  # the refusal and its retry one second later
    with in_process(vault) as app:
        (result,) = app.tokens.refresh(MAILBOX)
    assert result.outcome == "failed" and "refresh refused once" in result.error
    assert "marked for re-consent" not in result.error
    shown = grant_shown(vault)
    assert shown["status"] == "active" and shown["tokens"]["refresh_refused"]


def test_only_a_refusal_ten_minutes_after_the_first_marks_the_grant(vault: Harness,
                                                                    sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    consent(vault, sandbox, clock=lambda: datetime.now(UTC) - timedelta(hours=2))
    # `vault token` refreshes (the cached token is two hours old) and is refused once
    fail_next(sandbox, 70000, count=2)
    first = vault.run("token", MAILBOX)
    assert first.code == 1 and first.out == ""
    assert "the provider refused the refresh token (AADSTS70000)" in first.err
    assert "refresh refused once" in first.err and "marks the grant for re-consent" in first.err
    assert "nothing retries it before the next `vault token` call" in first.err
    refused = grant_shown(vault)["tokens"]["refresh_refused"]
    since = datetime.fromisoformat(refused["since"])
    counts_from = datetime.fromisoformat(refused["counts_from"])
    assert counts_from - since == timedelta(minutes=10)
    assert counts_from.strftime("%Y-%m-%d %H:%M") in first.err
    # shown by `status` and `grant list`, in tables and JSON
    status = json.loads(vault.ok("status", "--json").out)
    assert status["grants"][0]["refresh_refused"] == refused
    assert status["grants"][0]["status"] == "active"
    assert "refresh refused once" in vault.ok("status").out
    assert "active, refresh refused once" in vault.ok("grant", "list").out
    assert json.loads(vault.ok("grant", "list", "--json").out)[0]["refresh_refused"] == refused
    assert "a further refusal from" in vault.ok("grant", "show", MAILBOX).out

    def at(minutes: float):
        return lambda: since + timedelta(minutes=minutes)

    # a later command 9 minutes on: still refused once
    fail_next(sandbox, 70000, count=2)
    with in_process(vault, clock=at(9)) as app, pytest.raises(Exception) as caught:
        app.tokens.access_token(MAILBOX)
    assert "refresh refused once" in str(caught.value)
    assert grant_shown(vault)["status"] == "active"
    # 10 minutes after the first refusal, another command is refused: re-consent
    fail_next(sandbox, 70000, count=2)
    with in_process(vault, clock=at(10)) as app, pytest.raises(Exception) as caught:
        app.tokens.access_token(MAILBOX)
    assert "the grant is now marked for re-consent" in str(caught.value)
    shown = grant_shown(vault)
    assert shown["status"] == "needs-reconsent" and shown["tokens"]["refresh_refused"] is None


def test_the_refusal_interval_is_a_shared_setting(vault: Harness, sandbox) -> None:
    vault.ok("config", "set", "invalid_grant_interval_minutes", "30")
    shown = json.loads(vault.ok("config", "show", "--json").out)["expiry_thresholds"]
    assert shown["invalid_grant_interval_minutes"] == 30
    refused = vault.run("config", "set", "invalid_grant_interval_minutes", "20000")
    assert refused.code == 2 and "minutes from 0 to 10080" in refused.err
    add_sandbox_client(vault, sandbox)
    consent(vault, sandbox)
    start = datetime.now(UTC)
    fail_next(sandbox, 70000, count=2)
    with in_process(vault, clock=lambda: start) as app:
        assert app.tokens.refresh(MAILBOX)[0].outcome == "failed"
    fail_next(sandbox, 70000, count=2)
    with in_process(vault, clock=lambda: start + timedelta(minutes=11)) as app:
        assert "refresh refused once" in app.tokens.refresh(MAILBOX)[0].error
    assert grant_shown(vault)["status"] == "active"
    fail_next(sandbox, 70000, count=2)
    with in_process(vault, clock=lambda: start + timedelta(minutes=30)) as app:
        assert "marked for re-consent" in app.tokens.refresh(MAILBOX)[0].error
    assert grant_shown(vault)["status"] == "needs-reconsent"


def test_a_success_between_two_refusals_starts_over(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    consent(vault, sandbox)
    start = datetime.now(UTC)
    fail_next(sandbox, 70000, count=2)
    with in_process(vault, clock=lambda: start) as app:
        assert app.tokens.refresh(MAILBOX)[0].outcome == "failed"
    with in_process(vault, clock=lambda: start + timedelta(minutes=5)) as app:
        assert app.tokens.refresh(MAILBOX)[0].outcome == "refreshed"
    assert grant_shown(vault)["tokens"]["refresh_refused"] is None
    fail_next(sandbox, 70000, count=2)
    with in_process(vault, clock=lambda: start + timedelta(minutes=12)) as app:
        assert "refresh refused once" in app.tokens.refresh(MAILBOX)[0].error
    assert grant_shown(vault)["status"] == "active"


# -- item 10: network errors say where and why -----------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client_at(h: Harness, token_url: str) -> None:
    h.ok("client", "add", "down", "--provider", "microsoft", "--tenant", "contoso.onmicrosoft.com",
         "--client-id", "5a1db0c0-0000-4000-8000-00000000c11e", "--secret-stdin",
         "--token-url", token_url, input="Sandbox~Secret.Value-not-for-real-use-0123")
    h.ok("grant", "import", "--client", "down", "--mailbox", MAILBOX, "--protocols", "imap",
         "--refresh-token-stdin", input="M.R3_BAY.refresh-token-0123456789")


def test_a_closed_port_names_host_port_and_cause_and_what_happens_next(vault: Harness) -> None:
    port = _closed_port()
    _client_at(vault, f"http://127.0.0.1:{port}/contoso.onmicrosoft.com/oauth2/v2.0/token")
    sleeps = Sleeps()
    with in_process(vault, sleeps=sleeps) as app:
        (forced,) = app.tokens.refresh(MAILBOX)
    error = forced.error
    assert f"the provider could not be reached at 127.0.0.1:{port} (connection refused)" in error
    assert f"tried 4 times, {sum(sleeps):.0f} s of back-off" in error and len(sleeps) == 3
    assert "nothing retries it until `vault refresh` runs again" in error
    assert "secret" not in error and "consent" not in error
    with in_process(vault) as app, pytest.raises(Exception) as caught:
        app.tokens.access_token(MAILBOX)
    assert f"127.0.0.1:{port} (connection refused)" in str(caught.value)
    assert "nothing retries it before the next `vault token` call" in str(caught.value)
    assert grant_shown(vault)["status"] == "active"


class UntrustedTLSServer:
    """A TLS server on loopback whose certificate comes from a CA nobody trusts (trustme); it
    completes the handshake with whoever trusts that CA, then closes without an HTTP answer."""

    def __init__(self, tmp_path) -> None:
        import trustme

        self.ca = trustme.CA()
        self.ca_file = tmp_path / "untrusted-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        self.context = context
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()


def test_an_untrusted_tls_certificate_is_named_and_not_retried(vault: Harness, tmp_path,
                                                               monkeypatch) -> None:
    server = UntrustedTLSServer(tmp_path)
    try:
        _client_at(vault, f"https://127.0.0.1:{server.port}/t/oauth2/v2.0/token")
        sleeps = Sleeps()
        with in_process(vault, sleeps=sleeps) as app:
            (result,) = app.tokens.refresh(MAILBOX)
        error = result.error
        assert (f"the TLS connection to the provider failed at 127.0.0.1:{server.port} (TLS "
                "failure: certificate not trusted (unable to get local issuer certificate))"
                in error)
        assert "VAULT_CA_FILE" in error and sleeps == [] and "tried" not in error
        # trusting its CA, the handshake works and the next cause is named
        monkeypatch.setenv("VAULT_CA_FILE", str(server.ca_file))
        with in_process(vault) as app:
            (result,) = app.tokens.refresh(MAILBOX)
        assert (f"could not be reached at 127.0.0.1:{server.port} (the server closed the "
                "connection without an HTTP answer)") in result.error
    finally:
        server.close()


# -- item 17 (assertion) and 18: certificate assertions and the codes Microsoft documents ----------


def _certificate(tmp_path, name: str = "vault-app.example.test"):
    import trustme
    from cryptography import x509

    pem = trustme.CA().issue_cert(name, key_type=trustme.KeyType.RSA,
                                  not_after=datetime.now(UTC) + timedelta(days=200))
    path = tmp_path / f"{name}.pem"
    path.write_bytes(pem.private_key_pem.bytes() + pem.cert_chain_pems[0].bytes())
    return path, x509.load_pem_x509_certificate(pem.cert_chain_pems[0].bytes())


def _certificate_client(h: Harness, sandbox, path) -> None:
    s = json.loads(settings_line(sandbox))
    h.ok("client", "add", "demo", "--provider", "microsoft", "--tenant", s["tenant"],
         "--client-id", s["client_id"], "--certificate-file", str(path), "--token-url",
         s["token_url"], "--authorize-url", s["authorize_url"])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_client_assertions_are_ps256_with_the_sha256_thumbprint(vault: Harness, sandbox,
                                                                tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization

    path, certificate = _certificate(tmp_path)
    sandbox.state.certificates.append(certificate)
    _certificate_client(vault, sandbox, path)
    assert vault.ok("app-token", "demo").out.startswith("sbx-app.")
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert sandbox.state.assertions == [
        {"alg": "PS256", "x5t#S256": _b64url(hashlib.sha256(der).digest())}]


def test_a_certificate_stored_without_its_sha256_thumbprint_signs_rs256_until_added_again(
        vault: Harness, sandbox, tmp_path) -> None:
    """A CertificateAdded of version 1 (upcast: no SHA-256 thumbprint) still authenticates with
    RS256 and x5t; adding the same certificate again records the SHA-256 thumbprint."""
    from cryptography.hazmat.primitives import hashes

    from adapters.certificates import load_certificate_credential
    from domain.secret_value import SecretValue

    path, certificate = _certificate(tmp_path)
    sandbox.state.certificates.append(certificate)
    _certificate_client(vault, sandbox, path)
    credential = load_certificate_credential(SecretValue(path.read_text()))
    token_url = json.loads(settings_line(sandbox))["token_url"]
    with vault.app() as app:  # what a version-1 event holds once upcast
        app.clients.add_client(name="old", provider="microsoft", tenant="sandbox.onmicrosoft.com",
                               client_id=sandbox.state.client_id,
                               certificate=replace(credential, thumbprint_sha256=None),
                               auth_method="private_key_jwt", endpoints={"token_url": token_url})
    assert vault.ok("app-token", "old").out.startswith("sbx-app.")
    assert sandbox.state.assertions[-1] == {
        "alg": "RS256", "x5t": _b64url(certificate.fingerprint(hashes.SHA1()))}  # noqa: S303
    vault.ok("client", "add-certificate", "old", "--certificate-file", str(path))
    assert vault.ok("app-token", "old").out.startswith("sbx-app.")
    assert sandbox.state.assertions[-1]["alg"] == "PS256"


def test_a_certificate_the_app_does_not_hold_is_a_failed_assertion_not_a_secret(
        vault: Harness, sandbox, tmp_path) -> None:
    path, _ = _certificate(tmp_path)
    _, registered = _certificate(tmp_path, "another-app.example.test")
    sandbox.state.certificates.append(registered)  # the app registration holds another one
    _certificate_client(vault, sandbox, path)
    refused = vault.run("app-token", "demo")
    assert refused.code == 1 and refused.out == ""
    assert "the client assertion failed signature validation (AADSTS700027)" in refused.err
    assert "thumbprint" in refused.err and "Secret ID" not in refused.err


def test_an_expired_device_code_is_said_to_be_one(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    sandbox.state.device_ttl = 0  # nobody signs in before the code expires
    ui = ScriptedConsent(sandbox_sign_in, MAILBOX, "sandbox", device_approver=lambda *args: None)
    with pytest.raises(Exception) as caught:
        run_consent(vault, ui, client="demo", mailbox=MAILBOX, flow="device")
    message = str(caught.value)
    assert "the device code expired before the sign-in finished (expired_token)" in message
    assert "--flow device" in message and "authorization code" not in message


DOCUMENTED = {  # code: (class, words its advice must carry)
    50057: ("user_disabled", "re-enables the account"),
    7000112: ("app_disabled", "Enabled for users to sign-in"),
    70001: ("app_disabled", "Enabled for users to sign-in"),
    50055: ("password_expired", "changes or resets the password"),
    50144: ("password_expired", "changes or resets the password"),
    50132: ("password_expired", "changes or resets the password"),
    50133: ("password_expired", "changes or resets the password"),
    53000: ("policy_blocked", "compliant device"),
    53001: ("policy_blocked", "domain-joined device"),
    53002: ("policy_blocked", "approved client apps"),
    530032: ("policy_blocked", "security policies"),
    50072: ("policy_blocked", "MFA registration"),
    50074: ("policy_blocked", "complete MFA"),
    9002313: ("request_malformed", "token URL, tenant and scopes"),
    1002016: ("tls_version", "TLS-inspecting proxy"),
    50020: ("user_not_in_tenant", "guest (B2B)"),
    50105: ("user_not_assigned", "assigns the user"),
    700024: ("assertion_time", "check the clock"),
    65004: ("consent_declined", "accept the permissions"),
    90055: ("throttled", "back off"),
    50147: ("pkce", "`code_challenge`"),
    700027: ("certificate_assertion", "compare the thumbprint"),
}


def test_each_documented_code_reaches_the_admin_with_its_own_advice(vault: Harness,
                                                                    sandbox) -> None:
    from sandbox import MESSAGES

    add_sandbox_client(vault, sandbox)
    consent(vault, sandbox)
    for code, (name, words) in DOCUMENTED.items():
        status, error, text = MESSAGES[code]
        d = diagnose(microsoft_error(code, error, text, status), "refresh")  # the recorded body
        assert (d.name, words in d.message()) == (name, True), code
        if code == 90055:
            fail_next(sandbox, code, count=4)  # throttled: backed off, then reported
        else:
            fail_next(sandbox, code)
        with in_process(vault) as app:
            (result,) = app.tokens.refresh(MAILBOX)
        assert result.outcome == "failed", (code, result)
        assert f"{d.error_class.title} (AADSTS{code})" in result.error, (code, result)
        assert words in result.error and "trace id" in result.error
        assert "Secret ID" not in result.error
    # refusals seconds apart, whatever they were: the grant is still usable
    assert grant_shown(vault)["status"] == "active"
    assert vault.ok("token", MAILBOX).out.startswith("sbx-at.")


def test_the_sandbox_command_injects_a_documented_code(tmp_path) -> None:
    """`vault sandbox --fail 90033`: the first token request gets Microsoft's JSON for it."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "vault", "sandbox", "--fail", "90033"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        settings = json.loads(process.stdout.readline())
        answer = httpx.post(settings["token_url"], data={"grant_type": "refresh_token"})
        d = diagnose(answer, "refresh")
        assert answer.json()["error"] == "invalid_grant" and d.name == "transient"
    finally:
        process.terminate()
        process.wait(timeout=10)


