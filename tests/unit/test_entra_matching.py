"""Which of Entra's credentials are the ones vault holds (domain/entra.py)."""

from __future__ import annotations

import base64
from datetime import date

from domain.entra import (
    EntraCertificate,
    EntraPassword,
    HeldCredential,
    compare,
    match,
    secret_hint,
    thumbprint_of,
)

END = date(2027, 6, 1)


def _password(key_id: str, hint: str | None, end: date | None = END) -> EntraPassword:
    return EntraPassword(key_id, f"made {key_id}", hint, date(2025, 6, 1), end)


def _secret(ref: str, value: str, secret_id: str | None = None) -> HeldCredential:
    return HeldCredential(ref, "client_secret", secret_id, secret_hint(value), None)


def test_the_recorded_secret_id_matches_when_the_hint_agrees() -> None:
    held = [_secret("s1", "Abc~one", secret_id="AAAA-1"), _secret("s2", "Abc~two")]
    passwords = [_password("aaaa-1", "Abc"), _password("bbbb-2", "Xyz")]
    assert match(held, passwords, []) == {"s1": "aaaa-1"}  # s2's hint is s1's credential's
    # a Secret ID typed wrong names someone else's secret: its hint says so
    assert match([_secret("s1", "Abc~one", secret_id="bbbb-2")], passwords, []) == {}


def test_a_secret_with_a_secret_id_is_never_matched_by_its_hint() -> None:
    """Its Secret ID is gone at Entra: another team's secret with the same first three
    characters is not it."""
    held = [_secret("s1", "Abc~one", secret_id="gone-1")]
    assert match(held, [_password("theirs", "Abc")], []) == {}


def test_a_hint_matches_only_when_it_is_unique_on_both_sides() -> None:
    passwords = [_password("k1", "Abc"), _password("k2", "Qrs")]
    assert match([_secret("s1", "Abc~x")], passwords, []) == {"s1": "k1"}
    two_in_vault = [_secret("s1", "Abc~x"), _secret("s2", "Abc~y")]
    assert match(two_in_vault, passwords, []) == {}
    two_at_entra = [_password("k1", "Abc"), _password("k3", "Abc")]
    assert match([_secret("s1", "Abc~x")], two_at_entra, []) == {}


def test_certificates_match_by_thumbprint() -> None:
    sha1 = bytes(range(20))
    custom = base64.b64encode(sha1).decode()
    assert thumbprint_of(custom) == sha1.hex().upper()
    assert thumbprint_of("not base64!") is None and thumbprint_of(
        base64.b64encode(b"short").decode()) is None
    cert = EntraCertificate("c-key", thumbprint_of(custom), "cert", None, END)
    held = [HeldCredential("c1", "certificate", None, None, sha1.hex())]
    assert match(held, [], [cert]) == {"c1": "c-key"}


def test_compare_finds_deleted_foreign_and_changed_dates() -> None:
    held = [_secret("s1", "Abc~x", secret_id="k1"), _secret("s2", "Def~y")]
    passwords = [_password("k1", "Abc", end=date(2027, 1, 1)), _password("k9", "Zzz")]
    matches = match(held, passwords, [])
    found = compare(held, {"s1": date(2027, 6, 1), "s2": None}, passwords, [], matches)
    assert found.gone == ["s2"] and found.foreign == ["k9"]
    assert found.changed_dates == [("s1", date(2027, 6, 1), date(2027, 1, 1))]
    same = compare(held[:1], {"s1": date(2027, 1, 1)}, passwords[:1], [], {"s1": "k1"})
    assert same == ([], [], [])
