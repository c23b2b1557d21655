"""One place that classifies token-endpoint errors and tells the admin what to do about them.

Classification uses the OAuth `error`, Microsoft's `error_codes` (AADSTS numbers), the HTTP status
and what was being done (refresh, code redemption, client credentials, device flow), never the
free-text description. Facts: shared/reference/providers.md sections 4 and 5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REFRESH, CODE, CLIENT_CREDENTIALS, DEVICE = "refresh", "code", "client_credentials", "device"


@dataclass(frozen=True)
class ErrorClass:
    name: str
    title: str
    advice: str
    retry: str = "no"  # no | once | backoff | yes | interactive

    @property
    def transient(self) -> bool:
        return self.retry in ("backoff", "yes")


CLASSES: dict[str, ErrorClass] = {c.name: c for c in (
    ErrorClass("secret_invalid", "the client secret was refused",
               "check that the secret saved in vault is the secret's Value, not its Secret ID "
               "(a GUID), and that it belongs to this app; then `vault client rotate-secret`"),
    ErrorClass("secret_expired", "the client secret has expired",
               "create a new secret in the app registration and run `vault client rotate-secret`"),
    ErrorClass("client_type", "the app's type does not match how it authenticates",
               "a confidential (Web) app needs its secret; a public app must not send one: check "
               "the app registration's platform and 'Allow public client flows'"),
    ErrorClass("app_or_tenant_not_found", "the app or tenant was not found",
               "check the client id and tenant, and the cloud: a GCC High or China tenant is not "
               "on login.microsoftonline.com (`vault client add ... --cloud`)"),
    ErrorClass("tenant_endpoint", "this request needs the tenant-specific endpoint",
               "use the tenant's ID or domain instead of common/organizations, and the same "
               "authority for authorize and token"),
    ErrorClass("resource", "the resource or its permission is not available in this tenant",
               "add the API permission (Office 365 Exchange Online for IMAP/POP/SMTP) and grant "
               "admin consent; check the cloud (.com vs .us)"),
    ErrorClass("consent_required", "consent is missing or was declined",
               "run `vault consent` for the mailbox, or have an admin grant consent for the app",
               "interactive"),
    ErrorClass("scope_invalid", "the scopes requested are not valid together",
               "one token request may hold one resource only, and .default cannot be mixed with "
               "named scopes; check `vault grant show` scopes"),
    ErrorClass("grant_expired", "the refresh token or code has expired",
               "run a new consent; keep grants alive with `vault refresh --due` well inside the "
               "90-day idle window"),
    ErrorClass("grant_revoked", "the grant was revoked (sessions revoked, password reset, "
               "Conditional Access sign-in frequency)", "run a new consent for the mailbox"),
    ErrorClass("grant_invalid", "the provider refused the refresh token (invalid_grant)",
               "if it happens again the grant is marked broken: run a new consent", "once"),
    ErrorClass("code_invalid", "the authorization code was refused (expired, already used, or "
               "issued to another redirect URI)",
               "start the consent again: a code is single-use and lives a few minutes"),
    ErrorClass("code_reused", "the authorization code was already redeemed",
               "start the consent again; a code is never redeemed twice"),
    ErrorClass("redirect", "the redirect URI differs from the registered one",
               "register exactly the redirect URI vault uses (scheme, host, port, path, "
               "trailing slash) as a Web platform URI"),
    ErrorClass("pkce", "the PKCE verifier was refused",
               "start the consent again (the verifier is generated per attempt)"),
    ErrorClass("policy_blocked", "blocked by MFA, Conditional Access or security defaults",
               "use an interactive consent flow, or ask the admin for a policy exception"),
    ErrorClass("throttled", "the provider is throttling requests",
               "back off; vault caches access tokens, so a refresh storm means several hosts "
               "or a loop are refreshing the same grant", "backoff"),
    ErrorClass("transient", "a temporary problem at the provider or on the network",
               "nothing to fix in the credentials; vault retries with back-off", "yes"),
    ErrorClass("access_denied", "the user declined the consent",
               "ask the mailbox owner to accept the requested permissions", "interactive"),
    ErrorClass("unknown", "the provider refused the request",
               "see the error code and the trace id; check the app registration"),
)}

_AADSTS: dict[int, str] = {}
for _class, _codes in {
    "secret_invalid": (7000215, 70002, 700027), "secret_expired": (7000222,),
    "client_type": (7000218, 700025), "app_or_tenant_not_found": (700016, 90002, 90038),
    "tenant_endpoint": (50194, 9001023, 700005), "resource": (500011, 650057),
    "consent_required": (65001, 65004, 90094, 90095),
    "scope_invalid": (70011, 28002, 28003, 700022), "grant_expired": (700082, 70008),
    "grant_revoked": (50173, 70043), "grant_invalid": (70000,), "code_reused": (54005,),
    "redirect": (50011, 500113, 900971), "pkce": (501481, 50148, 50147, 501491),
    "policy_blocked": (50076, 50079, 53003, 530035), "throttled": (50196,),
    "transient": (90055, 90024, 50033),
}.items():
    for _code in _codes:
        _AADSTS[_code] = _class

_OAUTH: dict[str, str] = {
    "invalid_client": "secret_invalid", "unauthorized_client": "client_type",
    "invalid_scope": "scope_invalid", "access_denied": "access_denied",
    "temporarily_unavailable": "transient", "server_error": "transient",
    "consent_required": "consent_required", "interaction_required": "policy_blocked",
    "expired_token": "code_invalid",
}


@dataclass(frozen=True)
class Diagnosis:
    error_class: ErrorClass
    error: str | None = None
    codes: tuple[int, ...] = ()
    http_status: int | None = None
    trace_id: str | None = None
    correlation_id: str | None = None
    retry_after: float | None = None
    context: str = REFRESH
    notes: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.error_class.name

    @property
    def transient(self) -> bool:
        return self.error_class.transient

    @property
    def invalid_grant(self) -> bool:
        """Counts towards marking a grant broken (a second consecutive one breaks it)."""
        return self.error == "invalid_grant" and not self.transient

    @property
    def code(self) -> str | None:
        if self.codes:
            return f"AADSTS{self.codes[0]}"
        return self.error

    def message(self) -> str:
        """One line for the admin: likely cause, what to do, and ids for a support ticket."""
        parts = [self.error_class.title]
        if self.code:
            parts[0] += f" ({self.code})"
        parts.append(self.error_class.advice)
        ids = [f"trace id {self.trace_id}" if self.trace_id else "",
               f"correlation id {self.correlation_id}" if self.correlation_id else ""]
        ids = [i for i in ids if i]
        if ids:
            parts.append(", ".join(ids))
        return ": ".join(parts[:2]) + (f" [{parts[2]}]" if len(parts) > 2 else "")


def classify(
    *, http_status: int | None, error: str | None, codes: tuple[int, ...] = (),
    context: str = REFRESH, trace_id: str | None = None, correlation_id: str | None = None,
    retry_after: float | None = None,
) -> Diagnosis:
    """Classify a token-endpoint answer (or a network failure: http_status None, error None)."""
    name = None
    for code in codes:
        if code in _AADSTS:
            name = _AADSTS[code]
            break
    if name is None:
        if http_status is None and error is None:
            name = "transient"  # no answer at all: network, DNS, TLS handshake, timeout
        elif http_status == 429:
            name = "throttled"
        elif http_status is not None and http_status >= 500:
            name = "transient"
        elif error == "invalid_grant":
            name = "code_invalid" if context in (CODE, DEVICE) else "grant_invalid"
        else:
            name = _OAUTH.get(error or "", "unknown")
    if name == "grant_expired" and context == CODE:
        name = "code_invalid"
    return Diagnosis(CLASSES[name], error=error, codes=tuple(codes), http_status=http_status,
                     trace_id=trace_id, correlation_id=correlation_id, retry_after=retry_after,
                     context=context)
