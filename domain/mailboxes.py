"""Mailbox addresses: what vault accepts as one, and how two compare (imports nothing heavy: the
read side looks grants up by mailbox without loading the aggregates)."""

from __future__ import annotations

import re

from domain.errors import InvalidInput

_MAILBOX = re.compile(r"^[^@\s\x00-\x1f\"]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")


def check_mailbox(address: str) -> str:
    address = address.strip()
    if not _MAILBOX.match(address):
        raise InvalidInput(f"{address!r} is not a mailbox address (user@example.com)")
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


def mailbox_key(address: str) -> str:
    """Mailbox addresses compare case-insensitively."""
    return address.casefold()


def check_login(name: str) -> str:
    """A mail server's login name (the SASL user, RFC 7628's authzid): 1-256 characters, no
    spaces or control characters (XOAUTH2 separates its fields with ^A)."""
    name = name.strip()
    if not name or len(name) > 256 or any(ord(c) < 0x21 or 0x7f <= ord(c) < 0xa0 for c in name):
        raise InvalidInput("--login is the user name the mail server expects (1-256 characters, "
                           "no spaces or control characters)")
    return name
