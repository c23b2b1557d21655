"""Consent proves who signed in (issue 9, item 5): the provider's ID token is verified (keys from
discovery, issuer, audience, nonce, times) and must name the mailbox, or the --account that
consents for it. Against `vault sandbox` (Microsoft-shaped, real RS256 ID tokens) and the
oidc-provider peer; every vault test on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from domain.identity import AccountMismatch
from sandbox import FORGERIES, settings_line, tenant_id
from tests.conftest import Harness, add_oidc_client, add_sandbox_client
from tests.consent import ALICE, BOB, ScriptedConsent, oidc_consent, sandbox_sign_in
from tests.consent import consent as run_consent
from vault.services.grants import GrantSummary

DAVE, MALLORY = "dave@contoso.com", "mallory@contoso.com"
TENANT = "sandbox.onmicrosoft.com"  # settings_line's default tenant


def consent(h: Harness, *, mailbox: str = DAVE, signs_in: str = DAVE, flow: str = "manual",
            client: str = "demo", **kwargs) -> tuple[GrantSummary, list[str]]:
    """A consent for `mailbox` where the person at the browser signs in as `signs_in`; the
    grant and the warnings it left for the admin."""
    warnings: list[str] = []
    result = run_consent(h, ScriptedConsent.at_sandbox(signs_in), client=client, mailbox=mailbox,
                         flow=flow, warnings=warnings, **kwargs)
    return result, warnings


def grants(h: Harness) -> list:
    return json.loads(h.ok("grant", "list", "--json").out)


def consent_audit(h: Harness) -> dict:
    return [e for e in json.loads(h.ok("audit", "log", "--json").out)
            if e["action"] == "consent"][-1]


def test_mallory_signing_in_for_dave_is_refused_and_nothing_is_stored(vault: Harness,
                                                                      sandbox) -> None:
    """The whole command, as a person runs it: the pasted redirect comes from mallory's sign-in."""
    add_sandbox_client(vault, sandbox)
    process = vault.spawn("consent", "demo", "--mailbox", DAVE, "--protocols", "imap",
                          "--flow", "manual")
    assert process.stderr is not None and process.stdin is not None
    url = next(line.strip() for line in process.stderr if line.startswith("http"))
    out, err = process.communicate(sandbox_sign_in(url, MALLORY, "sandbox") + "\n", timeout=60)
    assert process.returncode == 1, err
    assert MALLORY in err and DAVE in err and "nothing was stored" in err
    assert "Traceback" not in err and out == ""
    assert grants(vault) == []
    assert vault.run("token", DAVE).code == 4  # no grant: mallory's token is not handed out
    entry = consent_audit(vault)
    assert entry["outcome"] == "refused" and MALLORY in entry["detail"]["error"]
    assert sandbox.state.stats["authorization_code"] == 1  # the code was redeemed, then dropped
    vault.ok("audit", "verify")


@pytest.mark.parametrize("flow", ["browser", "device"])
def test_mallory_is_refused_in_the_browser_and_device_flows_too(vault: Harness, sandbox,
                                                                flow: str) -> None:
    add_sandbox_client(vault, sandbox)
    with pytest.raises(AccountMismatch, match=f"{MALLORY}.*{DAVE}"):
        consent(vault, signs_in=MALLORY, flow=flow)
    assert grants(vault) == []


def test_the_right_account_is_recorded_with_its_oid_and_tid(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    _, warnings = consent(vault, mailbox="Dave@contoso.com")  # names compare case-insensitively
    assert warnings == []
    shown = json.loads(vault.ok("grant", "show", DAVE, "--json").out)["signed_in"]
    tid = tenant_id(TENANT)
    assert shown == {
        "checked": True, "account": "dave@contoso.com", "claim": "preferred_username",
        "expected": "Dave@contoso.com", "subject": shown["subject"],
        "issuer": f"{sandbox.base_url}/{tid}/v2.0",
        "oid": str(uuid.uuid5(uuid.UUID(tid), "dave@contoso.com")), "tid": tid}
    table = vault.ok("grant", "show", DAVE).out
    assert re.search(rf"\n  signed in +dave@contoso.com \(preferred_username; oid {shown['oid']}, "
                     rf"tid {tid}\)\n", table), table
    assert vault.ok("token", DAVE).out.startswith("sbx-at.")
    assert consent_audit(vault)["detail"]["signed_in"] == "dave@contoso.com"


def test_the_device_flow_checks_the_account_without_a_nonce(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    consent(vault, flow="device")
    shown = json.loads(vault.ok("grant", "show", DAVE, "--json").out)
    assert shown["method"] == "device" and shown["signed_in"]["account"] == DAVE


def test_a_delegate_consents_for_a_shared_mailbox_with_account(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    with pytest.raises(AccountMismatch, match="--account"):
        consent(vault, mailbox="helpdesk@contoso.com", signs_in=DAVE)
    consent(vault, mailbox="helpdesk@contoso.com", signs_in=DAVE, account=DAVE)
    shown = json.loads(vault.ok("grant", "show", "helpdesk@contoso.com", "--json").out)
    assert (shown["signed_in"]["account"], shown["signed_in"]["expected"]) == (DAVE, DAVE)
    assert "with --account, for this mailbox" in vault.ok("grant", "show",
                                                          "helpdesk@contoso.com").out
    with pytest.raises(AccountMismatch, match=f"{MALLORY}.*{DAVE}"):  # --account is checked
        consent(vault, mailbox="sales@contoso.com", signs_in=MALLORY, account=DAVE)


def test_a_sign_in_name_that_differs_from_the_address(vault: Harness, sandbox) -> None:
    """The UPN d.smith@... carries dave@'s address in `email`: trusted from the app's own
    tenant, not from a multi-tenant authority, where --account names the UPN."""
    upn = "d.smith@contoso.onmicrosoft.com"
    sandbox.state.mail_attributes[upn] = DAVE
    add_sandbox_client(vault, sandbox)
    consent(vault, signs_in=upn)
    shown = json.loads(vault.ok("grant", "show", DAVE, "--json").out)["signed_in"]
    assert (shown["account"], shown["claim"]) == (DAVE, "email")

    s = json.loads(settings_line(sandbox, "common"))
    vault.ok("client", "add", "multi", "--provider", "microsoft", "--tenant", "common",
             "--client-id", s["client_id"], "--secret-stdin", "--authorize-url",
             s["authorize_url"], "--token-url", s["token_url"], "--issuer", s["issuer"],
             input=s["client_secret"])
    with pytest.raises(AccountMismatch, match="not trusted from a multi-tenant authority"):
        consent(vault, client="multi", signs_in=upn)
    consent(vault, client="multi", signs_in=upn, account=upn)
    shown = json.loads(vault.ok("grant", "show", DAVE, "--client", "multi",
                                "--json").out)["signed_in"]
    # {tenantid} in common's issuer was filled with the token's tid: the user's home tenant
    assert shown["tid"] == tenant_id("contoso.onmicrosoft.com") and shown["account"] == upn


@pytest.mark.parametrize("forgery,words", [
    ("signature", "signature does not verify"), ("audience", "another application"),
    ("nonce", "nonce is not the one this consent sent"), ("issuer", "was issued by"),
    ("expired", "has expired"), ("alg-none", "'none'"), ("hs256", "'HS256'")])
def test_a_forged_id_token_is_refused(vault: Harness, sandbox, forgery: str,
                                      words: str) -> None:
    from vault.services.consent import ConsentFailed

    assert forgery in FORGERIES
    add_sandbox_client(vault, sandbox)
    sandbox.state.forge_id_tokens.append(forgery)
    with pytest.raises(ConsentFailed, match=words) as refused:
        consent(vault)
    assert "nothing was stored" in str(refused.value)
    assert grants(vault) == []
    assert consent_audit(vault)["outcome"] == "failed"


def test_a_forged_id_token_is_refused_for_a_regrant_and_keeps_the_old_grant(
        vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    consent(vault)
    sandbox.state.forge_id_tokens.append("signature")
    with pytest.raises(Exception, match="signature does not verify"):
        consent(vault, replace=True)
    shown = json.loads(vault.ok("grant", "show", DAVE, "--json").out)
    assert shown["status"] == "active" and shown["tokens"]["generation"] == 1
    assert [e["event"] for e in json.loads(vault.ok("history", DAVE, "--json").out)[
        "events"]].count("Regranted") == 0


def test_no_id_token_is_said_and_recorded_as_not_checked(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    sandbox.state.forge_id_tokens.append("missing")
    _, warnings = consent(vault, signs_in=MALLORY)  # nothing to check it with
    assert any("returned no ID token" in w for w in warnings)
    shown = json.loads(vault.ok("grant", "show", DAVE, "--json").out)["signed_in"]
    assert shown == {"checked": False, "reason": "the provider returned no ID token"}
    assert re.search(r"\n  signed in +not checked \(the provider returned no ID token\)\n",
                     vault.ok("grant", "show", DAVE).out)


def test_imported_and_app_only_grants_record_that_nobody_was_checked(vault: Harness,
                                                                     sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    vault.ok("grant", "import", "--client", "demo", "--mailbox", DAVE, "--protocols", "imap",
             "--refresh-token-stdin", input="M.R3_BAY.imported-refresh-token-0123")
    vault.ok("grant", "add-app", "--client", "demo", "--mailbox", "shared@contoso.com",
             "--protocols", "imap")
    imported = json.loads(vault.ok("grant", "show", DAVE, "--json").out)["signed_in"]
    app_only = json.loads(vault.ok("grant", "show", "shared@contoso.com", "--json").out)[
        "signed_in"]
    assert imported["checked"] is False and "imported" in imported["reason"]
    assert app_only["checked"] is False and "app-only" in app_only["reason"]
    assert "not checked (app-only access" in vault.ok("grant", "show",
                                                      "shared@contoso.com").out


# -- the oidc-provider peer -------------------------------------------------------------------


def peer_consent(h: Harness, peer, *, mailbox: str, user, flow: str = "browser",
                 **kwargs) -> GrantSummary:
    return oidc_consent(h, peer, flow, user=user, mailbox=mailbox, **kwargs)


@pytest.mark.parametrize("flow", ["browser", "manual", "device"])
def test_the_oidc_provider_peer_end_to_end(vault: Harness, oidc, flow: str) -> None:
    add_oidc_client(vault, oidc)
    with pytest.raises(AccountMismatch, match=f"{BOB[0]}.*{ALICE[0]}"):
        peer_consent(vault, oidc, mailbox=ALICE[0], user=BOB, flow=flow)
    assert grants(vault) == []
    peer_consent(vault, oidc, mailbox=ALICE[0], user=ALICE, flow=flow)
    shown = json.loads(vault.ok("grant", "show", ALICE[0], "--json").out)["signed_in"]
    assert shown["checked"] is True and shown["account"] == ALICE[0]
    assert shown["issuer"] == oidc.issuer and shown["subject"] == ALICE[0]
    assert "oid" not in shown  # Microsoft's claims only
    assert oidc.introspect(vault.ok("token", ALICE[0]).out.strip())["active"] is True
    # a delegate (alice) for a shared mailbox
    peer_consent(vault, oidc, mailbox="shared@example.test", user=ALICE, flow=flow,
                 account=ALICE[0])
    assert json.loads(vault.ok("grant", "show", "shared@example.test", "--json").out)[
        "signed_in"]["account"] == ALICE[0]
