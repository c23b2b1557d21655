"""Start-up cost of the commonest commands, as CPU time against a bare interpreter (not a test).

    python bench/startup.py                  # 15 pairs per command
    python bench/startup.py --pairs 30 --json

Each command runs from a virtual environment holding a normal (non-editable) install of this
working tree: an editable install adds setuptools' import hook, and an interpreter with many
packages on its path starts slower than a venv's. Each run of a command is paired with a run of
`python -c pass` by that same venv's interpreter, one right after the other, so that the ratio
of a pair compares the two under the same load. CPU time is the child's user + system time
(`wait4`), which waiting on a busy machine does not inflate the way wall time does.

The vault: SQLite, a key-file unlock, two clients and five imported grants (fake refresh tokens:
nothing here touches a network), one of them holding a cached access token for `vault token`.
The venv is kept in --cache (default ~/.cache/vault-bench/startup) and vault reinstalled in it
on each run; dependencies are installed the first time only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("vault", "domain", "adapters", "pyproject.toml", "README.md")
MAILBOX = "help@contoso.com"
TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"

COMMANDS: list[tuple[str, tuple[str, ...]]] = [
    ("vault --help", ("--help",)),
    ("vault status", ("status",)),
    ("vault expiry", ("expiry",)),
    ("vault grant list", ("grant", "list")),
    ("vault token (cached)", ("token", MAILBOX)),
]

# Run by the venv's interpreter: gives the grant an access token valid for a day, as a refresh
# would have, so that `vault token` is served from the cache.
SEED_ACCESS_TOKEN = """
import json, sys
from uuid import UUID
from adapters.keyslots import read_key_file
from adapters.store.changes import Changes
from domain.secret_value import SecretValue
from vault.bootstrap import open_vault, settings_from_env
from vault.core import apply_views, use_case
from vault.projections import rotation_changes

mailbox, key_file = sys.argv[1], sys.argv[2]
material = read_key_file(key_file)
with open_vault(settings_from_env(None), lambda header: material) as app:
    row = next(r for r in app.core.reads.rows("view_grants") if r.mailbox == mailbox)

    @use_case("bench: seed access token")
    def seed(app):
        rotation = app.core.load(UUID(row.rotation_uuid))
        rotation.record_tokens(
            now=app.core.now(), attempt_id=None, resource=json.loads(row.resources)["imap"],
            access_token=SecretValue("bench-access-token-" + "x" * 40), expires_in=86400,
            refresh_token=None, scope="https://outlook.office.com/IMAP.AccessAsUser.All")
        app.core.commit(rotation, changes=apply_views(Changes(), rotation_changes(rotation)))

    seed(app)
"""


def venv(cache: Path) -> Path:
    """The venv's interpreter, with this working tree installed (not editable) in it."""
    python = cache / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(cache)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        # a copy of the sources only: building in the tree would leave build/ and egg-info there
        src = Path(tmp) / "src"
        src.mkdir()
        for name in SOURCES:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, src / name,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / name, src / name)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        quiet(*pip, str(src))  # dependencies, when missing
        quiet(*pip, "--no-deps", "--force-reinstall", str(src))
    return python


def quiet(*argv: str, stdin: str | None = None, **kwargs) -> None:
    """Run a set-up step; show what it said only if it fails."""
    result = subprocess.run(argv, input=stdin, text=True, capture_output=True, **kwargs)
    if result.returncode:
        raise SystemExit(f"{' '.join(argv[:4])} ... -> exit {result.returncode}:\n"
                         f"{result.stdout}{result.stderr}")


def cpu_seconds(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """User + system CPU time of one child process, which must succeed."""
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    err = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    if process.returncode:
        raise SystemExit(f"{' '.join(argv)} -> exit {process.returncode}: {err}")
    return usage.ru_utime + usage.ru_stime


def make_vault(python: Path, workdir: Path, store: str | None = None) -> dict[str, str]:
    """A vault with two clients and five grants (in `store`, a VAULT_STORE URL, or SQLite in
    its home); returns the environment that reaches it."""
    vault = str(python.parent / "vault")
    home, key_file = workdir / "home", workdir / "service.key"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VAULT_", "PYTHON")) and k != "COLUMNS"}
    env.update(VAULT_HOME=str(home), VAULT_KEY_FILE=str(key_file))
    if store:
        env["VAULT_STORE"] = store

    def run(*args: str, stdin: str | None = None, **extra: str) -> None:
        quiet(vault, *args, stdin=stdin, env={**env, **extra}, cwd=workdir)

    run("init", "--kdf", "interactive", "--key-file", str(key_file),
        VAULT_PASSPHRASE="bench passphrase, not secret")
    run("client", "add", "jira", "--provider", "microsoft", "--tenant", TENANT, "--client-id",
        CLIENT_ID, "--secret-stdin", "--secret-expires", "2030-01-01",
        stdin="Bench~secret-value-0000000000000\n")
    run("client", "add", "gmail", "--provider", "google", "--client-id",
        "123-abc.apps.googleusercontent.com", "--no-secret")
    for client, mailbox, protocols in (("jira", MAILBOX, "imap,smtp"),
                                       ("jira", "sales@contoso.com", "imap"),
                                       ("jira", "billing@contoso.com", "imap,smtp"),
                                       ("jira", "reports@contoso.com", "graph"),
                                       ("gmail", "team@example.com", "imap")):
        run("grant", "import", "--client", client, "--mailbox", mailbox, "--protocols",
            protocols, "--refresh-token-stdin", stdin=f"bench-refresh-token-{mailbox}\n")
    quiet(str(python), "-c", SEED_ACCESS_TOKEN, MAILBOX, str(key_file), env=env, cwd=workdir)
    return env


def measure(python: Path, env: dict[str, str], cwd: Path, pairs: int,
            commands: list[tuple[str, tuple[str, ...]]]) -> list[dict]:
    vault = str(python.parent / "vault")
    bare = [str(python), "-c", "pass"]
    for _, args in commands:  # warm the page cache and the bytecode caches first
        cpu_seconds([vault, *args], env, cwd)
    rows = []
    for name, args in commands:
        base, command, ratios = [], [], []
        for _ in range(pairs):
            b = cpu_seconds(bare, env, cwd)
            c = cpu_seconds([vault, *args], env, cwd)
            base.append(b)
            command.append(c)
            ratios.append(c / b)
        rows.append({"command": name, "pairs": pairs,
                     "python_c_pass_cpu_ms": round(statistics.median(base) * 1000, 1),
                     "cpu_ms": round(statistics.median(command) * 1000, 1),
                     "ratio": round(statistics.median(ratios), 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15, help="runs of each command (default 15)")
    parser.add_argument("--cache", type=Path,
                        default=Path.home() / ".cache" / "vault-bench" / "startup",
                        help="where the venv is kept between runs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--only", metavar="WORD", action="append",
                        help="only the commands whose name holds WORD (repeatable)")
    args = parser.parse_args()
    python = venv(args.cache)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o700)
        env = make_vault(python, workdir)
        commands = [(name, argv) for name, argv in COMMANDS
                    if not args.only or any(word in name for word in args.only)]
        rows = measure(python, env, workdir, args.pairs, commands)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'command':<24} {'CPU ms':>8} {'python -c pass':>15} {'ratio':>6}")
    for row in rows:
        print(f"{row['command']:<24} {row['cpu_ms']:>8.1f} {row['python_c_pass_cpu_ms']:>15.1f} "
              f"{row['ratio']:>5.1f}x")
    print(f"(median of {args.pairs} pairs each; ratio: median of the pairs' ratios)")


if __name__ == "__main__":
    main()
