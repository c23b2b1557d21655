"""Expiry rules with a frozen clock: T-31, T-30, T-8, T-7, T-1, T0 and T+1 days for each rule.

Findings are (severity, expired) or None. T, the due date, is the last day something still works:
critical on the day, expired after it. An N-day token window ends on its day N-1.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from domain.expiry import (
    ExpiryThresholds,
    GrantFacts,
    SecretFacts,
    credential_findings,
    evaluate,
    grant_findings,
)

T = date(2027, 3, 15)
OFFSETS = (-31, -30, -8, -7, -1, 0, 1)
DEFAULT = ExpiryThresholds()


def _secret(**kw) -> SecretFacts:
    base = dict(client="jira", provider="microsoft", ref="s1", secret_id=None, created_on=None,
                expires_on=None)
    base.update(kw)
    return SecretFacts(**base)


def _grant(**kw) -> GrantFacts:
    base = dict(client="jira", mailbox="help@contoso.com", provider="microsoft", status="active",
                status_reason=None, status_changed_on=None, granted_on=date(2026, 1, 1),
                last_activity_on=None)
    base.update(kw)
    return GrantFacts(**base)


def _outcome(findings, kind: str):
    matching = [f for f in findings if f.kind == kind]
    assert len(matching) <= 1
    if not matching:
        return None
    f = matching[0]
    return f.severity, f.expired


def _check(findings_at, kind: str, expected: dict[int, tuple | None]) -> None:
    got = {offset: _outcome(findings_at(T + timedelta(days=offset)), kind) for offset in OFFSETS}
    assert got == expected


END_DATE_EXPECTED = {
    -31: None, -30: ("warning", False), -8: ("warning", False), -7: ("critical", False),
    -1: ("critical", False), 0: ("critical", False), 1: ("critical", True),
}


def test_client_secret_with_an_end_date() -> None:
    secret = _secret(expires_on=T)
    _check(lambda d: credential_findings([secret], d, DEFAULT), "client_secret_expiry",
           END_DATE_EXPECTED)


def test_certificate_with_an_end_date() -> None:
    cert = _secret(expires_on=T, kind="certificate")
    _check(lambda d: credential_findings([cert], d, DEFAULT), "certificate_expiry",
           END_DATE_EXPECTED)


def test_microsoft_secret_with_only_a_creation_date_assumes_730_days() -> None:
    secret = _secret(created_on=T - timedelta(days=730))
    _check(lambda d: credential_findings([secret], d, DEFAULT), "client_secret_expiry",
           END_DATE_EXPECTED)
    finding = credential_findings([secret], T, DEFAULT)[0]
    assert finding.assumed and finding.due == T and "assumed" in finding.advice


def test_a_secret_with_no_date_gets_one_info_finding_asking_for_it() -> None:
    findings = credential_findings([_secret()], T, DEFAULT)
    assert [(f.severity, f.kind) for f in findings] == [("info", "client_secret_expiry_unknown")]
    assert "--expires" in findings[0].advice
    created = credential_findings([_secret(provider="custom", created_on=T)], T, DEFAULT)
    assert [f.kind for f in created] == ["client_secret_expiry_unknown"]
    assert "no expiry date recorded" in created[0].advice


def test_the_longest_lasting_secret_decides_and_older_ones_are_superseded() -> None:
    old = _secret(ref="s1", expires_on=T)
    new = _secret(ref="s2", expires_on=T + timedelta(days=700))
    findings = credential_findings([old, new], T - timedelta(days=3), DEFAULT)
    assert [(f.severity, f.kind, f.ref) for f in findings] == [("info", "secret_superseded", "s1")]


def test_microsoft_refresh_token_idle_window() -> None:
    grant = _grant(last_activity_on=T - timedelta(days=89))  # idle 89 on T: its last day
    _check(lambda d: grant_findings(grant, d, DEFAULT), "refresh_token_idle", {
        -31: None, -30: None, -8: ("warning", False), -7: ("warning", False),
        -1: ("critical", False), 0: ("critical", False), 1: ("critical", True),
    })
    assert grant_findings(grant, T, DEFAULT)[0].due == T


@pytest.mark.parametrize("idle,expected", [
    (74, None), (75, ("warning", False)), (84, ("warning", False)), (85, ("critical", False)),
    (89, ("critical", False)), (90, ("critical", True)),
])
def test_microsoft_idle_thresholds_are_inclusive(idle: int, expected) -> None:
    grant = _grant(last_activity_on=T - timedelta(days=idle))
    assert _outcome(grant_findings(grant, T, DEFAULT), "refresh_token_idle") == expected


def test_idle_counts_from_the_grant_when_the_token_was_never_used() -> None:
    grant = _grant(granted_on=T - timedelta(days=80), last_activity_on=None)
    assert _outcome(grant_findings(grant, T, DEFAULT), "refresh_token_idle") == ("warning", False)


def test_google_testing_app_tokens_die_seven_days_after_consent() -> None:
    consent = T - timedelta(days=6)  # day 6 after consent is the last day
    grant = _grant(provider="google", google_testing=True, granted_on=consent,
                   last_activity_on=consent)
    _check(lambda d: grant_findings(grant, d, DEFAULT), "google_testing_expiry", {
        -31: None, -30: None, -8: None, -7: None,
        -1: ("warning", False), 0: ("critical", False), 1: ("critical", True),
    })
    day5 = grant_findings(grant, consent + timedelta(days=5), DEFAULT)
    day4 = grant_findings(grant, consent + timedelta(days=4), DEFAULT)
    assert _outcome(day5, "google_testing_expiry") == ("warning", False)
    assert _outcome(day4, "google_testing_expiry") is None


def test_google_refresh_token_idle_window() -> None:
    last = T - timedelta(days=179)
    grant = _grant(provider="google", last_activity_on=last)
    _check(lambda d: grant_findings(grant, d, DEFAULT), "refresh_token_idle", {
        -31: None, -30: None, -8: ("critical", False), -7: ("critical", False),
        -1: ("critical", False), 0: ("critical", False), 1: ("critical", True),
    })
    for idle, expected in ((149, None), (150, ("warning", False)), (169, ("warning", False)),
                           (170, ("critical", False))):
        at = last + timedelta(days=idle)
        assert _outcome(grant_findings(grant, at, DEFAULT), "refresh_token_idle") == expected


def test_a_broken_grant_is_critical_and_a_revoked_one_is_silent() -> None:
    broken = _grant(status="needs-reconsent", status_reason="invalid_grant twice",
                    status_changed_on=T - timedelta(days=2))
    findings = grant_findings(broken, T, DEFAULT)
    assert [(f.severity, f.kind, f.expired, f.days_left) for f in findings] == [
        ("critical", "grant_broken", True, -2)]
    assert "invalid_grant twice" in findings[0].advice
    assert grant_findings(_grant(status="revoked"), T, DEFAULT) == []


def test_thresholds_are_configurable_and_validated() -> None:
    wider = DEFAULT.with_changes(secret_warning_days=45, secret_critical_days=10)
    secret = _secret(expires_on=T)
    assert _outcome(credential_findings([secret], T - timedelta(days=45), wider),
                    "client_secret_expiry") == ("warning", False)
    assert _outcome(credential_findings([secret], T - timedelta(days=10), wider),
                    "client_secret_expiry") == ("critical", False)
    with pytest.raises(ValueError, match="increase"):
        DEFAULT.with_changes(microsoft_idle_warning_days=95)
    with pytest.raises(ValueError, match="unknown threshold"):
        DEFAULT.with_changes(secret_days=3)


def test_within_adds_upcoming_items_and_hides_later_ones() -> None:
    secret = _secret(expires_on=T + timedelta(days=50))
    grant = _grant(last_activity_on=T - timedelta(days=80))  # warning, due in 10 days
    assert [f.kind for f in evaluate([secret], [grant], T, DEFAULT)] == ["refresh_token_idle"]
    wide = evaluate([secret], [grant], T, DEFAULT, within=60)
    assert [(f.severity, f.kind) for f in wide] == [
        ("warning", "refresh_token_idle"), ("info", "client_secret_expiry")]
    narrow = evaluate([secret], [grant], T, DEFAULT, within=5)
    assert narrow == []


def test_a_finding_says_where_the_credentials_date_comes_from() -> None:
    """`source`: "entered" for a recorded end date, "assumed" for Microsoft's 730-day maximum
    counted from the creation date; None for a finding without a credential date."""
    entered = credential_findings([_secret(expires_on=T)], T, DEFAULT)
    assumed = credential_findings([_secret(created_on=T - timedelta(days=730))], T, DEFAULT)
    assert [(f.source, f.assumed) for f in entered] == [("entered", False)]
    assert [(f.source, f.assumed) for f in assumed] == [("assumed", True)]
    overlap = credential_findings([_secret(ref="s1", expires_on=T),
                                   _secret(ref="s2", created_on=T - timedelta(days=700))],
                                  T, DEFAULT)
    assert {f.ref: f.source for f in overlap} == {"s1": "entered", "s2": "assumed"}
    idle = grant_findings(_grant(last_activity_on=T - timedelta(days=89)), T, DEFAULT)
    assert idle and all(f.source is None for f in idle)
    horizon = evaluate([_secret(expires_on=T + timedelta(days=100))], [], T, DEFAULT, within=365)
    assert [(f.kind, f.source) for f in horizon] == [("client_secret_expiry", "entered")]
