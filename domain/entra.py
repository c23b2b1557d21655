"""What Entra says about an app registration's credentials, and which of them are the ones vault
holds (issue 14): pure functions over what Microsoft Graph's application object lists
(`passwordCredentials`, `keyCredentials`; the facts and their sources are in docs/providers.md).

A secret vault holds is matched to Entra's password credential by the Secret ID recorded with
it (Entra's keyId, when Entra's hint for it is the secret's own); else, only when no Secret ID
was recorded, by its hint (the first three characters of the value) when exactly one
credential at Entra and exactly one unmatched secret in vault have that hint — two with the same
hint match nothing, as a guess would be worse. A certificate is matched by its SHA-1 thumbprint
(Entra's customKeyIdentifier).
"""

from __future__ import annotations

import base64
import binascii
from datetime import date
from typing import NamedTuple

HINT_LENGTH = 3


class EntraPassword(NamedTuple):
    key_id: str
    display_name: str | None
    hint: str | None
    start: date | None
    end: date | None


class EntraCertificate(NamedTuple):
    key_id: str
    thumbprint: str | None  # SHA-1, hex, upper case
    display_name: str | None
    start: date | None
    end: date | None


class HeldCredential(NamedTuple):
    """A secret or certificate vault holds, as far as matching needs it."""

    ref: str
    kind: str  # client_secret | certificate
    secret_id: str | None  # the Secret ID recorded with a secret (Entra's keyId)
    hint: str | None  # a secret's first three characters
    thumbprint: str | None  # a certificate's SHA-1 thumbprint, hex


def secret_hint(value: str) -> str:
    """What Entra shows of a secret: its first three characters."""
    return value[:HINT_LENGTH]


def thumbprint_of(custom_key_identifier: str | None) -> str | None:
    """Entra's customKeyIdentifier (base64 of the SHA-1 thumbprint) as hex, upper case; None
    when it is not one."""
    if not custom_key_identifier:
        return None
    try:
        raw = base64.b64decode(custom_key_identifier, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex().upper() if len(raw) == 20 else None


def match(held: list[HeldCredential], passwords: list[EntraPassword],
          certificates: list[EntraCertificate]) -> dict[str, str]:
    """{ref of a credential vault holds: the keyId of the one at Entra that it is}.

    A recorded Secret ID matches only a credential whose hint is the secret's own first three
    characters (a Secret ID typed wrong names someone else's secret), and a secret with a
    recorded Secret ID is never matched by its hint: gone is gone."""
    matches: dict[str, str] = {}
    by_id = {p.key_id.casefold(): p for p in passwords}
    for h in held:
        found = by_id.get(h.secret_id.casefold()) if h.kind == "client_secret" and \
            h.secret_id else None
        if found is not None and (found.hint is None or h.hint is None or found.hint == h.hint):
            matches[h.ref] = found.key_id
    taken = {key.casefold() for key in matches.values()}
    open_passwords = [p for p in passwords if p.key_id.casefold() not in taken]
    open_secrets = [h for h in held if h.kind == "client_secret" and h.ref not in matches
                    and h.hint and not h.secret_id]
    for h in open_secrets:
        at_entra = [p for p in open_passwords if p.hint == h.hint]
        in_vault = [o for o in open_secrets if o.hint == h.hint]
        if len(at_entra) == 1 and len(in_vault) == 1:
            matches[h.ref] = at_entra[0].key_id
    by_thumbprint = {c.thumbprint: c for c in certificates if c.thumbprint}
    for h in held:
        if h.kind == "certificate" and h.thumbprint and h.thumbprint.upper() in by_thumbprint:
            matches[h.ref] = by_thumbprint[h.thumbprint.upper()].key_id
    return matches


class Comparison(NamedTuple):
    """What a sync found beside the matches: vault's credentials Entra no longer has, Entra's
    credentials vault does not hold, and end dates that differ from the ones entered."""

    gone: list[str]  # refs: deleted at Entra, they will fail
    foreign: list[str]  # keyIds: someone else holds a credential of this app
    changed_dates: list[tuple[str, date | None, date | None]]  # (ref, entered, Entra's)


def compare(held: list[HeldCredential], entered: dict[str, date | None],
            passwords: list[EntraPassword], certificates: list[EntraCertificate],
            matches: dict[str, str]) -> Comparison:
    ends = {c.key_id: c.end for c in (*passwords, *certificates)}
    matched = set(matches.values())
    gone = [h.ref for h in held if h.ref not in matches]
    foreign = [c.key_id for c in (*passwords, *certificates) if c.key_id not in matched]
    changed = [(ref, entered.get(ref), ends[key]) for ref, key in matches.items()
               if entered.get(ref) is not None and entered.get(ref) != ends[key]]
    return Comparison(gone, foreign, changed)
