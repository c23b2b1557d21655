"""`vault sandbox`: a local identity provider that behaves like Microsoft's v2.0 endpoints.

For trying vault without a tenant, and for tests: authorization code with PKCE behind a simple
sign-in page, refresh with rotation where old refresh tokens stay valid (as at Microsoft), device
code, client credentials, and Microsoft's error JSON (AADSTS codes, trace and correlation ids).
With `openid` it issues signed ID tokens as Microsoft's v2.0 endpoint does (RS256 under a key made
at start and published at /{tenant}/discovery/v2.0/keys; tid, oid, sub, nonce; preferred_username
with `profile`, email with `email`), and its discovery document names the tenant's GUID as
issuer (`{tenantid}` for common and organizations). Switches make it answer a chosen AADSTS
error, or hand out a forged ID token. Everything is in memory, on 127.0.0.1 only.

Its app registrations are application objects as Graph shows them (object id, secrets with
hints and dates, certificates), and Graph's application endpoints (read, addPassword,
removePassword, addKey and removeKey with their proof of possession) answer app-only tokens by
their roles and the application's owners, with a propagation delay before a new secret works at
the token endpoint, an app management policy refusing secrets on request, and throttling.

Test hooks (POST, loopback only): /sandbox/fail?code=N&count=K&status=S  /sandbox/revoke?user=U
and those of hooks.py (/sandbox/register, /sandbox/app, /sandbox/graph/throttle, /sandbox/clock);
GET /sandbox/stats. The sign-in password of every user is "sandbox".

It is a peer of vault, not a part: it reads scopes as domain/scopes.py does, and nothing in
vault/, adapters/ or domain/ imports it (`vault sandbox` does, when run). server.py serves HTTP;
tokens.py, client_auth.py, oidc.py, graph.py and applications.py answer the endpoints;
failures.py holds Microsoft's error answers; state.py what it remembers, directory.py its app
registrations; hooks.py the switches over HTTP.
"""

from sandbox.failures import MESSAGES
from sandbox.oidc import FORGERIES, tenant_id
from sandbox.server import SandboxServer, client_add_args, settings_line
from sandbox.state import SandboxState

__all__ = ["FORGERIES", "MESSAGES", "SandboxServer", "SandboxState", "client_add_args",
           "settings_line", "tenant_id"]
