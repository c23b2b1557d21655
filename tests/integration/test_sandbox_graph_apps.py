"""The sandbox's Graph application endpoints, spoken to directly with httpx (no vault code): the
application object and its credentials, addPassword and its propagation delay at the token
endpoint, removePassword, addKey and removeKey with their proof of possession, the permission
checks on the app-only token's roles and the application's owners, the home tenant, throttling and
the app management policy. Time passes on the sandbox's clock, moved by the tests: nothing sleeps."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from adapters.crypto import b64url

TENANT = "sandbox.onmicrosoft.com"
READ_ALL, READ_WRITE_ALL, OWNED_BY = ("Application.Read.All", "Application.ReadWrite.All",
                                      "Application.ReadWrite.OwnedBy")
PROOF_AUDIENCE = "00000002-0000-0000-c000-000000000000"
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# -- helpers ------------------------------------------------------------------------------------


def token_response(sandbox, secret: str | None = None, client_id: str | None = None,
                   tenant: str = TENANT) -> httpx.Response:
    return httpx.post(f"{sandbox.base_url}/{tenant}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
        "client_id": client_id or sandbox.state.client_id,
        "client_secret": secret if secret is not None else sandbox.state.secret})


def graph_token(sandbox, secret: str | None = None, client_id: str | None = None,
                tenant: str = TENANT) -> str:
    answer = token_response(sandbox, secret, client_id, tenant)
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def refused_code(answer: httpx.Response) -> int:
    assert answer.status_code == 401, answer.text
    return answer.json()["error_codes"][0]


def app_url(sandbox, app_id: str | None = None, action: str | None = None) -> str:
    url = f"{sandbox.base_url}/v1.0/applications(appId='{app_id or sandbox.state.client_id}')"
    return f"{url}/{action}" if action else url


def get_app(sandbox, token: str, app_id: str | None = None, **params: str) -> httpx.Response:
    return httpx.get(app_url(sandbox, app_id), params=params,
                     headers={"Authorization": f"Bearer {token}"})


def call(sandbox, token: str, action: str, body: dict, app_id: str | None = None
         ) -> httpx.Response:
    return httpx.post(app_url(sandbox, app_id, action), json=body,
                      headers={"Authorization": f"Bearer {token}"})


def graph_error(answer: httpx.Response, status: int) -> dict:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error["innerError"]) >= {"request-id", "date"}
    return error


def make_certificate(name: str, days: int = 30, start_days_ago: int = 1):
    """A self-signed RSA certificate and its key, as `New-SelfSignedCertificate` makes them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(days=start_days_ago))
                   .not_valid_after(now + timedelta(days=days))
                   .sign(key, hashes.SHA256()))
    return key, certificate


def sha1(certificate) -> bytes:
    from cryptography.hazmat.primitives import hashes

    return certificate.fingerprint(hashes.SHA1())  # noqa: S303


def der_b64(certificate) -> str:
    from cryptography.hazmat.primitives import serialization

    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


def proof(key, certificate, iss: str, aud: str = PROOF_AUDIENCE, nbf: float | None = None,
          lifetime: float = 600) -> str:
    """A proof of possession as Graph's sample makes it (RS256, x5t and kid headers)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    nbf = datetime.now(UTC).timestamp() if nbf is None else nbf
    header = {"alg": "RS256", "typ": "JWT", "x5t": b64url(sha1(certificate)),
              "kid": sha1(certificate).hex().upper()}
    claims = {"aud": aud, "iss": iss, "nbf": int(nbf), "exp": int(nbf + lifetime)}
    signing_input = (f"{b64url(json.dumps(header).encode())}."
                     f"{b64url(json.dumps(claims).encode())}")
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def owned_by_itself(sandbox, *roles: str) -> None:
    app = sandbox.state.application
    app.roles = set(roles or {OWNED_BY})
    app.owns_itself = True


# -- the application object ---------------------------------------------------------------------


def test_the_application_shows_its_secrets_and_certificates_never_a_secret_value(
        sandbox) -> None:
    _, certificate = make_certificate("vault-app.example.test", days=40)
    sandbox.state.certificates.append(certificate)
    sandbox.state.application.roles = {READ_ALL}
    answer = get_app(sandbox, graph_token(sandbox))
    assert answer.status_code == 200, answer.text
    app = answer.json()
    assert app["appId"] == sandbox.state.client_id
    assert GUID.match(app["id"]) and app["id"] != app["appId"]
    [password] = app["passwordCredentials"]
    assert GUID.match(password["keyId"]) and password["hint"] == sandbox.state.secret[:3]
    assert password["secretText"] is None and sandbox.state.secret not in answer.text
    start = datetime.fromisoformat(password["startDateTime"])
    end = datetime.fromisoformat(password["endDateTime"])
    assert timedelta(days=730) <= end - start <= timedelta(days=731)
    [key] = app["keyCredentials"]
    assert key["customKeyIdentifier"] == base64.b64encode(sha1(certificate)).decode()
    assert (key["type"], key["usage"], key["key"]) == ("AsymmetricX509Cert", "Verify", None)
    assert GUID.match(key["keyId"]) and key["displayName"] == "CN=vault-app.example.test"
    assert datetime.fromisoformat(key["endDateTime"]) == certificate.not_valid_after_utc.replace(
        microsecond=0)
    assert datetime.fromisoformat(key["startDateTime"]) == \
        certificate.not_valid_before_utc.replace(microsecond=0)

    selected = get_app(sandbox, graph_token(sandbox), **{"$select": "id,passwordCredentials"})
    assert {k for k in selected.json() if not k.startswith("@")} == {"id", "passwordCredentials"}
    keys = get_app(sandbox, graph_token(sandbox), **{"$select": "keyCredentials"}).json()
    assert keys["keyCredentials"][0]["key"] == der_b64(certificate)  # only when selected
    by_object_id = httpx.get(f"{sandbox.base_url}/v1.0/applications/{app['id']}",
                             headers={"Authorization": f"Bearer {graph_token(sandbox)}"})
    assert by_object_id.json()["appId"] == app["appId"]


# -- addPassword, propagation, removePassword -----------------------------------------------------


def test_add_password_shows_the_secret_once_and_it_works_once_propagated(sandbox) -> None:
    owned_by_itself(sandbox)
    sandbox.state.application.propagation = 120
    token = graph_token(sandbox)
    added = call(sandbox, token, "addPassword",
                 {"passwordCredential": {"displayName": "vault 2026-01-02 nonce abc"}})
    assert added.status_code == 200, added.text
    credential = added.json()
    secret = credential["secretText"]
    assert re.match(r"^[A-Za-z0-9_.~-]{3}\dQ~[A-Za-z0-9_.~-]{34}$", secret)
    assert credential["hint"] == secret[:3] and GUID.match(credential["keyId"])
    assert credential["displayName"] == "vault 2026-01-02 nonce abc"
    lifetime = (datetime.fromisoformat(credential["endDateTime"])
                - datetime.fromisoformat(credential["startDateTime"]))
    assert timedelta(days=730) <= lifetime <= timedelta(days=731)  # the default: two years

    shown = get_app(sandbox, token).json()["passwordCredentials"]
    assert [(p["keyId"], p["secretText"]) for p in shown][1] == (credential["keyId"], None)
    assert secret not in get_app(sandbox, token).text

    assert refused_code(token_response(sandbox, secret)) == 7000215  # still propagating
    sandbox.state.advance(119)
    assert refused_code(token_response(sandbox, secret)) == 7000215
    sandbox.state.advance(2)
    assert token_response(sandbox, secret).status_code == 200
    assert token_response(sandbox).status_code == 200  # the old secret works on


def test_the_clock_moves_over_http_and_the_end_date_asked_for_is_kept(sandbox) -> None:
    httpx.post(f"{sandbox.base_url}/sandbox/app?roles={OWNED_BY}&owns_itself=true"
               f"&propagation=30").raise_for_status()
    end = (datetime.now(UTC) + timedelta(days=90)).replace(microsecond=0)
    added = call(sandbox, graph_token(sandbox), "addPassword", {"passwordCredential": {
        "displayName": "short", "endDateTime": end.isoformat().replace("+00:00", "Z")}})
    assert datetime.fromisoformat(added.json()["endDateTime"]) == end
    secret = added.json()["secretText"]
    assert refused_code(token_response(sandbox, secret)) == 7000215
    httpx.post(f"{sandbox.base_url}/sandbox/clock?advance=31").raise_for_status()
    assert token_response(sandbox, secret).status_code == 200
    sandbox.state.advance(91 * 86400)
    assert refused_code(token_response(sandbox, secret)) == 7000222  # expired


def test_remove_password_makes_the_token_endpoint_refuse_it_at_once(sandbox) -> None:
    owned_by_itself(sandbox)
    token = graph_token(sandbox)
    secret = call(sandbox, token, "addPassword", {"passwordCredential": {}}).json()
    assert token_response(sandbox, secret["secretText"]).status_code == 200
    old_key = get_app(sandbox, token).json()["passwordCredentials"][0]["keyId"]
    old_secret = sandbox.state.secret

    removed = call(sandbox, token, "removePassword", {"keyId": old_key})
    assert removed.status_code == 204 and removed.content == b""
    assert refused_code(token_response(sandbox, old_secret)) == 7000215
    assert [p["keyId"] for p in get_app(sandbox, token).json()["passwordCredentials"]] == [
        secret["keyId"]]
    again = graph_error(call(sandbox, token, "removePassword", {"keyId": old_key}), 400)
    assert again["message"] == f"No password credential found with keyId {old_key}."
    assert token_response(sandbox, secret["secretText"]).status_code == 200


# -- who may --------------------------------------------------------------------------------------


def test_without_a_role_or_without_ownership_graph_says_insufficient_privileges(
        sandbox) -> None:
    app = sandbox.state.application
    denied = graph_error(get_app(sandbox, graph_token(sandbox)), 403)
    assert (denied["code"], denied["message"]) == (
        "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")

    app.roles = {READ_ALL}
    reader = graph_token(sandbox)
    assert get_app(sandbox, reader).status_code == 200
    assert graph_error(call(sandbox, reader, "addPassword", {}), 403)["code"] == \
        "Authorization_RequestDenied"

    app.roles = {OWNED_BY}  # granted, but the app's service principal is no owner
    not_owner = graph_token(sandbox)
    assert graph_error(get_app(sandbox, not_owner), 403)["code"] == "Authorization_RequestDenied"
    assert graph_error(call(sandbox, not_owner, "addPassword", {}), 403)["code"] == \
        "Authorization_RequestDenied"
    app.owns_itself = True  # ownership is looked up at the call: the same token now works
    assert call(sandbox, not_owner, "addPassword", {}).status_code == 200
    assert len(app.passwords) == 2


def test_roles_are_those_granted_when_the_token_was_issued(sandbox) -> None:
    before = graph_token(sandbox)
    owned_by_itself(sandbox)
    assert get_app(sandbox, before).status_code == 403
    assert get_app(sandbox, graph_token(sandbox)).status_code == 200
    assert sandbox.state.access_tokens[before]["claims"]["roles"] == []
    exchange = httpx.post(f"{sandbox.base_url}/{TENANT}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "scope": "https://outlook.office365.com/.default",
        "client_id": sandbox.state.client_id, "client_secret": sandbox.state.secret})
    mail = exchange.json()["access_token"]  # Graph's roles are not in a token for Exchange
    assert sandbox.state.access_tokens[mail]["claims"]["roles"] == []
    assert get_app(sandbox, mail).status_code == 401


def test_a_management_app_writes_what_its_role_and_ownership_allow(sandbox) -> None:
    registered = httpx.post(f"{sandbox.base_url}/sandbox/register?display_name=manager"
                            f"&roles={READ_WRITE_ALL}").json()
    assert registered["appId"] != sandbox.state.client_id and registered["secret"]
    manager = graph_token(sandbox, registered["secret"], registered["appId"])
    assert call(sandbox, manager, "addPassword", {}).status_code == 200  # any app of the tenant

    httpx.post(f"{sandbox.base_url}/sandbox/app?app_id={registered['appId']}"
               f"&roles={OWNED_BY}").raise_for_status()
    narrow = graph_token(sandbox, registered["secret"], registered["appId"])
    assert graph_error(call(sandbox, narrow, "addPassword", {}), 403)["code"] == \
        "Authorization_RequestDenied"
    shown = httpx.post(f"{sandbox.base_url}/sandbox/app?owners={registered['appId']}").json()
    assert shown["ownsItself"] is False  # owned by the manager, not by itself
    assert call(sandbox, narrow, "addPassword", {}).status_code == 200
    assert len(sandbox.state.application.passwords) == 3


def test_the_application_lives_in_its_home_tenant_only(sandbox) -> None:
    sandbox.state.application.roles = {READ_WRITE_ALL}
    elsewhere = graph_token(sandbox, tenant="contoso.onmicrosoft.com")  # a multi-tenant app's
    missing = graph_error(get_app(sandbox, elsewhere), 404)
    assert missing["code"] == "Request_ResourceNotFound"
    assert missing["message"] == (f"Resource '{sandbox.state.client_id}' does not exist or one "
                                  "of its queried reference-property objects are not present.")
    home = graph_token(sandbox)
    unknown = str(uuid.uuid4())
    assert graph_error(get_app(sandbox, home, unknown), 404)["code"] == "Request_ResourceNotFound"
    assert graph_error(call(sandbox, home, "addPassword", {}, unknown), 404)["code"] == \
        "Request_ResourceNotFound"
    assert get_app(sandbox, home).status_code == 200


def test_a_token_graph_did_not_issue_is_401(sandbox) -> None:
    answer = get_app(sandbox, "sbx-app.forged")
    assert graph_error(answer, 401)["code"] == "InvalidAuthenticationToken"


# -- throttling and policy ------------------------------------------------------------------------


def test_throttled_calls_are_429_with_retry_after(sandbox) -> None:
    owned_by_itself(sandbox)
    token = graph_token(sandbox)
    httpx.post(f"{sandbox.base_url}/sandbox/graph/throttle?count=2&retry_after=3.5"
               ).raise_for_status()
    for _ in range(2):
        answer = get_app(sandbox, token)
        assert graph_error(answer, 429)["code"] == "TooManyRequests"
        assert answer.headers["Retry-After"] == "3.5"
    assert get_app(sandbox, token).status_code == 200
    sandbox.state.graph_throttle = 2
    assert call(sandbox, token, "addPassword", {}).status_code == 429
    assert len(sandbox.state.application.passwords) == 1  # a throttled call changes nothing
    inbox = httpx.get(f"{sandbox.base_url}/v1.0/users/carol@contoso.com/mailFolders/inbox",
                      headers={"Authorization": f"Bearer {token}"})
    assert inbox.status_code == 429  # every Graph call: the mail probe's too
    assert call(sandbox, token, "addPassword", {}).status_code == 200


def test_an_app_management_policy_refuses_secrets_or_their_lifetime(sandbox) -> None:
    owned_by_itself(sandbox)
    app = sandbox.state.application
    token = graph_token(sandbox)
    app.refuse_passwords = True
    refused = graph_error(call(sandbox, token, "addPassword", {}), 400)
    assert refused["code"] == "CredentialTypeNotAllowedAsPerAppPolicy"
    assert refused["message"] == (f"Credential type not allowed as per assigned policy "
                                  f"'{app.policy_id}'.")

    httpx.post(f"{sandbox.base_url}/sandbox/app?refuse_passwords=false&max_password_days=30"
               ).raise_for_status()
    two_years = graph_error(call(sandbox, token, "addPassword", {}), 400)  # the default
    assert two_years["code"] == "CredentialInvalidLifetimeAsPerAppPolicy"
    assert two_years["message"] == ("Credential lifetime exceeds the max value allowed as per "
                                    f"assigned policy '{app.policy_id}'.")
    end = (datetime.now(UTC) + timedelta(days=29)).isoformat()
    assert call(sandbox, token, "addPassword",
                {"passwordCredential": {"endDateTime": end}}).status_code == 200
    assert len(app.passwords) == 2


# -- addKey and removeKey -------------------------------------------------------------------------


def test_add_key_with_a_proof_from_the_current_certificate_then_remove_the_old_one(
        sandbox) -> None:
    old_key, old = make_certificate("old.example.test")
    new_key, new = make_certificate("new.example.test", days=365)
    sandbox.state.certificates.append(old)
    app = sandbox.state.application  # no role: an app rolls its own keys without one
    token = graph_token(sandbox)
    added = call(sandbox, token, "addKey", {
        "keyCredential": {"type": "AsymmetricX509Cert", "usage": "Verify", "key": der_b64(new),
                          "displayName": "vault rotation"},
        "passwordCredential": None, "proof": proof(old_key, old, iss=app.object_id)})
    assert added.status_code == 200, added.text
    credential = added.json()
    assert credential["customKeyIdentifier"] == base64.b64encode(sha1(new)).decode()
    assert credential["displayName"] == "vault rotation"
    assert app.certificates == [old, new]

    old_id = app.key_credential(old)["keyId"]
    removed = call(sandbox, token, "removeKey",
                   {"keyId": old_id, "proof": proof(new_key, new, iss=app.object_id)})
    assert removed.status_code == 204
    app.roles = {READ_ALL}
    shown = get_app(sandbox, graph_token(sandbox)).json()["keyCredentials"]
    assert [k["keyId"] for k in shown] == [credential["keyId"]]


def _bad_proofs(app, key, certificate, stranger_key, stranger) -> dict[str, str]:
    now = datetime.now(UTC).timestamp()
    return {
        "aud": proof(key, certificate, iss=app.object_id, aud="00000003-0000-0000-c000-000000000000"),
        "iss": proof(key, certificate, iss=app.app_id),  # the appId, not the object's id
        "expired or not yet valid": proof(key, certificate, iss=app.object_id, nbf=now - 3600),
        "signed by a certificate the application does not have":
            proof(stranger_key, stranger, iss=app.object_id),
        "lifetime over 10 minutes": proof(key, certificate, iss=app.object_id, lifetime=660),
        "not a JWT": "not-a-jwt",
        "base64 padding": _padded(proof(key, certificate, iss=app.object_id)),
    }


def _padded(jwt: str) -> str:
    """The same JWT with its payload base64-padded, as some libraries leave it."""
    head, body, signature = jwt.split(".")
    return f"{head}.{body}{'=' * (-len(body) % 4) or '=='}.{signature}"


@pytest.mark.parametrize("reason", ["aud", "iss", "expired or not yet valid",
                                    "signed by a certificate the application does not have",
                                    "lifetime over 10 minutes", "not a JWT",
                                    "base64 padding"])
def test_add_key_refuses_a_bad_proof(sandbox, reason: str) -> None:
    key, certificate = make_certificate("current.example.test")
    stranger_key, stranger = make_certificate("stranger.example.test")
    _, new = make_certificate("new.example.test")
    sandbox.state.certificates.append(certificate)
    app = sandbox.state.application
    bad = _bad_proofs(app, key, certificate, stranger_key, stranger)[reason]
    answer = call(sandbox, graph_token(sandbox), "addKey", {
        "keyCredential": {"type": "AsymmetricX509Cert", "usage": "Verify", "key": der_b64(new)},
        "passwordCredential": None, "proof": bad})
    error = graph_error(answer, 400)
    assert (error["code"], error["message"]) == ("Authentication_MissingOrMalformed",
                                                 "Access Token missing or malformed.")
    assert sandbox.state.refused_proofs == [reason]
    assert app.certificates == [certificate]


def test_a_proof_signed_with_an_expired_certificate_proves_nothing(sandbox) -> None:
    key, certificate = make_certificate("current.example.test", days=10)
    _, new = make_certificate("new.example.test")
    sandbox.state.certificates.append(certificate)
    sandbox.state.advance(11 * 86400)
    app = sandbox.state.application
    now = sandbox.state.clock()
    answer = call(sandbox, graph_token(sandbox), "addKey", {
        "keyCredential": {"type": "AsymmetricX509Cert", "usage": "Verify", "key": der_b64(new)},
        "passwordCredential": None, "proof": proof(key, certificate, iss=app.object_id, nbf=now)})
    assert graph_error(answer, 400)["code"] == "Authentication_MissingOrMalformed"
    assert sandbox.state.refused_proofs == ["signed by a certificate that is not valid now"]
