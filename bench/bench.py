"""Benchmarks of the vault core (not a test: nothing here asserts a speed).

    python bench/bench.py                       # SQLite and PostgreSQL, full sizes
    python bench/bench.py --store sqlite --quick
    python bench/bench.py --token-only          # the cached `vault token` latency

Measures, on each store:
- `vault token` on a cached token (SQLite, key file; a new process each run, as mail clients do),
  beside `python -c pass` by the interpreter running this script, which runs vault here too, from
  the source tree (start-up against a bare interpreter, paired, in CPU time, from a non-editable
  install: bench/startup.py);
- append: a grant's token lineage grows to 52,560 refreshes (one every 10 minutes for a year),
  each in its own transaction with its audit entry and read-model update, snapshots every 20;
- load: rebuilding that TokenRotation from snapshot + tail, against a full replay;
- `vault status` and `vault expiry` over 10,000 grants, as a process (start-up and unlock
  with a key file included) and as the use case alone;
- `vault audit verify` over 100,000 audit entries; `audit log --limit 100` and a one-day
  `report audit` over them (time and peak memory of the process).
PostgreSQL: VAULT_BENCH_PG (default postgresql://postgres@127.0.0.1:5432), database vault_bench.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.keyslots import read_key_file, write_key_file  # noqa: E402
from adapters.store.changes import Changes  # noqa: E402
from domain.credentials import ClientCredential  # noqa: E402
from domain.grants import ConsentGrant  # noqa: E402
from domain.rotation import TokenRotation, rotation_id_for  # noqa: E402
from domain.secret_value import SecretValue  # noqa: E402
from vault.audit import AuditRecord  # noqa: E402
from vault.bootstrap import Settings, init_vault, open_vault  # noqa: E402
from vault.core import apply_views, use_case  # noqa: E402
from vault.projections import client_changes, grant_changes, rotation_changes  # noqa: E402

PG_SERVER = os.environ.get("VAULT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
PG_DATABASE = "vault_bench"


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Bench:
    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.key_file = workdir / f"{kind}.key"
        home = workdir / f"{kind}-home"
        url = None
        if kind == "postgresql":
            import psycopg

            with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                    (PG_DATABASE,)).fetchone():
                    conn.execute(f"CREATE DATABASE {PG_DATABASE}")
            self.schema = f"bench_{secrets.token_hex(4)}"
            url = f"{PG_SERVER}/{PG_DATABASE}?schema={self.schema}"
        self.settings = Settings(home=home, store_url=url)
        material = write_key_file(str(self.key_file))
        init_vault(self.settings, [(material, "bench")], kdf="interactive")
        self.env = {**os.environ, "VAULT_HOME": str(home), "VAULT_KEY_FILE": str(self.key_file),
                    "PYTHONPATH": str(ROOT)}
        if url:
            self.env["VAULT_STORE"] = url
        self.clock = datetime(2026, 1, 1, tzinfo=UTC)

    def app(self):
        material = read_key_file(str(self.key_file))
        return open_vault(self.settings, lambda header: material, clock=lambda: self.clock)

    def cli(self, *args: str, repeat: int = 5) -> float:
        def run() -> None:
            subprocess.run([sys.executable, "-m", "vault", *args], env=self.env, check=True,
                           stdout=subprocess.DEVNULL)
        return median_seconds(run, repeat)

    def cli_peak(self, *args: str) -> tuple[float, float]:
        """(seconds, peak resident MiB) of one `vault ARGS` process."""
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "vault", *args], env=self.env,
                                   stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            raise subprocess.CalledProcessError(process.returncode, ["vault", *args])
        return time.perf_counter() - start, usage.ru_maxrss / 1024  # KiB on Linux

    def drop(self) -> None:
        if self.kind == "postgresql":
            import psycopg

            with psycopg.connect(f"{PG_SERVER}/{PG_DATABASE}", autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {self.schema} CASCADE")


def bench_rotations(b: Bench, count: int) -> dict:
    with b.app() as app:
        app.clients.add_client(name="jira", provider="microsoft", tenant="contoso.com",
                               client_id="11111111-2222-3333-4444-555555555555",
                               secret=SecretValue("Bench~secret-value-0000000"))
        app.grants.import_grant(client="jira", mailbox="help@contoso.com", protocols=("imap",),
                                refresh_token=SecretValue("bench-refresh-token-000000"))

        @use_case("bench: refresh")
        def refresh(app, i: int) -> None:
            rotation = app.core.load(rid)
            rotation.record_tokens(
                now=b.clock, attempt_id=None, resource="mail",
                access_token=SecretValue(f"access-token-{i:06d}-xxxxxxxxxxxxxxxx"),
                expires_in=3600, refresh_token=SecretValue(f"refresh-token-{i:06d}-xxxxxxxx"),
                scope="https://outlook.office.com/IMAP.AccessAsUser.All")
            app.core.commit(rotation, changes=apply_views(Changes(), rotation_changes(rotation)))

        rid = UUID(app.core.reads.rows("view_grants")[0].rotation_uuid)
        start = time.perf_counter()
        for i in range(count):
            b.clock += timedelta(minutes=10)
            refresh(app, i)
        append_s = time.perf_counter() - start
    with b.app() as app:
        load_s = median_seconds(lambda: app.core.load(rid), 5)
        replay_s = median_seconds(lambda: list(app.core.events.get(rid)), 3)
        snapshots = app.core.store.query("SELECT COUNT(*) AS n FROM stored_snapshots")[0]["n"]
    return {"refreshes": count, "append_total_s": round(append_s, 1),
            "append_ms_each": round(append_s / count * 1000, 2),
            "load_with_snapshot_ms": round(load_s * 1000, 1),
            "full_replay_decrypt_ms": round(replay_s * 1000, 1), "snapshots": snapshots}


def bench_grants(b: Bench, count: int) -> dict:
    with b.app() as app:
        @use_case("bench: bulk grants")
        def bulk(app, first: int, size: int) -> None:
            client = app.core.load_client(app.clients.client_row("jira").client_uuid)
            aggregates, changes = [], Changes()
            for n in range(first, first + size):
                gid = app.core.new_id()
                grant = ConsentGrant.grant(
                    aggregate_id=gid, rotation_id=rotation_id_for(gid), now=b.clock,
                    client=client, mailbox=f"box{n:05d}@contoso.com", protocols=("imap",),
                    scopes=None, method="import",
                    granted_at=b.clock - timedelta(days=n % 100), granted_by="bench")
                rotation = TokenRotation.start(
                    grant_id=gid, now=b.clock, refresh_token=SecretValue(f"rt-{n:06d}-xxxxxx"),
                    issued_at=grant.granted_at, source="import")
                changes.keys += (app.core.new_key_rows(gid, gid)
                                 + app.core.new_key_rows(rotation.id, gid))
                apply_views(changes, grant_changes(grant, "microsoft", False),
                            rotation_changes(rotation))
                aggregates += [grant, rotation]
            app.core.commit(*aggregates, changes=changes)

        if not app.core.reads.rows("view_clients"):
            client = ClientCredential.register(
                aggregate_id=app.core.new_id(), now=b.clock, name="jira", provider="microsoft",
                cloud=None, tenant="contoso.com",
                client_id="11111111-2222-3333-4444-555555555555")

            @use_case("bench: client")
            def add(app) -> None:
                app.core.commit(client, changes=apply_views(
                    Changes(keys=app.core.new_key_rows(client.id, client.id)),
                    client_changes(client)))
            add(app)
        start = time.perf_counter()
        for first in range(0, count, 500):
            bulk(app, first, min(500, count - first))
        create_s = time.perf_counter() - start
        status_inproc = median_seconds(app.reports.status, 5)
        expiry_inproc = median_seconds(app.reports.expiry, 5)
    return {"grants": count, "bulk_create_s": round(create_s, 1),
            "status_use_case_ms": round(status_inproc * 1000),
            "expiry_use_case_ms": round(expiry_inproc * 1000),
            "vault_status_process_ms": round(b.cli("status", "--json") * 1000),
            "vault_expiry_process_ms": round(b.cli("expiry", "--json") * 1000)}


def bench_audit(b: Bench, total: int) -> dict:
    with b.app() as app:
        have = app.core.store.query("SELECT COUNT(*) AS n FROM vault_audit")[0]["n"]
        start = time.perf_counter()
        remaining = total - have
        while remaining > 0:
            batch = min(2000, remaining)
            with app.core.store.write() as tx:
                for _ in range(batch):  # five minutes apart: a day holds 288 of them
                    b.clock += timedelta(minutes=5)
                    app.core.store._append_audit(
                        tx, app.core.broker.sealer(AuditRecord("bench: read")))
            remaining -= batch
        fill_s = time.perf_counter() - start
        entries = app.core.store.query("SELECT COUNT(*) AS n FROM vault_audit")[0]["n"]
    # one snapshot, streamed: memory follows what is shown, not the length of the log
    log_s, log_mib = b.cli_peak("audit", "log", "--limit", "100")
    day_s, day_mib = b.cli_peak("report", "audit", "--since", b.clock.date().isoformat(),
                                "--until", b.clock.date().isoformat(), "--format", "json")
    return {"entries": entries, "fill_s": round(fill_s, 1),
            "vault_audit_verify_process_s": round(b.cli("audit", "verify", repeat=3), 2),
            "vault_audit_log_last_100": {"s": round(log_s, 2), "peak_mib": round(log_mib)},
            "vault_report_audit_one_day": {"s": round(day_s, 2), "peak_mib": round(day_mib)}}


def bench_token(b: Bench, runs: int = 30) -> dict:
    """`vault token` on a cached token, as a mail client runs it: a new process each time,
    unlocked with the key file. Against `vault sandbox` for the one consent it needs."""
    from sandbox import SandboxServer, settings_line
    from tests.consent import ScriptedConsent

    server = SandboxServer().start()
    s = json.loads(settings_line(server))

    try:
        with b.app() as app:
            b.clock = datetime.now(UTC)
            app.clients.add_client(name="demo", provider="microsoft", tenant=s["tenant"],
                                   client_id=s["client_id"], secret=SecretValue(s["client_secret"]),
                                   endpoints={"authorize_url": s["authorize_url"],
                                              "token_url": s["token_url"], "issuer": s["issuer"]})
            app.consent.consent("demo", mailbox="carol@contoso.com", protocols=("imap",),
                                flow="manual", ui=ScriptedConsent.at_sandbox("carol@contoso.com"))
        cached = b.cli("token", "carol@contoso.com", repeat=runs)
    finally:
        server.stop()
    return {"runs": runs, "vault_token_cached_ms": round(cached * 1000, 1)}


def bench_reencrypt(b: Bench) -> dict:
    """`vault key rotate --reencrypt` over the vault built so far, as one process: its wall time
    and peak memory, and what it re-sealed."""
    before = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "vault", "key", "rotate", "--reencrypt",
                          "--json"], env=b.env, check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - before
    done = json.loads(out)
    token_s = b.cli("status", "--json", repeat=3)
    return {"seconds": round(seconds, 1), "subjects": done["subjects"],
            "events_and_snapshots": done["events"], "transactions": done["batches"],
            "aggregates_proven": done["aggregates_proven"],
            "events_per_second": round(done["events"] / seconds),
            "vault_status_after_ms": round(token_s * 1000)}


def python_startup_ms() -> float:
    return round(median_seconds(lambda: subprocess.run([sys.executable, "-c", "pass"],
                                                       check=True), 10) * 1000, 1)


def bench_copies(b: Bench, workdir: Path) -> dict:
    """Whole-vault copies of what the benchmarks above left (each proven before it returns)."""
    backup = workdir / f"{b.kind}.backup"
    backup_s = b.cli("backup", str(backup), repeat=1)
    restored = dict(b.env, VAULT_HOME=str(workdir / f"{b.kind}-restored"))
    restored.pop("VAULT_STORE", None)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vault", "restore", str(backup)], env=restored,
                   check=True, stdout=subprocess.DEVNULL)
    restore_s = time.perf_counter() - start
    return {"backup_file_mb": round(backup.stat().st_size / 1e6, 1),
            "vault_backup_process_s": round(backup_s, 1),
            "vault_restore_into_sqlite_process_s": round(restore_s, 1),
            "vault_expiry_prometheus_process_ms": round(
                b.cli("expiry", "--format", "prometheus") * 1000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--token-only", action="store_true",
                        help="only the cached `vault token` latency (SQLite)")
    parser.add_argument("--reencrypt-only", action="store_true",
                        help="build the rotations and grants, then time key rotate --reencrypt")
    args = parser.parse_args()
    if args.token_only:
        with tempfile.TemporaryDirectory() as tmp:
            result = {"python_c_pass_ms": python_startup_ms(),
                      "sqlite": {"token": bench_token(Bench("sqlite", Path(tmp)))}}
        print(json.dumps(result, indent=2))
        return
    sizes = ({"rotations": 2000, "grants": 1000, "audit": 10000} if args.quick
             else {"rotations": 52560, "grants": 10000, "audit": 100000})
    kinds = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    results: dict = {"python_c_pass_ms": python_startup_ms(), "sizes": sizes}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            b = Bench(kind, Path(tmp))
            try:
                if args.reencrypt_only:
                    results[kind] = {"rotations": bench_rotations(b, sizes["rotations"]),
                                     "grants": bench_grants(b, sizes["grants"]),
                                     "reencrypt": bench_reencrypt(b)}
                    continue
                results[kind] = {
                    "token": bench_token(b) if kind == "sqlite" else None,
                    "rotations": bench_rotations(b, sizes["rotations"]),
                    "grants": bench_grants(b, sizes["grants"]),
                    "audit": bench_audit(b, sizes["audit"]),
                    "copies": bench_copies(b, Path(tmp)),
                    "reencrypt": bench_reencrypt(b),
                }
            finally:
                b.drop()
            print(json.dumps({kind: results[kind]}, indent=2), file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
