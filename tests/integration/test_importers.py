"""Importing mutt_oauth2.py token files and email-oauth2-proxy configurations: the proxy's tokens
are encrypted here exactly as the proxy does (Fernet, PBKDF2-HMAC-SHA256 over its salt), and an
imported refresh token is then used against the real authorization server."""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from tests.conftest import Harness
from tests.consent import ALICE

MUTT_MICROSOFT = {
    "registration": "microsoft", "authflow": "authcode", "email": "pat@contoso.com",
    "client_id": "08162f7c-0fd2-4200-a84a-f25a4db0b584",
    "client_secret": "Mutt~client.secret-0123456789",
    "access_token": "EwBwA-old-access", "access_token_expiration": "2026-11-20T10:00:00",
    "refresh_token": "M.C540_BAY.mutt-refresh-token-0123456789",
}
PROXY_PASSWORD = "the-imap-password-in-thunderbird"
# proxy accounts at the real providers: imported, never refreshed here
PROXY_MICROSOFT = {"mailbox": "shared@contoso.com",
                   "client_id": "5b7c1d2e-2222-4a5b-9c8d-0123456789ab",
                   "client_secret": "Ms~encrypted.client-secret-0123456789",
                   "refresh_token": "M.C541_BL2.proxy-refresh-token-0123456789"}
PROXY_GOOGLE = {"mailbox": "pat@gmail.com", "client_id": "1234-abc.apps.googleusercontent.com",
                "client_secret": "GOCSPX-plain-google-secret-0123456789",
                "refresh_token": "1//0proxy-google-refresh-token-0123456789"}


def test_a_mutt_oauth2_token_file_becomes_a_client_and_a_grant(sqlite_vault: Harness) -> None:
    h = sqlite_vault
    result = h.ok("import", "mutt-oauth2", "--json", input=json.dumps(MUTT_MICROSOFT))
    (row,) = json.loads(result.out)
    assert row == {"mailbox": "pat@contoso.com", "client": "microsoft-08162f7c",
                   "outcome": "imported", "detail": "new client; protocols imap,pop,smtp"}
    client = json.loads(h.ok("client", "show", "microsoft-08162f7c", "--json").out)
    assert (client["provider"], client["tenant"], client["cloud"]) == (
        "microsoft", "common", "global")
    assert len(client["secrets"]) == 1
    grant = json.loads(h.ok("grant", "show", "pat@contoso.com", "--json").out)
    assert grant["protocols"] == ["imap", "pop", "smtp"] and grant["method"] == "import"
    assert grant["tokens"]["refresh_token"] == "held"
    events = [e["event"] for e in json.loads(h.ok("history", "pat@contoso.com", "--json").out)[
        "events"]]
    assert events[0] == "Granted"  # history starts at the import
    for secret in (MUTT_MICROSOFT["refresh_token"], MUTT_MICROSOFT["client_secret"]):
        assert secret.encode() not in h.stored_bytes()
        assert not any(secret in text for text in h.outputs)

    again = json.loads(h.ok("import", "mutt-oauth2", "--json",
                            input=json.dumps(MUTT_MICROSOFT)).out)
    assert again[0]["outcome"] == "exists"  # nothing overwritten, no second client
    assert len(json.loads(h.ok("client", "list", "--json").out)) == 1

    google = {**MUTT_MICROSOFT, "registration": "google", "email": "pat@gmail.com",
              "client_id": "1234-abc.apps.googleusercontent.com"}
    h.ok("import", "mutt-oauth2", "--client", "gmail", input=json.dumps(google))
    assert json.loads(h.ok("client", "show", "gmail", "--json").out)["provider"] == "google"


def test_a_mutt_token_file_without_the_app_takes_it_from_options(sqlite_vault: Harness,
                                                                 tmp_path: Path) -> None:
    """mutt's own script keeps client id and secret in its registrations table."""
    upstream = {k: v for k, v in MUTT_MICROSOFT.items() if k not in ("client_id",
                                                                     "client_secret")}
    missing = sqlite_vault.run("import", "mutt-oauth2", input=json.dumps(upstream))
    assert missing.code == 2 and "--client-id" in missing.err
    secret = tmp_path / "secret"
    secret.write_text("Upstream~mutt.secret-0123456789\n")
    sqlite_vault.ok("import", "mutt-oauth2", "--client-id", MUTT_MICROSOFT["client_id"],
                    "--client-secret-file", str(secret), input=json.dumps(upstream))
    client = json.loads(sqlite_vault.ok("client", "show", "microsoft-08162f7c", "--json").out)
    assert len(client["secrets"]) == 1


@pytest.mark.parametrize("text,words", [
    ("not json", "decrypt it first"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({**MUTT_MICROSOFT, "registration": "yahoo"}), "unknown mutt_oauth2.py"),
    (json.dumps({k: v for k, v in MUTT_MICROSOFT.items() if k != "refresh_token"}),
     "lacks refresh_token"),
])
def test_a_bad_token_file_is_bad_input_and_writes_nothing(sqlite_vault: Harness, text: str,
                                                          words: str) -> None:
    result = sqlite_vault.run("import", "mutt-oauth2", input=text)
    assert result.code == 2 and words in result.err, result.text
    assert "M.C540" not in result.text and "Traceback" not in result.text
    assert json.loads(sqlite_vault.ok("client", "list", "--json").out) == []


@pytest.mark.parametrize("text,words", [
    ("[" * 30_000 + "]" * 30_000, "nests too deeply"),
    ('{"email": ' + "1" * 5000 + "}", "too long"),
    (json.dumps({**MUTT_MICROSOFT, "tenant": 5}), "tenant is not a string"),
    (json.dumps({**MUTT_MICROSOFT, "email": ["pat@contoso.com"]}), "email is not a string"),
    (json.dumps({**MUTT_MICROSOFT, "refresh_token": {"v": 1}}), "refresh_token is not a string"),
], ids=["deep", "long-number", "tenant-int", "email-list", "token-object"])
def test_a_hostile_token_file_is_bad_input(sqlite_vault: Harness, text: str, words: str) -> None:
    result = sqlite_vault.run("import", "mutt-oauth2", input=text)
    assert result.code == 2 and words in result.err, result.text
    assert len(result.err.strip().splitlines()) == 1 and "internal error" not in result.text
    assert "M.C540" not in result.text and "Traceback" not in result.text
    assert json.loads(sqlite_vault.ok("client", "list", "--json").out) == []


@pytest.mark.parametrize("config,words", [
    ("[emailproxy]\nallow_catch_all_accounts = maybe\n", "allow_catch_all_accounts"),
    ("[a@example.test]\ntoken_url = http://[::1\nclient_id = x\n", "[a@example.test] token_url"),
], ids=["boolean", "url"])
def test_a_hostile_proxy_config_is_bad_input(sqlite_vault: Harness, tmp_path: Path, config: str,
                                             words: str) -> None:
    path = tmp_path / "emailproxy.config"
    path.write_text(config + "[b@example.test]\ntoken_url = https://example.test/t\n")
    result = sqlite_vault.run("import", "email-oauth2-proxy", str(path), "--password-stdin",
                              input="x")
    assert result.code == 2 and words in result.err, result.text
    assert len(result.err.strip().splitlines()) == 1 and "internal error" not in result.text
    assert "Traceback" not in result.text


def _refresh_token_from(oidc, user=ALICE, client_id: str = "vault-post") -> str:
    """Sign in as the proxy did once, and keep the refresh token it got."""
    from tests.peers.oidc_peer import REDIRECT_URI, client_auth, make_pkce

    verifier, challenge = make_pkce()
    url = oidc.build_authorize_url(client_id, "openid offline_access mail.imap mail.smtp",
                                   secrets.token_urlsafe(8), challenge, prompt="consent")
    code = parse_qs(urlsplit(oidc.complete_authorization(url, *user)).query)["code"][0]
    response = httpx.post(oidc.token_url, **client_auth(client_id, {
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier}))
    response.raise_for_status()
    return response.json()["refresh_token"]


def _proxy_encrypt(password: str, salt: bytes, iterations: int, value: str) -> str:
    """What email-oauth2-proxy writes into its config (its Cryptographer)."""
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(password.encode()))).encrypt(
        value.encode()).decode()


def _proxy_config(oidc, refresh_token: str, iterations: int | None) -> str:
    from tests.peers.oidc_peer import CLIENTS

    salt = os.urandom(16)
    count = iterations or 100_000  # an old proxy wrote no token_iterations: 100,000
    enc = _proxy_encrypt(PROXY_PASSWORD, salt, count, refresh_token)
    # a stale encrypted secret, under last year's password, beside the plain one the user
    # edited: the proxy never opens it
    stale = _proxy_encrypt("last-years-password", salt, count, "stale-secret-from-last-year")
    iterations_line = f"token_iterations = {iterations}\n" if iterations else ""
    sealed = f"token_salt = {base64.b64encode(salt).decode()}\n{iterations_line}"
    ms_scope = "https://outlook.office.com/IMAP.AccessAsUser.All"
    ms_url = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0"
    return f"""[emailproxy]
allow_catch_all_accounts = True

[Server setup]
documentation = ignored

[IMAP-1993]
server_address = imap.example.test
server_port = 993

[@example.test]
permission_url = {oidc.authorize_url}
token_url = {oidc.token_url}
oauth2_scope = openid offline_access mail.imap mail.smtp
redirect_uri = http://127.0.0.1/callback
client_id = vault-post
# not any account's own token: the proxy reads refresh_token from the account's section only
refresh_token = {enc}

[bob@example.test]

[your.email@gmail.com]
permission_url = https://accounts.google.com/o/oauth2/auth
token_url = https://oauth2.googleapis.com/token
oauth2_scope = https://mail.google.com/
client_id = *** your client id here ***

[{ALICE[0]}]
client_secret = {CLIENTS["vault-post"].client_secret}
client_secret_encrypted = {stale}
{sealed}refresh_token = {enc}
access_token = {_proxy_encrypt(PROXY_PASSWORD, salt, count, "expired-access-token")}
access_token_expiry = 1700000000

[{PROXY_MICROSOFT["mailbox"]}]
permission_url = {ms_url}/authorize
token_url = {ms_url}/token
oauth2_scope = {ms_scope} https://outlook.office.com/SMTP.Send offline_access
redirect_uri = http://localhost
client_id = {PROXY_MICROSOFT["client_id"]}
client_secret_encrypted = {_proxy_encrypt(PROXY_PASSWORD, salt, count,
                                          PROXY_MICROSOFT["client_secret"])}
{sealed}refresh_token = {_proxy_encrypt(PROXY_PASSWORD, salt, count,
                                        PROXY_MICROSOFT["refresh_token"])}

[{PROXY_GOOGLE["mailbox"]}]
permission_url = https://accounts.google.com/o/oauth2/auth
token_url = https://oauth2.googleapis.com/token
oauth2_scope = https://mail.google.com/
redirect_uri = http://localhost
client_id = {PROXY_GOOGLE["client_id"]}
client_secret = {PROXY_GOOGLE["client_secret"]}
{sealed}refresh_token = {_proxy_encrypt(PROXY_PASSWORD, salt, count,
                                        PROXY_GOOGLE["refresh_token"])}

[cert@contoso.com]
token_url = {ms_url}/token
oauth2_scope = {ms_scope} offline_access
client_id = 7c8d9e0f-3333-4a5b-9c8d-0123456789ab
jwt_certificate_path = /etc/emailproxy/certificate.pem
jwt_key_path = /etc/emailproxy/key.pem
{sealed}refresh_token = {enc}

[helpdesk@contoso.com]
permission_url = https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize
token_url = https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token
oauth2_scope = https://outlook.office.com/IMAP.AccessAsUser.All
    https://outlook.office.com/SMTP.Send offline_access
client_id = 2f4a9c31-1111-4a5b-9c8d-0123456789ab
client_secret = *** your client secret here ***

[@contoso.com]
client_id = catch-all-template

[ccg@contoso.com]
token_url = https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token
oauth2_scope = https://outlook.office365.com/.default
oauth2_flow = client_credentials
client_id = 2f4a9c31-1111-4a5b-9c8d-0123456789ab
"""


@pytest.mark.parametrize("iterations", [1_200_000, None])
def test_an_email_oauth2_proxy_config_is_imported_and_its_token_works(
        sqlite_vault: Harness, oidc, tmp_path: Path, iterations: int | None) -> None:
    h = sqlite_vault
    token = _refresh_token_from(oidc)
    config = tmp_path / "emailproxy.config"
    config.write_text(_proxy_config(oidc, token, iterations))
    config.chmod(0o600)
    result = h.run("import", "email-oauth2-proxy", str(config), "--password-stdin", "--json",
                   input=PROXY_PASSWORD + "\n")
    assert result.code == 1, result.text  # four sections could not become grants
    rows = {r["mailbox"]: r for r in json.loads(result.out)}
    assert {m for m, r in rows.items() if r["outcome"] == "imported"} == {
        ALICE[0], PROXY_MICROSOFT["mailbox"], PROXY_GOOGLE["mailbox"]}
    # bob has no token of his own: the catch-all's is not his
    for mailbox in ("helpdesk@contoso.com", "bob@example.test"):
        assert rows[mailbox]["outcome"] == "skipped"
        assert "vault consent" in rows[mailbox]["detail"]
    assert rows["ccg@contoso.com"]["outcome"] == "skipped"
    assert "add-app" in rows["ccg@contoso.com"]["detail"]
    assert rows["cert@contoso.com"]["outcome"] == "skipped"
    assert "jwt_certificate_path" in rows["cert@contoso.com"]["detail"]
    assert "@contoso.com" not in rows  # a catch-all template is not an account
    assert "your.email@gmail.com" not in rows  # nor the proxy's untouched example

    name = rows[ALICE[0]]["client"]
    client = json.loads(h.ok("client", "show", name, "--json").out)
    assert client["provider"] == "custom" and client["endpoints"]["token_url"] == oidc.token_url
    refreshed = json.loads(h.ok("refresh", ALICE[0], "--json").out)
    # the decrypted token, the plain secret and the catch-all's endpoints are right
    assert refreshed[0]["outcome"] == "refreshed"
    access = h.ok("token", ALICE[0]).out.strip()
    assert oidc.introspect(access)["active"] is True
    for secret in (token, PROXY_PASSWORD):
        assert secret.encode() not in h.stored_bytes()
        assert not any(secret in text for text in h.outputs)


def test_microsoft_and_google_proxy_accounts_are_imported_end_to_end(
        sqlite_vault: Harness, oidc, tmp_path: Path) -> None:
    """The app, tenant and cloud come from the proxy's endpoint URLs; an encrypted client secret
    is used when there is no plain one."""
    h = sqlite_vault
    config = tmp_path / "emailproxy.config"
    config.write_text(_proxy_config(oidc, "some-refresh-token", 1_200_000))
    rows = {r["mailbox"]: r for r in json.loads(h.run(
        "import", "email-oauth2-proxy", str(config), "--password-stdin", "--json",
        input=PROXY_PASSWORD).out)}
    ms, google = rows[PROXY_MICROSOFT["mailbox"]], rows[PROXY_GOOGLE["mailbox"]]
    assert (ms["outcome"], google["outcome"]) == ("imported", "imported"), rows
    client = json.loads(h.ok("client", "show", ms["client"], "--json").out)
    assert (client["provider"], client["client_id"], client["tenant"], client["cloud"]) == (
        "microsoft", PROXY_MICROSOFT["client_id"], "contoso.onmicrosoft.com", "global")
    grant = json.loads(h.ok("grant", "show", PROXY_MICROSOFT["mailbox"], "--json").out)
    assert grant["protocols"] == ["imap", "smtp"] and grant["tokens"]["refresh_token"] == "held"
    assert json.loads(h.ok("client", "show", google["client"], "--json").out)["provider"] == \
        "google"
    grant = json.loads(h.ok("grant", "show", PROXY_GOOGLE["mailbox"], "--json").out)
    assert grant["protocols"] == ["imap", "pop", "smtp"]
    for account in (PROXY_MICROSOFT, PROXY_GOOGLE):
        for secret in (account["client_secret"], account["refresh_token"]):
            assert secret.encode() not in h.stored_bytes()
            assert not any(secret in text for text in h.outputs)
    revealed = h.ok("client", "show", ms["client"], "--reveal-secret", "--json").out
    assert json.loads(revealed)["secret"] == PROXY_MICROSOFT["client_secret"]


def test_each_imported_account_is_audited_under_its_own_subject_and_the_import_summed_up(
        sqlite_vault: Harness, oidc, tmp_path: Path) -> None:
    h = sqlite_vault
    config = tmp_path / "emailproxy.config"
    config.write_text(_proxy_config(oidc, "some-refresh-token", None))
    rows = json.loads(h.run("import", "email-oauth2-proxy", str(config), "--password-stdin",
                            "--json", input=PROXY_PASSWORD).out)
    clients = {r["mailbox"]: r["client"] for r in rows if r["outcome"] == "imported"}
    assert len(set(clients.values())) == 3  # alice's, then the Microsoft account's, then Google's
    ms = PROXY_MICROSOFT["mailbox"]

    report = json.loads(h.ok("report", "audit", "--mailbox", ms, "--format", "json").out)
    assert {(r["action"], r["client"]) for r in report} == {("import", clients[ms])}
    assert len(report) == 2  # its client registered, then its grant
    entries = [e for e in json.loads(h.ok("audit", "log", "--limit", "0", "--json").out)
               if e["action"] == "import"]
    for mailbox, client in clients.items():
        mine = [e for e in entries if e["subject"].get("client") == client]
        assert len(mine) == 2 and all(e["subject"]["mailbox"] == mailbox for e in mine), mine
    (summary,) = [e for e in entries if not e["subject"]]
    assert summary is entries[-1] and summary["outcome"] == "failed"  # some were skipped
    assert summary["detail"] == {"source": "email-oauth2-proxy", "accounts": len(rows),
                                 "imported": 3, "exists": 0, "skipped": len(rows) - 3}
    assert PROXY_PASSWORD not in json.dumps(entries)
    assert not any(a["refresh_token"] in json.dumps(entries) for a in (PROXY_MICROSOFT,
                                                                       PROXY_GOOGLE))


def test_a_wrong_password_or_none_is_reported(sqlite_vault: Harness, oidc,
                                              tmp_path: Path) -> None:
    config = tmp_path / "emailproxy.config"
    config.write_text(_proxy_config(oidc, "some-refresh-token", 100_000))
    wrong = sqlite_vault.run("import", "email-oauth2-proxy", str(config), "--password-stdin",
                             "--json", input="not-the-password")
    assert wrong.code == 1
    alice = next(r for r in json.loads(wrong.out) if r["mailbox"] == ALICE[0])
    assert alice["outcome"] == "skipped" and "does not decrypt" in alice["detail"]
    missing = sqlite_vault.run("import", "email-oauth2-proxy", str(config))
    assert missing.code == 2 and "--password-stdin" in missing.err
    garbage = tmp_path / "garbage.config"
    garbage.write_text("this is [not an ini\n")
    bad = sqlite_vault.run("import", "email-oauth2-proxy", str(garbage), "--password-stdin",
                           input="x")
    assert bad.code == 2 and "not an email-oauth2-proxy configuration" in bad.err
