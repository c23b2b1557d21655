"""What `vault token` prints: the bare access token, the SASL initial response (XOAUTH2,
OAUTHBEARER) or JSON. Imported by the cached-token path (vault/fastpath.py): nothing heavy."""

from __future__ import annotations

from datetime import datetime

from adapters.sasl import initial_response
from vault.render.text import printable


def render_token(fmt: str, *, token: str, mailbox: str, login: str, expires_at: datetime,
                 resource: str, refreshed: bool, host: str | None = None,
                 port: int | None = None) -> str:
    """The command's output, without its final line feed. An access token is printable ASCII
    (RFC 6750's b64token; JWTs, Microsoft's and Google's opaque tokens): one that is not came
    from a provider that misbehaves, and its control characters are shown, not sent (no mail
    client takes such a token anyway). `login`: the user a SASL response names (the mail
    server's user name); `host` and `port`: the server an OAUTHBEARER response is for."""
    if fmt == "token":
        return printable(token)
    if fmt == "json":
        from vault.render.machine import to_json

        return to_json({"access_token": token, "token_type": "Bearer",
                        "expires_at": expires_at.isoformat(), "mailbox": mailbox,
                        "login": login, "resource": resource, "refreshed": refreshed})
    return initial_response(fmt, login, token, host, port)


def render_app_token(fmt: str, *, token: str, expires_at: datetime, resource: str) -> str:
    """What `vault app-token` prints: the bare token or JSON."""
    if fmt == "json":
        from vault.render.machine import to_json

        return to_json({"access_token": token, "token_type": "Bearer",
                        "expires_at": expires_at.isoformat(), "resource": resource})
    return printable(token)
