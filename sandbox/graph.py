"""A sliver of Microsoft Graph: GET /v1.0/me/mailFolders/inbox (delegated) or
/v1.0/users/{mailbox}/mailFolders/inbox (app-only), with Graph's error shape; the token must be
one the sandbox issued for Graph. Its application endpoints are in applications.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from adapters.crypto import b64url
from domain.scopes import GRAPH
from sandbox.tokens import resource

if TYPE_CHECKING:
    from sandbox.state import SandboxState


def refusal(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    """Graph's error body (https://learn.microsoft.com/graph/errors)."""
    request = str(uuid.uuid4())
    return status, {"error": {"code": code, "message": message, "innerError": {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": request,
        "client-request-id": request}}}


def throttled(state: SandboxState) -> tuple[int, dict[str, Any], dict[str, str]] | None:
    """With SandboxState.graph_throttle > 0, the next Graph call's 429, as
    https://learn.microsoft.com/graph/throttling shows it (TooManyRequests, Retry-After)."""
    with state.lock:
        if state.graph_throttle <= 0:
            return None
        state.graph_throttle -= 1
        retry_after = state.graph_retry_after
    return (*refusal(429, "TooManyRequests", "Please retry again later."),
            {"Retry-After": retry_after})


def bearer(state: SandboxState, authorization: str) -> dict[str, Any] | tuple[int, dict[str, Any]]:
    """The sandbox's record of the Graph token in this Authorization header, or Graph's 401."""
    with state.lock:
        token = state.access_tokens.get(authorization.removeprefix("Bearer ").strip())
    if token is None:
        return refusal(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
    if not any(resource(s) == GRAPH for s in token["scopes"]):
        return refusal(401, "InvalidAuthenticationToken",
                       "Access token validation failure. Invalid audience.")
    return token


def inbox(state: SandboxState, path: str, authorization: str) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of a GET of `path` with this Authorization header."""
    token = bearer(state, authorization)
    if isinstance(token, tuple):
        return token
    segments = path.strip("/").split("/")
    if segments[1:] == ["me", "mailFolders", "inbox"] and not token["app"]:
        user = token["user"]
    elif len(segments) == 5 and segments[1] == "users" and segments[3:] == [
            "mailFolders", "inbox"] and token["app"]:
        user = segments[2].lower()
    else:
        return refusal(403, "ErrorAccessDenied",
                        "Access is denied. Check credentials and try again.")
    return 200, {"id": b64url(f"inbox:{user}".encode()), "displayName": "Inbox",
                 "totalItemCount": 3, "unreadItemCount": 1, "childFolderCount": 0}
