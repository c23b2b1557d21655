"""An app registration's credentials as Microsoft Graph's application object lists them
(`GET /v1.0/applications(appId='...')`, docs/providers.md "Entra app credentials through
Microsoft Graph"), and what Graph's refusals mean for the admin."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, NamedTuple

from adapters.errors import AdapterError
from domain.entra import EntraCertificate, EntraPassword, thumbprint_of
from domain.errors import OperationFailed
from domain.secret_value import SecretValue


class GraphRefused(OperationFailed, AdapterError):
    """Graph answered an error: what it means and what to do."""


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


def refusal(status: int, body: Any, client: str, retry_after: str | None) -> GraphRefused:
    error = body.get("error") if isinstance(body, dict) else None
    code = _text(error.get("code"), 80) if isinstance(error, dict) else None
    said = f"Graph answered HTTP {status}" + (f" ({code})" if code else "")
    if status == 403:
        return GraphRefused(
            f"{said}: the client may not read its application object. Grant it the application "
            "permission Application.Read.All (reading), or Application.ReadWrite.OwnedBy and make "
            "its service principal an owner of the application (az ad app owner add --id "
            f"<appId> --owner-object-id <service principal object id>), with admin consent; or "
            f"sync {client} --via a management client that has them")
    if status == 404:
        return GraphRefused(
            f"{said}: no application with this client id in the token's tenant. The "
            "application object lives in the app's home tenant only: give the client's tenant "
            "as that tenant")
    if status == 429:
        return GraphRefused(f"{said}: throttled; try again"
                            + (f" after {retry_after} s" if retry_after else " later"))
    return GraphRefused(said)


def read_application(http: Any, graph_base: str, app_id: str, token: SecretValue,
                     client: str) -> EntraApplication:
    import httpx

    url = (f"{graph_base.rstrip('/')}/v1.0/applications(appId='{app_id}')"
           "?$select=id,appId,passwordCredentials,keyCredentials")
    try:
        response = http.get(url, headers={"Authorization": f"Bearer {token.reveal()}"})
    except httpx.TransportError as e:
        raise GraphRefused(f"cannot reach Graph at {graph_base}: {type(e).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        raise refusal(response.status_code, body, client, response.headers.get("Retry-After"))
    return parse_application(body)
