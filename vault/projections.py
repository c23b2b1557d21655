"""Read models: the rows listings and expiry scans read, computed from aggregate state.

They are written in the same transaction as the events that changed the aggregate (inline), so
they are never behind; each row names the versions it was projected from, which readers compare
with the newest stored events. A rebuild clears them and replays every aggregate. No secret value
ever enters a row: only ids, names, dates and states.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from adapters.store import Delete, Update, Upsert, ViewChange
from domain.credentials import ClientCredential
from domain.grants import ConsentGrant
from domain.mailboxes import mailbox_key
from domain.rotation import TokenRotation
from domain.vocabulary import CLIENT_ACTIVE, CLIENT_REMOVED


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def client_name_key(name: str) -> str:
    """Client names are unique regardless of case: 'Jira' and 'jira' are one client."""
    return name.casefold()


def client_changes(client: ClientCredential) -> list[ViewChange]:
    key = {"client_uuid": str(client.id)}
    current = client.current_secret()
    entra = client.entra or {}
    at_entra = {c["ref"]: c for c in entra.get("credentials", []) if c["ref"]}
    foreign = [{k: c[k] for k in ("key_id", "kind", "display_name", "end")}
               for c in entra.get("credentials", []) if not c["ref"]]
    changes: list[ViewChange] = [Upsert("view_clients", key, {
        "name": client.name, "name_key": client_name_key(client.name),
        "provider": client.provider, "cloud": client.cloud, "tenant": client.tenant,
        "client_id": client.client_id, "auth_method": client.auth_method,
        "status": CLIENT_REMOVED if client.is_removed else CLIENT_ACTIVE,
        "google_testing": int(client.google_testing),
        "active_secrets": len(client.active_secrets()),
        "entra_foreign": json.dumps(foreign, sort_keys=True) if client.entra else None,
        "renewal": json.dumps(renewal_row(client.renewal), sort_keys=True)
        if client.renewal else None,
        "registered_at": _iso(client.created_on), "updated_at": _iso(client.modified_on),
        "version": client.version,
    })]
    for secret in client.secrets:
        if secret.get("pending"):  # a renewal's, not yet seen working: a row once it is
            continue
        changes.append(Upsert("view_secrets", {**key, "ref": secret["ref"]}, {
            "kind": secret["kind"], "secret_id": secret["secret_id"],
            "created_on": _iso(secret["created_on"]),
            "expires_on": _iso(secret["expires_on"]), "added_at": _iso(secret["added_at"]),
            "retired_at": _iso(secret["retired_at"]),
            "is_current": int(current is not None and current["ref"] == secret["ref"]),
            "entra_expires_on": (at_entra[secret["ref"]]["end"]
                                 if secret["ref"] in at_entra else None),
            "at_entra": None if not client.entra else int(secret["ref"] in at_entra),
            "client_version": client.version,
        }))
    return changes


def renewal_row(renewal: dict[str, Any]) -> dict[str, Any]:
    """What the reports need of a renewal under way."""
    return {"kind": renewal["kind"], "stage": renewal["stage"], "new_ref": renewal["new_ref"],
            "started_at": _iso(renewal["started_at"]), "remove_at": _iso(renewal["remove_at"]),
            "display_name": renewal["display_name"]}


def client_removal(client_uuid: str) -> list[ViewChange]:
    return [Delete("view_secrets", {"client_uuid": client_uuid}),
            Delete("view_clients", {"client_uuid": client_uuid})]


def grant_changes(grant: ConsentGrant, provider: str, google_testing: bool) -> list[ViewChange]:
    return [Upsert("view_grants", {"grant_uuid": str(grant.id)}, {
        "rotation_uuid": str(grant.rotation_id), "client_uuid": str(grant.client_id),
        "client_name": grant.client_name, "provider": provider,
        "google_testing": int(google_testing), "mailbox": grant.mailbox,
        "mailbox_key": mailbox_key(grant.mailbox), "login": grant.login,
        "protocols": ",".join(grant.protocols),
        "resources": json.dumps({p: grant.resource_for(p) for p in grant.protocols},
                                sort_keys=True),
        "status": grant.status, "status_reason": grant.status_reason,
        "status_changed_at": _iso(grant.status_changed_at), "method": grant.method,
        "granted_at": _iso(grant.granted_at), "granted_by": grant.granted_by,
        "probes": json.dumps({p: {"outcome": r["outcome"], "at": _iso(r["at"]),
                                  "latency_ms": r["latency_ms"]}
                              for p, r in grant.probes.items()}, sort_keys=True),
        "updated_at": _iso(grant.modified_on), "grant_version": grant.version,
    })]


def rotation_changes(rotation: TokenRotation) -> list[ViewChange]:
    access = {resource: _iso(entry["expires_at"]) for resource, entry in rotation.access.items()}
    failure = rotation.last_failure
    return [Update("view_grants", {"rotation_uuid": str(rotation.id)}, {
        "rt_present": int(rotation.refresh_token is not None),
        "rt_generation": rotation.generation,
        "rt_issued_at": _iso(rotation.refresh_issued_at),
        "rt_last_used_at": _iso(rotation.refresh_last_used_at),
        "last_refresh_at": _iso(rotation.last_refresh_at),
        "refreshes": rotation.refreshes,
        "access_expires": json.dumps(access, sort_keys=True),
        "last_error": (f"{failure['error_class']}"
                       + (f" ({failure['error_code']})" if failure["error_code"] else "")
                       if failure else None),
        "pending_attempt": int(rotation.pending is not None),
        "refused_since": _iso(rotation.refused_since),  # "refresh refused once" since then
        "rotation_version": rotation.version,
    })]


def grant_removal(grant_uuid: str) -> list[ViewChange]:
    return [Delete("view_grants", {"grant_uuid": grant_uuid})]
