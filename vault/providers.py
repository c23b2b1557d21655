"""The providers vault talks to: the one HTTP client of an application (built on first use, so
a command that talks to no provider imports no HTTP code, and closed with the application), the
TLS context the mail probes use, and an OAuth client per client credential over that HTTP client."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from domain.credentials import CERTIFICATE, ClientCredential
from domain.secret_value import SecretValue
from vault.errors import OperationFailed

if TYPE_CHECKING:  # ssl and httpx are imported when a provider is first talked to
    import ssl

    import httpx

    from adapters.oauth import ClientAuth, OAuthClient
    from domain.diagnosis import Diagnosis


class GrantUnusable(OperationFailed):
    pass


class TokenRefreshFailed(OperationFailed):
    """The provider refused the refresh (or stayed unreachable); the message says why, how often
    vault tried, and what happens next."""

    def __init__(self, diagnosis: Diagnosis, broken: bool, mailbox: str, *, tries: int = 1,
                 waited: float = 0.0, refused_counts_from: datetime | None = None,
                 next_try: str | None = None) -> None:
        text = f"{mailbox}: {diagnosis.message()}"
        if tries > 1:
            text += f" (tried {tries} times, {waited:.0f} s of back-off)"
        if broken:
            text += " - the grant is now marked for re-consent"
        elif refused_counts_from is not None:
            text += (" - refresh refused once: a further refusal from "
                     f"{refused_counts_from.strftime('%Y-%m-%d %H:%M')} UTC on marks the grant "
                     "for re-consent" + (f"; {next_try}" if next_try else ""))
        elif diagnosis.transient and next_try:
            text += f"; {next_try}"
        super().__init__(text)
        self.diagnosis = diagnosis
        self.broken = broken


def client_auth(credential: ClientCredential, secret: SecretValue | None = None,
                use: dict[str, Any] | None = None) -> ClientAuth:
    """How this client authenticates at the token endpoint, with its current credential (or
    `secret`, or `use`: one of its credentials, e.g. a renewal's before it is current)."""
    from adapters.oauth import ClientAuth

    method = credential.auth_method
    if method == "none":
        return ClientAuth(credential.client_id, "none")
    current = use or credential.current_secret()
    if current is None and secret is None:
        what = "certificate" if method == "private_key_jwt" else "secret"
        raise GrantUnusable(f"client {credential.name!r} holds no active {what}")
    if method == "private_key_jwt":
        assert current is not None and current["kind"] == CERTIFICATE
        return ClientAuth(credential.client_id, method, private_key_pem=current["value"],
                          thumbprint_sha1=current["secret_id"],
                          thumbprint_sha256=current.get("thumbprint_sha256"))
    return ClientAuth(credential.client_id, method, secret=secret or current["value"])


class Providers:
    """`ca_file`: a private CA trusted besides the public roots (--ca-file, VAULT_CA_FILE).
    `transport`: an httpx transport to use instead of the network (tests' MockTransport)."""

    def __init__(self, ca_file: str | None = None, transport: Any = None) -> None:
        self.ca_file = ca_file
        self.transport = transport
        self._http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            from adapters.http import http_client

            self._http = http_client(self.ca_file, transport=self.transport)
        return self._http

    def tls_context(self) -> ssl.SSLContext:
        from adapters.http import tls_context

        return tls_context(self.ca_file)

    def discover(self, issuer: str) -> dict[str, str | None]:
        """A custom provider's endpoints, from OpenID discovery under `issuer`."""
        from adapters.oauth import discover

        return discover(self.http, issuer)

    def oauth(self, credential: ClientCredential, secret: SecretValue | None = None, *,
              use: dict[str, Any] | None = None, tenant: str | None = None) -> OAuthClient:
        """`tenant`: ask that tenant's token endpoint instead of the client's (an app that signs
        users in through common or organizations gets app-only tokens from its home tenant)."""
        from adapters.oauth import OAuthClient
        from domain.clouds import token_url_in_tenant

        endpoints = dict(credential.endpoints)
        if not endpoints.get("token_url") and endpoints.get("issuer"):
            endpoints.update({k: v for k, v in self.discover(endpoints["issuer"]).items() if v})
        if tenant is not None:
            endpoints["token_url"] = token_url_in_tenant(endpoints["token_url"],
                                                         credential.tenant, tenant)
        return OAuthClient(self.http, endpoints, client_auth(credential, secret, use))

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
