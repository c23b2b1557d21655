"""One place that classifies token-endpoint errors and tells the admin what to do about them.

Classification uses the OAuth `error`, Microsoft's `error_codes` (AADSTS numbers), the HTTP status
and what was being done (refresh, code redemption, client credentials, device flow), never the
free-text description. Facts: docs/providers.md ("Error codes"), from Microsoft's error reference.
A failure to reach the provider at all is classified too, from what the adapter saw (refused,
timed out, name not found, TLS), with the host and port it tried.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    ErrorClass("certificate_assertion", "the client assertion failed signature validation",
               "the certificate vault signs with is not the one registered for the app (or its "
               "key, thumbprint or algorithm does not match): compare the thumbprint in `vault "
               "client show` with the app's Certificates & secrets, upload that certificate "
               "(RSA, 2048 bits or more), or give vault the registered one with `vault client "
               "add-certificate`"),
    ErrorClass("assertion_time", "the client assertion is not within its valid time range",
               "vault signs each assertion valid for 10 minutes from this host's clock: check "
               "the clock (NTP, `timedatectl`)"),
    ErrorClass("client_type", "the app's type does not match how it authenticates",
               "a confidential (Web) app needs its secret; a public app must not send one: check "
               "the app registration's platform and 'Allow public client flows'"),
    ErrorClass("app_or_tenant_not_found", "the app or tenant was not found",
               "check the client id and tenant, and the cloud: a GCC High or China tenant is not "
               "on login.microsoftonline.com (`vault client add ... --cloud`)"),
    ErrorClass("app_disabled", "the application is disabled in the tenant",
               "an admin enables it again (Entra admin center: Enterprise applications, the app, "
               "Properties, 'Enabled for users to sign-in'); nothing to change in vault"),
    ErrorClass("tenant_endpoint", "this request needs the tenant-specific endpoint",
               "use the tenant's ID or domain instead of common/organizations, and the same "
               "authority for authorize and token"),
    ErrorClass("resource", "the resource or its permission is not available in this tenant",
               "add the API permission (Office 365 Exchange Online for IMAP/POP/SMTP) and grant "
               "admin consent; check the cloud (.com vs .us)"),
    ErrorClass("consent_required", "consent is missing",
               "run `vault consent` for the mailbox, or have an admin grant consent for the app",
               "interactive"),
    ErrorClass("consent_declined", "the user declined the consent",
               "ask the mailbox's user to run the consent again and accept the permissions, or "
               "have an admin grant consent for the whole tenant", "interactive"),
    ErrorClass("scope_invalid", "the scopes requested are not valid together",
               "one token request may hold one resource only, and .default cannot be mixed with "
               "named scopes; check `vault grant show` scopes"),
    ErrorClass("grant_expired", "the refresh token or code has expired",
               "run a new consent; keep grants alive with `vault refresh --due` well inside the "
               "90-day idle window"),
    ErrorClass("grant_revoked", "the grant was revoked (sessions revoked, password reset, "
               "Conditional Access sign-in frequency)", "run a new consent for the mailbox"),
    ErrorClass("grant_invalid", "the provider refused the refresh token",
               "Microsoft sometimes answers this for a passing fault: vault marks the grant for "
               "re-consent only when a later attempt, some minutes apart, is refused too",
               "once"),
    ErrorClass("user_disabled", "the user account is disabled",
               "an admin re-enables the account (Entra ID, or the on-premises Active Directory "
               "it syncs from); revoke the grant if the mailbox is no longer used"),
    ErrorClass("password_expired", "the user's password expired or was changed, so the "
               "session is no longer valid",
               "the user changes or resets the password (self-service or an admin), then run a "
               "new consent for the mailbox (`vault consent ... --replace`)"),
    ErrorClass("user_not_in_tenant", "the signed-in account does not belong to this tenant",
               "sign in with an account of the app's tenant, invite the account as a guest "
               "(B2B), or register the client under the account's own tenant (`--tenant`)"),
    ErrorClass("user_not_assigned", "the user is not assigned to the app",
               "the app requires assignment: an admin assigns the user (or a group of theirs) "
               "to the enterprise application, then run the consent again"),
    ErrorClass("code_invalid", "the authorization code was refused (expired, already used, or "
               "issued to another redirect URI)",
               "start the consent again: a code is single-use and lives a few minutes"),
    ErrorClass("device_code_expired", "the device code expired before the sign-in finished",
               "run `vault consent ... --flow device` again and enter the new code before it "
               "expires (15 minutes at Microsoft)", "interactive"),
    ErrorClass("code_reused", "the authorization code was already redeemed",
               "start the consent again; a code is never redeemed twice"),
    ErrorClass("redirect", "the redirect URI differs from the registered one",
               "register exactly the redirect URI vault uses (scheme, host, port, path, "
               "trailing slash) as a Web platform URI"),
    ErrorClass("pkce", "the PKCE verifier was refused",
               "start the consent again (the verifier is generated per attempt)"),
    ErrorClass("policy_blocked", "blocked by MFA, Conditional Access or security defaults",
               "use an interactive consent flow, or ask the admin for a policy exception"),
    ErrorClass("request_malformed", "the provider found the request malformed or invalid",
               "check the client's token URL, tenant and scopes (`vault client show`, `vault "
               "grant show`); if they are right, report it with the trace id"),
    ErrorClass("tls_version", "the provider refused a connection below TLS 1.2",
               "vault itself speaks TLS 1.2 or newer only: a TLS-inspecting proxy or middlebox "
               "between this host and the provider re-encrypts with an older version; update "
               "it or let vault's traffic bypass it"),
    ErrorClass("throttled", "the provider is throttling requests",
               "back off; vault caches access tokens, so a refresh storm means several hosts "
               "or a loop are refreshing the same grant", "backoff"),
    ErrorClass("transient", "a temporary problem at the provider",
               "nothing to fix in the credentials; try again later", "yes"),
    ErrorClass("network", "the provider could not be reached",
               "nothing to fix in the credentials: check that this host reaches it (DNS, "
               "firewall, HTTPS_PROXY / NO_PROXY)", "yes"),
    ErrorClass("tls", "the TLS connection to the provider failed",
               "vault trusts the public roots, SSL_CERT_FILE and VAULT_CA_FILE (--ca-file): "
               "for a proxy that inspects TLS, add its CA there; otherwise the connection may "
               "be intercepted"),
    ErrorClass("access_denied", "the user declined the consent",
               "ask the mailbox owner to accept the requested permissions", "interactive"),
    ErrorClass("unknown", "the provider refused the request",
               "see the error code and the trace id; check the app registration"),
)}

# Where one class holds codes that mean different things, each such code says its own.
_VARIANTS: dict[int, ErrorClass] = {
    50147: ErrorClass("pkce", "the code challenge is missing or its size is invalid",
                      "vault sends an S256 challenge of 43 characters: a proxy or a hand-edited "
                      "authorize URL dropped or cut `code_challenge`; start the consent again "
                      "from vault's own URL"),
    50072: ErrorClass("policy_blocked", "the user must register for multifactor authentication",
                      "the user signs in interactively once and completes MFA registration: "
                      "run the consent again with them at the browser"),
    50074: ErrorClass("policy_blocked", "strong authentication is required and the MFA "
                      "challenge was not passed",
                      "run the consent again with the user at the browser to complete MFA; a "
                      "refresh without the user cannot satisfy it"),
    53000: ErrorClass("policy_blocked", "Conditional Access requires a compliant device",
                      "vault runs on a server that cannot prove device compliance: ask the "
                      "admin to exclude this app (or the service account) from the policy"),
    53001: ErrorClass("policy_blocked", "Conditional Access requires a domain-joined device",
                      "vault's host is not a domain-joined device: ask the admin to exclude "
                      "this app (or the service account) from the policy"),
    53002: ErrorClass("policy_blocked", "Conditional Access allows only approved client apps",
                      "ask the admin to allow this app registration in the policy, or exclude "
                      "it"),
    530032: ErrorClass("policy_blocked", "a tenant security policy blocks this request",
                       "the admin checks the tenant's security policies (the sign-in log entry "
                       "with the trace id names the one that applied)"),
}

# AADSTS code -> class. Sources: Microsoft's error reference,
# https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes (REF), unless
# another page is named; the table with meanings is in docs/providers.md, "Error codes".
#   code     class                  what Microsoft says (page)
#   90006    transient              ExternalServerRetryableError, temporarily unavailable (REF)
#   90033    transient              MsodsServiceUnavailable, directory service unavailable (REF)
#   90090    transient              GraphRetryableError, temporarily unavailable (REF)
#   90024    transient              RequestBudgetExceededError, "a transient error ... Try again" (REF)
#   50033    transient              RetryableError, "a transient error" (REF)
#   50087    transient              SasRetryableError, "a transient error ... try again" (REF)
#   70012    transient              MsaServerError, "a server error ... Try again" (REF)
#   80005    transient              on-premises validator error, "Retry the request" (REF)
#   40010    transient              OAuth2IdPRetryableServerError, federated IdP (REF)
#   50162    transient              claims transformation timed out, "a retry may succeed" (REF)
#   501621   transient              claims transformation regex timed out, "a retry may succeed" (REF)
#   90055    throttled              TenantThrottlingError, too many requests (REF)
#   50088    throttled              telecom MFA call limit, "try again in a few minutes" (REF)
#   50196    throttled              LoopDetected (REF)
#   65004    consent_declined       UserDeclinedConsent (REF)
#   700027   certificate_assertion  client assertion failed signature validation (REF)
#   700024   assertion_time         client assertion not within its valid time range
#            (https://learn.microsoft.com/en-us/azure/devops/pipelines/release/troubleshoot-workload-identity;
#            nbf/exp: https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials)
#   50057    user_disabled          UserDisabled (REF)
#   7000112  app_disabled           UnauthorizedClientApplicationDisabled (REF)
#   70001    app_disabled           UnauthorizedClient, the application is disabled (REF)
#   50055    password_expired       InvalidPasswordExpiredPassword (REF)
#   50144    password_expired       InvalidPasswordExpiredOnPremPassword (REF)
#   50132    password_expired       SsoArtifactInvalidOrExpired, password expiry or change (REF)
#   50133    password_expired       SsoArtifactRevoked, password expiry or change (REF)
#   53000    policy_blocked         DeviceNotCompliant (REF)
#   53001    policy_blocked         DeviceNotDomainJoined (REF)
#   53002    policy_blocked         ApplicationUsedIsNotAnApprovedApp (REF)
#   530032   policy_blocked         BlockedByConditionalAccessOnSecurityPolicy (REF)
#   50072    policy_blocked         UserStrongAuthEnrollmentRequiredInterrupt (REF)
#   50074    policy_blocked         UserStrongAuthClientAuthNRequiredInterrupt (REF)
#   9002313  request_malformed      InvalidRequest, request is malformed or invalid (REF)
#   1002016  tls_version            TLS 1.0/1.1 or 3DES refused
#            (https://learn.microsoft.com/en-us/troubleshoot/entra/entra-id/app-integration/application-using-tls-1dot0-1dot1-authentication-fail)
#   50020    user_not_in_tenant     UserUnauthorized, account not in the tenant (REF)
#   50105    user_not_assigned      EntitlementGrantsNotFound (REF)
#   50147    pkce                   MissingCodeChallenge, size of the code challenge invalid (REF)
#   70019    device_code_expired    CodeExpired, verification code expired (REF)
_AADSTS: dict[int, str] = {}
for _class, _codes in {
    "secret_invalid": (7000215, 70002), "secret_expired": (7000222,),
    "certificate_assertion": (700027,), "assertion_time": (700024,),
    "client_type": (7000218, 700025), "app_or_tenant_not_found": (700016, 90002, 90038),
    "app_disabled": (7000112, 70001),
    "tenant_endpoint": (50194, 9001023, 700005), "resource": (500011, 650057),
    "consent_required": (65001, 90094, 90095), "consent_declined": (65004,),
    "scope_invalid": (70011, 28002, 28003, 700022), "grant_expired": (700082, 70008),
    "grant_revoked": (50173, 70043), "grant_invalid": (70000,), "code_reused": (54005,),
    "user_disabled": (50057,), "password_expired": (50055, 50144, 50132, 50133),
    "user_not_in_tenant": (50020,), "user_not_assigned": (50105,),
    "device_code_expired": (70019,),
    "redirect": (50011, 500113, 900971), "pkce": (501481, 50148, 50147, 501491),
    "policy_blocked": (50076, 50079, 53003, 530035, 53000, 53001, 53002, 530032, 50072,
                       50074),
    "request_malformed": (9002313,), "tls_version": (1002016,),
    "throttled": (50196, 90055, 50088),
    "transient": (90006, 90033, 90090, 90024, 50033, 50087, 70012, 80005, 40010, 50162,
                  501621),
}.items():
    for _code in _codes:
        _AADSTS[_code] = _class

_OAUTH: dict[str, str] = {
    "invalid_client": "secret_invalid", "unauthorized_client": "client_type",
    "invalid_scope": "scope_invalid", "access_denied": "access_denied",
    "temporarily_unavailable": "transient", "server_error": "transient",
    "consent_required": "consent_required", "interaction_required": "policy_blocked",
    # Device authorization (RFC 8628; Microsoft:
    # https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-device-code)
    "expired_token": "device_code_expired", "authorization_declined": "consent_declined",
}

# Network failures (no HTTP answer): what the adapter saw -> class. A certificate or handshake
# failure does not pass by itself, so it is not retried; the rest may.
NETWORK_CAUSES = ("refused", "timeout", "dns", "reset", "proxy", "protocol", "tls", "other")


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
    endpoint: str | None = None  # host:port that could not be reached (network failures)
    network_cause: str | None = None  # why, in words: "connection refused", "timed out", ...

    @property
    def name(self) -> str:
        return self.error_class.name

    @property
    def transient(self) -> bool:
        return self.error_class.transient

    @property
    def invalid_grant(self) -> bool:
        """A refusal of the refresh token itself: counts towards marking the grant broken."""
        return self.error == "invalid_grant" and not self.transient

    @property
    def code(self) -> str | None:
        if self.codes:
            return f"AADSTS{self.codes[0]}"
        return self.error

    def message(self) -> str:
        """One line for the admin: likely cause, what to do, and ids for a support ticket."""
        parts = [self.error_class.title]
        if self.endpoint:
            parts[0] += f" at {self.endpoint}"
        if self.network_cause:
            parts[0] += f" ({self.network_cause})"
        elif self.code:
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
    retry_after: float | None = None, network: str | None = None,
    endpoint: str | None = None, network_cause: str | None = None,
) -> Diagnosis:
    """Classify a token-endpoint answer, or a failure to get one (http_status and error None;
    `network` one of NETWORK_CAUSES, `endpoint` host:port, `network_cause` in words).

    Microsoft's AADSTS code decides over the OAuth `error` word: its transient codes come with
    words that would otherwise read as a refused request or a refused refresh token."""
    name = None
    variant = None
    for code in codes:
        if code in _AADSTS:
            name = _AADSTS[code]
            variant = _VARIANTS.get(code)
            break
    if name is None:
        if http_status is None and error is None:
            name = "tls" if network == "tls" else "network"
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
        variant = None
    return Diagnosis(variant or CLASSES[name], error=error, codes=tuple(codes),
                     http_status=http_status, trace_id=trace_id, correlation_id=correlation_id,
                     retry_after=retry_after, context=context, endpoint=endpoint,
                     network_cause=network_cause)
