"""Renewing an app's credentials through Microsoft Graph (issue 14): `client rotate-secret
--via-graph`, `client rotate-certificate --via-graph`, `maintain --renew-within` and the
finishing of renewals a killed process left, against the sandbox's Graph application endpoints
(which check roles, ownership, proofs of possession and propagation)."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import time_machine

from tests.conftest import Harness, add_sandbox_client

OWNED_BY, READ_ALL = "Application.ReadWrite.OwnedBy", "Application.Read.All"
MAILBOX = "shared@contoso.com"


def _graph_client(h: Harness, sandbox, *roles: str, owns_itself: bool = True) -> None:
    add_sandbox_client(h, sandbox)
    app = sandbox.state.application
    app.roles, app.owns_itself = set(roles), owns_itself
    address = urlsplit(sandbox.base_url)
    h.ok("client", "set-servers", "demo", "--graph", f"{address.hostname}:{address.port}/plain")


def _renew(h: Harness, *args: str, code: int = 0) -> dict:
    result = h.run("client", "rotate-secret", "demo", "--via-graph", *args, "--json")
    assert result.code == code, result.text
    return json.loads(result.out) if code == 0 else {"error": result.err}


def _steps(h: Harness) -> list[str]:
    entries = json.loads(h.ok("audit", "log", "--json").out)
    return [e["detail"]["step"] for e in entries if e["action"].startswith("client r")
            and "step" in e["detail"]]


def _unfinished(h: Harness) -> list[dict]:
    """The expiry report's findings of renewals left unfinished."""
    return [f for f in json.loads(h.ok("expiry", "--json").out)["findings"]
            if f["kind"] == "renewal_unfinished"]


def _events(h: Harness) -> list[str]:
    return [e["event"] for e in json.loads(h.ok("history", "demo", "--json").out)["events"]]


def test_a_secret_renewed_through_graph_works_and_the_old_one_is_gone(sqlite_vault: Harness,
                                                                      sandbox) -> None:
    h = sqlite_vault
    _graph_client(h, sandbox, OWNED_BY)
    app = sandbox.state.application
    old = app.passwords[0]
    app.propagation = 1.5  # the new secret is refused at the token endpoint at first
    h.ok("grant", "add-app", "--client", "demo", "--mailbox", MAILBOX, "--protocols", "graph")
    tried = sandbox.state.stats["client_credentials"]
    renewed = _renew(h, "--lifetime-days", "90")
    assert (renewed["stage"], renewed["new"], renewed["retired"], renewed["removed"]) == (
        "done", "s2", ["s1"], ["s1"])
    (new,) = app.passwords  # the old one removed at Entra
    assert new.key_id == renewed["key_id"] and new is not old
    assert new.display_name.startswith("vault ") and round((new.end - new.start) / 86400) == 90
    assert renewed["expires_on"] == datetime.fromtimestamp(new.end, UTC).date().isoformat()
    assert sandbox.state.stats["client_credentials"] - tried >= 2  # a Graph token, then the check
    assert new.secret not in h.outputs[-1] and "secret" not in renewed
    # the new secret is what vault now authenticates with: the old one no longer exists
    assert h.ok("app-token", "demo").out.startswith("sbx-app.")
    assert h.ok("token", MAILBOX, "--protocol", "graph").out.strip()
    shown = json.loads(h.ok("client", "show", "demo", "--json").out)
    assert [(s["ref"], s["current"], s["retired_at"] is None) for s in shown["secrets"]] == [
        ("s1", False, False), ("s2", True, True)]
    assert shown["secrets"][1]["secret_id"] == new.key_id
    assert _steps(h) == ["started", "received", "verified", "finished"]
    assert [e for e in _events(h) if "Renewal" in e or "Secret" in e][-5:] == [
        "RenewalStarted", "SecretAdded", "RenewalVerified", "SecretRetired", "RenewalEnded"]
    for shown_text in (h.ok("history", "demo", "--json").out, h.ok("audit", "log", "--json").out):
        assert new.secret not in shown_text and old.secret not in shown_text
    # Entra's view was recorded with it: the expiry report dates the new secret from Entra
    (due,) = [f for f in json.loads(h.ok("expiry", "--within", "1000", "--json").out)["findings"]
              if f["ref"] == "s2"]
    assert due["source"] == "entra"
    assert not _unfinished(h)


def test_reveal_prints_the_new_secret_once_and_audits_it(sqlite_vault: Harness,
                                                         sandbox) -> None:
    h = sqlite_vault
    _graph_client(h, sandbox, OWNED_BY)
    text = h.ok("client", "rotate-secret", "demo", "--via-graph", "--reveal").out
    (new,) = sandbox.state.application.passwords
    assert f"secret: {new.secret}" in text
    entries = json.loads(h.ok("audit", "log", "--json").out)
    assert any(e["detail"].get("revealed") == "s2" for e in entries)


def test_retire_after_keeps_the_old_secret_until_a_later_maintain(sqlite_vault: Harness,
                                                                  sandbox) -> None:
    h = sqlite_vault
    _graph_client(h, sandbox, OWNED_BY)
    app = sandbox.state.application
    old = app.passwords[0]
    renewed = _renew(h, "--retire-after", "2d")
    assert renewed["stage"] == "waiting" and renewed["retired"] == ["s1"]
    assert old in app.passwords and len(app.passwords) == 2  # kept for consumers elsewhere
    steps = {s["step"]: s for s in json.loads(h.ok("maintain", "--json").out)}
    assert steps["renew"]["outcome"] == "ok" and old in app.passwords  # not yet
    assert not _unfinished(h)
    with time_machine.travel(datetime.now(UTC) + timedelta(days=2, hours=1)):
        assert len(_unfinished(h)) == 1  # the old secret kept past its time
        steps = {s["step"]: s for s in json.loads(h.ok("maintain", "--json").out)}
        assert steps["renew"]["outcome"] == "ok", steps["renew"]
        assert app.passwords == [p for p in app.passwords if p is not old] and len(
            app.passwords) == 1
        assert not _unfinished(h)
    assert _steps(h)[-1] == "finished"


def test_maintain_renews_only_what_entra_says_is_due(sqlite_vault: Harness, sandbox) -> None:
    from sandbox.directory import PasswordCredential

    h = sqlite_vault
    _graph_client(h, sandbox, OWNED_BY)
    app = sandbox.state.application
    h.ok("client", "sync", "demo")
    steps = {s["step"]: s for s in json.loads(h.ok("maintain", "--renew-within", "30",
                                                   "--json").out)}
    assert steps["renew"]["outcome"] == "ok" and "0 due within 30 days" in steps["renew"][
        "summary"]
    assert len(app.passwords) == 1  # two years left: nothing renewed
    # Entra's date for it is now 20 days away (shortened in the portal)
    old = app.passwords[0]
    app.passwords[0] = PasswordCredential(old.secret, old.start, time.time() + 20 * 86400,
                                          old.display_name, old.key_id)
    steps = {s["step"]: s for s in json.loads(h.ok("maintain", "--renew-within", "30",
                                                   "--json").out)}
    assert steps["renew"]["outcome"] == "ok", steps["renew"]
    assert "1 due within 30 days" in steps["renew"]["summary"]
    (new,) = app.passwords
    assert new.key_id != old.key_id
    steps = {s["step"]: s for s in json.loads(h.ok("maintain", "--renew-within", "30",
                                                   "--json").out)}
    assert "0 due" in steps["renew"]["summary"] and app.passwords == [new]


def test_a_policy_that_refuses_secrets_ends_the_renewal_and_says_why(sqlite_vault: Harness,
                                                                     sandbox) -> None:
    h = sqlite_vault
    _graph_client(h, sandbox, OWNED_BY)
    app = sandbox.state.application
    app.refuse_passwords = True
    refused = _renew(h, code=1)["error"]
    assert "CredentialTypeNotAllowedAsPerAppPolicy" in refused and "certificate" in refused
    assert not _unfinished(h)  # given up, and said
    app.refuse_passwords, app.max_password_lifetime = False, 180 * 86400
    refused = _renew(h, "--lifetime-days", "365", code=1)["error"]
    assert "CredentialInvalidLifetimeAsPerAppPolicy" in refused and "--lifetime-days" in refused
    assert _renew(h, "--lifetime-days", "180")["stage"] == "done"
    assert "Traceback" not in "".join(h.outputs)


def test_graph_refusals_say_what_to_do(sqlite_vault: Harness, sandbox) -> None:
    import httpx

    h = sqlite_vault
    _graph_client(h, sandbox, READ_ALL)  # may read, not write
    refused = _renew(h, code=1)["error"]
    assert "HTTP 403 (Authorization_RequestDenied)" in refused
    app_id = sandbox.state.application.app_id
    assert f"az ad app owner add --id {app_id}" in refused and "New-MgApplicationOwnerByRef" \
        in refused and "Application.ReadWrite.OwnedBy" in refused
    sandbox.state.application.roles = {OWNED_BY}
    sandbox.state.application.owns_itself = False  # the permission, without the ownership
    assert "az ad app owner add" in _renew(h, code=1)["error"]
    httpx.post(f"{sandbox.base_url}/sandbox/graph/throttle?count=1&retry_after=7")
    throttled = h.run("client", "sync", "demo")
    assert throttled.code == 1 and "throttled; try again after 7 s" in throttled.err
    # another tenant: the application object is not there
    other = h.run("client", "sync", "demo", "--home-tenant", "other.onmicrosoft.com")
    assert other.code == 1 and "HTTP 404" in other.err and "home tenant" in other.err


def test_a_client_of_another_cloud_is_told_so(sqlite_vault: Harness, sandbox) -> None:
    """A GCC High registration pointed at a commercial Graph: the token is for
    graph.microsoft.us, and the Graph host refuses its audience."""
    from sandbox import client_add_args

    h = sqlite_vault
    args = client_add_args(sandbox)
    h.ok(*args, "--cloud", "gcc-high", input=sandbox.state.secret)
    sandbox.state.application.roles = {READ_ALL}
    address = urlsplit(sandbox.base_url)
    h.ok("client", "set-servers", "demo", "--graph", f"{address.hostname}:{address.port}/plain")
    refused = h.run("client", "sync", "demo")
    assert refused.code == 1 and "HTTP 401 (InvalidAuthenticationToken)" in refused.err
    assert "in gcc-high, whose Graph is https://graph.microsoft.us" in refused.err, refused.err


def test_a_client_of_common_syncs_through_its_home_tenant(sqlite_vault: Harness,
                                                         sandbox) -> None:
    from sandbox import client_add_args

    h = sqlite_vault
    args = client_add_args(sandbox, tenant="organizations")
    h.ok(*args, input=sandbox.state.secret)
    sandbox.state.application.roles = {READ_ALL}
    address = urlsplit(sandbox.base_url)
    h.ok("client", "set-servers", "demo", "--graph", f"{address.hostname}:{address.port}/plain")
    plain = h.run("client", "sync", "demo")
    assert plain.code == 2 and "AADSTS9001023" in plain.err and "--home-tenant" not in plain.out
    synced = json.loads(h.ok("client", "sync", "demo", "--home-tenant",
                             "sandbox.onmicrosoft.com", "--json").out)
    assert synced["credentials"][0]["ref"] == "s1"
    steps = {s["step"]: s for s in json.loads(h.ok("maintain", "--json").out)}
    assert steps["sync"]["outcome"] == "ok"  # with the home tenant it used


def _new_certificate(tmp_path, name: str, days: int):
    """A PEM file (key and certificate) and its x509 certificate."""
    import trustme
    from cryptography import x509

    pem = trustme.CA().issue_cert("vault-app.example.test", key_type=trustme.KeyType.RSA,
                                  not_after=datetime.now(UTC) + timedelta(days=days))
    path = tmp_path / name
    path.write_bytes(pem.private_key_pem.bytes() + pem.cert_chain_pems[0].bytes())
    return path, x509.load_pem_x509_certificate(pem.cert_chain_pems[0].bytes())


def _certificate_client(h: Harness, sandbox, tmp_path):
    """`demo` with a certificate the sandbox knows, its Graph at the sandbox. vault reads the
    app first (its object id is the proof's issuer); addKey and removeKey on itself need no
    write permission, only the proof: it may only read."""
    from tests.integration.test_microsoft_sandbox import add_certificate_client

    add_certificate_client(h, sandbox, tmp_path)
    app = sandbox.state.application
    app.roles = {READ_ALL}
    address = urlsplit(sandbox.base_url)
    h.ok("client", "set-servers", "demo", "--graph", f"{address.hostname}:{address.port}/plain")
    return app


def test_a_certificate_renewed_through_graph(sqlite_vault: Harness, sandbox, tmp_path) -> None:
    h = sqlite_vault
    app = _certificate_client(h, sandbox, tmp_path)
    assert len(app.certificates) == 1
    path, certificate = _new_certificate(tmp_path, "renewed.pem", days=400)
    result = h.run("client", "rotate-certificate", "demo", "--via-graph", "--certificate-file",
                   str(path), "--json")
    assert result.code == 0, result.text
    renewed = json.loads(result.out)
    assert (renewed["stage"], renewed["new"], renewed["removed"]) == ("done", "c2", ["c1"])
    assert app.certificates == [certificate] and sandbox.state.refused_proofs == []
    assert h.ok("app-token", "demo").out.startswith("sbx-app.")
    assert _steps(h) == ["started", "verified", "finished"]
    assert b"PRIVATE KEY" not in h.stored_bytes()


# -- a process killed between two steps ---------------------------------------------------------


def _killed_at(h: Harness, sandbox, action: str, when: str, *args: str,
               command: tuple[str, ...] = ("client", "rotate-secret", "demo", "--via-graph"),
               ) -> None:
    """Run a renewal in a process of its own and SIGKILL it while the sandbox holds `action`."""
    from tests.e2e.test_clear_errors import _spawn

    sandbox.state.holds[action] = when
    process = _spawn(h, *command, *args)
    try:
        assert sandbox.state.held.wait(120), process.communicate(timeout=5)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        sandbox.state.holds.clear()
        sandbox.state.release.set()
    assert process.returncode == -signal.SIGKILL
    sandbox.state.held.clear()
    sandbox.state.release.clear()


def test_killed_after_entra_made_the_secret_and_before_vault_held_it(sqlite_vault: Harness,
                                                                    sandbox) -> None:
    h = sqlite_vault
    _graph_client(h, sandbox, OWNED_BY)
    app = sandbox.state.application
    old = app.passwords[0]
    _killed_at(h, sandbox, "addPassword", "after")
    (orphan,) = [p for p in app.passwords if p is not old]  # at Entra, no copy in vault
    (finding,) = _unfinished(h)
    assert finding["severity"] == "warning" and orphan.display_name in finding["advice"]
    assert h.ok("app-token", "demo").out  # the old secret still serves meanwhile
    renewed = _renew(h)
    assert "removed at Entra" in renewed["resumed"] and orphan.key_id in renewed["resumed"]
    assert renewed["stage"] == "done" and renewed["new"] == "s2"
    (new,) = app.passwords
    assert new is not orphan and new is not old
    assert h.ok("app-token", "demo").out.startswith("sbx-app.")
    assert not _unfinished(h)
    assert [e for e in _events(h) if e.startswith("Renewal")] == [
        "RenewalStarted", "RenewalEnded", "RenewalStarted", "RenewalVerified", "RenewalEnded"]


def test_killed_after_vault_held_it_and_before_the_old_one_was_removed(sqlite_vault: Harness,
                                                                      sandbox) -> None:
    h = sqlite_vault
    _graph_client(h, sandbox, OWNED_BY)
    app = sandbox.state.application
    old = app.passwords[0]
    _killed_at(h, sandbox, "removePassword", "before")
    assert old in app.passwords and len(app.passwords) == 2  # both still at Entra
    shown = json.loads(h.ok("client", "show", "demo", "--json").out)
    assert [(s["ref"], s["current"]) for s in shown["secrets"]] == [("s1", False), ("s2", True)]
    (finding,) = _unfinished(h)
    assert "removes them" in finding["advice"]
    steps = {s["step"]: s for s in json.loads(h.ok("maintain", "--json").out)}
    assert steps["renew"]["outcome"] == "ok", steps["renew"]
    (new,) = app.passwords
    assert new is not old and h.ok("app-token", "demo").out.startswith("sbx-app.")
    assert _steps(h)[-1] == "finished"


def test_a_secret_that_does_not_work_yet_is_held_and_the_next_run_goes_on(
        sqlite_vault: Harness, sandbox) -> None:
    h = sqlite_vault
    _graph_client(h, sandbox, OWNED_BY)
    app = sandbox.state.application
    app.propagation = 3600  # not within this run's patience
    refused = _renew(h, "--verify-timeout", "0", code=1)["error"]
    assert "does not work at the token endpoint yet" in refused and "Traceback" not in refused
    assert len(app.passwords) == 2
    shown = json.loads(h.ok("client", "show", "demo", "--json").out)
    assert [(s["ref"], s["current"], s.get("pending")) for s in shown["secrets"]] == [
        ("s1", True, None), ("s2", False, True)]
    assert shown["renewal"]["stage"] == "received"
    assert "pending" in h.ok("client", "show", "demo").out
    assert h.ok("app-token", "demo").out  # the old secret serves meanwhile
    (finding,) = _unfinished(h)
    assert "not yet seen working" in finding["advice"]
    for password in app.passwords:
        password.usable_from = 0  # propagated
    renewed = _renew(h)
    assert renewed["stage"] == "done" and renewed["resumed"].endswith(": done")
    assert len(app.passwords) == 1 and renewed["new"] == "s2"


# -- what a renewal must never remove, retire or replace (a review's findings) -------------------


def _portal_secret(app, name: str, value: str | None = None):
    """A secret made in the portal (not by vault), listed at Entra from now on."""
    from sandbox.directory import PasswordCredential, new_secret_text

    made = PasswordCredential(value or new_secret_text(), time.time(),
                              time.time() + 86400 * 300, name)
    app.passwords.append(made)
    return made


def test_another_teams_secret_with_the_same_hint_is_never_removed(sqlite_vault: Harness,
                                                                  sandbox) -> None:
    """s1 (entered without its Secret ID) was deleted in the portal; another team's secret
    starts with the same three characters: the renewal leaves it alone."""
    h = sqlite_vault
    _graph_client(h, sandbox, OWNED_BY)
    app = sandbox.state.application
    s1 = app.passwords[0]
    mine = _portal_secret(app, "second")
    h.ok("client", "rotate-secret", "demo", "--secret-stdin", "--secret-id", mine.key_id,
         "--overlap", input=mine.secret)
    app.passwords.remove(s1)
    theirs = _portal_secret(app, "other team", s1.secret[:3] + mine.secret[3:-1] + "Z")
    renewed = _renew(h)
    assert renewed["stage"] == "done" and theirs in app.passwords and mine not in app.passwords
    assert renewed["kept"] == ["s1"] and renewed["removed"] == ["s2"]


def test_a_secret_id_typed_wrong_removes_nobody_elses_secret(sqlite_vault: Harness,
                                                            sandbox) -> None:
    h = sqlite_vault
    _graph_client(h, sandbox, OWNED_BY)
    app = sandbox.state.application
    theirs, mine = _portal_secret(app, "other team"), _portal_secret(app, "mine")
    h.ok("client", "rotate-secret", "demo", "--secret-stdin", "--secret-id", theirs.key_id,
         input=mine.secret)
    renewed = _renew(h)
    assert theirs in app.passwords and renewed["removed"] == []


def test_a_renewals_credentials_are_its_own_until_it_ends(sqlite_vault: Harness,
                                                          sandbox) -> None:
    """While a renewal holds a new secret, a manual rotation, a retirement or the client's
    removal is refused (each would leave the client without a working secret, or a secret at
    Entra nobody knows of); abandon-renewal gives it up and removes its secret at Entra."""
    h = sqlite_vault
    _graph_client(h, sandbox, OWNED_BY)
    app = sandbox.state.application
    old = app.passwords[0]
    app.propagation = 3600
    _renew(h, "--verify-timeout", "0", code=1)
    manual = _portal_secret(app, "made by hand")
    for args, stdin in ((("client", "rotate-secret", "demo", "--secret-stdin"), manual.secret),
                        (("client", "retire-secret", "demo", "s2"), None),
                        (("client", "retire-secret", "demo", "s1"), None),
                        (("client", "remove", "demo", "--reason", "x"), None)):
        refused = h.run(*args, input=stdin)
        assert refused.code == 1 and "abandon-renewal" in refused.err, refused.text
    waiting = h.run("client", "rotate-certificate", "demo", "--via-graph", "--certificate-file",
                    "/nonexistent.pem")
    assert waiting.code == 2  # the file first: nothing else happens
    given_up = h.ok("client", "abandon-renewal", "demo").out
    assert "removed at Entra" in given_up and app.passwords == [old, manual]
    shown = json.loads(h.ok("client", "show", "demo", "--json").out)
    assert [(s["ref"], s["current"], s["retired_at"] is None) for s in shown["secrets"]] == [
        ("s1", True, True), ("s2", False, False)]
    assert not _unfinished(h)
    assert h.ok("app-token", "demo").out


def test_a_pending_secret_deleted_at_entra_is_given_up(sqlite_vault: Harness, sandbox) -> None:
    h = sqlite_vault
    _graph_client(h, sandbox, OWNED_BY)
    app = sandbox.state.application
    old = app.passwords[0]
    app.propagation = 3600
    _renew(h, "--verify-timeout", "0", code=1)
    app.passwords[:] = [old]  # someone deleted vault's new secret in the portal
    app.propagation = 0
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=10)):
        steps = {s["step"]: s for s in json.loads(h.ok("maintain", "--json").out)}
        assert "abandoned" in steps["renew"]["summary"], steps["renew"]
        renewed = _renew(h)  # a new one can start at once
    assert renewed["stage"] == "done" and renewed["new"] == "s3"


def test_a_renewal_waiting_to_remove_the_old_secret_is_not_silently_taken_for_a_new_one(
        sqlite_vault: Harness, sandbox) -> None:
    h = sqlite_vault
    _graph_client(h, sandbox, OWNED_BY)
    app = sandbox.state.application
    _renew(h, "--retire-after", "30d")
    refused = _renew(h, "--lifetime-days", "30", code=1)["error"]
    assert "abandon-renewal" in refused and len(app.passwords) == 2
    old = app.passwords[0]
    h.ok("client", "abandon-renewal", "demo")
    assert len(app.passwords) == 2  # the old one kept, as that renewal promised
    assert _renew(h)["stage"] == "done" and len(app.passwords) == 2 and old in app.passwords


def test_the_lifetime_is_counted_from_now_not_midnight(sqlite_vault: Harness, sandbox) -> None:
    h = sqlite_vault
    _graph_client(h, sandbox, OWNED_BY)
    now = datetime.now(UTC)
    with time_machine.travel(datetime(now.year, now.month, now.day, 23, 58, tzinfo=UTC)):
        _renew(h, "--lifetime-days", "1")
        (new,) = sandbox.state.application.passwords
    assert round(new.end - new.start) == 86400


def test_a_certificate_renewal_killed_before_addkey_without_its_file_can_be_given_up(
        sqlite_vault: Harness, sandbox, tmp_path) -> None:
    h = sqlite_vault
    app = _certificate_client(h, sandbox, tmp_path)
    path, _ = _new_certificate(tmp_path, "lost.pem", days=400)
    _killed_at(h, sandbox, "addKey", "before", "--certificate-file", str(path),
               command=("client", "rotate-certificate", "demo", "--via-graph"))
    assert len(app.certificates) == 1  # addKey never got through
    other, _ = _new_certificate(tmp_path, "other.pem", days=400)
    refused = h.run("client", "rotate-certificate", "demo", "--via-graph", "--certificate-file",
                    str(other))
    assert refused.code == 1 and "abandon-renewal" in refused.err
    assert "Entra did not list it" in h.ok("client", "abandon-renewal", "demo").out
    renewed = json.loads(h.ok("client", "rotate-certificate", "demo", "--via-graph",
                              "--certificate-file", str(other), "--json").out)
    assert renewed["stage"] == "done" and renewed["new"] == "c3" and len(app.certificates) == 1
    assert h.ok("app-token", "demo").out.startswith("sbx-app.")
