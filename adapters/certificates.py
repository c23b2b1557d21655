"""Certificate credentials (private_key_jwt): read a PEM holding the private key and certificate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from adapters.errors import AdapterError
from domain.errors import OperationFailed
from domain.secret_value import SecretValue


class CertificateError(OperationFailed, AdapterError):
    pass


@dataclass(frozen=True)
class CertificateCredential:
    private_key: SecretValue  # PEM, PKCS#8, unencrypted (it is encrypted in the vault)
    thumbprint_sha1: str  # what Entra ID shows; the x5t of an RS256 assertion
    thumbprint_sha256: str  # the x5t#S256 of a PS256 assertion
    subject: str
    not_before: date
    not_after: date
    der: bytes = b""  # the certificate itself (public): what Graph's addKey uploads


def load_certificate_credential(pem: SecretValue) -> CertificateCredential:
    """The RSA private key and its certificate, from one PEM text; they must belong together."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    data = pem.reveal().encode()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise CertificateError("the file holds no unencrypted PEM private key") from None
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CertificateError("the file holds no PEM certificate beside the key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CertificateError("the private key must be RSA (Entra ID accepts PS256 and RS256 "
                               "client assertions)")
    if certificate.public_key().public_numbers() != key.public_key().public_numbers():
        raise CertificateError("the certificate does not belong to the private key")
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()
    return CertificateCredential(
        private_key=SecretValue(pkcs8),
        # Both over the DER encoding: SHA-1 is what Entra ID shows (x5t), SHA-256 is x5t#S256.
        thumbprint_sha1=certificate.fingerprint(hashes.SHA1()).hex(),  # noqa: S303
        thumbprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
        subject=certificate.subject.rfc4514_string(),
        not_before=certificate.not_valid_before_utc.date(),
        not_after=certificate.not_valid_after_utc.date(),
        der=certificate.public_bytes(serialization.Encoding.DER),
    )
