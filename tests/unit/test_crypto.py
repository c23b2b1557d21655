"""The AEAD as vault calls it: nonces never repeat, and associated data cannot be confused."""

from __future__ import annotations

import pytest

from adapters import crypto
from adapters.errors import IntegrityViolation


def test_nonces_never_repeat() -> None:
    key = crypto.new_key()
    nonces = {crypto.seal(key, b"x", b"aad")[: crypto.NONCE_BYTES] for _ in range(20000)}
    assert len(nonces) == 20000


def test_associated_data_is_unambiguous() -> None:
    assert crypto.aad("ab", "c") != crypto.aad("a", "bc")
    assert crypto.aad(1, "x") != crypto.aad("1", "x")
    key = crypto.new_key()
    blob = crypto.seal(key, b"secret", crypto.aad("id-1", 1, "topic"))
    with pytest.raises(IntegrityViolation):
        crypto.unseal(key, blob, crypto.aad("id-1", 2, "topic"), "test")
    assert crypto.unseal(key, blob, crypto.aad("id-1", 1, "topic"), "test") == b"secret"
