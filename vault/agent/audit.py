"""The audit entries of tokens the agent hands out from memory. The connection loop
(vault/agent/loop.py) gathers the requests of every connection that is ready and commits their
entries in one transaction before it writes any answer: one head check and one signature for
them all, each entry durable before its token leaves. Nothing is skipped or deferred past an
answer.

The same transaction checks that the store did not change since each token was taken
(Store.change_marker, read where no other writer can commit until this one has): the entry of a
token that is no longer current is not written, and its request goes the slow way (the token use
case, which refuses a revoked grant)."""

from __future__ import annotations

from typing import Any

from vault.audit import AuditRecord


class AuditBatches:
    def __init__(self, app: Any) -> None:
        self.store = app.core.store
        self.broker = app.core.broker
        self.written: Any = None  # the last entry and signed head this agent wrote
        self.signing_key: Any = None  # made from the seed once, dropped with this object
        self.actors: dict[tuple[int, int, int], dict[str, Any]] = {}

    def _actor(self, peer: tuple[int, int, int]) -> dict[str, Any]:
        """Who an entry says acted: the agent's process, and the peer that asked (kept per
        peer process; never changed once made)."""
        from vault.agent.server import peer_actor

        actor = self.actors.get(peer)
        if actor is None:
            if len(self.actors) > 1024:
                self.actors.clear()
            actor = self.actors[peer] = {**self.broker.actor, **peer_actor(peer)}
        return actor

    def commit(self, held: list[Any]) -> list[bool]:
        """Write the entries of `held` tokens (vault/agent/server.py `Held`) that are still
        current; which were. Raises when nothing could be written (no token may leave)."""
        from adapters.store.base import append_audit_entries

        sealers = []
        for item in held:
            entry = item.entry
            record = AuditRecord("token", subject={"client": entry.client_name,
                                                   "mailbox": entry.mailbox},
                                 detail={"protocol": item.protocol, "revealed": "access_token",
                                         "resource": entry.resource, "refreshed": False})
            sealer = self.broker.sealer(record)
            sealer.actor = self._actor(item.peer)
            sealers.append(sealer)
        if self.signing_key is None:
            from adapters import crypto

            self.signing_key = crypto.signing_key(sealers[-1].signing_seed)
        sealers[-1].signing_key = self.signing_key  # the group's one signature
        try:
            with self.store.write() as tx:
                marker = self.store.change_marker(tx)
                current = [item.entry.marker == marker for item in held]
                chosen = [s for s, ok in zip(sealers, current, strict=True) if ok]
                if chosen:
                    self.written = append_audit_entries(tx, chosen, known=self.written)
        except BaseException:
            self.written = None
            raise
        return current
