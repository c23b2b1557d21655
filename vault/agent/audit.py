"""The agent's audit entries for tokens it hands out from memory: each is committed before its
token leaves the agent, and entries of requests that arrive while a commit is under way share
the next transaction (one head check and one signature for them all), so that many clients do
not each wait for a transaction of their own. Nothing is skipped or deferred past an answer.

The same transaction checks that the store did not change since each token was taken from
memory (Store.change_marker, read where no other writer can commit until this one has): an
entry whose token is no longer current is not written, and its request looks again."""

from __future__ import annotations

import queue
import threading
from typing import Any

from vault.audit import AuditRecord

COMMIT_WAIT_S = 30.0


class _Pending:
    __slots__ = ("done", "error", "marker", "sealer", "stale")

    def __init__(self, sealer: Any, marker: Any) -> None:
        self.sealer = sealer
        self.marker = marker  # the store's change marker the token was held under
        self.done = threading.Lock()  # held until the commit is over (cheaper than an Event)
        self.done.acquire()
        self.error: BaseException | None = None
        self.stale = False


class GroupCommitter:
    def __init__(self, app: Any) -> None:
        self.store = app.core.store
        self.broker = app.core.broker
        self.clock = app.core.clock
        self.queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self.closing = threading.Lock()  # `closed` and the queue's end marker go together
        self.closed = False
        self.written: Any = None  # the last entry and signed head this committer wrote
        self.thread = threading.Thread(target=self._run, name="vault-agent-audit", daemon=True)
        self.thread.start()

    def hand_out(self, entry: Any, protocol: str, peer: tuple[int, int, int],
                 marker: Any) -> bool:
        """Record that `entry`'s token, held since the store's change marker was `marker`, is
        handed out to `peer`. True once that is durable; False when the store changed since
        `marker` (nothing written: the token must not leave, look again); raises
        AuditWriteFailed if it could not be written (the token must not leave)."""
        from vault.agent.server import peer_actor
        from vault.errors import AuditWriteFailed

        record = AuditRecord("token", subject={"client": entry.client_name,
                                               "mailbox": entry.mailbox},
                             detail={"protocol": protocol, "revealed": "access_token",
                                     "resource": entry.resource, "refreshed": False})
        sealer = self.broker.sealer(record)
        sealer.actor = {**self.broker.actor, **peer_actor(peer)}
        pending = _Pending(sealer, marker)
        with self.closing:
            if self.closed:
                raise AuditWriteFailed("the agent is locking; nothing was handed out")
            self.queue.put(pending)
        if not pending.done.acquire(timeout=COMMIT_WAIT_S) or pending.error is not None:
            raise AuditWriteFailed("the audit log could not be written; nothing was shown or "
                                   "changed") from pending.error
        return not pending.stale

    def _run(self) -> None:
        ending = False
        while not ending:
            batch: list[_Pending] = []
            item = self.queue.get()  # wait for one, then take whatever else has arrived
            while True:
                if item is None:
                    ending = True
                else:
                    batch.append(item)
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        from adapters.store.base import append_audit_entries

        written = None
        try:
            with self.store.write() as tx:
                marker = self.store.change_marker(tx)
                current = [p for p in batch if p.marker == marker]
                if current:
                    written = append_audit_entries(tx, [p.sealer for p in current],
                                                   known=self.written)
        except BaseException as error:  # noqa: BLE001 - each waiting request is told
            self.written = None
            for pending in batch:
                pending.error = error
        else:
            self.written = written or self.written
            for pending in batch:
                pending.stale = pending.marker != marker
        for pending in batch:
            pending.done.release()

    def stop(self) -> None:
        """Commit what is queued, then end."""
        with self.closing:
            if not self.closed:
                self.closed = True
                self.queue.put(None)
        self.thread.join(COMMIT_WAIT_S)
