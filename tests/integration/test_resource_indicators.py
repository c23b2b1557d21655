"""`client add --resource` (RFC 8707) against the real oidc-provider, which issues audience-bound
JWT access tokens only for a named resource, and a Dovecot that validates those JWTs itself
(tests/peers/dovecot_peer.py `start_jwt`): vault's probes log in over IMAP, POP3 and submission
with the tokens it got, before and after a refresh, through the code and the device flows."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import Harness, point_at
from tests.consent import ALICE, oidc_consent
from tests.peers.oidc_peer import (
    CLIENTS,
    IMAP_RESOURCE,
    MAIL_RESOURCE,
    POP_RESOURCE,
    SMTP_RESOURCE,
    decode_jwt,
)

PROTOCOLS = ("imap", "pop", "smtp")


def _add(h: Harness, oidc, *resources: str) -> None:
    client = CLIENTS["vault-basic"]
    args = [a for r in resources for a in ("--resource", r)]
    h.ok("client", "add", "idp", "--provider", "custom", "--client-id", "vault-basic",
         "--secret-stdin", "--issuer", oidc.issuer, "--auth-method", client.auth_method,
         "--scopes", "openid offline_access mail.imap mail.pop mail.smtp", *args,
         input=client.client_secret)


def _probe_all(h: Harness, mail_ca) -> dict[str, str]:
    result = h.run("probe", ALICE[0], "--json", VAULT_CA_FILE=str(mail_ca.ca_path))
    return {r["protocol"]: r["outcome"] + (f": {r['diagnosis']}" if r["diagnosis"] else "")
            for r in json.loads(result.out)}


def _audiences(h: Harness) -> dict[str, str]:
    """Each protocol's access token's audience, as the token itself says."""
    return {p: decode_jwt(h.ok("token", ALICE[0], "--protocol", p).out.strip())[1]["aud"]
            for p in PROTOCOLS}


ALL_OK = dict.fromkeys(PROTOCOLS, "ok")


@pytest.mark.parametrize("flow", ["manual", "device"])
def test_one_resource_for_the_mail_service(sqlite_vault: Harness, oidc, dovecot_jwt, mail_ca,
                                           flow: str) -> None:
    h = sqlite_vault
    _add(h, oidc, MAIL_RESOURCE)
    assert re.search(rf"^  resource +{MAIL_RESOURCE}$", h.ok("client", "show", "idp").out, re.M)
    oidc_consent(h, oidc, flow, protocols=PROTOCOLS)
    shown = json.loads(h.ok("grant", "show", ALICE[0], "--json").out)
    assert shown["indicators"] == dict.fromkeys(PROTOCOLS, MAIL_RESOURCE)
    point_at(h, dovecot_jwt)
    assert _probe_all(h, mail_ca) == ALL_OK
    assert _audiences(h) == dict.fromkeys(PROTOCOLS, MAIL_RESOURCE)
    before = h.ok("token", ALICE[0]).out
    refreshed = json.loads(h.ok("refresh", ALICE[0], "--json").out)
    assert [(r["resource"], r["outcome"]) for r in refreshed] == [(MAIL_RESOURCE, "refreshed")]
    after = h.ok("token", ALICE[0]).out
    assert after != before and decode_jwt(after.strip())[1]["aud"] == MAIL_RESOURCE
    assert _probe_all(h, mail_ca) == ALL_OK


@pytest.mark.parametrize("flow", ["manual", "device"])
def test_a_resource_per_protocol(sqlite_vault: Harness, oidc, dovecot_jwt, mail_ca,
                                 flow: str) -> None:
    """Three resources, three tokens (each cached under its own resource), each refreshed with
    its own indicator."""
    h = sqlite_vault
    _add(h, oidc, f"imap={IMAP_RESOURCE}", f"pop={POP_RESOURCE}", f"smtp={SMTP_RESOURCE}")
    oidc_consent(h, oidc, flow, protocols=PROTOCOLS)
    point_at(h, dovecot_jwt)
    assert _probe_all(h, mail_ca) == ALL_OK
    wanted = {"imap": IMAP_RESOURCE, "pop": POP_RESOURCE, "smtp": SMTP_RESOURCE}
    assert _audiences(h) == wanted
    refreshed = json.loads(h.ok("refresh", ALICE[0], "--json").out)
    assert sorted((r["resource"], r["outcome"]) for r in refreshed) == sorted(
        (uri, "refreshed") for uri in wanted.values())
    assert _audiences(h) == wanted
    assert _probe_all(h, mail_ca) == ALL_OK


def test_without_a_resource_the_jwt_dovecot_refuses(sqlite_vault: Harness, oidc, dovecot_jwt,
                                                    mail_ca) -> None:
    """The same client without --resource gets opaque tokens, which that Dovecot cannot check:
    the indicators are what makes the probes above pass."""
    h = sqlite_vault
    _add(h, oidc)
    oidc_consent(h, oidc, protocols=PROTOCOLS)
    point_at(h, dovecot_jwt)
    outcomes = _probe_all(h, mail_ca)
    assert all(o.startswith("refused") for o in outcomes.values()), outcomes


def test_an_unknown_resource_is_refused_by_the_provider_and_nothing_is_stored(
        sqlite_vault: Harness, oidc) -> None:
    h = sqlite_vault
    _add(h, oidc, "https://unknown.example.test")
    with pytest.raises(Exception, match="invalid_target"):
        oidc_consent(h, oidc, protocols=PROTOCOLS)
    assert h.ok("grant", "list", "--json").out.strip() == "[]"


def test_microsoft_and_google_refuse_a_resource(sqlite_vault: Harness) -> None:
    for provider, extra in (("microsoft", ["--tenant", "contoso.onmicrosoft.com"]),
                            ("google", [])):
        client_id = ("11111111-2222-3333-4444-555555555555" if provider == "microsoft"
                     else "app.apps.googleusercontent.com")
        result = sqlite_vault.run(
            "client", "add", provider, "--provider", provider, *extra, "--client-id", client_id,
            "--secret-stdin", "--resource", "https://outlook.office.com", input="Abc~defghijklmnop012345")
        assert result.code == 2 and "custom providers" in result.err, result.text
        assert "Traceback" not in result.text
    assert sqlite_vault.ok("client", "list", "--json").out.strip() == "[]"
