"""SASL for OAuth bearer tokens: XOAUTH2 (Google's and Microsoft's) and OAUTHBEARER (RFC 7628).
Standard library only: the cached-token path of `vault token` (vault/fastpath.py) imports it."""

from __future__ import annotations

import base64


def initial_response(mechanism: str, user: str, access_token: str, host: str | None = None,
                     port: int | None = None) -> str:
    """The client's first message, base64: XOAUTH2, or OAUTHBEARER with host and port when
    they are known (RFC 7628 makes them optional; `vault token --format` has no server)."""
    if mechanism == "xoauth2":
        raw = f"user={user}\x01auth=Bearer {access_token}\x01\x01"
    else:
        server = f"host={host}\x01port={port}\x01" if host is not None else ""
        raw = f"n,a={user},\x01{server}auth=Bearer {access_token}\x01\x01"
    return base64.b64encode(raw.encode()).decode()


def abort_answer(mechanism: str) -> str:
    """After an error challenge: XOAUTH2 wants an empty line, OAUTHBEARER a single ^A."""
    return "" if mechanism == "xoauth2" else base64.b64encode(b"\x01").decode()
