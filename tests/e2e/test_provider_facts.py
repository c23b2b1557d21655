"""Facts about Microsoft's clouds and answers, checked against Microsoft's documentation (sources
in docs/providers.md), seen through what vault does with them: the hosts a client shows and
probes, the scopes a grant accepts, what an importer maps, what a recorded SMTP answer means,
what a certificate client may rotate; and `history --as-of` with a date-time (issue 9, items
17, 19, 20)."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from domain.secret_value import SecretValue
from tests.conftest import MS_CLIENT_ID, Harness

GOV_TENANT = "agency.onmicrosoft.us"
REFRESH = "M.R3_BAY.gov-refresh-token-0123456789"


def _add(h: Harness, name: str, cloud: str, *extra: str):
    return h.run("client", "add", name, "--provider", "microsoft", "--cloud", cloud,
                 "--tenant", GOV_TENANT, "--client-id", MS_CLIENT_ID, "--secret-stdin", *extra,
                 input="Gov~secret.value-0123456789")


def _show(h: Harness, *args: str) -> dict:
    return json.loads(h.ok(*args, "--json").out)


# -- item 19: hosts and resources per cloud ---------------------------------------------------


def test_a_gcc_high_client_sends_mail_through_outlook_office365_us(vault: Harness) -> None:
    """Microsoft's GCC High endpoint list names outlook.office365.us for 25/587."""
    assert _add(vault, "gov", "gcc-high").code == 0
    servers = _show(vault, "client", "show", "gov")["servers"]
    assert (servers["smtp"]["host"], servers["smtp"]["port"], servers["smtp"]["tls"]) == (
        "outlook.office365.us", 587, "starttls")
    assert servers["imap"]["host"] == "outlook.office365.us"
    assert not servers["smtp"]["unverified"]
    shown = vault.ok("client", "show", "gov").out
    assert "smtp server" in shown and "outlook.office365.us:587" in shown
    assert "smtp.office365.us" not in shown


def test_a_gcc_high_probe_connects_to_outlook_office365_us(vault: Harness) -> None:
    """Where `vault probe` goes (this machine has no route out: the refusal names the host)."""
    from tests.conftest import record_refreshes

    assert _add(vault, "gov", "gcc-high").code == 0
    vault.ok("grant", "import", "--client", "gov", "--mailbox", "ops@agency.example",
             "--protocols", "imap,smtp", "--refresh-token-stdin", input=REFRESH)
    with vault.app() as app:  # a cached access token: the probe needs no sign-in
        record_refreshes(app, "ops@agency.example", 1)
    result = vault.run("probe", "ops@agency.example", "--protocol", "smtp", "--timeout", "5",
                       "--json")
    (probe,) = json.loads(result.out)
    assert result.code == 1 and probe["outcome"] == "network", probe
    assert "outlook.office365.us:587" in probe["diagnosis"]


def test_a_china_client_marks_its_unverified_mail_hosts(vault: Harness) -> None:
    assert _add(vault, "cn", "china").code == 0
    smtp = _show(vault, "client", "show", "cn")["servers"]["smtp"]
    assert smtp["host"] == "smtp.partner.outlook.cn" and smtp["unverified"] is True
    assert "unverified" in vault.ok("client", "show", "cn").out
    # a recorded server is the admin's word, not the profile's guess
    vault.ok("client", "set-servers", "cn", "--smtp", "smtp.partner.outlook.cn:587/starttls")
    smtp = _show(vault, "client", "show", "cn")["servers"]["smtp"]
    assert smtp["source"] == "recorded" and smtp["unverified"] is False


def test_a_dod_grant_may_name_the_dod_exchange_resource_and_says_which_it_uses(
        vault: Harness) -> None:
    assert _add(vault, "dod", "dod").code == 0
    dod_scope = "https://outlook-dod.office365.us/IMAP.AccessAsUser.All"
    result = vault.run("grant", "import", "--client", "dod", "--mailbox", "ops@army.example",
                       "--protocols", "imap", "--scopes", f"offline_access {dod_scope}",
                       "--refresh-token-stdin", input=REFRESH)
    assert result.code == 0, result.text
    grant = _show(vault, "grant", "show", "ops@army.example")
    assert grant["resources"] == {"mail": "https://outlook-dod.office365.us/"}
    assert dod_scope in grant["scopes"]["mail"]
    assert "resource [mail]" in vault.ok("grant", "show", "ops@army.example").out
    # the default, derived from the protocols, stays the US Government resource
    vault.ok("grant", "import", "--client", "dod", "--mailbox", "hq@army.example", "--protocols",
             "imap", "--refresh-token-stdin", input=REFRESH)
    assert _show(vault, "grant", "show", "hq@army.example")["resources"] == {
        "mail": "https://outlook.office365.us/"}
    # on GCC High the DoD resource is another cloud's, and said so (not "Graph tokens")
    assert _add(vault, "gov", "gcc-high").code == 0
    wrong = vault.run("grant", "import", "--client", "gov", "--mailbox", "x@agency.example",
                      "--protocols", "imap", "--scopes", f"offline_access {dod_scope}",
                      "--refresh-token-stdin", input=REFRESH)
    assert wrong.code == 2 and "DoD" in wrong.err and "Graph tokens" not in wrong.err


def test_a_mail_scope_of_an_unknown_resource_is_named_not_called_graph(vault: Harness) -> None:
    assert _add(vault, "gov", "gcc-high").code == 0
    result = vault.run("grant", "import", "--client", "gov", "--mailbox", "x@agency.example",
                       "--protocols", "imap", "--scopes",
                       "offline_access https://mail.example.test/IMAP.AccessAsUser.All",
                       "--refresh-token-stdin", input=REFRESH)
    assert result.code == 2
    assert "https://mail.example.test/" in result.err and "Graph tokens" not in result.err


def test_a_microsoft_client_without_a_redirect_uri_is_told_what_to_register(
        vault: Harness) -> None:
    """Microsoft's redirect URI restrictions: the portal cannot register http://127.0.0.1
    (manifest only); http://localhost it can, any port."""
    added = _add(vault, "gov", "gcc-high")
    assert added.code == 0
    assert "http://127.0.0.1/callback" in added.err and "manifest" in added.err
    assert "--redirect-uri http://localhost/callback" in added.err
    given = _add(vault, "gov2", "gcc-high", "--redirect-uri", "http://localhost/callback")
    assert given.code == 0 and "redirect" not in given.err


# -- item 19: 535 5.7.139 has two causes -------------------------------------------------------


# -- item 19 and 20: the email-oauth2-proxy importer -------------------------------------------

PROXY_PASSWORD = "proxy-password-in-the-mail-client"


def _encrypt(salt: bytes, value: str, iterations: int = 100_000) -> str:
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations)
    key = base64.urlsafe_b64encode(kdf.derive(PROXY_PASSWORD.encode()))
    return Fernet(key).encrypt(value.encode()).decode()


def _account(mailbox: str, token_url: str, scope: str, client_id: str, secret: str,
             refresh_token: str) -> str:
    salt = os.urandom(16)
    return (f"[{mailbox}]\ntoken_url = {token_url}\noauth2_scope = {scope}\n"
            f"client_id = {client_id}\nclient_secret = {secret}\n"
            f"token_salt = {base64.b64encode(salt).decode()}\ntoken_iterations = 100000\n"
            f"refresh_token = {_encrypt(salt, refresh_token)}\n\n")


def _import(h: Harness, tmp_path: Path, text: str) -> dict[str, dict]:
    config = tmp_path / "emailproxy.config"
    config.write_text(text)
    result = h.run("import", "email-oauth2-proxy", str(config), "--password-stdin", "--json",
                   input=PROXY_PASSWORD)
    return {r["mailbox"]: r for r in json.loads(result.out)}


def test_the_proxy_importer_knows_21vianets_second_sign_in_host(vault: Harness,
                                                                tmp_path: Path) -> None:
    token_url = ("https://login.partner.microsoftonline.cn/contoso.partner.onmschina.cn/"
                 "oauth2/v2.0/token")
    rows = _import(vault, tmp_path, "[IMAP-1993]\nserver_address = partner.outlook.cn\n\n"
                   + _account("li@contoso.cn", token_url,
                              "https://partner.outlook.cn/IMAP.AccessAsUser.All offline_access",
                              MS_CLIENT_ID, "Cn~secret.value-0123456789", REFRESH))
    assert rows["li@contoso.cn"]["outcome"] == "imported", rows
    client = _show(vault, "client", "show", rows["li@contoso.cn"]["client"])
    assert (client["provider"], client["cloud"], client["tenant"]) == (
        "microsoft", "china", "contoso.partner.onmschina.cn")
    grant = _show(vault, "grant", "show", "li@contoso.cn")
    assert grant["protocols"] == ["imap"]
    assert grant["resources"] == {"mail": "https://partner.outlook.cn/"}


def test_a_us_government_proxy_account_with_dod_scopes_is_dod(vault: Harness,
                                                              tmp_path: Path) -> None:
    token_url = f"https://login.microsoftonline.us/{GOV_TENANT}/oauth2/v2.0/token"
    rows = _import(vault, tmp_path, _account(
        "ops@army.example", token_url,
        "https://outlook-dod.office365.us/IMAP.AccessAsUser.All "
        "https://outlook-dod.office365.us/SMTP.Send offline_access",
        MS_CLIENT_ID, "Dod~secret.value-0123456789", REFRESH) + _account(
        "ops@agency.example", token_url,
        "https://outlook.office365.us/IMAP.AccessAsUser.All offline_access",
        "22222222-3333-4444-5555-666666666666", "Gov~secret.value-0123456789", REFRESH))
    assert all(r["outcome"] == "imported" for r in rows.values()), rows
    clouds = {m: _show(vault, "client", "show", r["client"])["cloud"] for m, r in rows.items()}
    assert clouds == {"ops@army.example": "dod", "ops@agency.example": "gcc-high"}
    assert _show(vault, "grant", "show", "ops@army.example")["protocols"] == ["imap", "smtp"]


def test_an_imap_only_proxy_account_is_imported_as_imap_only(vault: Harness, oidc,
                                                             tmp_path: Path) -> None:
    """The scopes decide: the proxy serves SMTP too, but this account's consent covers IMAP;
    its refresh token then works for exactly that, at a real authorization server."""
    from tests.consent import ALICE
    from tests.integration.test_importers import _refresh_token_from
    from tests.peers.oidc_peer import CLIENTS

    token = _refresh_token_from(oidc, ALICE, "vault-post")
    rows = _import(vault, tmp_path,
                   "[IMAP-1993]\nserver_address = imap.example.test\n\n"
                   "[SMTP-1587]\nserver_address = smtp.example.test\n\n"
                   + _account(ALICE[0], oidc.token_url, "openid offline_access mail.imap",
                              "vault-post", CLIENTS["vault-post"].client_secret, token))
    assert rows[ALICE[0]]["outcome"] == "imported", rows
    grant = _show(vault, "grant", "show", ALICE[0])
    assert grant["protocols"] == ["imap"]
    assert vault.run("token", ALICE[0], "--protocol", "smtp").code != 0
    access = vault.ok("token", ALICE[0]).out.strip()
    assert oidc.introspect(access)["active"] is True


def test_a_proxy_account_whose_scopes_name_no_protocol_takes_the_proxys_servers(
        vault: Harness, tmp_path: Path) -> None:
    account = _account("pat@example.test", "https://idp.example.test/token",
                       "offline_access https://mail.example.test/full_access",
                       "some-app", "some-secret-value-0123", "some-refresh-token-0123")
    rows = _import(vault, tmp_path, "[POP-1995]\nserver_address = pop.example.test\n\n" + account)
    assert rows["pat@example.test"]["outcome"] == "imported", rows
    assert _show(vault, "grant", "show", "pat@example.test")["protocols"] == ["pop"]
    # and with no server section either, nothing is guessed
    tmp = tmp_path / "other"
    tmp.mkdir()
    rows = _import(vault, tmp, account.replace("pat@", "sam@"))
    assert rows["sam@example.test"]["outcome"] == "skipped"
    assert "--protocols" in rows["sam@example.test"]["detail"]


# -- item 20: history --as-of a date-time ------------------------------------------------------


def test_history_as_of_a_date_time_is_exact(vault: Harness) -> None:
    noon = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
    clock = {"now": datetime(2026, 3, 1, 9, 0, tzinfo=UTC)}
    with vault.app(clock=lambda: clock["now"]) as app:
        app.clients.add_client(name="jira", provider="microsoft", tenant="contoso.com",
                               client_id=MS_CLIENT_ID, secret=SecretValue("First~secret-value-0001"))
        clock["now"] = noon + timedelta(minutes=1)
        app.clients.rotate_secret("jira", secret=SecretValue("Second~secret-value-0002"))

    def secrets_at(when: str) -> list[str]:
        data = _show(vault, "history", "jira", "--as-of", when)
        return [s["ref"] for s in data["state"]["secrets"] if s["retired_at"] is None]

    assert secrets_at("2026-03-11T12:00") == ["s1"]  # a minute before the rotation
    assert secrets_at("2026-03-11T12:00:30Z") == ["s1"]
    assert secrets_at("2026-03-11T12:01") == ["s2"]  # the rotation's own instant is included
    assert secrets_at("2026-03-11T13:00+01:00") == ["s1"]  # 12:00 UTC
    assert secrets_at("2026-03-11") == ["s2"]  # a date: the end of that UTC day
    assert secrets_at("2026-03-10") == ["s1"]
    shown = _show(vault, "history", "jira", "--as-of", "2026-03-11T12:00")
    assert shown["as_of"] == "2026-03-11T12:00:00+00:00"
    assert [e["event"] for e in shown["events"]] == ["Registered", "SecretAdded"]


# -- item 17: a certificate client's rotation ----------------------------------------------------


def test_rotate_secret_on_a_certificate_client_is_refused_and_points_to_add_certificate(
        vault: Harness, sandbox, tmp_path: Path) -> None:
    from tests.integration.test_microsoft_sandbox import add_certificate_client

    add_certificate_client(vault, sandbox, tmp_path)
    before = _show(vault, "client", "show", "demo")["secrets"]

    for extra in ((), ("--verify",)):
        refused = vault.run("client", "rotate-secret", "demo", "--secret-stdin", *extra,
                            input="Unused~secret.value-0123456789")
        assert refused.code == 1, refused.text
        assert "add-certificate" in refused.err and "is now current" not in refused.out
    assert _show(vault, "client", "show", "demo")["secrets"] == before
    assert b"Unused~secret" not in vault.stored_bytes()
    assert vault.ok("app-token", "demo").out.startswith("sbx-app.")  # still the certificate

    (finding,) = json.loads(vault.ok("expiry", "--json").out)["findings"]
    assert finding["kind"] == "certificate_expiry"
    assert "add-certificate demo" in finding["advice"] and "rotate-secret" not in finding["advice"]
