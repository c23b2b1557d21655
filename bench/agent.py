"""The agent's figures (`vault agent`, issue 13), with real processes (not a test).

    python bench/agent.py                    # SQLite
    python bench/agent.py --pg               # and the same on PostgreSQL
    python bench/agent.py --json --pairs 30 --seconds 10

From a virtual environment holding a normal (non-editable) install of this working tree, as
bench/startup.py builds it (its helpers make the venv and the vault), an agent runs as
`vault agent start --foreground` and is measured three ways:

- client: `vault token MAILBOX` through the agent (VAULT_AGENT_SOCK), a new process each run,
  paired with `python -c pass` by the same venv's interpreter; CPU is the child's user + system
  time (wait4). Beside it, the agent's own CPU per request over those runs (/proc/PID/stat,
  utime + stime).
- throughput: 8 client processes, each on one persistent connection, sending token requests one
  at a time (the wire protocol of vault/agent/client.py) for --seconds; requests answered per
  second in total, and the agent's CPU per request meanwhile. Audit is on as always: afterwards
  `vault audit verify` must pass and the log must hold exactly one agent entry per token handed
  out, or the run fails.
- memory: an agent over a vault of 10,000 grants, each holding an access token valid for a day,
  asked for every one of them once (its peak resident memory, VmHWM).

The figures for SQLite; --pg repeats the client and throughput runs on PostgreSQL (a database
of its own at VAULT_BENCH_PG, default postgresql://postgres@127.0.0.1:5432, dropped at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from startup import MAILBOX, cpu_seconds, make_vault, quiet, venv

PG_SERVER = os.environ.get("VAULT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
CLIENTS = 8
GRANTS = 10_000

# Run by the venv's interpreter: adds `count` grants of the client "jira", each with an access
# token valid for a day (as a refresh would have left it), in transactions of 500.
BUILD_GRANTS = """
import sys
from datetime import timedelta
from adapters.keyslots import read_key_file
from adapters.store.changes import Changes
from domain.grants import ConsentGrant
from domain.rotation import TokenRotation, rotation_id_for
from domain.secret_value import SecretValue
from vault.bootstrap import open_vault, settings_from_env
from vault.core import apply_views, use_case
from vault.projections import grant_changes, rotation_changes

count, key_file = int(sys.argv[1]), sys.argv[2]
material = read_key_file(key_file)

@use_case("bench: bulk grants with tokens")
def bulk(app, first, size):
    client = app.core.load_client(app.clients.client_row("jira").client_uuid)
    now = app.core.now()
    aggregates, changes = [], Changes()
    for n in range(first, first + size):
        gid = app.core.new_id()
        grant = ConsentGrant.grant(
            aggregate_id=gid, rotation_id=rotation_id_for(gid), now=now, client=client,
            mailbox=f"box{n:05d}@contoso.com", protocols=("imap",), scopes=None,
            method="import", granted_at=now - timedelta(days=n % 100), granted_by="bench")
        rotation = TokenRotation.start(
            grant_id=gid, now=now, refresh_token=SecretValue(f"bench-rt-{n:06d}-xxxxxxxx"),
            issued_at=grant.granted_at, source="import")
        rotation.record_tokens(
            now=now, attempt_id=None, resource=grant.resource_for("imap"),
            access_token=SecretValue(f"bench-access-token-{n:06d}-" + "x" * 40),
            expires_in=86400, refresh_token=None,
            scope="https://outlook.office.com/IMAP.AccessAsUser.All")
        changes.keys += (app.core.new_key_rows(gid, gid)
                         + app.core.new_key_rows(rotation.id, gid))
        apply_views(changes, grant_changes(grant, "microsoft", False),
                    rotation_changes(rotation))
        aggregates += [grant, rotation]
    app.core.commit(*aggregates, changes=changes)

with open_vault(settings_from_env(None), lambda header: material) as app:
    for first in range(0, count, 500):
        bulk(app, first, min(500, count - first))
"""

# Run by the venv's interpreter: one client of the agent on one connection, speaking the wire
# protocol itself. Says "ready" once connected and answered once, waits for a line on stdin,
# then asks for tokens one at a time until `seconds` passed (or `count` mailboxes were each
# asked for once), and prints what it did as JSON.
CLIENT = """
import json, os, socket, sys, time
path, seconds, mailboxes = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
vault = {"home": os.environ.get("VAULT_HOME"), "store": os.environ.get("VAULT_STORE")}
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(path)
reader = sock.makefile("rb")
def ask(mailbox):
    sock.sendall(json.dumps({"v": 1, "op": "token", "mailbox": mailbox, "protocol": "imap",
                             "format": "token", "min_valid": 300, **vault}).encode() + b"\\n")
    answer = json.loads(reader.readline())
    if not answer.get("ok"):
        raise SystemExit(f"refused: {answer}")
ask(mailboxes[0])
print("ready", flush=True)
sys.stdin.readline()
asked, start = 0, time.monotonic()
if seconds > 0:
    end = start + seconds
    while time.monotonic() < end:
        for _ in range(20):
            ask(mailboxes[asked % len(mailboxes)])
            asked += 1
else:
    for mailbox in mailboxes:
        ask(mailbox)
        asked += 1
print(json.dumps({"asked": asked + 1, "start": start, "end": time.monotonic()}), flush=True)
"""


def agent_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_mib(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) of a running process, in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                values[name] = int(rest.split()[0]) / 1024
    return values["VmHWM"], values["VmRSS"]


class Agent:
    """`vault agent start --foreground` of the venv, on a socket in `workdir`."""

    def __init__(self, python: Path, env: dict[str, str], workdir: Path) -> None:
        run = workdir / "run"
        run.mkdir(mode=0o700, exist_ok=True)
        self.socket = str(run / "agent.sock")
        self.env = {**env, "VAULT_AGENT_SOCK": self.socket}
        self.process = subprocess.Popen(
            [str(python.parent / "vault"), "agent", "start", "--foreground", "--socket",
             self.socket], env=env, cwd=workdir, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the agent did not start: {self.process.stderr.read()}")
            time.sleep(0.05)
        self.pid = self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def measure_client(python: Path, agent: Agent, workdir: Path, pairs: int) -> dict:
    """`vault token` through the agent against `python -c pass`, paired, and the agent's CPU
    for those requests."""
    vault = [str(python.parent / "vault"), "token", MAILBOX]
    bare = [str(python), "-c", "pass"]
    for _ in range(3):  # warm the page cache, the bytecode caches and the agent
        cpu_seconds(vault, agent.env, workdir)
    base, command, ratios = [], [], []
    served = 0
    agent_before = agent_cpu(agent.pid)
    for _ in range(pairs):
        b = cpu_seconds(bare, agent.env, workdir)
        c = cpu_seconds(vault, agent.env, workdir)
        base.append(b)
        command.append(c)
        ratios.append(c / b)
        served += 1
    agent_s = agent_cpu(agent.pid) - agent_before
    return {"pairs": pairs, "python_c_pass_cpu_ms": round(statistics.median(base) * 1000, 1),
            "vault_token_cpu_ms": round(statistics.median(command) * 1000, 1),
            "ratio": round(statistics.median(ratios), 2),
            "agent_cpu_ms_per_request": round(agent_s / served * 1000, 2),
            "tokens_handed_out": served + 3}


def run_clients(python: Path, agent: Agent, workdir: Path, mailbox_sets: list[list[str]],
                seconds: float) -> tuple[int, float, float]:
    """Client processes on a connection each, started together; (requests answered, seconds
    from the first start to the last end, agent CPU seconds meanwhile)."""
    clients = [subprocess.Popen([str(python), "-c", CLIENT, agent.socket, str(seconds),
                                 *mailboxes], env=agent.env, cwd=workdir,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for mailboxes in mailbox_sets]
    for client in clients:
        if client.stdout.readline().strip() != "ready":
            raise SystemExit("a client did not connect")
    before = agent_cpu(agent.pid)
    for client in clients:
        client.stdin.write("go\n")
        client.stdin.flush()
    reports = []
    for client in clients:
        out = client.stdout.read()
        if client.wait():
            raise SystemExit(f"a client failed: {out}")
        reports.append(json.loads(out))
    cpu = agent_cpu(agent.pid) - before
    asked = sum(r["asked"] for r in reports)
    wall = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    return asked, wall, cpu


def measure_throughput(python: Path, agent: Agent, workdir: Path, seconds: float,
                       rounds: int) -> dict:
    rates, cpu_per_request, handed = [], [], 0
    for _ in range(rounds):
        asked, wall, cpu = run_clients(python, agent, workdir, [[MAILBOX]] * CLIENTS, seconds)
        handed += asked
        measured = asked - CLIENTS  # each client's first request comes before the clock
        rates.append(measured / wall)
        cpu_per_request.append(cpu / measured)
    return {"clients": CLIENTS, "seconds": seconds, "rounds": rounds,
            "requests_per_s": [round(r) for r in rates],
            "agent_cpu_ms_per_request": [round(c * 1000, 3) for c in cpu_per_request],
            "tokens_handed_out": handed}


def check_audit(python: Path, env: dict[str, str], workdir: Path, handed_out: int) -> dict:
    """`vault audit verify` passes and the log holds one agent entry per token handed out."""
    vault = str(python.parent / "vault")
    quiet(vault, "audit", "verify", env=env, cwd=workdir)
    log = subprocess.run([vault, "audit", "log", "--limit", "0", "--json"], env=env,
                         cwd=workdir, capture_output=True, text=True, check=True)
    entries = [e for e in json.loads(log.stdout)
               if e.get("via") == "agent" and e.get("action") == "token"]
    if len(entries) != handed_out:
        raise SystemExit(f"the audit log holds {len(entries)} agent token entries for "
                         f"{handed_out} tokens handed out")
    return {"audit_verify": "ok", "agent_token_entries": len(entries)}


def measure_memory(python: Path, workdir: Path) -> dict:
    """Peak memory of an agent asked once for each of 10,000 grants."""
    env = make_vault(python, workdir)
    quiet(str(python), "-c", BUILD_GRANTS, str(GRANTS), env["VAULT_KEY_FILE"], env=env,
          cwd=workdir)
    agent = Agent(python, env, workdir)
    try:
        unlocked, _ = peak_mib(agent.pid)
        mailboxes = [f"box{n:05d}@contoso.com" for n in range(GRANTS)]
        start = time.monotonic()
        asked, _, cpu = run_clients(python, agent, workdir,
                                    [mailboxes[i::2] for i in range(2)], 0)
        fill_s = time.monotonic() - start
        held = json.loads(subprocess.run(
            [str(python), "-c", "import json, sys; from vault.agent.client import Connection; "
             "print(json.dumps(Connection(sys.argv[1]).ask({'v': 1, 'op': 'status'})))",
             agent.socket], env=env, capture_output=True, text=True, check=True).stdout)
        hwm, rss = peak_mib(agent.pid)
    finally:
        agent.stop()
    return {"grants": GRANTS, "tokens_held": held["tokens_held"],
            "unlocked_rss_mib": round(unlocked, 1), "peak_mib": round(hwm, 1),
            "rss_after_mib": round(rss, 1), "fill_s": round(fill_s, 1),
            "agent_cpu_ms_per_first_request": round(cpu / asked * 1000, 2)}


def run_store(python: Path, workdir: Path, store: str | None, args) -> dict:
    env = make_vault(python, workdir, store=store)
    agent = Agent(python, env, workdir)
    try:
        client = measure_client(python, agent, workdir, args.pairs)
        throughput = measure_throughput(python, agent, workdir, args.seconds, args.rounds)
    finally:
        agent.stop()
    audit = check_audit(python, env, workdir,
                        client["tokens_handed_out"] + throughput["tokens_handed_out"])
    return {"client": client, "throughput": throughput, "audit": audit}


def pg_database(python: Path, name: str, drop: bool = False) -> None:
    sql = (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)" if drop else f"CREATE DATABASE {name}")
    quiet(str(python), "-c", "import psycopg, sys\n"
          "with psycopg.connect(sys.argv[1], autocommit=True) as c: c.execute(sys.argv[2])",
          f"{PG_SERVER}/postgres", sql)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=21, help="client runs (default 21)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="length of a throughput round (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (default 3)")
    parser.add_argument("--pg", action="store_true", help="PostgreSQL too")
    parser.add_argument("--no-memory", action="store_true", help="skip the 10,000-grant agent")
    parser.add_argument("--cache", type=Path,
                        default=Path.home() / ".cache" / "vault-bench" / "agent",
                        help="where the venv is kept between runs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    args = parser.parse_args()
    python = venv(args.cache)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "sqlite"
        workdir.mkdir(mode=0o700)
        results["sqlite"] = run_store(python, workdir, None, args)
        if args.pg:
            name = f"vault_agent_bench_{secrets.token_hex(4)}"
            pg_database(python, name)
            try:
                workdir = Path(tmp) / "postgresql"
                workdir.mkdir(mode=0o700)
                results["postgresql"] = run_store(
                    python, workdir, f"{PG_SERVER}/{name}?schema=vault", args)
            finally:
                pg_database(python, name, drop=True)
        if not args.no_memory:
            workdir = Path(tmp) / "memory"
            workdir.mkdir(mode=0o700)
            results["memory"] = measure_memory(python, workdir)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for store in ("sqlite", "postgresql"):
        if store not in results:
            continue
        c, t = results[store]["client"], results[store]["throughput"]
        print(f"{store}: vault token through the agent {c['vault_token_cpu_ms']} ms CPU, "
              f"python -c pass {c['python_c_pass_cpu_ms']} ms: {c['ratio']}x "
              f"(median of {c['pairs']} pairs); agent {c['agent_cpu_ms_per_request']} ms CPU "
              "per request")
        print(f"{store}: {CLIENTS} clients on persistent connections: "
              f"{', '.join(map(str, t['requests_per_s']))} requests/s "
              f"({t['seconds']:.0f} s rounds); agent CPU per request "
              f"{', '.join(map(str, t['agent_cpu_ms_per_request']))} ms; audit verified, "
              f"{results[store]['audit']['agent_token_entries']} agent entries")
    if "memory" in results:
        m = results["memory"]
        print(f"memory: agent holding {m['tokens_held']} tokens of {m['grants']} grants: peak "
              f"{m['peak_mib']} MiB (after unlock {m['unlocked_rss_mib']} MiB); first asks took "
              f"{m['fill_s']} s, agent CPU {m['agent_cpu_ms_per_first_request']} ms each")


if __name__ == "__main__":
    main()
