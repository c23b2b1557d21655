"""The agent: one process that unlocks the vault once and answers `vault token` requests over a
Unix socket from memory (the wire protocol: vault/agent/client.py).

- Who may ask: every connection's peer credentials (SO_PEERCRED): the agent's own user, and the
  users and groups named with --allow-uid / --allow-group (tokens only: lock, unlock and stop
  are the own user's). The socket's file modes open the door; this check decides.
- Never stale: for each answer it asks the store whether anything was committed since what it
  hands out was taken (a new event anywhere, or a new header): a token held in memory leaves
  only if the transaction that commits its audit entry finds nothing changed (no writer can
  commit in between); else, and for a token it does not hold, it drops what it holds and the
  answer is computed again by the same use case every `vault token` runs (checks, refresh
  under the grant's lock, the intent and outcome events). A revocation, purge, consent or
  rotation made by another process or host so takes effect for the very next request. A new
  header (a key rotation, a keyslot change) locks it.
- Ahead of time: grants that were asked for are refreshed in the background once their access
  token has lived three quarters of its life, through the same use case and locks.
- Audit: every token handed out has its entry committed before the token leaves; entries of
  requests that arrive together share one transaction (vault/agent/audit.py).
- Connections: one thread serves them all (vault/agent/loop.py, which says its limits); what
  the agent does not hold goes to one worker thread.
- Locked: `lock`, --lock-after of idle time, SIGTERM and `stop` close the vault and drop every
  reference to its keys (Python cannot overwrite the immutable bytes objects that held them:
  docs/operations.md says what that leaves in memory until it is reused).
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from vault.agent.client import LOCKED, MAX_LINE, OTHER_VAULT
from vault.errors import BadInput, OperationFailed
from vault.providers import TokenRefreshFailed

IDLE_CONNECTION_S = 60.0  # a client that says nothing for this long is disconnected
HOUSEKEEPING_S = 1.0  # idle lock and refreshes ahead of time are looked at this often
REFRESH_AT = 0.75  # of an access token's lifetime
ASSUMED_LIFETIME = timedelta(hours=1)  # of a token the agent did not see being issued


class AgentRefused(OperationFailed):
    """The agent will not start (its socket path is not one it can trust), or not do that."""


# -- the socket -----------------------------------------------------------------------------------


def prepare_socket_path(path: str) -> None:
    """Make the socket's directory (0700, this user's) unless it exists, and refuse a path that
    is not safe to create the socket at: a directory owned by someone else or writable by
    others, or anything at the path itself (a socket of another agent, a symlink, a file). A
    socket left by an agent of this user that is no longer running is removed."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise AgentRefused(f"cannot create the socket's directory {directory}: "
                           f"{e.strerror}") from None
    info = os.lstat(directory)
    uid = os.geteuid()
    if not stat.S_ISDIR(info.st_mode):
        raise AgentRefused(f"{directory} is not a directory (a symlink?): the agent's socket "
                           "is made only in a real directory")
    if info.st_uid not in (uid, 0) or (info.st_uid == 0 and uid != 0 and
                                       not info.st_mode & stat.S_ISVTX):
        raise AgentRefused(f"{directory} belongs to uid {info.st_uid}: the agent's socket is "
                           "made only in a directory of its own user")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise AgentRefused(f"others may write to {directory} (mode {info.st_mode & 0o777:o}): "
                           "they could replace the socket; use a directory only you can write")
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(existing.st_mode) and existing.st_uid == uid and not _answers(path):
        os.unlink(path)  # an agent of ours that died
        return
    what = ("a socket of a running agent" if stat.S_ISSOCK(existing.st_mode)
            and existing.st_uid == uid else
            f"a socket of uid {existing.st_uid}" if stat.S_ISSOCK(existing.st_mode) else
            "a symlink" if stat.S_ISLNK(existing.st_mode) else "a file")
    raise AgentRefused(f"{path} already exists ({what}): the agent only uses a socket it "
                       "creates itself (stop the other agent, or remove what is there)")


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
        return True


SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # <asm-generic/socket.h>, Linux 4.13


def peer_groups(conn: socket.socket) -> tuple[int, ...] | None:
    """The supplementary groups of the process at the other end (SO_PEERGROUPS), or None
    where the kernel does not say."""
    try:
        data = conn.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 1024)
    except OSError:
        return None
    return struct.unpack(f"{len(data) // 4}I", data[: len(data) // 4 * 4])


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, as the kernel says (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)


def user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# -- the agent ------------------------------------------------------------------------------------


class Entry:
    """A token handed out once, kept to hand out again while nothing in the store changed."""

    __slots__ = ("asked", "client", "client_name", "expires_at", "fetched_at", "login", "mailbox",
                 "marker", "refreshed", "resource", "server", "token")

    def __init__(self, result: Any, fetched_at: datetime, client: str | None,
                 client_name: str) -> None:
        self.token = result.token
        self.expires_at: datetime = result.expires_at
        self.resource: str = result.resource
        self.mailbox: str = result.mailbox
        self.login: str = result.login or result.mailbox
        self.server = result.server
        self.refreshed = result.refreshed
        self.fetched_at = fetched_at
        self.client = client  # as asked for (None: the mailbox's only grant)
        self.client_name = client_name
        self.asked = True
        self.marker: Any = None  # the store's change marker it is current for

    def refresh_due(self, now: datetime) -> bool:
        lifetime = (self.expires_at - self.fetched_at if self.refreshed else ASSUMED_LIFETIME)
        return now >= self.expires_at - lifetime * (1 - REFRESH_AT)


class Agent:
    """The agent's state and its answers; `serve` runs the socket. `clock` (wall time, for
    token validity) and `monotonic` (idle time) are injected: tests move them instead of
    sleeping (the documented hook: VAULT_AGENT_TEST_CLOCK, see vault/cli/agent.py)."""

    idle_timeout = IDLE_CONNECTION_S  # VAULT_AGENT_TEST_IDLE_S shortens it for tests

    def __init__(self, settings: Any, *, socket_path: str, allow_uids: tuple[int, ...] = (),
                 allow_gids: tuple[int, ...] = (), lock_after: float | None = None,
                 on_event: str | None = None, alerts: dict[str, Any] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.socket_path = socket_path
        self.uid = os.geteuid()
        self.allow_uids = {self.uid, *allow_uids}
        self.allow_gids = set(allow_gids)
        self.lock_after = lock_after
        self.on_event = on_event
        self.alerts = alerts  # `vault alert`'s channels, for a refresh that failed
        self.clock = clock
        self.monotonic = monotonic
        self.app: Any = None  # the unlocked vault; None while locked
        self.app_lock = threading.RLock()  # one use case at a time (the app is not thread-safe)
        # held while the loop commits audit entries, and by lock(): the vault is not closed
        # under a commit (lock() takes app_lock first, then this; nothing takes them the other
        # way round)
        self.keys_lock = threading.Lock()
        self.entries: dict[tuple[str, str, str], Entry] = {}
        self.marker: Any = None
        self.home_id: tuple[int, int] | None = None  # device and inode of the vault's home
        self.last_request = monotonic()
        self.stopping = threading.Event()
        self.audit: Any = None
        self.listener: socket.socket | None = None

    # -- lock and unlock --------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        return self.app is None

    def unlock(self, material_source: Callable[[Any], Any]) -> None:
        from vault.agent.audit import AuditBatches
        from vault.bootstrap import open_vault

        with self.app_lock:
            if self.app is not None:
                return
            app = open_vault(self.settings, material_source, clock=self.clock)
            app.core.unlock_material = None  # the agent keeps the keys, never the passphrase
            self.marker = app.core.store.change_marker()
            if self.marker[1] != app.core.header_checksum:  # rotated while it was unlocking
                app.close()
                raise AgentRefused("the vault's header changed while the agent unlocked it "
                                   "(a key rotation or keyslot change): unlock it again")
            with contextlib.suppress(OSError):  # where the vault open now lives (SQLite)
                home = os.stat(self.settings.home)
                self.home_id = (home.st_dev, home.st_ino)
            self.audit = AuditBatches(app)
            self.app = app
            self.last_request = self.monotonic()

    def lock(self, why: str) -> None:
        """Forget the keys: the vault closed, every token and key reference dropped."""
        with self.app_lock, self.keys_lock:
            app, self.app = self.app, None
            self.entries.clear()
            self.marker = None
            self.audit = None
            if app is not None:
                app.core.keyring.forget_all()
                app.close()
                self._event("locked", None, why)

    def _marker(self) -> Any:
        return self.app.core.store.change_marker()

    def _fresh(self) -> None:
        """Drop what is held when anything was committed since the last look; lock on a new
        header (a key rotation or a keyslot change elsewhere: the root key may be stale)."""
        marker = self._marker()
        if marker == self.marker:
            return
        if self.marker is not None and marker[1] != self.marker[1]:
            self.lock("the vault's header changed (a key rotation or keyslot change)")
            return
        self.entries.clear()
        self.marker = marker

    def idle_check(self) -> None:
        if self.lock_after is not None and not self.locked and \
                self.monotonic() - self.last_request >= self.lock_after:
            self.lock(f"idle for {self.lock_after:.0f} s (--lock-after)")

    # -- answers ----------------------------------------------------------------------------

    def answer(self, request: Any, peer: tuple[int, int, int]) -> dict[str, Any]:
        """The answer to one request line (already parsed) from `peer` (pid, uid, gid)."""
        from vault.cli.main import error_report

        if not isinstance(request, dict) or request.get("v") != 1:
            return _error(2, "vault: error: not an agent request (see vault/agent/client.py)")
        op = request.get("op")
        own = peer[1] == self.uid
        try:
            if op == "token":
                self.idle_check()
                self.last_request = self.monotonic()
                return self.token(request, peer)
            if op == "status":
                return {"ok": True, "locked": self.locked, "pid": os.getpid(),
                        "socket": self.socket_path, "vault": self.settings.location,
                        "tokens_held": len(self.entries)}
            if not own:
                return _error(2, f"vault: error: only uid {self.uid} may {op} this agent")
            if op == "lock":
                self.lock("vault agent lock")
                return {"ok": True, "locked": True}
            if op == "unlock":
                self.unlock(_material(request))
                return {"ok": True, "locked": False}
            if op == "stop":
                self.stopping.set()
                return {"ok": True, "stopping": True}
            return _error(2, f"vault: error: unknown op {str(op)[:40]!r}")
        except Exception as error:  # noqa: BLE001 - answered as the CLI would say it
            code, line = error_report(error)
            return _error(code, line)

    def held(self, request: Any, peer: tuple[int, int, int]) -> Held | None:
        """The token this request asks for, if the agent holds one good enough (the loop's fast
        path, without any lock); None: answer() says what to do. Whether it is still current is
        checked when its audit entry is committed (hand_out)."""
        if not isinstance(request, dict) or request.get("v") != 1 or \
                request.get("op") != "token" or self.app is None:
            return None
        try:
            mailbox, client, protocol, fmt, min_valid, host, port = _token_fields(request)
        except Exception:  # noqa: BLE001 - answer() says what is wrong with it
            return None
        if self.lock_after is not None and \
                self.monotonic() - self.last_request >= self.lock_after:
            return None  # answer() locks
        entry = self.entries.get((mailbox.strip().casefold(), (client or "").casefold(), protocol))
        if entry is None or entry.marker is None or \
                entry.expires_at - timedelta(seconds=min_valid) <= self.clock() or \
                (fmt == "oauthbearer" and not (host and port) and entry.server is None) or \
                not self._same_vault(request):
            return None
        self.last_request = self.monotonic()
        entry.asked = True
        return Held(entry, request, peer, protocol, fmt, host, port)

    def hand_out(self, held: list[Held]) -> list[bool]:
        """Commit the audit entries of `held` tokens still current; which were (the others
        must go the slow way). Raises when no entry could be written."""
        with self.keys_lock:
            if self.audit is None:
                return [False] * len(held)  # locked meanwhile: answer() says so
            return self.audit.commit(held)

    def render(self, held: Held, refreshed: bool = False) -> dict[str, Any]:
        from vault.render.tokens import render_token

        entry = held.entry
        known_host, known_port = entry.server or (None, None)
        output = render_token(held.fmt, token=entry.token.reveal(), mailbox=entry.mailbox,
                              login=entry.login, expires_at=entry.expires_at,
                              resource=entry.resource, refreshed=refreshed,
                              host=held.host or known_host, port=held.port or known_port)
        return {"ok": True, "output": output + "\n"}

    def token(self, request: dict[str, Any], peer: tuple[int, int, int]) -> dict[str, Any]:
        """The slow way (the worker thread): the token use case, which checks everything and
        refreshes where needed, its audit entry naming `peer`; what it returns is held."""
        mailbox, client, protocol, fmt, min_valid, host, port = _token_fields(request)
        if not self._same_vault(request):
            return {"ok": False, "reason": OTHER_VAULT, "exit": 1,
                    "error": "vault: error: this agent serves another vault"}
        key = (mailbox.strip().casefold(), (client or "").casefold(), protocol)
        with self.app_lock:
            if self.locked:
                return {"ok": False, "reason": LOCKED, "exit": 3,
                        "error": "vault: error: the agent is locked: run `vault agent unlock`"}
            self._fresh()
            if self.locked:  # _fresh locked it
                return {"ok": False, "reason": LOCKED, "exit": 3,
                        "error": "vault: error: the agent locked itself (the vault's header "
                                 "changed elsewhere): run `vault agent unlock`"}
            entry = self._fetch(key, mailbox, client, protocol, min_valid, peer)
        return self.render(Held(entry, request, peer, protocol, fmt, host, port),
                           refreshed=entry.refreshed)

    def _fetch(self, key: tuple[str, str, str], mailbox: str, client: str | None,
               protocol: str, min_valid: int, peer: tuple[int, int, int]) -> Entry:
        """The token as `vault token` gets it (the same use case, audited as asked by `peer`)."""
        from domain.clouds import MAIL_PROTOCOLS

        marker = self.marker
        broker = self.app.core.broker
        base = broker.actor
        broker.actor = {**base, **peer_actor(peer)}
        try:
            result = self.app.tokens.access_token(
                mailbox, client=client, protocol=protocol,
                min_valid=timedelta(seconds=min_valid), server=protocol in MAIL_PROTOCOLS)
        except TokenRefreshFailed as error:
            self._refresh_failed(mailbox, str(error))
            raise
        finally:
            broker.actor = base
        entry = Entry(result, self.clock(), client, result.client)
        entry.marker = marker
        # held under the marker from before: a refresh it made shows as a change, and the next
        # request looks again (finding the new token cached by the rotation)
        self.entries[key] = entry
        self.marker = marker
        return entry

    def _same_vault(self, request: dict[str, Any]) -> bool:
        store = request.get("store")
        if store or self.settings.store_url:
            return store == self.settings.store_url
        home = request.get("home")
        if home is not None and not isinstance(home, str):
            return False
        try:  # the same directory: device and inode (realpath's lstat per component, per
            # request, was a tenth of the agent's CPU under load); the name as settings read it
            wanted = os.stat(self._home_named(home or None))
        except Exception:  # noqa: BLE001 - a home that cannot be named is not ours
            return False
        return (wanted.st_dev, wanted.st_ino) == self.home_id

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one agent per process, few names
    def _home_named(self, home: str | None) -> Any:
        from vault.bootstrap import settings_from_env

        return settings_from_env(home).home

    # -- background work --------------------------------------------------------------------

    def refresh_due(self) -> None:
        """Refresh each grant asked for whose token has lived three quarters of its life."""
        with self.app_lock:
            if self.locked:
                return
            now = self.clock()
            due = {(e.mailbox, e.client) for e in self.entries.values()
                   if e.asked and e.refresh_due(now)}
        for mailbox, client in sorted(due, key=str):
            with self.app_lock:
                if self.locked:
                    return
                try:
                    results = self.app.tokens.refresh(mailbox, client=client)
                except Exception as error:  # noqa: BLE001 - said through the hook and alerts
                    self._refresh_failed(mailbox, str(error))
                    continue
                if any(r.outcome == "failed" for r in results):
                    self._refresh_failed(mailbox, "; ".join(r.error or "" for r in results
                                                            if r.error))
                for entry in self.entries.values():
                    if entry.mailbox == mailbox:
                        entry.asked = False  # asked again before the next round, or left be

    def _refresh_failed(self, mailbox: str, detail: str) -> None:
        """Tell someone at once: the --on-event hook, and `vault alert`'s channels where the
        agent was given them (the same per-finding claims as `alert` and `maintain`, so a
        finding another host already sent is not sent again)."""
        self._event("refresh-failed", mailbox, detail)
        if not self.alerts:
            return
        try:
            self.app.alerts.alert(**self.alerts)
        except Exception as error:  # noqa: BLE001 - the hook hears that too
            self._event("alert-failed", mailbox, str(error))

    def _event(self, event: str, mailbox: str | None, detail: str) -> None:
        """Run the --on-event hook: the event and the mailbox in its environment, never a
        secret; it is not waited for."""
        if not self.on_event:
            return
        import subprocess

        env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
        env.update({"VAULT_EVENT": event, "VAULT_EVENT_DETAIL": detail[:300]})
        if mailbox:
            env["VAULT_MAILBOX"] = mailbox
        with contextlib.suppress(OSError):
            subprocess.Popen(["/bin/sh", "-c", self.on_event], env=env,
                             stdin=subprocess.DEVNULL, start_new_session=True)

    # -- the socket -------------------------------------------------------------------------

    def listen(self, mode: int = 0o600) -> None:
        prepare_socket_path(self.socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o777 & ~mode)
        try:
            listener.bind(self.socket_path)
        finally:
            os.umask(old)
        os.chmod(self.socket_path, mode)
        listener.listen(128)
        listener.settimeout(0.5)
        self.listener = listener

    def serve(self) -> None:
        """Serve connections until stopped (vault/agent/loop.py); then lock and remove the
        socket."""
        from vault.agent.loop import Loop

        assert self.listener is not None
        housekeeping = threading.Thread(target=self._housekeeping, daemon=True)
        housekeeping.start()
        try:
            Loop(self, self.listener).run()
        finally:
            self.close()

    def close(self) -> None:
        self.stopping.set()
        self.lock("the agent stopped")
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)

    def _housekeeping(self) -> None:
        while not self.stopping.wait(HOUSEKEEPING_S):
            self.idle_check()
            self.refresh_due()

    def allowed(self, peer: tuple[int, int, int], sock: socket.socket | None = None) -> bool:
        """Whether `peer` may ask: the agent's user, an --allow-uid, or a process holding an
        --allow-group (its groups as the kernel says, SO_PEERGROUPS; where the kernel cannot
        say, /etc/group's members)."""
        _, uid, gid = peer
        if uid in self.allow_uids or gid in self.allow_gids:
            return True
        if not self.allow_gids:
            return False
        groups = peer_groups(sock) if sock is not None else None
        if groups is not None:
            return bool(self.allow_gids.intersection(groups))
        import grp
        import pwd

        with contextlib.suppress(KeyError):
            name = pwd.getpwuid(uid).pw_name
            return any(name in grp.getgrgid(g).gr_mem for g in self.allow_gids)
        return False


@functools.lru_cache(maxsize=1024)
def peer_actor(peer: tuple[int, int, int]) -> dict[str, Any]:
    """What an audit entry says of who asked the agent (not to be changed: it is shared). Kept
    per peer process, so that a client on a persistent connection does not cost a passwd
    lookup per request."""
    pid, uid, _ = peer
    return {"via": "agent", "peer_uid": uid, "peer_user": user_name(uid), "peer_pid": pid}


def _token_fields(request: dict[str, Any]) -> tuple:
    """The token request's fields, checked as `vault token` checks its options."""
    from domain.vocabulary import PROTOCOLS, TOKEN_FORMATS

    mailbox, client = request.get("mailbox"), request.get("client")
    protocol, fmt = request.get("protocol", "imap"), request.get("format", "token")
    host, port = request.get("host"), request.get("port")
    if not isinstance(mailbox, str) or not mailbox.strip() or \
            (client is not None and not isinstance(client, str)):
        raise BadInput("a token request names a mailbox (and maybe a client)")
    if protocol not in PROTOCOLS:
        raise BadInput(f"--protocol is one of {', '.join(PROTOCOLS)}")
    if fmt not in TOKEN_FORMATS:
        raise BadInput(f"--format is one of {', '.join(TOKEN_FORMATS)}")
    try:
        min_valid = int(request.get("min_valid", 300))
        port = int(port) if port is not None else None
    except (TypeError, ValueError):
        raise BadInput("--min-valid and --port are numbers") from None
    if not 0 <= min_valid <= 3000:
        raise BadInput("--min-valid is between 0 and 3000 seconds")
    if port is not None and not 1 <= port <= 65535:
        raise BadInput("--port is between 1 and 65535")
    if host is not None and (not isinstance(host, str) or not host.isprintable()):
        raise BadInput("--host is a host name")
    if (host or port) and fmt != "oauthbearer":
        raise BadInput("--host and --port go with --format oauthbearer")
    return mailbox, client, protocol, fmt, min_valid, host, port


def _material(request: dict[str, Any]) -> Callable[[Any], Any]:
    from adapters.keyslots import Passphrase, read_key_file
    from domain.secret_value import SecretValue

    key_file, passphrase = request.get("key_file"), request.get("passphrase")
    if isinstance(key_file, str) and key_file:
        material = read_key_file(key_file)
    elif isinstance(passphrase, str) and passphrase:
        material = Passphrase(SecretValue(passphrase))
    else:
        raise BadInput("unlock needs a key file or a passphrase")
    return lambda header: material


def _error(code: int, line: str) -> dict[str, Any]:
    return {"ok": False, "exit": code, "error": line, "reason": None}


class Held(NamedTuple):
    """A token request the agent holds a token for (Agent.held)."""

    entry: Entry
    request: dict[str, Any]
    peer: tuple[int, int, int]
    protocol: str
    fmt: str
    host: str | None
    port: int | None


BUSY = _error(1, "vault: error: the agent is busy (too many connections)")


def refusal(peer: tuple[int, int, int]) -> dict[str, Any]:
    return _error(2, f"vault: error: uid {peer[1]} may not use this agent "
                     "(--allow-uid / --allow-group)")


def malformed() -> dict[str, Any]:
    return _error(2, "vault: error: a request is one JSON object per line")


def too_long() -> dict[str, Any]:

    return _error(2, f"vault: error: a request is at most {MAX_LINE} bytes")


def error_answer(error: Exception) -> dict[str, Any]:
    from vault.cli.main import error_report

    return _error(*error_report(error))
