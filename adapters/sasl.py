"""SASL for OAuth bearer tokens: XOAUTH2 (Google's and Microsoft's) and OAUTHBEARER (RFC 7628).
Standard library only: the cached-token path of `vault token` (vault/fastpath.py) imports it."""

from __future__ import annotations

import base64


def initial_response(mechanism: str, user: str, access_token: str, host: str | None = None,
                     port: int | None = None) -> str:
    """The client's first message, base64: XOAUTH2, or OAUTHBEARER with the host and port of
    the server it is for, each where it is known (RFC 7628 section 3.1 makes both optional)."""
    if mechanism == "xoauth2":
        raw = f"user={user}\x01auth=Bearer {access_token}\x01\x01"
    else:
        server = (f"host={host}\x01" if host else "") + (f"port={port}\x01" if port else "")
        # RFC 5801's saslname: "," and "=" in the authzid are sent as =2C and =3D
        authzid = user.replace("=", "=3D").replace(",", "=2C")
        raw = f"n,a={authzid},\x01{server}auth=Bearer {access_token}\x01\x01"
    return base64.b64encode(raw.encode()).decode()


def abort_answer(mechanism: str) -> str:
    """After an error challenge: XOAUTH2 wants an empty line, OAUTHBEARER a single ^A."""
    return "" if mechanism == "xoauth2" else base64.b64encode(b"\x01").decode()
