"""Who signed in during a consent: the OpenID scopes that make a provider say so, and whether the
account a verified ID token names is the one the grant is for.

The ID token itself (signature, issuer, audience, nonce, times) is verified in
adapters/id_token.py; this module only decides which of its names count and compares them.
What is recorded on the grant is a plain dict (`signed_in`), "checked" or not, with the reason.

Sources: Microsoft's ID token claims reference (preferred_username and oid need `profile`, email
needs `email`, email "isn't guaranteed to be correct"):
https://learn.microsoft.com/en-us/entra/identity-platform/id-token-claims-reference ; the OpenID
scopes ride along with one resource's scopes when a code is redeemed, and an id_token comes only
with `openid`: https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow ;
Google's: https://developers.google.com/identity/openid-connect/reference
"""

from __future__ import annotations

from typing import Any

from domain.errors import InvalidInput, RuleViolation

MICROSOFT_IDENTITY_SCOPES = ("openid", "profile", "email")  # preferred_username, oid: profile
GOOGLE_IDENTITY_SCOPES = ("openid", "email")
OPTIONAL_OIDC_SCOPES = ("email", "profile")

NOT_CHECKED_IMPORT = "imported refresh token: nobody signed in through vault"
NOT_CHECKED_APP_ONLY = "app-only access: no user signs in"
NOT_CHECKED_NO_ID_TOKEN = "the provider returned no ID token"
NOT_CHECKED_NO_ISSUER = "the client has no OpenID issuer (--issuer): no keys to verify an ID token"
NOT_CHECKED_NO_NAME = "the ID token names no account (no email or preferred_username claim)"
NOT_CHECKED_BEFORE = "granted before vault checked who signs in"


class AccountMismatch(RuleViolation):
    """Someone other than the expected account signed in at the provider."""


def check_account_name(name: str) -> str:
    """An account name given with --account: a sign-in name (UPN, e-mail, user name)."""
    name = name.strip()
    if not name or len(name) > 256 or any(ord(c) < 0x21 or 0x7f <= ord(c) < 0xa0 for c in name):
        raise InvalidInput("--account is a sign-in name such as a UPN or an e-mail address "
                           "(1-256 characters, no spaces or control characters)")
    return name


def identity_scopes(provider: str, openid_provider: bool,
                    scopes_supported: tuple[str, ...] | None) -> tuple[str, ...]:
    """The OpenID scopes a consent adds to the mail scopes, so the provider names who signed in.

    Microsoft gives `preferred_username` and `oid` only with `profile` and `email` only with
    `email`; Google's `email` needs `email`. A custom provider is asked only when it is an OpenID
    provider (an issuer with discovery: without its keys an ID token proves nothing); `email` and
    `profile` are added when its discovery lists them, or lists no scopes at all (OpenID Connect
    Core 3.1.2.1: scopes a provider does not understand should be ignored), never when it lists
    others without them (a strict provider would refuse the whole request).
    """
    if provider == "microsoft":
        return MICROSOFT_IDENTITY_SCOPES
    if provider == "google":
        return GOOGLE_IDENTITY_SCOPES
    if not openid_provider:
        return ()
    if scopes_supported is None:
        return ("openid", *OPTIONAL_OIDC_SCOPES)
    return ("openid", *(s for s in OPTIONAL_OIDC_SCOPES if s in scopes_supported))


def not_checked(reason: str) -> dict[str, Any]:
    return {"checked": False, "reason": reason}


def _names(claims: dict[str, Any], provider: str, tenant_pinned: bool) -> list[tuple[str, str, str | None]]:
    """(claim, value, why it does not count or None) for each name the token carries."""
    names: list[tuple[str, str, str | None]] = []
    for claim in ("preferred_username", "email"):
        value = claims.get(claim)
        if not isinstance(value, str) or not value.strip():
            continue
        why = None
        if claim == "email":
            if claims.get("email_verified") is False or (
                    provider == "google" and claims.get("email_verified") is not True):
                why = "not verified by the provider"
            elif provider == "microsoft" and not tenant_pinned:
                # Microsoft: "isn't guaranteed to be correct"; any tenant's admin can set it, and
                # a common/organizations authority lets every tenant sign in.
                why = "not trusted from a multi-tenant authority"
        names.append((claim, value.strip()[:256], why))  # a provider's text, bounded
    return names


def signed_in_account(claims: dict[str, Any], *, expected: str, provider: str,
                      tenant_pinned: bool) -> dict[str, Any]:
    """What the grant records of a verified ID token, or AccountMismatch naming both accounts.

    `expected` is the mailbox, or the --account that consents for it. Names compare
    case-insensitively. A token that carries no name at all leaves the account not checked.
    """
    names = _names(claims, provider, tenant_pinned)
    if not names:
        return not_checked(NOT_CHECKED_NO_NAME)
    wanted = expected.casefold()
    for claim, value, why in names:
        if why is None and value.casefold() == wanted:
            record: dict[str, Any] = {"checked": True, "account": value, "claim": claim,
                                      "expected": expected,
                                      "subject": _text(claims.get("sub")),
                                      "issuer": _text(claims.get("iss"))}
            if provider == "microsoft":
                record.update(oid=_text(claims.get("oid")), tid=_text(claims.get("tid")))
            return record
    labels: dict[str, list[str]] = {}  # one name, the claims that carry it
    for claim, value, why in names:
        labels.setdefault(value, []).append(claim + (f": {why}" if why else ""))
    shown = ", ".join(f"{value} ({'; '.join(carriers)})" for value, carriers in labels.items())
    raise AccountMismatch(
        f"signed in at the provider as {shown}, but this consent is for {expected}: refused, "
        "nothing was stored. Sign in as that account; when another account consents for the "
        "mailbox (a delegate of a shared mailbox, a sign-in name that differs from the address), "
        "name it with --account")


def _text(value: Any) -> str | None:
    return value[:256] if isinstance(value, str) else None

