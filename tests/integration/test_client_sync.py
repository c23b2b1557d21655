"""`vault client sync`: an app's credentials as Entra lists them (the sandbox's Graph
application endpoints), matched to the ones vault holds."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

from tests.conftest import Harness, add_sandbox_client

READ_ALL = "Application.Read.All"


def _synced(h: Harness, sandbox, *roles: str) -> None:
    add_sandbox_client(h, sandbox)
    sandbox.state.application.roles = set(roles)
    address = urlsplit(sandbox.base_url)
    h.ok("client", "set-servers", "demo", "--graph", f"{address.hostname}:{address.port}/plain")


def _sync(h: Harness, code: int = 0) -> dict:
    result = h.run("client", "sync", "demo", "--json")
    assert result.code == code, result.text
    return json.loads(result.out) if code == 0 else {"error": result.err}


def test_sync_matches_what_vault_holds_and_records_only_what_changed(sqlite_vault: Harness,
                                                                     sandbox) -> None:
    from sandbox.directory import PasswordCredential

    h = sqlite_vault
    _synced(h, sandbox, READ_ALL)
    first = _sync(h)
    app = sandbox.state.application
    original = app.passwords[0]
    assert first["object_id"] == app.object_id and first["recorded"] is True
    (held,) = first["credentials"]
    assert (held["ref"], held["hint"], held["key_id"]) == ("s1", sandbox.state.secret[:3],
                                                            app.passwords[0].key_id)
    assert first["gone"] == [] and first["changed_dates"] == []
    assert _sync(h)["recorded"] is False  # nothing new: no event
    entra_end = held["end"]
    (due,) = [f for f in _findings(h) if f["ref"] == "s1"]
    assert (due["source"], due["due"], due["assumed"]) == ("entra", entra_end, False)
    report = json.loads(h.ok("report", "expiry", "--horizon", "1000", "--format", "json").out)
    assert [i["source"] for i in report["items"] if i["ref"] == "s1"] == ["entra"]
    assert "SOURCE" in (table := h.ok("expiry", "--within", "1000").out) and " entra " in table
    h.ok("client", "set-secret-dates", "demo", "s1", "--expires", "2030-01-01")
    dated = _sync(h)  # the date entered differs: Entra wins, and the sync says so
    assert dated["changed_dates"] == [{"ref": "s1", "entered": "2030-01-01", "entra": entra_end}]
    assert [f["due"] for f in _findings(h) if f["ref"] == "s1"] == [entra_end]
    now = time.time()
    app.passwords.append(PasswordCredential("Zz9Q~someone-elses-secret-value-0123456789",
                                            now, now + 86400 * 30, "made by hand"))
    second = _sync(h)
    foreign = [c for c in second["credentials"] if c["ref"] is None]
    assert second["recorded"] is True and [c["display_name"] for c in foreign] == ["made by hand"]
    (info,) = [f for f in _findings(h) if f["kind"] == "entra_credential_not_held"]
    assert info["severity"] == "info" and "made by hand" in info["advice"]
    # a second secret in vault (the current one), then the first deleted in the portal
    new = PasswordCredential("Ab7Q~the-second-secret-value-0123456789abc", now, now + 86400 * 90,
                             "second")
    app.passwords.append(new)
    h.ok("client", "rotate-secret", "demo", "--secret-stdin", "--overlap", input=new.secret)
    app.passwords = [p for p in app.passwords if p is not original]
    third = _sync(h)
    assert third["gone"] == ["s1"]  # deleted in the portal: it will fail
    (gone,) = [f for f in _findings(h) if f["kind"] == "client_secret_gone_at_entra"]
    assert (gone["severity"], gone["ref"], gone["source"]) == ("critical", "s1", "entra")
    assert {c["ref"] for c in third["credentials"]} == {"s2", None}
    history = h.ok("history", "demo", "--json").out
    assert history.count("EntraObserved") == 3
    assert sandbox.state.secret[3:] not in h.ok("audit", "log", "--json").out


def _findings(h: Harness) -> list[dict]:
    return json.loads(h.ok("expiry", "--within", "1000", "--json").out)["findings"]


def test_sync_says_which_permission_is_missing(sqlite_vault: Harness, sandbox) -> None:
    _synced(sqlite_vault, sandbox)  # no Graph role granted
    refused = _sync(sqlite_vault, code=1)
    assert "Application.Read.All" in refused["error"] and "Traceback" not in refused["error"]


def test_a_management_client_reads_for_an_app_that_may_not(sqlite_vault: Harness,
                                                           sandbox) -> None:
    """--via CLIENT: a separate management app with Application.Read.All reads the app's
    credentials; the app itself holds no Graph permission."""
    import httpx

    from sandbox import client_add_args

    h = sqlite_vault
    _synced(h, sandbox)  # the app: no Graph role
    manager = httpx.post(f"{sandbox.base_url}/sandbox/register?roles={READ_ALL}").json()
    args = client_add_args(sandbox, name="manager")
    args[args.index("--client-id") + 1] = manager["appId"]
    h.ok(*args, input=manager["secret"])
    assert _sync(h, code=1)  # by itself it may not
    result = h.run("client", "sync", "demo", "--via", "manager", "--json")
    assert result.code == 0, result.text
    (held,) = json.loads(result.out)["credentials"]
    assert held["ref"] == "s1"
    entries = json.loads(h.ok("audit", "log", "--json").out)
    assert [e["detail"].get("via") for e in entries if e["action"] == "client sync"
            and e["outcome"] == "ok"] == ["manager"]


def test_maintain_keeps_synced_clients_in_sync(sqlite_vault: Harness, sandbox) -> None:
    """A client synced once is synced again by every `vault maintain`, with the reader it used;
    a client never synced is left alone."""
    from sandbox.directory import PasswordCredential

    h = sqlite_vault
    _synced(h, sandbox, READ_ALL)
    skipped = json.loads(h.ok("maintain", "--json").out)
    assert [s["outcome"] for s in skipped if s["step"] == "sync"] == ["skipped"]
    _sync(h)
    now = time.time()
    sandbox.state.application.passwords.append(
        PasswordCredential("Qr5Q~a-secret-made-in-the-portal-0123456789", now, now + 86400,
                           "portal"))
    steps = json.loads(h.ok("maintain", "--json").out)
    (sync,) = [s for s in steps if s["step"] == "sync"]
    assert sync["outcome"] == "ok" and "1 synced with Entra, 1 with something new" in sync["summary"]
    assert [f["kind"] for f in _findings(h)].count("entra_credential_not_held") == 1
    sandbox.state.application.roles = set()  # the permission withdrawn: the step says so
    steps = json.loads(h.run("maintain", "--json").out)
    (sync,) = [s for s in steps if s["step"] == "sync"]
    assert sync["outcome"] == "failed" and "Application.Read.All" in sync["summary"]
