"""Encryption at rest for events and snapshots: a data key per subject, each ciphertext bound to
its place.

- Data keys (adapters/keyring.py) are per subject and kept outside the event store.
- Event state is sealed with AAD = (originator id, version, topic, format), so a ciphertext copied
  onto another row, another version or another event type fails to decrypt. eventsourcing's stock
  AESCipher binds nothing (one key, no associated data) and is not used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import date
from typing import Any

from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Transcoding,
    UUIDAsHex,
)

from adapters import crypto
from adapters.errors import IntegrityViolation
from adapters.keyring import AUDIT_KEY_ID, EVENT_FORMAT, SIGNING_KEY_ID, Keyring, event_aad
from domain.secret_value import SecretValue


class SecretAsText(Transcoding):
    """Secrets enter the JSON only on their way into an encrypted blob."""

    type = SecretValue
    name = "secret"

    def encode(self, obj: SecretValue) -> str:
        return obj.reveal()

    def decode(self, data: str) -> SecretValue:
        return SecretValue(data)


class DateAsISO(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


def transcoder() -> JSONTranscoder:
    t = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), DateAsISO(), SecretAsText()):
        t.register(transcoding)
    return t


def stored_event_aad(stored: StoredEvent) -> bytes:
    return event_aad(str(stored.originator_id), stored.originator_version, stored.topic)


class EncryptedMapper(Mapper):
    """eventsourcing's Mapper with vault's AEAD in place of a cipher and no compressor.

    (Compressing before encrypting would let ciphertext length reveal content.)

    The topic column is plain text a keyless writer can edit, and eventsourcing would import
    whatever module it names. So a stored topic must be one of `stored_types` (the events, or
    the snapshots: an event copied into the snapshots table is refused, and the other way round)
    before anything is resolved, and the ciphertext, whose associated data covers the topic, is
    authenticated before the event is built.
    """

    def __init__(self, transcoder: JSONTranscoder, keyring: Keyring,
                 stored_types: Mapping[str, type]) -> None:
        super().__init__(transcoder=transcoder)
        self.keyring = keyring
        self.stored_types = dict(stored_types)

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        plain = super().to_stored_event(domain_event)
        key = self.keyring.key(str(plain.originator_id))
        blob = bytes([EVENT_FORMAT]) + crypto.seal(key, plain.state, stored_event_aad(plain))
        return replace(plain, state=blob)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        version, state = stored_event.originator_version, stored_event.state
        if not isinstance(version, int) or isinstance(version, bool) or not isinstance(
                state, bytes | memoryview) or not isinstance(stored_event.topic, str):
            raise IntegrityViolation(f"a stored event of {stored_event.originator_id} holds "
                                     "values of the wrong type: it was edited outside vault")
        where = f"stored event {stored_event.originator_id} version {version}"
        if stored_event.topic not in self.stored_types:
            raise IntegrityViolation(f"{where} names a type vault does not store there")
        blob = bytes(stored_event.state)
        if not blob or blob[0] != EVENT_FORMAT:
            raise IntegrityViolation(f"{where} has an unknown format")
        originator = str(stored_event.originator_id)
        try:
            plain = crypto.unseal(self.keyring.key(originator), blob[1:],
                                  stored_event_aad(stored_event), where)
        except IntegrityViolation:
            # re-encrypted under a new data key since this process read the old one
            if not self.keyring.refreshed(originator):
                raise
            plain = crypto.unseal(self.keyring.key(originator), blob[1:],
                                  stored_event_aad(stored_event), where)
        return super().to_domain_event(replace(stored_event, state=plain))


__all__ = ["AUDIT_KEY_ID", "SIGNING_KEY_ID", "EncryptedMapper", "Keyring", "event_aad",
           "transcoder"]
