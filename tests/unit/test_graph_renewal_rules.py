"""A renewal through Graph as the domain keeps it (its stages, what is current when), what
Graph's refusals mean (recorded bodies in the shapes of Graph's error reference), the proof of
possession's claims, and the home tenant's token URL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from adapters.crypto import b64url_decode
from adapters.graph_apps import PROOF_AUDIENCE, proof_of_possession, refusal
from domain.clouds import token_url_in_tenant
from domain.credentials import ClientCredential
from domain.errors import InvalidInput, RuleViolation
from domain.secret_value import SecretValue

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
APP_ID = "5a1db0c0-0000-4000-8000-00000000c11e"


def _client() -> ClientCredential:
    client = ClientCredential.register(
        aggregate_id=uuid4(), now=NOW, name="jira", provider="microsoft", cloud=None,
        tenant="contoso.onmicrosoft.com", client_id=APP_ID)
    client.add_secret(now=NOW, value=SecretValue("Old7Q~an-old-secret-value-0123456789abc"))
    return client


def test_a_renewed_secret_is_held_unused_until_it_is_verified() -> None:
    client = _client()
    later = NOW + timedelta(minutes=1)
    name = client.start_renewal(now=later, nonce="n0nce", kind="client_secret", via=None,
                                home_tenant=None, lifetime_days=90, retire_after=3600)
    assert "n0nce" in name and client.renewal["ends_at"] == later + timedelta(days=90)
    with pytest.raises(RuleViolation, match="abandon-renewal"):  # its credentials are its own
        client.rotate_secret(now=later, value=SecretValue("Man7Q~a-manual-secret-0123456789abc"))
    with pytest.raises(RuleViolation, match="abandon-renewal"):
        client.retire_secret(now=later, ref="s1", reason="x")
    with pytest.raises(RuleViolation, match="under way"):
        client.start_renewal(now=NOW, nonce="other", kind="client_secret", via=None,
                             home_tenant=None, lifetime_days=None, retire_after=0)
    new = client.add_secret(now=later, value=SecretValue("New7Q~the-new-secret-value-0123456789x"),
                            secret_id=str(uuid4()), pending=True)
    assert client.renewal["stage"] == "received" and client.current_secret()["ref"] == "s1"
    retired = client.verify_renewal(now=later, key_ids={"s1": "old-key"}, by="admin")
    assert retired == ["s1"] and client.current_secret()["ref"] == new
    assert client.renewal["remove"] == [{"ref": "s1", "key_id": "old-key"}]
    assert client.renewal["remove_at"] == later + timedelta(hours=1)
    client.end_renewal(now=later, outcome="finished", removed=["old-key"])
    assert client.renewal is None
    # the events replay to the same state
    replayed = None
    for event in client.collect_events():
        replayed = event.mutate(replayed)
    assert replayed.renewal is None and replayed.current_secret()["ref"] == new


def test_a_pending_secret_needs_a_renewal_that_waits_for_one() -> None:
    client = _client()
    with pytest.raises(RuleViolation):
        client.add_secret(now=NOW, value=SecretValue("New7Q~the-new-secret-value-0123456789x"),
                          pending=True)
    with pytest.raises(RuleViolation, match="authenticates with a client secret"):
        client.start_renewal(now=NOW, nonce="n", kind="certificate", via=None,
                             home_tenant=None, lifetime_days=None, retire_after=0)
    with pytest.raises(InvalidInput, match="lifetime"):
        client.start_renewal(now=NOW, nonce="n", kind="client_secret", via=None,
                             home_tenant=None, lifetime_days=0, retire_after=0)


def _graph_error(code: str, message: str) -> dict:
    """Graph's error body (https://learn.microsoft.com/graph/errors)."""
    return {"error": {"code": code, "message": message, "innerError": {
        "date": "2026-12-01T09:00:00", "request-id": str(uuid4()),
        "client-request-id": str(uuid4())}}}


@pytest.mark.parametrize(("status", "code", "message", "action", "said"), [
    (403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.",
     "read", "Application.Read.All"),
    (403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.",
     "write", f"az ad app owner add --id {APP_ID}"),
    (403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.",
     "key", "need no permission, only the proof"),
    (404, "Request_ResourceNotFound", f"Resource '{APP_ID}' does not exist or one of its "
     "queried reference-property objects are not present.", "read", "home tenant"),
    (400, "CredentialTypeNotAllowedAsPerAppPolicy", "Credential type not allowed as per "
     "assigned policy 'p'.", "write", "rotate-certificate --via-graph"),
    (400, "CredentialInvalidLifetimeAsPerAppPolicy", "Credential lifetime exceeds the max value "
     "allowed as per assigned policy 'p'.", "write", "--lifetime-days"),
    (400, "Authentication_MissingOrMalformed", "Access Token missing or malformed.", "key",
     "proof of possession"),
    (401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.",
     "read", "refuses the token's audience"),
    (429, "TooManyRequests", "Too many requests.", "read", "after 2.5 s"),
    (500, "UnknownError", "\x1b[31mred\x1b[0m", "read", "Graph said"),
])
def test_each_refusal_says_what_to_do(status: int, code: str, message: str, action: str,
                                      said: str) -> None:
    error = refusal(status, _graph_error(code, message), "jira", "2.5", app_id=APP_ID,
                    caller_id=APP_ID,
                    action=action, graph_host="https://graph.microsoft.com",
                    cloud="global, whose Graph is https://graph.microsoft.com")
    text = str(error)
    assert f"HTTP {status} ({code})" in text and said in text
    assert (error.status, error.code) == (status, code)


def test_the_proof_carries_the_claims_graph_asks_for(tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    proof = proof_of_possession(SecretValue(pem), "ab" * 20, "object-id", 1_800_000_000)
    head, body, _ = proof.split(".")
    assert "=" not in head + body  # Graph refuses padding
    header, claims = json.loads(b64url_decode(head)), json.loads(b64url_decode(body))
    assert header["alg"] == "RS256" and header["kid"] == "AB" * 20
    assert claims == {"aud": PROOF_AUDIENCE, "iss": "object-id", "nbf": 1_800_000_000,
                      "exp": 1_800_000_600}


def test_the_home_tenant_replaces_the_token_urls_tenant() -> None:
    url = "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
    assert token_url_in_tenant(url, "organizations", "contoso.onmicrosoft.com") == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token")
    for bad in ("common", "", "a/b"):
        with pytest.raises(InvalidInput, match="home tenant"):
            token_url_in_tenant(url, "organizations", bad)
    with pytest.raises(InvalidInput, match="names the client's tenant"):
        token_url_in_tenant("https://idp.example/token", "organizations", "contoso")
