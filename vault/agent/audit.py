"""The agent's audit entries for tokens it hands out from memory: each is committed before its
token leaves the agent, and entries of requests that arrive while a commit is under way share
the next transaction (one head check and one signature for them all), so that many clients do
not each wait for a transaction of their own. Nothing is skipped or deferred past an answer."""

from __future__ import annotations

import threading
from typing import Any

from vault.audit import AuditRecord

COMMIT_WAIT_S = 30.0


class _Pending:
    __slots__ = ("done", "error", "sealer")

    def __init__(self, sealer: Any) -> None:
        self.sealer = sealer
        self.done = threading.Event()
        self.error: BaseException | None = None


class GroupCommitter:
    def __init__(self, app: Any) -> None:
        self.store = app.core.store
        self.broker = app.core.broker
        self.clock = app.core.clock
        self.queue: list[_Pending] = []
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="vault-agent-audit", daemon=True)
        self.thread.start()

    def hand_out(self, entry: Any, protocol: str, peer: tuple[int, int, int]) -> None:
        """Record that `entry`'s token is handed out to `peer`; returns once that is durable,
        raises AuditWriteFailed if it could not be written (the token must not leave)."""
        from vault.agent.server import peer_actor
        from vault.errors import AuditWriteFailed

        record = AuditRecord("token", subject={"client": entry.client_name,
                                               "mailbox": entry.mailbox},
                             detail={"protocol": protocol, "revealed": "access_token",
                                     "resource": entry.resource, "refreshed": False})
        sealer = self.broker.sealer(record)
        sealer.actor = {**self.broker.actor, **peer_actor(peer)}
        pending = _Pending(sealer)
        with self.cond:
            if self.closed:
                raise AuditWriteFailed("the agent is locking; nothing was handed out")
            self.queue.append(pending)
            self.cond.notify_all()
        if not pending.done.wait(COMMIT_WAIT_S) or pending.error is not None:
            raise AuditWriteFailed("the audit log could not be written; nothing was shown or "
                                   "changed") from pending.error

    def _run(self) -> None:
        from adapters.store.base import append_audit_entries

        while True:
            with self.cond:
                while not self.queue and not self.closed:
                    self.cond.wait()
                if not self.queue:
                    return
                batch, self.queue = self.queue, []
            try:
                with self.store.write() as tx:
                    append_audit_entries(tx, [p.sealer for p in batch])
            except BaseException as error:  # noqa: BLE001 - each waiting request is told
                for pending in batch:
                    pending.error = error
            for pending in batch:
                pending.done.set()

    def stop(self) -> None:
        """Commit what is queued, then end."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.thread.join(COMMIT_WAIT_S)
