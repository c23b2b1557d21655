"""Cryptographic building blocks, all from PyNaCl and the standard library. Nothing hand-rolled.

- AEAD: XChaCha20-Poly1305 (nacl.secret.Aead), 24-byte random nonces, associated data binds
  every ciphertext to its place.
- Password KDF: Argon2id (nacl.pwhash.argon2id) with explicit parameters, never the defaults.
- Sub-keys and key-file KEKs: keyed BLAKE2b with a per-purpose personalisation.
- Signatures: Ed25519 (nacl.signing).
- base64url without padding (RFC 7515, section 2), as JWTs and PKCE write bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from typing import Any

import nacl.exceptions
import nacl.secret
import nacl.signing

from adapters.errors import IntegrityViolation

KEY_BYTES = 32
NONCE_BYTES = nacl.secret.Aead.NONCE_SIZE
MAC_BYTES = nacl.secret.Aead.MACBYTES


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """nonce || ciphertext || tag, authenticated together with `aad`."""
    return bytes(nacl.secret.Aead(key).encrypt(plaintext, aad))


def unseal(key: bytes, blob: bytes, aad: bytes, what: str) -> bytes:
    """Open a sealed blob; any change to it, its key or its associated data fails loudly."""
    if len(blob) < NONCE_BYTES + MAC_BYTES:
        raise IntegrityViolation(f"{what} is truncated")
    try:
        return nacl.secret.Aead(key).decrypt(blob, aad)
    except nacl.exceptions.CryptoError:
        raise IntegrityViolation(
            f"{what} failed authentication: it was altered, truncated or moved from elsewhere"
        ) from None


def aad(*parts: bytes | str | int) -> bytes:
    """Unambiguous associated data: each part length-prefixed, so no two tuples collide."""
    out = bytearray()
    for part in parts:
        if isinstance(part, int):
            data = struct.pack(">q", part)
        elif isinstance(part, str):
            data = part.encode()
        else:
            data = bytes(part)
        out += struct.pack(">I", len(data)) + data
    return bytes(out)


def subkey(key: bytes, purpose: bytes, salt: bytes = b"") -> bytes:
    """A key for one purpose, derived with keyed BLAKE2b (purpose <= 16 bytes)."""
    return hashlib.blake2b(b"", key=key, salt=salt, person=purpose, digest_size=KEY_BYTES).digest()


def mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def sha256(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


def argon2id(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    import nacl.pwhash.argon2id as argon2id_module  # only paid for when a passphrase is used

    return argon2id_module.kdf(KEY_BYTES, passphrase, salt, opslimit=opslimit, memlimit=memlimit)


def signing_key(seed: bytes) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: dict[str, Any]) -> str:
    """A JWT's header or claims: compact JSON, base64url."""
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode(text: str) -> bytes:
    """Raises ValueError (binascii.Error) on what is not base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
