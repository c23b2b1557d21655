"""Graph's application endpoints, over the sandbox's directory (directory.py):

  GET  /v1.0/applications(appId='{appId}')  (or /v1.0/applications/{object id}; $select tolerated)
  POST .../addPassword     {"passwordCredential": {"displayName", "endDateTime"?}} -> 200, once
                           with secretText (https://learn.microsoft.com/graph/api/application-addpassword)
  POST .../removePassword  {"keyId"} -> 204 (.../application-removepassword)
  POST .../addKey          {"keyCredential": {type, usage, key}, "passwordCredential": null,
                            "proof"} -> 200 (.../application-addkey)
  POST .../removeKey       {"keyId", "proof"} -> 204 (.../application-removekey)

Who may: the caller's app-only Graph token carries `roles` (tokens.py). Application.Read.All
reads any application of the token's tenant, Application.ReadWrite.All reads and writes any,
Application.ReadWrite.OwnedBy reads and writes those whose owners include the caller's service
principal; anything else is 403 Authorization_RequestDenied. "An application doesn't need any
specific permission to roll its own keys" (addKey's page): addKey and removeKey on itself need
only the proof. The application object lives in its home tenant only: from a token for another
tenant, or for an appId nobody registered, it is 404 Request_ResourceNotFound.

The proof of addKey and removeKey is checked as Graph's page on it says
(https://learn.microsoft.com/graph/application-rollkey-prooftoken): a JWT signed (RS256) with
the private key of one of the application's valid certificates (named by its `x5t` or `kid`
header, as .NET's X509SigningCredentials puts them), aud 00000002-0000-0000-c000-000000000000,
iss the application's object id (not its appId), nbf and exp, "the token lifespan should not
exceed 10 minutes", no base64 `=` padding in its header or payload (the one refusal that page
names). Graph answers every bad proof alike: `Authentication_MissingOrMalformed`,
"Access Token missing or malformed." (as reported in microsoft-graph-docs#10686 and #14626);
the status is not in those reports: the sandbox says 400 (the bearer token is fine, the request
is not), and keeps its reason in SandboxState.refused_proofs for tests.

App management policy (https://learn.microsoft.com/graph/api/resources/appmanagementpolicy):
with Application.refuse_passwords addPassword is 400 CredentialTypeNotAllowedAsPerAppPolicy
("Credential type not allowed as per assigned policy '{policy id}'."), with
max_password_lifetime a longer secret is 400 CredentialInvalidLifetimeAsPerAppPolicy
("Credential lifetime exceeds the max value allowed as per assigned policy '{policy id}'."):
the codes Microsoft's Teams Toolkit matches and the messages az prints. Throttling
(graph.throttled) applies here as to every Graph call.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from adapters.crypto import b64url, b64url_decode
from sandbox.directory import TWO_YEARS, PasswordCredential, key_id, new_secret_text
from sandbox.graph import bearer, refusal, throttled

if TYPE_CHECKING:
    from sandbox.directory import Application
    from sandbox.state import SandboxState

READ_ALL, READ_WRITE_ALL, OWNED_BY = ("Application.Read.All", "Application.ReadWrite.All",
                                      "Application.ReadWrite.OwnedBy")
PROOF_AUDIENCE = "00000002-0000-0000-c000-000000000000"  # as the page says: Azure AD Graph's id
PROOF_LIFETIME = 600  # "exp ... should be nbf + 10 mins"
PATH = re.compile(r"^/v1\.0/applications(?:\(appId='(?P<app_id>[^']+)'\)|/(?P<object_id>[^/]+))"
                  r"(?:/(?P<action>addPassword|removePassword|addKey|removeKey))?$")
ACTIONS = {None: "GET", "addPassword": "POST", "removePassword": "POST", "addKey": "POST",
           "removeKey": "POST"}

Answer = tuple[int, dict[str, Any] | None, dict[str, str]]  # status, JSON body (None: 204), headers


class GraphRefusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.answer = (*refusal(status, code, message), {})


class BadProof(GraphRefusal):
    def __init__(self, reason: str) -> None:
        super().__init__(400, "Authentication_MissingOrMalformed",
                         "Access Token missing or malformed.")
        self.reason = reason


def is_application_path(path: str) -> bool:
    return PATH.match(unquote(path)) is not None


def answer(state: SandboxState, method: str, path: str, query: dict[str, str],
           authorization: str, body: bytes) -> Answer:
    """Graph's answer to `method path` with this Authorization header and JSON body."""
    try:
        return _answer(state, method, path, query, authorization, body)
    except BadProof as e:
        with state.lock:
            state.refused_proofs.append(e.reason)
        return e.answer
    except GraphRefusal as e:
        return e.answer


def _answer(state: SandboxState, method: str, path: str, query: dict[str, str],
            authorization: str, body: bytes) -> Answer:
    too_many = throttled(state)
    if too_many is not None:
        return too_many
    match = PATH.match(unquote(path))
    if match is None or ACTIONS[match["action"]] != method:
        raise GraphRefusal(405 if match else 400, "Request_BadRequest",
                           f"Unsupported request: {method} {path}")
    token = bearer(state, authorization)
    if isinstance(token, tuple):
        return (*token, {})
    if not token["app"]:  # the sandbox's delegated tokens carry no directory roles
        raise GraphRefusal(403, "Authorization_RequestDenied",
                           "Insufficient privileges to complete the operation.")
    claims = token["claims"]
    app = _find(state, claims.get("tid"), match["app_id"], match["object_id"])
    action = match["action"]
    _authorize(app, claims, write=action is not None,
               own_keys=action in ("addKey", "removeKey") and claims.get("appid") == app.app_id)
    if action is None:
        select = [s.strip() for s in query.get("$select", "").split(",") if s.strip()]
        return 200, app.graph(select), {}
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        request = None
    if not isinstance(request, dict):
        raise GraphRefusal(400, "Request_BadRequest", "Invalid request body: a JSON object is "
                                                      "expected.")
    with state.lock:
        state.stats[action] = state.stats.get(action, 0) + 1
    if _hold(state, action, "before"):  # its caller was killed meanwhile: it never arrived
        raise GraphRefusal(503, "ServiceUnavailable", "The request was not processed.")
    result = {"addPassword": _add_password, "removePassword": _remove_password,
              "addKey": _add_key, "removeKey": _remove_key}[action](state, app, request)
    _hold(state, action, "after")
    return result


def _hold(state: SandboxState, action: str, when: str) -> bool:
    """A test's hold on this action, before or after it is done (SandboxState.holds): the
    request waits until the test releases it. Held before, it is then not done at all."""
    if state.holds.get(action) != when:
        return False
    state.held.set()
    state.release.wait(60)
    return True


def _find(state: SandboxState, tid: str | None, app_id: str | None,
          object_id: str | None) -> Application:
    with state.lock:
        found = [a for a in state.applications.values()
                 if (a.app_id == app_id if app_id else a.object_id == object_id)]
    if not found or found[0].tenant != tid:  # the object lives in its home tenant only
        raise GraphRefusal(404, "Request_ResourceNotFound",
                           f"Resource '{app_id or object_id}' does not exist or one of its "
                           "queried reference-property objects are not present.")
    return found[0]


def _authorize(app: Application, claims: dict[str, Any], write: bool, own_keys: bool) -> None:
    roles = set(claims.get("roles") or ())
    owner = OWNED_BY in roles and claims.get("oid") in app.owners
    allowed = own_keys or READ_WRITE_ALL in roles or owner or (not write and READ_ALL in roles)
    if not allowed:
        raise GraphRefusal(403, "Authorization_RequestDenied",
                           "Insufficient privileges to complete the operation.")


def _graph_time(request: dict[str, Any], name: str) -> float | None:
    value = request.get(name)
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise GraphRefusal(400, "Request_BadRequest",
                           f"Invalid value specified for property '{name}'.") from None


def _add_password(state: SandboxState, app: Application, request: dict[str, Any]) -> Answer:
    asked = request.get("passwordCredential") or {}
    if not isinstance(asked, dict):
        raise GraphRefusal(400, "Request_BadRequest", "Invalid passwordCredential.")
    now = state.clock()
    start = _graph_time(asked, "startDateTime") or now
    end = _graph_time(asked, "endDateTime") or start + TWO_YEARS
    if app.refuse_passwords:
        raise GraphRefusal(400, "CredentialTypeNotAllowedAsPerAppPolicy",
                           f"Credential type not allowed as per assigned policy "
                           f"'{app.policy_id}'.")
    if app.max_password_lifetime is not None and end - start > app.max_password_lifetime:
        raise GraphRefusal(400, "CredentialInvalidLifetimeAsPerAppPolicy",
                           f"Credential lifetime exceeds the max value allowed as per assigned "
                           f"policy '{app.policy_id}'.")
    if end <= start:
        raise GraphRefusal(400, "Request_BadRequest",
                           "Key credential end date must be later than its start date.")
    credential = PasswordCredential(new_secret_text(), start, end, asked.get("displayName"),
                                    usable_from=now + app.propagation)
    with state.lock:
        app.passwords.append(credential)
    return 200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph."
                                   "passwordCredential", **credential.graph(secret_text=True)}, {}


def _remove_password(state: SandboxState, app: Application, request: dict[str, Any]) -> Answer:
    wanted = str(request.get("keyId", ""))
    with state.lock:
        kept = [p for p in app.passwords if p.key_id.lower() != wanted.lower()]
        found = len(kept) != len(app.passwords)
        app.passwords[:] = kept  # the token endpoint refuses it from now on
    if not found:  # Graph says so with a 400 (seen by those who retry a removal)
        raise GraphRefusal(400, "Request_BadRequest",
                           f"No password credential found with keyId {wanted}.")
    return 204, None, {}


def _add_key(state: SandboxState, app: Application, request: dict[str, Any]) -> Answer:
    from cryptography import x509

    _check_proof(state, app, request.get("proof"))
    if request.get("passwordCredential") is not None:
        raise GraphRefusal(400, "Request_BadRequest", "passwordCredential must be null unless "
                                                      "the key is an X509CertAndPassword.")
    asked = request.get("keyCredential")
    if not isinstance(asked, dict) or (asked.get("type"), asked.get("usage")) != (
            "AsymmetricX509Cert", "Verify"):
        raise GraphRefusal(400, "Request_BadRequest", "The keyCredential must have type "
                                                      "AsymmetricX509Cert and usage Verify.")
    try:
        certificate = x509.load_der_x509_certificate(base64.b64decode(str(asked.get("key"))))
    except ValueError:
        raise GraphRefusal(400, "Request_BadRequest",
                           "Invalid value specified for property 'key' of resource "
                           "'KeyCredential'.") from None
    with state.lock:
        if key_id(certificate) not in {key_id(c) for c in app.certificates}:
            app.certificates.append(certificate)
        if asked.get("displayName"):
            app.key_names[key_id(certificate)] = str(asked["displayName"])
    return 200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph."
                                   "keyCredential", **app.key_credential(certificate)}, {}


def _remove_key(state: SandboxState, app: Application, request: dict[str, Any]) -> Answer:
    _check_proof(state, app, request.get("proof"))
    wanted = str(request.get("keyId", "")).lower()
    with state.lock:
        kept = [c for c in app.certificates if key_id(c) != wanted]
        found = len(kept) != len(app.certificates)
        app.certificates[:] = kept
    if not found:
        raise GraphRefusal(400, "Request_BadRequest",
                           f"No key credential found with keyId {wanted}.")
    return 204, None, {}


def _check_proof(state: SandboxState, app: Application, proof: Any) -> None:
    """Raises BadProof unless `proof` is a proof of possession of one of the app's valid
    certificates, for this application object, living at most ten minutes."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if "=" in str(proof or "").rpartition(".")[0]:  # the proof-token page's one named refusal
        raise BadProof("base64 padding")
    try:
        head, body, signature = str(proof or "").split(".")
        header = json.loads(b64url_decode(head))
        claims = json.loads(b64url_decode(body))
        raw_signature = b64url_decode(signature)
    except ValueError:
        raise BadProof("not a JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise BadProof("not a JWT")
    if header.get("alg") != "RS256":
        raise BadProof(f"alg {header.get('alg')}")
    now = state.clock()
    with state.lock:
        certificates = list(app.certificates)
    named = [c for c in certificates
             if b64url(c.fingerprint(hashes.SHA1())) == header.get("x5t")  # noqa: S303
             or c.fingerprint(hashes.SHA1()).hex().upper() == str(  # noqa: S303
                 header.get("kid", "")).upper()]
    if not named:
        raise BadProof("signed by a certificate the application does not have")
    certificate = named[0]
    if not (certificate.not_valid_before_utc.timestamp() <= now
            <= certificate.not_valid_after_utc.timestamp()):
        raise BadProof("signed by a certificate that is not valid now")
    try:
        certificate.public_key().verify(raw_signature, f"{head}.{body}".encode(),
                                        padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise BadProof("signature") from None
    if claims.get("aud") != PROOF_AUDIENCE:
        raise BadProof("aud")
    if claims.get("iss") != app.object_id:
        raise BadProof("iss")
    try:
        nbf, exp = float(claims["nbf"]), float(claims["exp"])
    except (KeyError, TypeError, ValueError):
        raise BadProof("nbf/exp") from None
    if exp - nbf > PROOF_LIFETIME:
        raise BadProof("lifetime over 10 minutes")
    if now < nbf - 300 or now > exp:  # five minutes of clock skew, as for client assertions
        raise BadProof("expired or not yet valid")
