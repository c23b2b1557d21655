"""The sandbox's directory: its app registrations as Entra ID keeps them, each an application
object with an object id of its own (not the appId), a home tenant, password and key credentials,
owners, the Graph application permissions (app roles) admins granted it, and its secret policy.

Shapes as Graph returns them (https://learn.microsoft.com/graph/api/resources/application,
.../resources/passwordcredential, .../resources/keycredential): a secret shows its keyId, the
first three characters of its value (`hint`) and its dates, never the value after addPassword;
a certificate its keyId, `customKeyIdentifier` (the base64 of its SHA-1 thumbprint, as a
certificate uploaded in the portal gets), display name (the portal shows its subject) and dates.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.oidc import tenant_id

HOME_TENANT = "sandbox.onmicrosoft.com"
TWO_YEARS = 2 * 365.25 * 86400  # addPassword's default lifetime: "startDateTime + 2 years"
SECRET_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.~"


def graph_time(epoch: float) -> str:
    """Graph's DateTimeOffset, always UTC: 2026-01-01T00:00:00Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_secret_text() -> str:
    """A secret shaped as Entra makes them today: 40 characters, the 4th to 6th a digit and
    `Q~` (what secret scanners look for)."""
    pick = secrets.choice
    return ("".join(pick(SECRET_ALPHABET) for _ in range(3)) + pick("0123456789") + "Q~"
            + "".join(pick(SECRET_ALPHABET) for _ in range(34)))


@dataclass
class PasswordCredential:
    secret: str
    start: float
    end: float
    display_name: str | None = None
    key_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    usable_from: float = 0.0  # propagation: the token endpoint refuses it before this

    def graph(self, secret_text: bool = False) -> dict[str, Any]:
        return {"customKeyIdentifier": None, "displayName": self.display_name,
                "endDateTime": graph_time(self.end), "hint": self.secret[:3],
                "keyId": self.key_id, "secretText": self.secret if secret_text else None,
                "startDateTime": graph_time(self.start)}


def thumbprint_sha1(certificate: Any) -> bytes:
    from cryptography.hazmat.primitives import hashes

    return certificate.fingerprint(hashes.SHA1())  # noqa: S303 - what Entra names certificates by


def key_id(certificate: Any) -> str:
    """A certificate's keyId, stable for one certificate (it is all the sandbox keeps)."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, thumbprint_sha1(certificate).hex()))


@dataclass
class Application:
    app_id: str  # the client id
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # Graph's `id`
    display_name: str = "vault sandbox"
    tenant: str = tenant_id(HOME_TENANT)  # the home tenant's GUID: the object lives only there
    passwords: list[PasswordCredential] = field(default_factory=list)
    certificates: list[Any] = field(default_factory=list)  # cryptography x509 certificates
    key_names: dict[str, str] = field(default_factory=dict)  # keyId -> displayName given
    roles: set[str] = field(default_factory=set)  # Graph application permissions granted
    owners: set[str] = field(default_factory=set)  # object ids of owning service principals
    propagation: float = 0.0  # seconds before a secret from addPassword works
    refuse_passwords: bool = False  # an app management policy: passwordAddition
    max_password_lifetime: float | None = None  # ... and passwordLifetime, in seconds
    policy_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def service_principal(self) -> str:
        """The object id of its service principal in its home tenant (what owns, and is owned)."""
        return str(uuid.uuid5(uuid.UUID(self.object_id), "servicePrincipal"))

    @property
    def owns_itself(self) -> bool:
        return self.service_principal in self.owners

    @owns_itself.setter
    def owns_itself(self, value: bool) -> None:
        (self.owners.add if value else self.owners.discard)(self.service_principal)

    def key_credential(self, certificate: Any, with_key: bool = False) -> dict[str, Any]:
        """`key` (the certificate, base64 DER) only when asked for: Graph returns it only when
        one application is read with $select=keyCredentials."""
        from cryptography.hazmat.primitives.serialization import Encoding

        kid = key_id(certificate)
        der = certificate.public_bytes(Encoding.DER)
        return {"customKeyIdentifier": base64.b64encode(thumbprint_sha1(certificate)).decode(),
                "displayName": self.key_names.get(kid, certificate.subject.rfc4514_string()),
                "endDateTime": graph_time(certificate.not_valid_after_utc.timestamp()),
                "key": base64.b64encode(der).decode() if with_key else None, "keyId": kid,
                "startDateTime": graph_time(certificate.not_valid_before_utc.timestamp()),
                "type": "AsymmetricX509Cert", "usage": "Verify"}

    def graph(self, select: list[str] | None = None) -> dict[str, Any]:
        """The application as GET /applications(appId='...') answers, `$select`ed."""
        body = {"id": self.object_id, "appId": self.app_id, "displayName": self.display_name,
                "signInAudience": "AzureADMultipleOrgs",
                "passwordCredentials": [p.graph() for p in self.passwords],
                "keyCredentials": [self.key_credential(c, "keyCredentials" in (select or ()))
                                   for c in self.certificates]}
        if select:
            body = {k: v for k, v in body.items() if k in select}
        return {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#applications/"
                                  "$entity", **body}
