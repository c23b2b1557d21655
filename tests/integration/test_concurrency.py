"""Several processes on one vault: no lost event, one winner for a name."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import Harness, add_client
from tests.support import ROOT


def test_concurrent_client_adds_of_one_name_let_exactly_one_through(vault: Harness) -> None:
    procs = [vault.spawn("client", "add", "shared", "--provider", "microsoft", "--tenant",
                         "contoso.com", "--client-id", "11111111-2222-3333-4444-555555555555",
                         "--secret-stdin") for _ in range(6)]
    results = [p.communicate(input=f"Secret~for-process-{i}-xyz", timeout=120)
               for i, p in enumerate(procs)]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1, 1, 1, 1, 1], results
    losers = [err for (out, err), p in zip(results, procs, strict=True) if p.returncode]
    assert all("already exists" in err and "Traceback" not in err for err in losers)
    clients = json.loads(vault.ok("client", "list", "--json").out)
    assert [c["name"] for c in clients] == ["shared"]
    assert vault.sql("SELECT COUNT(*) FROM view_clients")[0][0] == 1


def test_two_processes_changing_one_aggregate_lose_no_event(vault: Harness) -> None:
    add_client(vault)
    per_worker = 15
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [subprocess.Popen(
        [sys.executable, "-m", "tests.workers", "rotate", str(vault.home),
         vault.store_url or "", str(vault.key_file), "jira", str(per_worker), tag],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for tag in ("A", "B")]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
    shown = json.loads(vault.ok("client", "show", "jira", "--json").out)
    assert len(shown["secrets"]) == 1 + 2 * per_worker
    uuid = vault.sql("SELECT client_uuid FROM view_clients")[0][0]
    stored_id = uuid if vault.kind == "postgresql" else uuid.replace("-", "")
    versions = [r[0] for r in vault.sql(
        "SELECT originator_version FROM stored_events WHERE originator_id = ? ORDER BY 1",
        (stored_id,))]
    assert versions == list(range(1, 3 + 2 * per_worker))  # Registered, SecretAdded, 30 more
    assert vault.ok("audit", "verify").code == 0
