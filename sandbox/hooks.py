"""The test hooks that set up the directory and Graph over HTTP (POST, loopback only), for tests
that drive vault as a separate process; in-process tests turn the same switches on
SandboxState and its Application objects directly.

  /sandbox/register?tenant=T&app_id=A&display_name=N&roles=R1,R2
      registers another app (a management app, or one in another tenant): its appId, object id
      and secret (the one time it is shown)
  /sandbox/app?app_id=A&roles=R1,R2&owns_itself=true&owners=A1,A2&propagation=S
              &refuse_passwords=true&max_password_days=D&tenant=T
      sets up an app (the primary one without app_id): Graph application permissions granted
      (`roles=` grants none), whether its own service principal owns it, which other apps' service
      principals own it, the seconds a new secret takes to propagate, the app management policy
      (refuse password credentials; a maximum lifetime, `none` for no limit), its home tenant
  /sandbox/graph/throttle?count=N&retry_after=S   the next N Graph calls are 429
  /sandbox/clock?advance=S                         moves the sandbox's clock S seconds forward
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox.oidc import tenant_id

if TYPE_CHECKING:
    from sandbox.directory import Application
    from sandbox.state import SandboxState

TRUE = ("1", "true", "yes", "on")


class UnknownApp(LookupError):
    pass


def summary(app: Application) -> dict[str, Any]:
    return {"appId": app.app_id, "id": app.object_id, "tenant": app.tenant,
            "servicePrincipal": app.service_principal, "roles": sorted(app.roles),
            "ownsItself": app.owns_itself, "propagation": app.propagation,
            "refusePasswords": app.refuse_passwords,
            "maxPasswordLifetime": app.max_password_lifetime}


def register(state: SandboxState, query: dict[str, str]) -> dict[str, Any]:
    roles = {r for r in query.get("roles", "").split(",") if r}
    app = state.add_application(query.get("app_id") or None,
                                tenant=query.get("tenant") or "sandbox.onmicrosoft.com",
                                display_name=query.get("display_name") or "vault sandbox",
                                roles=roles)
    return {**summary(app), "secret": app.passwords[0].secret}


def configure(state: SandboxState, query: dict[str, str]) -> dict[str, Any]:
    with state.lock:
        app = state.applications.get(query.get("app_id") or state.client_id)
        if app is None:
            raise UnknownApp(query.get("app_id"))
        if "roles" in query:
            app.roles = {r for r in query["roles"].split(",") if r}
        if "owns_itself" in query:
            app.owns_itself = query["owns_itself"].lower() in TRUE
        if "owners" in query:
            owners = [state.applications.get(a) for a in query["owners"].split(",") if a]
            if None in owners:
                raise UnknownApp(query["owners"])
            app.owners |= {o.service_principal for o in owners if o is not None}
        if "propagation" in query:
            app.propagation = float(query["propagation"])
        if "refuse_passwords" in query:
            app.refuse_passwords = query["refuse_passwords"].lower() in TRUE
        if "max_password_days" in query:
            days = query["max_password_days"]
            app.max_password_lifetime = None if days in ("", "none") else float(days) * 86400
        if "tenant" in query:
            app.tenant = tenant_id(query["tenant"])
        return summary(app)


def throttle(state: SandboxState, query: dict[str, str]) -> dict[str, Any]:
    with state.lock:
        state.graph_throttle = int(query.get("count", "1"))
        state.graph_retry_after = query.get("retry_after") or "2"
        return {"throttled": state.graph_throttle, "retry_after": state.graph_retry_after}


def advance_clock(state: SandboxState, query: dict[str, str]) -> dict[str, Any]:
    state.advance(float(query.get("advance", "0")))
    return {"now": state.clock()}
