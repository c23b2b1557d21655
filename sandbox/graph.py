"""A sliver of Microsoft Graph: GET /v1.0/me/mailFolders/inbox (delegated) or
/v1.0/users/{mailbox}/mailFolders/inbox (app-only), with Graph's error shape; the token must be
one the sandbox issued for Graph."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from adapters.crypto import b64url
from domain.scopes import GRAPH
from sandbox.tokens import resource

if TYPE_CHECKING:
    from sandbox.state import SandboxState


def _refusal(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": code, "message": message,
                              "innerError": {"request-id": str(uuid.uuid4())}}}


def inbox(state: SandboxState, path: str, authorization: str) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of a GET of `path` with this Authorization header."""
    with state.lock:
        token = state.access_tokens.get(authorization.removeprefix("Bearer ").strip())
    if token is None:
        return _refusal(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
    if not any(resource(s) == GRAPH for s in token["scopes"]):
        return _refusal(401, "InvalidAuthenticationToken",
                        "Access token validation failure. Invalid audience.")
    segments = path.strip("/").split("/")
    if segments[1:] == ["me", "mailFolders", "inbox"] and not token["app"]:
        user = token["user"]
    elif len(segments) == 5 and segments[1] == "users" and segments[3:] == [
            "mailFolders", "inbox"] and token["app"]:
        user = segments[2].lower()
    else:
        return _refusal(403, "ErrorAccessDenied",
                        "Access is denied. Check credentials and try again.")
    return 200, {"id": b64url(f"inbox:{user}".encode()), "displayName": "Inbox",
                 "totalItemCount": 3, "unreadItemCount": 1, "childFolderCount": 0}
