"""The agent's connections, served by one thread: it reads every connection that is ready
(selectors), answers the token requests the agent holds a token for — committing the audit
entries of all of them in one transaction first (vault/agent/audit.py) — and hands anything
else (a token it does not hold, status, lock, unlock, stop, a request to refuse) to one worker
thread, whose answers come back through a pipe. A slow refresh at a provider so never keeps the
agent from answering what it holds.

Limits, so that no client stops the others: a request line of at most 64 KiB (longer: an error,
and the connection is closed), one request at a time per connection (more are read in turn),
a connection silent for `idle_timeout` closed, at most MAX_CONNECTIONS at once — when all are
taken, the one that has waited longest for a request is told "busy" and hung up on, and only
when every one is mid-request is the newcomer told so."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import selectors
import socket
import threading
import time
from typing import Any

from vault.agent.client import MAX_LINE

MAX_CONNECTIONS = 256
MAX_PENDING_ANSWERS = 1024 * 1024  # a client that asks without reading is hung up on
TICK_S = 0.25


def encode(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, separators=(",", ":")).encode() + b"\n"


class _Client:
    __slots__ = ("closing", "inbuf", "outbuf", "peer", "sock", "waiting_since", "working",
                 "writing")

    def __init__(self, sock: socket.socket, peer: tuple[int, int, int]) -> None:
        self.sock = sock
        self.peer = peer
        self.inbuf = b""
        self.outbuf = b""
        self.working = False  # a request of it is being answered
        self.closing = False  # close once its answers are written
        self.writing = False  # registered for EVENT_WRITE: an answer waits for room
        self.waiting_since = time.monotonic()


class Loop:
    def __init__(self, agent: Any, listener: socket.socket) -> None:
        self.agent = agent
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.clients: dict[int, _Client] = {}
        self.work: queue.SimpleQueue = queue.SimpleQueue()
        self.answers: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        self.worker = threading.Thread(target=self._worker, name="vault-agent-worker",
                                       daemon=True)

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.selector.register(self.wake_read, selectors.EVENT_READ, None)
        self.worker.start()
        try:
            while not self.agent.stopping.is_set():
                held: list[tuple[_Client, Any]] = []
                for key, mask in self.selector.select(TICK_S):
                    if key.fileobj is self.listener:
                        self._accept()
                    elif key.fileobj == self.wake_read:
                        self._answers(held)
                    else:
                        client = key.data
                        try:
                            if mask & selectors.EVENT_WRITE:
                                self._flush(client)
                            if mask & selectors.EVENT_READ and not client.closing:
                                self._read(client, held)
                        except Exception as error:  # noqa: BLE001 - it ends that client alone
                            _unexpected(error)
                            self._close(client)
                while held:
                    held = self._hand_out(held)
                self._expire()
        finally:
            self.work.put(None)
            self.worker.join(30)
            for client in list(self.clients.values()):
                self._close(client)
            self.selector.close()
            os.close(self.wake_read)
            os.close(self.wake_write)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of file descriptors, say: the next round tries again
                return
            from vault.agent.server import BUSY, peer_credentials, refusal

            try:
                peer = peer_credentials(sock)
            except OSError:
                sock.close()
                continue
            if not self.agent.allowed(peer, sock):
                _say_and_close(sock, refusal(peer))  # before reading anything
                continue
            if len(self.clients) >= MAX_CONNECTIONS and not self._make_room():
                _say_and_close(sock, BUSY)
                continue
            sock.setblocking(False)
            client = _Client(sock, peer)
            self.clients[sock.fileno()] = client
            self.selector.register(sock, selectors.EVENT_READ, client)

    def _make_room(self) -> bool:
        """Hang up on the connection that has waited longest for a request, telling it why."""
        from vault.agent.server import BUSY

        idle = [c for c in self.clients.values() if not c.working]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.waiting_since)
        with contextlib.suppress(OSError):
            oldest.sock.send(encode(BUSY))
        self._close(oldest)
        return True

    def _read(self, client: _Client, held: list) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(client)
            return
        if not data:  # it hung up; an answer under way for it is dropped when it comes
            self._close(client)
            return
        client.inbuf += data
        if client.working and len(client.inbuf) > MAX_LINE:
            # one request at a time: more than a request line sent ahead of an answer (that
            # may take a refresh's while) is not kept in memory
            from vault.agent.server import too_long

            self._reply(client, too_long(), close=True)
            return
        self._next(client, held)

    def _next(self, client: _Client, held: list) -> None:
        """Take the client's next request, if one is complete and none is under way."""
        from vault.agent.server import malformed, too_long

        if client.working or client.closing:
            return
        line, newline, rest = client.inbuf.partition(b"\n")
        if not newline:
            if len(client.inbuf) > MAX_LINE:
                self._reply(client, too_long(), close=True)
            return
        client.inbuf = rest
        if len(line) > MAX_LINE:
            self._reply(client, too_long(), close=True)
            return
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            self._reply(client, malformed(), close=True)
            return
        client.working = True
        found = self.agent.held(request, client.peer)
        if found is not None:
            held.append((client, found))
        else:
            self.work.put((client, request))

    def _hand_out(self, held: list) -> list:
        """Commit the audit entries of the tokens held for these requests, then answer them;
        a token no longer current goes the slow way. The requests that are then complete, of
        the same clients, are returned for the next round."""
        from vault.agent.server import error_answer

        try:
            current = self.agent.hand_out([h for _, h in held])
        except Exception as error:  # noqa: BLE001 - no token leaves; each is told why
            answer = error_answer(error)
            current = None
        following: list = []
        for index, (client, found) in enumerate(held):
            if current is None:
                self._reply(client, answer)
            elif current[index]:
                try:
                    rendered = self.agent.render(found)
                except Exception as error:  # noqa: BLE001 - that client is told, the loop goes on
                    rendered = error_answer(error)
                self._reply(client, rendered)
            else:
                self.work.put((client, found.request))
                continue
            self._next(client, following)
        return following

    def _answers(self, held: list) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_read, 4096):
                pass
        while True:
            try:
                client, answer = self.answers.get_nowait()
            except queue.Empty:
                return
            if client.sock.fileno() < 0:
                continue  # closed meanwhile
            self._reply(client, answer)
            self._next(client, held)

    # -- answers out --------------------------------------------------------------------------

    def _reply(self, client: _Client, answer: dict[str, Any], close: bool = False) -> None:
        client.working = False
        client.waiting_since = time.monotonic()
        client.outbuf += encode(answer)
        client.closing = client.closing or close
        if len(client.outbuf) > MAX_PENDING_ANSWERS:
            self._close(client)
            return
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        if client.sock.fileno() < 0:
            return
        try:
            while client.outbuf:
                sent = client.sock.send(client.outbuf)
                client.outbuf = client.outbuf[sent:]
        except (BlockingIOError, InterruptedError):
            if not client.writing:
                client.writing = True
                self.selector.modify(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                     client)
            return
        except OSError:  # it went away mid-answer
            self._close(client)
            return
        if client.closing and not client.working:
            self._close(client)
        elif client.writing:
            client.writing = False
            self.selector.modify(client.sock, selectors.EVENT_READ, client)

    def _expire(self) -> None:
        limit = time.monotonic() - self.agent.idle_timeout
        for client in list(self.clients.values()):
            if not client.working and client.waiting_since < limit:
                self._close(client)

    def _close(self, client: _Client) -> None:
        if self.clients.pop(client.sock.fileno(), None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(client.sock)
        with contextlib.suppress(OSError):
            client.sock.close()

    # -- the worker ---------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            item = self.work.get()
            if item is None:
                return
            client, request = item
            item = None
            if client.sock.fileno() < 0:
                continue  # it hung up meanwhile: nobody waits for this (a flood of them would
                # keep every other request, the owner's `lock` among them, waiting behind it)
            answer = self.agent.answer(request, client.peer)
            request = None  # an unlock's passphrase is not kept while the worker waits
            self.answers.put((client, answer))
            answer = None
            with contextlib.suppress(OSError):
                os.write(self.wake_write, b"x")


def _unexpected(error: Exception) -> None:
    """A fault of the agent itself, said on its stderr (the journal under systemd): its kind
    only, as the CLI's last line of defence says it (a message could hold data)."""
    import sys

    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"vault agent: internal error ({type(error).__name__}) on a "
                         "connection; it was closed, the others are served\n")
        sys.stderr.flush()


def _say_and_close(sock: socket.socket, answer: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(encode(answer))
    with contextlib.suppress(OSError):
        sock.close()
