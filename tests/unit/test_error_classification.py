"""Error classification from what providers send: every AADSTS code of docs/providers.md's table
reaches its class, recorded Microsoft bodies keep their ids and never their descriptions, and
what is temporary is never called a bad credential. The same answers from a real HTTP peer
(`vault sandbox`) are in tests/integration/test_token_faults.py and test_microsoft_sandbox.py."""

from __future__ import annotations

import httpx
import pytest

from adapters.oauth import diagnose
from domain.diagnosis import CLASSES, classify
from tests.support import microsoft_error

# docs/providers.md, "Error codes" (from Microsoft's error reference): codes -> class
TABLE = {
    7000215: "secret_invalid", 70002: "secret_invalid", 7000222: "secret_expired",
    7000218: "client_type", 700025: "client_type", 700016: "app_or_tenant_not_found",
    90002: "app_or_tenant_not_found", 90038: "app_or_tenant_not_found",
    50194: "tenant_endpoint", 9001023: "tenant_endpoint", 700005: "tenant_endpoint",
    500011: "resource", 650057: "resource", 65001: "consent_required",
    65004: "consent_declined", 90094: "consent_required", 90095: "consent_required",
    70011: "scope_invalid", 28002: "scope_invalid", 28003: "scope_invalid",
    700022: "scope_invalid", 700082: "grant_expired", 70008: "grant_expired",
    50173: "grant_revoked", 70043: "grant_revoked", 70000: "grant_invalid",
    54005: "code_reused", 50011: "redirect", 500113: "redirect", 900971: "redirect",
    501481: "pkce", 50148: "pkce", 50147: "pkce", 501491: "pkce", 50076: "policy_blocked",
    50079: "policy_blocked", 53003: "policy_blocked", 530035: "policy_blocked",
    50196: "throttled", 90055: "throttled", 90024: "transient", 50033: "transient",
    700027: "certificate_assertion", 700024: "assertion_time",
    90006: "transient", 90033: "transient", 90090: "transient", 50087: "transient",
    70012: "transient", 80005: "transient", 40010: "transient", 50162: "transient",
    501621: "transient", 50088: "throttled",
    50057: "user_disabled", 7000112: "app_disabled", 70001: "app_disabled",
    50055: "password_expired", 50144: "password_expired", 50132: "password_expired",
    50133: "password_expired", 53000: "policy_blocked", 53001: "policy_blocked",
    53002: "policy_blocked", 530032: "policy_blocked", 50072: "policy_blocked",
    50074: "policy_blocked", 9002313: "request_malformed", 1002016: "tls_version",
    50020: "user_not_in_tenant", 50105: "user_not_assigned", 70019: "device_code_expired",
}

# A body as Microsoft sends it (shape from the identity platform docs; ids made up).
RECORDED = {
    "error": "invalid_client",
    "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being "
                         "sent in the request is the client secret value, not the client secret "
                         "ID, for a secret added to app 'x'.\r\nTrace ID: 0b9e...\r\n"
                         "Correlation ID: 5d1f...\r\nTimestamp: 2026-11-01 09:14:03Z",
    "error_codes": [7000215], "timestamp": "2026-11-01 09:14:03Z",
    "trace_id": "0b9e3c56-7c1e-4f36-9d8a-1a2b3c4d5e6f",
    "correlation_id": "5d1f2a3b-4c5d-6e7f-8a9b-0c1d2e3f4a5b",
    "error_uri": "https://login.microsoftonline.com/error?code=7000215",
}

TRANSIENT = {  # code: (the error word it came with, Microsoft's words) - all "try again" codes
    90006: ("invalid_request", "ExternalServerRetryableError - The service is temporarily "
            "unavailable."),
    90033: ("invalid_grant", "MsodsServiceUnavailable - The Microsoft Online Directory Service "
            "(MSODS) isn't available."),
    90090: ("invalid_request", "GraphRetryableError - The service is temporarily unavailable."),
    90024: ("invalid_grant", "RequestBudgetExceededError - A transient error has occurred."),
    50033: ("invalid_request", "RetryableError - Indicates a transient error."),
    50087: ("invalid_grant", "SasRetryableError - A transient error has occurred during strong "
            "authentication. Please try again."),
    70012: ("server_error", "MsaServerError - A server error occurred. Try again."),
    80005: ("invalid_request", "OnPremisePasswordValidatorUnpredictableWebException - Retry "
            "the request."),
    40010: ("invalid_request", "OAuth2IdPRetryableServerError"),
    50162: ("invalid_request", "Claims transformation has timed out. A retry of the request may "
            "succeed."),
    501621: ("invalid_request", "ClaimsTransformationTimeoutRegularExpressionTimeout - A retry "
             "of the request may succeed."),
}


@pytest.mark.parametrize("code,expected", sorted(TABLE.items()))
def test_every_aadsts_code_of_the_table_maps_to_its_class(code: int, expected: str) -> None:
    d = classify(http_status=400, error="invalid_grant", codes=(code,))
    assert d.name == expected
    assert d.error_class.advice and d.message().startswith(d.error_class.title)
    assert d.error_class.title == CLASSES[expected].title or code in (
        50147, 50072, 50074, 53000, 53001, 53002, 530032)  # a code of a class with its own words


def test_a_recorded_microsoft_body_keeps_its_ids_and_never_its_description() -> None:
    from adapters.oauth import diagnose

    response = httpx.Response(401, json=RECORDED)
    d = diagnose(response, "refresh")
    assert d.name == "secret_invalid" and d.code == "AADSTS7000215"
    message = d.message()
    assert "Secret ID" in message and RECORDED["trace_id"] in message
    assert RECORDED["correlation_id"] in message and "app 'x'" not in message


def test_throttling_network_and_server_errors_are_never_bad_credentials() -> None:
    for d in (classify(http_status=429, error=None), classify(http_status=503, error=None),
              classify(http_status=None, error=None),
              classify(http_status=400, error="temporarily_unavailable")):
        assert d.transient and "secret" not in d.message()


@pytest.mark.parametrize("code", sorted(TRANSIENT))
def test_a_transient_code_is_transient_whatever_its_error_word(code: int) -> None:
    error, text = TRANSIENT[code]
    d = diagnose(microsoft_error(code, error, text), "refresh")
    assert d.name == "transient" and d.transient and not d.invalid_grant
    assert d.message().startswith(f"a temporary problem at the provider (AADSTS{code})")
    assert "app registration" not in d.message() and "consent" not in d.message()


def test_tenant_throttling_is_throttled_not_transient() -> None:
    d = diagnose(microsoft_error(90055, "temporarily_unavailable", "TenantThrottlingError - There are "
                          "too many incoming requests."), "refresh")
    assert d.name == "throttled" and d.transient  # backed off, never a credential problem


def test_device_flow_errors_speak_of_the_device_code() -> None:
    """RFC 8628's words, as Microsoft's device-code page lists them."""
    expired = classify(http_status=400, error="expired_token", context="device")
    declined = classify(http_status=400, error="authorization_declined", context="device")
    assert (expired.name, declined.name) == ("device_code_expired", "consent_declined")
