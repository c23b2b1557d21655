"""ID-token verification and the account rules without a network: tokens signed here with
`cryptography` (RS256, PS256, ES256) against the checks of adapters/id_token.py; which names count
(domain/identity.py); grant events stored before the check still load (upcasting)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from adapters.id_token import IdTokenRejected, OpenIdProvider, verify_id_token
from domain.identity import AccountMismatch, identity_scopes, signed_in_account

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CLIENT = "5a1db0c0-0000-4000-8000-00000000c11e"
TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ISSUER = f"https://login.microsoftonline.com/{TID}/v2.0"
PINNED = OpenIdProvider(issuer=ISSUER, jwks_uri="https://x/keys", scopes_supported=None)
COMMON = OpenIdProvider(issuer="https://login.microsoftonline.com/{tenantid}/v2.0",
                        jwks_uri="https://x/keys", scopes_supported=None)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64int(n: int, size: int | None = None) -> str:
    return b64(n.to_bytes(size or (n.bit_length() + 7) // 8, "big"))


def jwk(key, kid: str) -> dict:
    numbers = key.public_key().public_numbers()
    if isinstance(key, rsa.RSAPrivateKey):
        return {"kty": "RSA", "kid": kid, "use": "sig", "n": b64int(numbers.n),
                "e": b64int(numbers.e)}
    return {"kty": "EC", "kid": kid, "crv": "P-256", "x": b64int(numbers.x, 32),
            "y": b64int(numbers.y, 32)}


def claims(**changes) -> dict:
    base = {"iss": ISSUER, "aud": CLIENT, "tid": TID, "iat": NOW.timestamp() - 60,
            "nbf": NOW.timestamp() - 60, "exp": NOW.timestamp() + 3540, "nonce": "n-1",
            "sub": "pairwise", "oid": str(uuid4()), "preferred_username": "dave@contoso.com"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def token(body: dict, alg: str = "RS256", key=RSA_KEY, kid: str | None = "k1",
          header: dict | None = None) -> str:
    head = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {}), **(header or {})}
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(body).encode())}"
    data = signing_input.encode()
    if alg == "RS256":
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "PS256":
        signature = key.sign(data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                               salt_length=32), hashes.SHA256())
    elif alg == "ES256":
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = b""
    return f"{signing_input}.{b64(signature)}"


def verify(tok: str, provider: OpenIdProvider = PINNED, keys: list | None = None,
           nonce: str | None = "n-1", now: datetime = NOW) -> dict:
    return verify_id_token(tok, provider=provider,
                           keys=keys if keys is not None else [jwk(RSA_KEY, "k1"),
                                                               jwk(EC_KEY, "k2")],
                           client_id=CLIENT, nonce=nonce, now=now)


@pytest.mark.parametrize("alg,key,kid", [("RS256", RSA_KEY, "k1"), ("PS256", RSA_KEY, "k1"),
                                         ("ES256", EC_KEY, "k2"), ("RS256", RSA_KEY, None)])
def test_tokens_signed_with_each_allowed_algorithm_verify(alg, key, kid) -> None:
    assert verify(token(claims(), alg, key, kid))["preferred_username"] == "dave@contoso.com"


@pytest.mark.parametrize("tok,words", [
    (token(claims(), "none"), "'none'"),
    (token(claims(), "HS256"), "'HS256'"),
    (token(claims(), kid="unknown"), "does not publish"),
    (token(claims(), "ES256", EC_KEY, "k1"), "does not publish"),  # k1 is RSA: not for ES256
    (token(claims(), key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
     "signature does not verify"),
    (token(claims(), header={"crit": ["exp"]}), "critical"),
    (token(claims(aud="someone-else")), "another application"),
    (token(claims(aud=[CLIENT, "api"])), "azp"),
    (token(claims(nonce="n-2")), "nonce"),
    (token(claims(nonce=None)), "nonce"),
    (token(claims(iss=f"https://login.microsoftonline.com/{uuid4()}/v2.0")), "issued by"),
    (token(claims(exp=NOW.timestamp() - 301)), "expired"),
    (token(claims(nbf=NOW.timestamp() + 301)), "not valid yet"),
    (token(claims(iat=NOW.timestamp() - 3600 - 301)), "more than an hour ago"),
    (token(claims(iat=None)), "'iat'"),
    ("a.b", "compact form"), (token(claims())[:-2] + "!!", "compact form")])
def test_what_a_forged_or_wrong_token_gets_refused_for(tok: str, words: str) -> None:
    with pytest.raises(IdTokenRejected, match=words):
        verify(tok)


def test_small_clock_skew_is_tolerated_and_the_device_flow_has_no_nonce() -> None:
    verify(token(claims(exp=NOW.timestamp() - 200, nbf=NOW.timestamp() + 200)))
    verify(token(claims(nonce=None)), nonce=None)
    verify(token(claims(aud=[CLIENT, "api"], azp=CLIENT)))


def test_the_common_issuer_is_filled_with_the_tokens_tenant() -> None:
    other = str(uuid4())
    tok = token(claims(iss=f"https://login.microsoftonline.com/{other}/v2.0", tid=other))
    assert verify(tok, COMMON)["tid"] == other
    with pytest.raises(IdTokenRejected, match="issued by"):  # tid and iss must agree
        verify(token(claims(tid=other)), COMMON)
    with pytest.raises(IdTokenRejected, match="no tenant"):
        verify(token(claims(iss="https://login.microsoftonline.com/x/v2.0", tid="x")), COMMON)
    google = OpenIdProvider(issuer="https://accounts.google.com", jwks_uri="https://x/keys",
                            scopes_supported=None, also_issuers=("accounts.google.com",))
    verify(token(claims(iss="accounts.google.com")), google)


def test_which_openid_scopes_a_consent_asks_for() -> None:
    assert identity_scopes("microsoft", True, None) == ("openid", "profile", "email")
    assert identity_scopes("google", True, None) == ("openid", "email")
    assert identity_scopes("custom", False, None) == ()  # no issuer: no keys, no openid
    assert identity_scopes("custom", True, None) == ("openid", "email", "profile")
    assert identity_scopes("custom", True, ("openid", "email")) == ("openid", "email")


def test_which_names_count() -> None:
    pinned = {"preferred_username": "d.smith@contoso.onmicrosoft.com", "email": "Dave@Contoso.com",
              "oid": "o", "tid": "t", "sub": "s", "iss": "i"}
    record = signed_in_account(pinned, expected="dave@contoso.com", provider="microsoft",
                               tenant_pinned=True)
    assert (record["account"], record["claim"], record["oid"], record["tid"]) == (
        "Dave@Contoso.com", "email", "o", "t")
    with pytest.raises(AccountMismatch, match="multi-tenant"):
        signed_in_account(pinned, expected="dave@contoso.com", provider="microsoft",
                          tenant_pinned=False)
    with pytest.raises(AccountMismatch, match="not verified"):
        signed_in_account({"email": "dave@gmail.com", "email_verified": False},
                          expected="dave@gmail.com", provider="google", tenant_pinned=True)
    assert signed_in_account({"email": "dave@gmail.com", "email_verified": True},
                             expected="DAVE@gmail.com", provider="google",
                             tenant_pinned=True)["checked"] is True
    assert signed_in_account({"sub": "x"}, expected="a@b.example", provider="custom",
                             tenant_pinned=True) == {
        "checked": False, "reason": "the ID token names no account (no email or "
                                    "preferred_username claim)"}


def test_grant_events_and_snapshots_stored_before_the_check_still_load() -> None:
    """Granted and Regranted v1 (no signed_in), and a v1 ConsentGrant snapshot, upcast to
    "not checked" (None); a v1 or v2 snapshot (no login) to the mailbox as the login."""
    from eventsourcing.persistence import Mapper, StoredEvent

    from adapters.encryption import transcoder
    from domain.grants import ConsentGrant
    from domain.rotation import rotation_id_for
    from tests.unit.test_domain import client

    mapper = Mapper(transcoder=transcoder())

    def as_v1(event) -> StoredEvent:
        stored = mapper.to_stored_event(event)
        state = mapper.transcoder.decode(stored.state)
        assert state.pop("class_version") == 3 and "signed_in" in state
        del state["signed_in"], state["indicators"]
        return StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                           mapper.transcoder.encode(state))

    c = client()
    gid = uuid4()
    g = ConsentGrant.grant(aggregate_id=gid, rotation_id=rotation_id_for(gid), now=NOW,
                           client=c, mailbox="help@contoso.com", protocols=("imap",),
                           scopes=None, method="import", granted_at=None, granted_by="admin")
    g.revoke(now=NOW, reason="test", revoked_by="admin")
    g.regrant(now=NOW, client=c, protocols=("imap",), scopes=None, method="manual",
              granted_at=None, granted_by="admin",
              signed_in={"checked": True, "account": "help@contoso.com"})
    granted, revoked, regranted = g.collect_events()
    loaded = mapper.to_domain_event(as_v1(granted)).mutate(None)
    assert loaded.signed_in is None and loaded.mailbox == "help@contoso.com"
    loaded = mapper.to_domain_event(mapper.to_stored_event(revoked)).mutate(loaded)
    loaded = mapper.to_domain_event(as_v1(regranted)).mutate(loaded)
    assert loaded.signed_in is None and loaded.method == "manual"

    snapshot = ConsentGrant.Snapshot.take(loaded)
    stored = mapper.to_stored_event(snapshot)
    state = mapper.transcoder.decode(stored.state)
    assert state["state"].pop("class_version") == 4
    del state["state"]["login"], state["state"]["indicators"]  # a snapshot taken by version 2
    v2 = {**state, "state": {**state["state"], "class_version": 2}}
    old = StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                      mapper.transcoder.encode(v2))
    restored = mapper.to_domain_event(old).mutate(None)
    assert restored.login is None and restored.sasl_user == "help@contoso.com"
    assert restored.indicators is None and restored.resource_for("imap") == "mail"
    assert restored.method == "manual" and restored.signed_in is None
    del state["state"]["signed_in"]  # a snapshot taken by version 1
    old = StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                      mapper.transcoder.encode(state))
    restored = mapper.to_domain_event(old).mutate(None)
    assert restored.signed_in is None and restored.login is None
