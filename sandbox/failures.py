"""Microsoft's error answers: each AADSTS code with the HTTP status and `error` word Microsoft
pairs with it, and the JSON body it comes in (trace and correlation ids, timestamp)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

MESSAGES = {
    7000215: (401, "invalid_client", "Invalid client secret provided. Ensure the secret being "
              "sent in the request is the client secret value, not the client secret ID."),
    7000222: (401, "invalid_client", "The provided client secret keys are expired."),
    700016: (400, "unauthorized_client", "Application was not found in the directory."),
    90002: (400, "invalid_request", "Tenant not found."),
    9001023: (400, "invalid_request", "The grant type is not supported over the /common or "
              "/consumers endpoints."),
    65001: (400, "invalid_grant", "The user or administrator has not consented to use the "
            "application."),
    700022: (400, "invalid_scope", "The provided value for the input parameter scope is not "
             "valid because it contains more than one resource."),
    700082: (400, "invalid_grant", "The refresh token has expired due to inactivity."),
    70008: (400, "invalid_grant", "The provided authorization code or refresh token has "
            "expired due to inactivity."),
    50173: (400, "invalid_grant", "The provided grant has expired due to it being revoked."),
    70000: (400, "invalid_grant", "Provided grant is invalid or malformed."),
    700027: (401, "invalid_client", "Client assertion failed signature validation."),
    700024: (400, "invalid_client", "Client assertion is not within its valid time range."),
    54005: (400, "invalid_grant", "OAuth2 Authorization code was already redeemed."),
    50011: (400, "invalid_request", "The redirect URI specified in the request does not match "
            "the redirect URIs configured for the application."),
    50148: (400, "invalid_grant", "The code_verifier does not match the code_challenge."),
    53003: (400, "invalid_grant", "Access has been blocked by Conditional Access policies."),
    50196: (400, "temporarily_unavailable", "The server terminated an operation because it "
            "encountered a client request loop."),
    90055: (400, "temporarily_unavailable", "There are too many incoming requests."),
    # Transient codes (Microsoft's error reference). Which `error` word Microsoft pairs with them
    # is not documented: these answers use words that read as a refused request or a refused
    # refresh token, so only a classification on the code gets them right.
    90006: (400, "invalid_request", "The service is temporarily unavailable."),
    90033: (400, "invalid_grant", "The Microsoft Online Directory Service isn't available."),
    90090: (400, "invalid_request", "The service is temporarily unavailable."),
    50087: (400, "invalid_grant", "A transient error has occurred during strong "
            "authentication. Please try again."),
    65004: (400, "access_denied", "User declined to consent to access the app."),
    50057: (400, "invalid_grant", "The user account is disabled."),
    7000112: (400, "unauthorized_client", "The application is disabled."),
    70001: (400, "unauthorized_client", "The application is disabled."),
    50055: (400, "invalid_grant", "The password is expired."),
    50144: (400, "invalid_grant", "The user's Active Directory password has expired."),
    50132: (400, "invalid_grant", "The session isn't valid due to password expiration or "
            "recent password change."),
    50133: (400, "invalid_grant", "The session isn't valid due to password expiration or "
            "recent password change."),
    53000: (400, "invalid_grant", "Conditional Access policy requires a compliant device."),
    53001: (400, "invalid_grant", "Conditional Access policy requires a domain joined device."),
    53002: (400, "invalid_grant", "The app used isn't an approved app for Conditional Access."),
    530032: (400, "invalid_grant", "The tenant admin has configured a security policy that "
             "blocks this request."),
    50072: (400, "interaction_required", "User needs to enroll for second factor "
            "authentication."),
    50074: (400, "interaction_required", "Strong authentication is required."),
    9002313: (400, "invalid_request", "Request is malformed or invalid."),
    1002016: (400, "invalid_request", "You are using TLS version 1.0, 1.1 and/or 3DES cipher "
              "which are deprecated."),
    50020: (400, "invalid_grant", "User account from identity provider does not exist in "
            "tenant."),
    50105: (400, "invalid_grant", "The signed in user isn't assigned to a role for the app."),
    50147: (400, "invalid_request", "The size of the code challenge parameter isn't valid."),
}


class SandboxError(Exception):
    """An AADSTS answer; `status` overrides the HTTP status Microsoft pairs with the code."""

    def __init__(self, code: int, status: int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.status = status


class PlainError(Exception):
    """An OAuth error without an AADSTS code: the device flow's polling answers, an unsupported
    grant type, a bare 429 or 503."""

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.headers = headers


def error_body(code: int) -> tuple[int, dict[str, Any]]:
    status, error, text = MESSAGES.get(code, (400, "invalid_request", "Request failed."))
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\n"
                             f"Correlation ID: {correlation}\r\nTimestamp: {stamp}",
        "error_codes": [code], "timestamp": stamp, "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
