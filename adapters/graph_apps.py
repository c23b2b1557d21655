"""An app registration's credentials as Microsoft Graph's application object lists them
(`GET /v1.0/applications(appId='...')`, docs/providers.md "Entra app credentials through
Microsoft Graph"), and what Graph's refusals mean for the admin."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from adapters.errors import AdapterError
from domain.entra import EntraCertificate, EntraPassword, thumbprint_of
from domain.errors import OperationFailed
from domain.secret_value import SecretValue


class GraphRefused(OperationFailed, AdapterError):
    """Graph answered an error (`status`, `code`; None when it was not reached): what it means
    and what to do."""

    def __init__(self, message: str, *, status: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class EntraApplication(NamedTuple):
    object_id: str
    passwords: list[EntraPassword]
    certificates: list[EntraCertificate]


def _day(value: Any) -> date | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        return None


def _text(value: Any, limit: int = 120) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def parse_application(body: Any) -> EntraApplication:
    """The application object's credentials; anything not shaped as Graph documents them is
    refused (never guessed)."""
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise GraphRefused("Graph's answer is not an application object")
    passwords, certificates = [], []
    for item in body.get("passwordCredentials") or []:
        if not isinstance(item, dict) or not isinstance(item.get("keyId"), str):
            raise GraphRefused("Graph listed a password credential without a keyId")
        passwords.append(EntraPassword(item["keyId"], _text(item.get("displayName")),
                                       _text(item.get("hint"), 3), _day(item.get("startDateTime")),
                                       _day(item.get("endDateTime"))))
    for item in body.get("keyCredentials") or []:
        if not isinstance(item, dict) or not isinstance(item.get("keyId"), str):
            raise GraphRefused("Graph listed a key credential without a keyId")
        certificates.append(EntraCertificate(
            item["keyId"], thumbprint_of(item.get("customKeyIdentifier")),
            _text(item.get("displayName")), _day(item.get("startDateTime")),
            _day(item.get("endDateTime"))))
    return EntraApplication(body["id"], passwords, certificates)


class NewPassword(NamedTuple):
    """What addPassword answers, once: the secret's value with its keyId and dates."""

    key_id: str
    secret: SecretValue
    start: date | None
    end: date | None


WRITE_ADVICE = (
    "Grant the writer the application permission Application.ReadWrite.OwnedBy and make its "
    "service principal an owner of the application ({owner_cmd}), with admin consent; "
    "Application.ReadWrite.All works too but writes every app of the tenant; or renew --via a "
    "management client that has them")
READ_ADVICE = (
    "Grant the reader the application permission Application.Read.All, or "
    "Application.ReadWrite.OwnedBy with its service principal an owner of the application "
    "({owner_cmd}), with admin consent; or sync {client} --via a management client that has "
    "them")


def owner_commands(app_id: str, caller_id: str) -> str:
    """The exact commands that make the caller's service principal (the app's own, or a
    management client's) an owner of the app's application object (what
    Application.ReadWrite.OwnedBy needs), with the Azure CLI and with PowerShell."""
    return (f"az ad app owner add --id {app_id} --owner-object-id $(az ad sp show --id "
            f"{caller_id} --query id -o tsv); or in PowerShell: New-MgApplicationOwnerByRef "
            f"-ApplicationId (Get-MgApplication -Filter \"appId eq '{app_id}'\").Id -OdataId "
            f"(\"https://graph.microsoft.com/v1.0/directoryObjects/\" + (Get-MgServicePrincipal "
            f"-Filter \"appId eq '{caller_id}'\").Id)")


def refusal(status: int, body: Any, client: str, retry_after: str | None, *,
            app_id: str = "<appId>", caller_id: str | None = None, action: str = "read",
            graph_host: str = "", cloud: str = "") -> GraphRefused:
    """What Graph's error answer means and what to do (docs/providers.md, issue 14's facts).
    `action`: read | write (addPassword, removePassword) | key (addKey, removeKey)."""
    error = body.get("error") if isinstance(body, dict) else None
    code = _text(error.get("code"), 80) if isinstance(error, dict) else None
    message = _text(error.get("message"), 200) if isinstance(error, dict) else None
    said = f"Graph answered HTTP {status}" + (f" ({code})" if code else "")
    owner_cmd = owner_commands(app_id, caller_id or app_id)
    if status == 403 and action == "key":
        advice = ("addKey and removeKey on an app's own credentials need no permission, only "
                  "the proof: was the token another app's? Renew with the client's own "
                  "certificate")
    elif status == 403:
        advice = (WRITE_ADVICE if action == "write" else READ_ADVICE).format(
            owner_cmd=owner_cmd, client=client)
        advice = (f"the {'writer' if action == 'write' else 'reader'} may not "
                  f"{'change' if action == 'write' else 'read'} this application object. "
                  + advice)
    elif status == 404:
        advice = ("no application with this client id in the token's tenant. The application "
                  "object lives in the app's home tenant only: give the client's tenant as that "
                  "tenant, or --home-tenant TENANT where the client signs in through "
                  "common or organizations")
    elif code == "CredentialTypeNotAllowedAsPerAppPolicy":
        advice = ("an app management policy of the tenant forbids new client secrets for this "
                  "app: use a certificate (`vault client rotate-certificate --via-graph`), or "
                  "have the policy's owner exempt the app")
    elif code == "CredentialInvalidLifetimeAsPerAppPolicy":
        advice = ("an app management policy caps how long a secret may live: ask for less with "
                  "--lifetime-days (the policy's passwordLifetime says how much)")
    elif code == "Authentication_MissingOrMalformed" and action == "key":
        advice = ("Graph refused the proof of possession: it must be signed by a certificate "
                  "the app has at Entra now and that is valid (vault's current certificate; "
                  "`vault client sync` shows what Entra lists), with this machine's clock right")
    elif status == 401:
        advice = (f"this Graph host ({graph_host}) refuses the token's audience: the client "
                  f"is in {cloud}, and a token for one cloud's Graph is refused by every other."
                  " Is the app registered in that cloud (`vault client show`; re-add it with "
                  "the right --cloud), and is this its Graph host (`client set-servers "
                  "--graph`)?"
                  if message and "audience" in message.lower() else
                  "the token was refused; try again, and check the client's tenant and cloud")
    elif status == 429:
        advice = "throttled; try again" + (f" after {retry_after} s" if retry_after
                                            else " later")
    else:
        advice = f"Graph said: {message}" if message else ""
    return GraphRefused(f"{said}: {advice}" if advice else said, status=status, code=code)


class GraphApps:
    """Graph's application endpoints on one Graph host, with one app-only token."""

    def __init__(self, http: Any, graph_base: str, token: SecretValue, client: str,
                 app_id: str, caller_id: str, cloud: str) -> None:
        """`app_id`: the app whose application object is read or written; `caller_id`: the
        app whose token calls (itself, or a management client); `cloud`: said in errors."""
        self.http, self.base, self.token = http, graph_base.rstrip("/"), token
        self.client, self.app_id, self.caller_id, self.cloud = client, app_id, caller_id, cloud

    def _call(self, method: str, path: str, action: str, body: Any = None) -> Any:
        import httpx

        try:
            response = self.http.request(
                method, f"{self.base}/v1.0/{path}", json=body,
                headers={"Authorization": f"Bearer {self.token.reveal()}"})
        except httpx.TransportError as e:
            raise GraphRefused(f"cannot reach Graph at {self.base}: {type(e).__name__}",
                               status=None, code=None) from None
        if response.status_code == 204:
            return None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code not in (200, 201):
            raise refusal(response.status_code, answer, self.client,
                          response.headers.get("Retry-After"), app_id=self.app_id,
                          caller_id=self.caller_id, action=action, graph_host=self.base,
                          cloud=self.cloud)
        return answer

    def read(self) -> EntraApplication:
        return parse_application(self._call(
            "GET", f"applications(appId='{self.app_id}')"
                   "?$select=id,appId,passwordCredentials,keyCredentials", "read"))

    def add_password(self, object_id: str, display_name: str,
                     end: datetime | None) -> NewPassword:
        asked: dict[str, Any] = {"displayName": display_name}
        if end is not None:  # Graph's default is two years; vault says what it wants
            asked["endDateTime"] = end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        answer = self._call("POST", f"applications/{object_id}/addPassword", "write",
                            {"passwordCredential": asked})
        if not isinstance(answer, dict) or not isinstance(answer.get("secretText"), str) \
                or not isinstance(answer.get("keyId"), str):
            raise GraphRefused("Graph's answer to addPassword holds no secretText and keyId",
                               status=200, code=None)
        return NewPassword(answer["keyId"], SecretValue(answer["secretText"]),
                           _day(answer.get("startDateTime")), _day(answer.get("endDateTime")))

    def remove_password(self, object_id: str, key_id: str) -> None:
        self._call("POST", f"applications/{object_id}/removePassword", "write",
                   {"keyId": key_id})

    def add_key(self, object_id: str, der: bytes, display_name: str, proof: str) -> str:
        """Upload a certificate (its public part); returns its keyId at Entra."""
        answer = self._call("POST", f"applications/{object_id}/addKey", "key", {
            "keyCredential": {"type": "AsymmetricX509Cert", "usage": "Verify",
                              "key": base64.b64encode(der).decode(),
                              "displayName": display_name},
            "passwordCredential": None, "proof": proof})
        if not isinstance(answer, dict) or not isinstance(answer.get("keyId"), str):
            raise GraphRefused("Graph's answer to addKey holds no keyId", status=200, code=None)
        return answer["keyId"]

    def remove_key(self, object_id: str, key_id: str, proof: str) -> None:
        self._call("POST", f"applications/{object_id}/removeKey", "key",
                   {"keyId": key_id, "proof": proof})


PROOF_AUDIENCE = "00000002-0000-0000-c000-000000000000"


def proof_of_possession(private_key_pem: SecretValue, thumbprint_sha1: str, object_id: str,
                        now: float) -> str:
    """The JWT addKey and removeKey ask for (Graph's "proof of possession tokens for rolling
    keys" page): RS256, signed by a certificate the application has, `x5t` (and `kid`, as .NET
    sets them) naming it, aud 00000002-0000-0000-c000-000000000000, iss the application's
    object id, and a life of ten minutes from nbf."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    from adapters.crypto import b64url
    from adapters.oauth import signed_jwt

    key = serialization.load_pem_private_key(private_key_pem.reveal().encode(), None)
    issued = int(now)
    header = {"alg": "RS256", "typ": "JWT", "x5t": b64url(bytes.fromhex(thumbprint_sha1)),
              "kid": thumbprint_sha1.upper()}
    claims = {"aud": PROOF_AUDIENCE, "iss": object_id, "nbf": issued, "exp": issued + 600}
    return signed_jwt(key, header, claims, padding.PKCS1v15())
