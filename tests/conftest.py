"""Fixtures: a fresh vault per test on each store, the CLI run in-process, real PostgreSQL.

PostgreSQL runs on 127.0.0.1:5432 on these machines (VAULT_TEST_PG overrides the server URL).
The suite starts it if it is down, creates one database per session and one schema per test, and
fails loudly (never skips) when it cannot.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from adapters.keyslots import read_key_file
from vault.bootstrap import Settings, open_vault

PG_SERVER = os.environ.get("VAULT_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
VAULT_ENV = ("VAULT_HOME", "VAULT_STORE", "VAULT_KEY_FILE", "VAULT_PASSPHRASE",
             "VAULT_NEW_PASSPHRASE", "VAULT_DEBUG", "VAULT_WEBHOOK_URL", "VAULT_METRICS_FILE",
             "VAULT_CHECKPOINT_DIR", "VAULT_CA_FILE", "CREDENTIALS_DIRECTORY")
PASSPHRASE = "correct horse battery staple"


# Fixtures that start a peer: a test using one is marked `peers` (`browser` for Chromium), and a
# test on PostgreSQL `pg`, so that `-m "not pg and not peers and not browser"` picks the rest.
PEER_FIXTURES = {"oidc", "sandbox", "webhook", "dovecot", "dovecot_jwt", "dovecot_without_idp", "mail_sink"}
TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        if "pg_database" in fixtures or (callspec and callspec.params.get("store_kind") == "postgresql"):
            item.add_marker(pytest.mark.pg)
        if fixtures & PEER_FIXTURES:
            item.add_marker(pytest.mark.peers)
        if "chromium" in fixtures:
            item.add_marker(pytest.mark.browser)
        tier = item.path.relative_to(Path(__file__).parent).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: every test lives in tests/unit, "
                                    "tests/integration or tests/e2e")
        needs = [m for m in ("pg", "peers", "browser") if item.get_closest_marker(m)]
        if tier == "unit" and needs:
            raise pytest.UsageError(f"{item.nodeid}: the unit tier starts no peer and needs no "
                                    f"server, but this test is marked {', '.join(needs)}")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VAULT_ENV:
        monkeypatch.delenv(name, raising=False)


def _pg_connect(dbname: str = "postgres"):
    import psycopg

    return psycopg.connect(f"{PG_SERVER}/{dbname}", autocommit=True, connect_timeout=5)


def _ensure_postgres_running() -> None:
    try:
        _pg_connect().close()
        return
    except Exception:
        pass
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if versions and shutil.which("pg_ctlcluster"):
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main",
                        "start"], check=False, capture_output=True)
        for _ in range(50):
            try:
                _pg_connect().close()
                return
            except Exception:
                time.sleep(0.2)
    pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER} and could not be started: the "
                "PostgreSQL tests need it (they are never skipped)")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    _ensure_postgres_running()
    name = f"vault_test_{secrets.token_hex(4)}"
    with _pg_connect() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield name
    with _pg_connect() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@dataclass
class Harness:
    """One vault under test: how to reach it, run commands on it, and look at its raw bytes."""

    kind: str
    home: Path
    store_url: str | None
    key_file: Path
    schema: str | None = None
    pg_database: str | None = None
    outputs: list[str] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return Settings(home=self.home, store_url=self.store_url,
                        ca_file=os.environ.get("VAULT_CA_FILE"))

    def env(self, **extra: str | None) -> dict[str, str | None]:
        env: dict[str, str | None] = {"VAULT_HOME": str(self.home),
                                      "VAULT_STORE": self.store_url,
                                      "VAULT_KEY_FILE": str(self.key_file)}
        env.update(extra)
        return env

    def run(self, *args: str, input: str | None = None, full: bool = False,
            **env: str | None) -> Result:
        """Run the CLI in-process exactly as `vault ARGS` would (same entry, same errors);
        `full`: the full CLI even where a light path (vault/fastpath.py) would serve it."""
        from vault.cli.main import main as full_cli
        from vault.entry import main as entry

        main = full_cli if full else entry
        runner = CliRunner()
        with runner.isolation(input=input, env=self.env(**env)) as (out, err, _):
            try:
                main(list(args))
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            result = Result(code, out.getvalue().decode(), err.getvalue().decode())
        self.outputs.append(result.text)
        return result

    def ok(self, *args: str, input: str | None = None, full: bool = False,
           **env: str | None) -> Result:
        result = self.run(*args, input=input, full=full, **env)
        assert result.code == 0, f"vault {' '.join(args)} -> {result.code}: {result.text}"
        return result

    def light(self, *args: str, **env: str | None) -> str | None:
        """`vault ARGS` through the light paths alone (vault/fastpath.py), in-process with this
        vault's environment: the whole output, or None where they hand over to the full CLI."""
        from vault.fastpath import light_output

        with CliRunner().isolation(env=self.env(**env)):
            return light_output(list(args))

    def cached_token(self, *args: str, **env: str | None) -> str | None:
        """`vault token ARGS` through the cached-token path alone: the token line, or None."""
        output = self.light("token", *args, **env)
        return None if output is None else output.removesuffix("\n")

    def spawn(self, *args: str, input: str | None = None, **env: str) -> subprocess.Popen:
        """A separate `vault` process (for concurrency)."""
        full_env = {k: v for k, v in os.environ.items() if k not in VAULT_ENV}
        full_env.update({k: v for k, v in self.env(**env).items() if v is not None})
        return subprocess.Popen([sys.executable, "-m", "vault", *args], env=full_env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def app(self, clock=None, **kwargs: Any):
        material = read_key_file(str(self.key_file))
        return open_vault(self.settings, lambda header: material,
                          clock=clock or (lambda: datetime.now(UTC)), **kwargs)

    def sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        """Raw SQL on the vault's database, as an attacker or a broken disk would."""
        if self.kind == "sqlite":
            import sqlite3

            conn = sqlite3.connect(self.home / "vault.db")
            try:
                rows = conn.execute(statement, params).fetchall()
                conn.commit()
                return rows
            finally:
                conn.close()
        with _pg_connect(self.pg_database) as conn:
            conn.execute(f"SET search_path TO {self.schema}")
            cur = conn.execute(statement.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    def stored_bytes(self) -> bytes:
        """Every byte the vault has stored: the SQLite files, or every PostgreSQL table."""
        if self.kind == "sqlite":
            return b"".join(p.read_bytes() for p in sorted(self.home.iterdir()) if p.is_file())
        chunks = []
        with _pg_connect(self.pg_database) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (self.schema,))]
            for table in tables:
                with conn.cursor().copy(
                        f'COPY "{self.schema}"."{table}" TO STDOUT') as copy:
                    for data in copy:
                        chunks.append(bytes(data))
        return b"".join(chunks)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def make_harness(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Harness:
    home = tmp_path / "vault-home"
    key_file = tmp_path / "service.key"
    if kind == "sqlite":
        return Harness(kind, home, None, key_file)
    database = request.getfixturevalue("pg_database")
    schema = f"t_{secrets.token_hex(6)}"
    url = f"{PG_SERVER}/{database}?schema={schema}"
    return Harness(kind, home, url, key_file, schema=schema, pg_database=database)


@pytest.fixture
def blank(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Harness:
    """A store with no vault in it yet."""
    return make_harness(store_kind, tmp_path, request)


@pytest.fixture
def vault(blank: Harness) -> Harness:
    """An initialised vault with a passphrase keyslot and a key-file keyslot."""
    blank.ok("init", "--kdf", "interactive", "--key-file", str(blank.key_file),
             VAULT_PASSPHRASE=PASSPHRASE, VAULT_KEY_FILE=None)
    return blank


@pytest.fixture
def sqlite_vault(tmp_path: Path, request: pytest.FixtureRequest) -> Harness:
    harness = make_harness("sqlite", tmp_path, request)
    harness.ok("init", "--kdf", "interactive", "--key-file", str(harness.key_file),
               VAULT_PASSPHRASE=PASSPHRASE, VAULT_KEY_FILE=None)
    return harness


MS_TENANT = "contoso.onmicrosoft.com"
MS_CLIENT_ID = "11111111-2222-3333-4444-555555555555"


def add_client(h: Harness, name: str = "jira", secret: str = "Abc~defghijklmnopqrstuvwxyz0123",
               *extra: str) -> Result:
    return h.ok("client", "add", name, "--provider", "microsoft", "--tenant", MS_TENANT,
                "--client-id", MS_CLIENT_ID, "--secret-stdin", *extra, input=secret)


def import_grant(h: Harness, mailbox: str = "help@contoso.com", client: str = "jira",
                 token: str = "M.R3_BAY.refresh-token-0123456789", *extra: str) -> Result:
    return h.ok("grant", "import", "--client", client, "--mailbox", mailbox, "--protocols",
                "imap,smtp", "--refresh-token-stdin", *extra, input=token)


def record_refreshes(app, mailbox: str, count: int, token_prefix: str = "RT") -> None:
    """Record `count` successful refreshes on a grant, as the rotation protocol would."""
    from datetime import timedelta
    from uuid import UUID

    from adapters.store.changes import Changes
    from domain.secret_value import SecretValue
    from vault.core import apply_views, use_case
    from vault.projections import rotation_changes

    @use_case("test: record refreshes")
    def run(app) -> None:
        rotation_id = UUID(app.grants.grant_row(mailbox).rotation_uuid)
        for i in range(count):
            rotation = app.core.load(rotation_id)
            rotation.record_tokens(
                now=app.core.now() + timedelta(seconds=i), attempt_id=None, resource="mail",
                access_token=SecretValue(f"AT-{token_prefix}-{i:06d}-access"), expires_in=3600,
                refresh_token=SecretValue(f"{token_prefix}-{i:06d}-refresh-token"), scope="mail")
            app.core.commit(rotation, changes=apply_views(Changes(), rotation_changes(rotation)))

    run(app)


# -- authorization servers -------------------------------------------------------------------


@pytest.fixture(scope="session")
def oidc():
    """A real oidc-provider on loopback (rotation with reuse detection), once per session."""
    from tests.peers.oidc_peer import OidcPeer

    peer = OidcPeer.start()
    yield peer
    peer.stop()


@pytest.fixture
def sandbox():
    """vault's own Microsoft-like identity provider, in-process, fresh per test."""
    from sandbox import SandboxServer

    server = SandboxServer().start()
    yield server
    server.stop()


def add_oidc_client(h: Harness, peer, name: str = "idp", client_id: str = "vault-basic",
                    scopes: str = "openid offline_access mail.imap mail.smtp") -> Result:
    from tests.peers.oidc_peer import CLIENTS

    client = CLIENTS[client_id]
    return h.ok("client", "add", name, "--provider", "custom", "--client-id", client_id,
                "--secret-stdin", "--issuer", peer.issuer, "--auth-method", client.auth_method,
                "--scopes", scopes, input=client.client_secret)


def add_sandbox_client(h: Harness, server, name: str = "demo") -> Result:
    """The sandbox as client `name`, added with the very line `vault sandbox` prints."""
    from sandbox import client_add_args

    return h.ok(*client_add_args(server, name=name), input=server.state.secret)


def debian_tool(binary: str, package: str, needed_for: str) -> str:
    """A program from a Debian package that tests/peers/install.sh installs: the test fails (is
    never skipped, and installs nothing) when it is missing."""
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} (Debian package {package}) is needed for {needed_for}: "
                    "run `bash tests/peers/install.sh`", pytrace=False)
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    from ctypes.util import find_library

    path = debian_tool("chromium", "chromium", "the browser tests")
    if find_library("atomic") is None:  # Playwright's own node (its driver) links libatomic.so.1
        pytest.fail("libatomic.so.1 (Debian package libatomic1) is needed by Playwright's driver for "
                    "the browser tests: run `bash tests/peers/install.sh`", pytrace=False)
    return path


# -- mail server ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mail_ca(tmp_path_factory):
    from tests.peers.dovecot_peer import TestCA

    return TestCA(tmp_path_factory.mktemp("mail-ca"))


@pytest.fixture(scope="session")
def mail_sink():
    from tests.peers.dovecot_peer import MailSink

    sink = MailSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def dovecot(oidc, mail_ca, mail_sink):
    """Dovecot on loopback: IMAP, POP3 and submission, checking tokens by introspection at the
    session's oidc-provider (a token must carry mail.imap)."""
    from tests.peers.dovecot_peer import DovecotPeer, ensure_dovecot_installed

    ensure_dovecot_installed()
    peer = DovecotPeer.start(introspection_url=oidc.introspection_url, ca=mail_ca,
                             relay_port=mail_sink.port)
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def dovecot_jwt(oidc, mail_ca, mail_sink):
    """Dovecot on loopback that validates JWT access tokens locally (RFC 8707 resource indicators):
    the session's oidc-provider's public keys are written to its key dictionary, and nothing is
    asked of the provider (a revoked token stays valid until its exp). Each protocol wants a token
    for the whole mail service (oidc_peer.MAIL_RESOURCE) or for its own resource (IMAP_RESOURCE,
    POP_RESOURCE, SMTP_RESOURCE) carrying its scope (mail.imap, mail.pop, mail.smtp); an
    opaque token is refused. Ports as on `dovecot` (imaps_port, pop3s_port, submissions_port, ...)."""
    from tests.peers.dovecot_peer import DovecotPeer, JwtCheck, ensure_dovecot_installed
    from tests.peers.oidc_peer import IMAP_RESOURCE, MAIL_RESOURCE, POP_RESOURCE, SMTP_RESOURCE

    ensure_dovecot_installed()
    peer = DovecotPeer.start_jwt(
        issuer=oidc.issuer, keys=oidc.signing_keys(), ca=mail_ca, relay_port=mail_sink.port,
        checks={"imap": JwtCheck("mail.imap", (MAIL_RESOURCE, IMAP_RESOURCE)),
                "pop3": JwtCheck("mail.pop", (MAIL_RESOURCE, POP_RESOURCE)),
                "submission": JwtCheck("mail.smtp", (MAIL_RESOURCE, SMTP_RESOURCE))})
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def dovecot_without_idp(mail_ca, mail_sink):
    """The same, but its authorization server is unreachable: it can only fail temporarily."""
    import socket

    from tests.peers.dovecot_peer import DovecotPeer, ensure_dovecot_installed

    ensure_dovecot_installed()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    peer = DovecotPeer.start(introspection_url=f"http://127.0.0.1:{dead}/token/introspection",
                             ca=mail_ca, relay_port=mail_sink.port, introspection_timeout=2)
    yield peer
    peer.stop()


def point_at(h: Harness, peer, client: str = "idp", tls: str = "implicit") -> None:
    """Record the Dovecot peer's ports as the client's mail servers."""
    imap, pop, smtp = ((peer.imaps_port, peer.pop3s_port, peer.submissions_port)
                       if tls == "implicit" else
                       (peer.imap_port, peer.pop3_port, peer.submission_port))
    h.ok("client", "set-servers", client, "--imap", f"127.0.0.1:{imap}/{tls}",
         "--pop", f"127.0.0.1:{pop}/{tls}", "--smtp", f"127.0.0.1:{smtp}/{tls}")


@pytest.fixture
def webhook():
    """A webhook receiver on loopback (statuses scripted through `.script`)."""
    from tests.peers.webhook_peer import WebhookReceiver

    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()
