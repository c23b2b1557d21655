"""The vault application: one eventsourcing Application, its wiring, and the audit choke point.

Settings are passed in explicitly; nothing is read from the environment. eventsourcing would read
`<NAME>_PERSISTENCE_MODULE`, `MAPPER_TOPIC`, `CIPHER_TOPIC` ... from os.environ (the prefix is
the upper-cased application name): a stray variable could switch persistence to memory or drop
encryption. `construct_env` therefore ignores os.environ, the class is named so that its prefix
cannot be VAULT_, and `_check_wiring` refuses to start with anything but vault's own mapper and
recorders.

Every use case runs through the audit broker (vault/audit.py, `AuditBroker`), by the `use_case`
decorator on service methods: it writes exactly one audit entry, in the same transaction as the
change (or, for reads and refusals, in a short transaction of its own before anything is
returned). If the audit entry cannot be written, nothing happens.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import AggregateCreated, Snapshot
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    EventStore,
    InfrastructureFactory,
    IntegrityError,
    ProcessRecorder,
    TrackingRecorder,
)
from eventsourcing.utils import Environment

from adapters.encryption import (
    EncryptedMapper,
    Keyring,
    transcoder,
)
from adapters.errors import AuditAppendFailed, IntegrityViolation, KeysReplaced
from adapters.keyring import ROWS_KEY_ID, SETTINGS_KEY_ID
from adapters.keyslots import Header, Keyslot, RootKey, UnlockMaterial
from adapters.store import Head, KeyRow, Store, ViewChange
from adapters.store.changes import Changes
from domain.alerts import AlertState
from domain.credentials import ClientCredential
from domain.grants import ConsentGrant
from domain.rotation import TokenRotation
from vault.audit import AuditBroker, os_actor
from vault.errors import AuditWriteFailed, Conflict, WiringError
from vault.reads import ReadSide

T = TypeVar("T")
CONFLICT_RETRIES = 10
# A TokenRotation refreshed every 10 minutes writes ~52,000 events a year; with a snapshot every
# 20 events, loading one decrypts the snapshot and at most 19 events (docs/performance.md).
SNAPSHOT_EVERY = 20


def project_events(aggregate: Any, events: Any) -> Any:
    """eventsourcing's project_aggregate without its per-event runtime Protocol check, which
    costs more than decrypting the event; but with the check that no event is missing (a deleted
    first or middle event is tampering, not an internal error)."""
    for event in events:
        version = event.originator_version
        if aggregate is None:
            if not isinstance(event, Snapshot) and (version != 1 or not isinstance(
                    event, AggregateCreated)):
                raise IntegrityViolation(f"{event.originator_id} starts at version {version}, "
                                         "not with its creation: its first events were deleted")
        elif version != aggregate.version + 1:
            raise IntegrityViolation(f"{event.originator_id} jumps from version "
                                     f"{aggregate.version} to {version}: events were deleted")
        aggregate = event.mutate(aggregate)
    return aggregate


AGGREGATES = (ClientCredential, ConsentGrant, TokenRotation, AlertState)


def stored_types(*, snapshots: bool) -> dict[str, type]:
    """The event (or snapshot) classes vault stores, by their stable topic: the only topics a
    mapper resolves."""
    return {obj.TOPIC: obj for aggregate in AGGREGATES for obj in vars(aggregate).values()
            if isinstance(obj, type) and getattr(obj, "TOPIC", "").startswith(f"{aggregate.TOPIC}.")
            and issubclass(obj, Snapshot) == snapshots}


def system_clock() -> datetime:
    return datetime.now(UTC)


class _StoreFactory(InfrastructureFactory):
    """Hands eventsourcing the store's recorders; never resolves anything from topics."""

    def __init__(self, env: Environment, store: Store) -> None:
        super().__init__(env)
        self.store = store

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        if purpose != "snapshots":
            raise WiringError(f"no aggregate recorder for {purpose!r}")
        return self.store.snapshot_recorder

    def application_recorder(self) -> ApplicationRecorder:
        return self.store.recorder

    def tracking_recorder(self, tracking_recorder_class: Any = None) -> TrackingRecorder:
        raise WiringError("vault keeps its read models inline, without tracking recorders")

    def process_recorder(self) -> ProcessRecorder:
        raise WiringError("vault has no process recorder")

    def is_snapshotting_enabled(self) -> bool:
        return True

    def close(self) -> None:
        self.store.close()


def use_case(action: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A service method that is a use case: it runs under one audit record (the broker's)."""

    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def run(self: Any, *args: Any, **kwargs: Any) -> T:
            return self.core.broker.run(action, lambda: method(self, *args, **kwargs))

        return run

    return decorate


class VaultCore(Application[UUID]):
    name = "VaultApplication"  # eventsourcing's env prefix would be VAULTAPPLICATION_, unused
    # a grant records a probe per protocol a day, an alert state a send or a failure per run
    snapshotting_intervals = {TokenRotation: SNAPSHOT_EVERY, ConsentGrant: SNAPSHOT_EVERY,
                              AlertState: SNAPSHOT_EVERY}
    snapshotting_projectors = {TokenRotation: project_events, ConsentGrant: project_events,
                               AlertState: project_events}

    def __init__(
        self, *, store: Store, header: Header, header_checksum: str, root: RootKey,
        unlocked_with: Keyslot, clock: Callable[[], datetime] = system_clock,
        actor: dict[str, Any] | None = None, new_id: Callable[[], UUID] = uuid4,
        unlock_material: UnlockMaterial | None = None,
    ) -> None:
        self.store = store
        self.header = header
        self.header_checksum = header_checksum  # compare-and-swap base for header changes
        self.root = root
        self.unlocked_with = unlocked_with
        # what opened it: a copy being proven (backups) and key rotation open with it again
        self.unlock_material = unlock_material
        self.clock = clock
        self.actor = actor if actor is not None else os_actor()
        self.new_id = new_id
        self.keyring = Keyring(store, root, header.vault_id, header.key_generation)
        # a vault from before tombstones (its authenticated header says so) has purges without one
        self.keyring.purges_unsealed = not header.row_macs
        self.reads = ReadSide(store, self.keyring)
        self.broker = AuditBroker(
            vault_id=header.vault_id, public_key=header.audit_public_key, actor=self.actor,
            clock=self.now, keys=self.keyring.key,
            append=lambda sealer: self.store.commit([], Changes(audit=sealer)))
        self.warnings: list[str] = []  # for the admin, printed after the command's output
        super().__init__()
        self._check_wiring()

    # -- wiring ------------------------------------------------------------------------------

    def construct_env(self, name: str, env: Any = None) -> Environment:
        return Environment(name, {"IS_SNAPSHOTTING_ENABLED": "y"})  # never os.environ

    def construct_factory(self, env: Environment) -> InfrastructureFactory:
        return _StoreFactory(env, self.store)

    def construct_mapper(self) -> EncryptedMapper:
        return EncryptedMapper(transcoder(), self.keyring, stored_types(snapshots=False))

    def construct_recorder(self) -> ApplicationRecorder:
        return self.store.recorder

    def construct_snapshot_store(self) -> EventStore:
        mapper = EncryptedMapper(transcoder(), self.keyring, stored_types(snapshots=True))
        return EventStore(mapper=mapper, recorder=self.store.snapshot_recorder)

    def _check_wiring(self) -> None:
        problems = []
        expected = {"events": (self.mapper, stored_types(snapshots=False)),
                    "snapshots": (self.snapshots and self.snapshots.mapper,
                                  stored_types(snapshots=True))}
        for what, (mapper, types) in expected.items():
            if type(mapper) is not EncryptedMapper or mapper.cipher or mapper.compressor \
                    or mapper.keyring is not self.keyring or mapper.stored_types != types:
                problems.append(f"mapper is {type(mapper).__name__} for the {what}")
        if self.recorder is not self.store.recorder or self.events.recorder is not self.recorder:
            problems.append(f"recorder is {type(self.recorder).__name__}")
        if self.events.mapper is not self.mapper:
            problems.append("event store mapper differs")
        if self.snapshots is None or self.snapshots.recorder is not self.store.snapshot_recorder:
            problems.append("snapshot store is not vault's")
        if problems:
            raise WiringError("refusing to start: " + "; ".join(problems))

    # -- time and ids ------------------------------------------------------------------------

    def now(self) -> datetime:
        moment = self.clock()
        if moment.tzinfo is None:
            raise WiringError("the clock must give timezone-aware times")
        return moment.astimezone(UTC)

    # -- audit -------------------------------------------------------------------------------

    @property
    def who(self) -> str:
        return self.broker.who

    # -- the one way to change anything -------------------------------------------------------

    def commit(self, *aggregates: Any, changes: Changes | None = None) -> None:
        """Save aggregates' pending events with keys, view changes and the audit entry,
        atomically. Sealed with keys a `key rotate --reencrypt` replaced meanwhile, it is sealed
        again with the new ones, once (what a refresh got from its provider is not lost): unless
        it makes keys or a header of its own, or this command's key no longer opens the vault."""
        changes = changes or Changes()
        given_heads = list(changes.heads)
        pending = [(agg, list(agg.pending_events)) for agg in aggregates]
        try:
            self._commit(aggregates, changes, given_heads)
        except KeysReplaced:
            if changes.keys or changes.header or given_heads or not self.reopen():
                raise
            for agg, events in pending:  # the failed save took them: sealed again below
                agg.pending_events[:] = events
            self._commit(aggregates, changes, given_heads)

    def _commit(self, aggregates: tuple, changes: Changes, given_heads: list[Head]) -> None:
        record = self.broker.record
        changes.audit = self.broker.sealer(record)
        changes.rows = self.keyring.rows
        changes.rows_generation = self.keyring.generation_of(ROWS_KEY_ID)
        changes.key_term = self.root.term
        events = [e for agg in aggregates for e in agg.pending_events]
        newest: dict[str, int] = {}
        for event in events:
            newest[str(event.originator_id)] = event.originator_version
        changes.heads = [*given_heads, *(
            Head(originator, version, self.keyring.head_mac(originator, version),
                 self.keyring.generation_of(originator))
            for originator, version in newest.items())]
        try:
            if events:
                self.save(*aggregates, changes=changes)
            else:
                self.store.commit([], changes)
        except AuditAppendFailed as e:
            raise AuditWriteFailed("the audit log could not be written; nothing was changed") from e
        record.written = True

    def take_snapshot(self, aggregate_id: Any, version: int | None = None,
                      projector_func: Any = None) -> None:
        """eventsourcing's, with the aggregate's current data key (one a `key rotate
        --reencrypt` batch replaced is read again first). The snapshot is written in a
        transaction of its own: a batch committing while it was sealed would leave it sealed
        with the discarded key, so it is dropped when the key changed meanwhile (snapshots only
        save replaying; the events stay)."""
        originator = str(aggregate_id)
        self.keyring.refreshed(originator)
        generation = self.keyring.generation_of(originator)
        if projector_func is None:
            super().take_snapshot(aggregate_id, version)
        else:
            super().take_snapshot(aggregate_id, version, projector_func)
        row = self.store.key_row(originator)
        if row is not None and (row.generation or 0) != generation:
            self.store.drop_snapshots(originator)

    def reopen(self) -> bool:
        """After a `key rotate --reencrypt` replaced keys this command holds: read them anew,
        unlocking a new header with this command's own key material; False when that material
        no longer opens it (its keyslot was dropped)."""
        from adapters.errors import UnlockFailed
        from adapters.keyslots import unlock

        sealed = self.store.read_header()
        if sealed.checksum == self.header_checksum:  # same root key: the data keys read anew
            self.keyring.forget_all()
            self.keyring.root = self.root
            return True
        if self.unlock_material is None:
            return False
        header = sealed.parse()
        try:
            root, slot = unlock(header, self.unlock_material, None)
        except UnlockFailed:
            return False
        sealed.verify_mac(root)
        self.header, self.header_checksum, self.root, self.unlocked_with = (
            header, sealed.checksum, root, slot)
        self.keyring.forget_all()
        self.keyring.root, self.keyring.generation = root, header.key_generation
        self.broker.public_key = header.audit_public_key
        return True

    def retrying(self, attempt: Callable[[], T]) -> T:
        """Re-run a read-decide-write step when another process changed the aggregate first."""
        for n in range(CONFLICT_RETRIES):
            try:
                return attempt()
            except IntegrityError:
                if n == CONFLICT_RETRIES - 1:
                    break
                # full jitter, doubling: two busy writers drift apart instead of colliding again
                time.sleep(random.uniform(0, min(0.5, 0.02 * 2 ** n)))  # noqa: S311 - jitter
        raise Conflict("another process kept changing the same record; try again")

    def wipe_freed_pages(self) -> None:
        warning = self.store.wipe_freed_pages()
        if warning:
            self.warnings.append(warning)

    def new_key_rows(self, aggregate_id: UUID, subject_id: UUID) -> list[KeyRow]:
        return [self.keyring.create(str(aggregate_id), str(subject_id), self.now().isoformat())]

    # -- loading -----------------------------------------------------------------------------

    def load(self, aggregate_id: UUID, version: int | None = None) -> Any:
        """An aggregate from its snapshot and newer events. It must reach the version recorded with
        a MAC, so deleting (or rolling back) its newest events is detected. The head is read first:
        another process may commit in between, which only makes the events newer."""
        head = self.keyring.recorded_head(str(aggregate_id))
        try:
            aggregate = self.repository.get(aggregate_id, version=version,
                                            projector_func=project_events)
        except AggregateNotFoundError:
            raise IntegrityViolation(f"{aggregate_id} has no events but version {head} was "
                                     "recorded: its events were deleted") from None
        if version is None and aggregate.version < head:
            raise IntegrityViolation(
                f"{aggregate_id} ends at version {aggregate.version} but version {head} was "
                "recorded: its newest events were deleted or rolled back")
        return aggregate

    def version_as_of(self, aggregate_id: UUID, cutoff: datetime | None) -> int | None:
        """The last version recorded before `cutoff` (binary search: one event read per step),
        of an aggregate whose newest events are all there (its recorded head)."""
        head = self.keyring.recorded_head(str(aggregate_id))
        newest = self.recorder.select_events(aggregate_id, desc=True, limit=1)
        high = newest[0].originator_version if newest else 0
        if high < head:
            raise IntegrityViolation(f"{aggregate_id} ends at version {high} but version {head} "
                                     "was recorded: its newest events were deleted")
        if cutoff is None:
            return high or None
        low, found = 1, None
        while low <= high:
            mid = (low + high) // 2
            event = next(iter(self.events.get(aggregate_id, gt=mid - 1, lte=mid)), None)
            if event is None:
                raise IntegrityViolation(f"version {mid} of {aggregate_id} is missing: events "
                                         "were deleted")
            if event.timestamp < cutoff:
                found, low = mid, mid + 1
            else:
                high = mid - 1
        return found

    def events_up_to(self, aggregate_id: UUID, version: int, limit: int | None = None) -> list:
        """The newest events up to `version` (the last `limit` of them), oldest first, none
        missing."""
        events = list(self.events.get(aggregate_id, lte=version, desc=True, limit=limit))[::-1]
        expected = version if limit is None else min(limit, version)
        if [e.originator_version for e in events] != list(range(version - expected + 1,
                                                                version + 1)):
            raise IntegrityViolation(f"events of {aggregate_id} up to version {version} are "
                                     "missing: they were deleted")
        return events

    def load_client(self, client_uuid: str) -> ClientCredential:
        return self.load(UUID(client_uuid))

    def load_grant(self, grant_uuid: str) -> ConsentGrant:
        return self.load(UUID(grant_uuid))

    def settings_changes(self, settings: dict[str, str]) -> Changes:
        """Every setting, written as the next version of the settings (their recorded head)."""
        version = self.keyring.recorded_head(SETTINGS_KEY_ID) + 1
        return Changes(settings=settings, settings_version=version, heads=[
            Head(SETTINGS_KEY_ID, version, self.keyring.head_mac(SETTINGS_KEY_ID, version),
                 self.keyring.generation_of(SETTINGS_KEY_ID))])

    def aggregate_ids(self) -> dict[str, list[UUID]]:
        """Every client and grant ever created, found from their creation events' topics (plain
        text: each subject with a data key must be among them, or a topic was edited to hide
        it)."""
        creations = {ClientCredential.Registered.TOPIC: "client",
                     ConsentGrant.Granted.TOPIC: "grant"}
        ids: dict[str, list[UUID]] = {"client": [], "grant": []}
        start = 1
        while True:
            batch = self.recorder.select_notifications(start, 1000, topics=list(creations))
            for n in batch:
                ids[creations[n.topic]].append(n.originator_id)
            if len(batch) < 1000:
                break
            start = batch[-1].id + 1
        found = {str(i) for kind in ids.values() for i in kind}
        hidden = sorted(row.originator_id for row in self.store.key_rows()
                        if row.wrapped is not None and row.originator_id == row.subject_id
                        and not row.originator_id.startswith("system:")
                        and row.originator_id not in found)
        if hidden:
            raise IntegrityViolation(f"{hidden[0]} has a data key but no creation event: its "
                                     "events were deleted or their type edited outside vault")
        return ids


def apply_views(changes: Changes, *groups: list[ViewChange]) -> Changes:
    for group in groups:
        changes.views.extend(group)
    return changes


__all__ = ["IntegrityViolation", "VaultCore", "apply_views", "use_case"]
