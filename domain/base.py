"""What every vault aggregate shares: stable event topics, explicit timestamps, a snapshot class.

Stored events name their class by a stable topic ("vault.ConsentGrant.Revoked"), never by module
path, so moving or renaming a Python class never strands what is already stored. A class whose
shape changes gets `class_version = N` and `upcast_vN_vM` static methods (eventsourcing's upcasting).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import AggregateCreated, AggregateEvent, BaseAggregate, Snapshot

__all__ = ["AggregateCreated", "VaultAggregate", "stable_snapshot", "utc"]
from eventsourcing.utils import register_topic


def utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC)


class VaultAggregate(BaseAggregate[UUID]):
    """Base of the vault's aggregates. Commands take `now`; the domain never reads a clock.

    Unlike eventsourcing's `Aggregate`, it declares no generic `Created` event, so each aggregate
    names its own creation event (Registered, Granted, Started) under a stable topic.
    """

    class Event(AggregateEvent):
        pass

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Without an `Event` of its own, eventsourcing would define one and then define every
        # event class of the aggregate a second time, as a subclass of it: two dataclasses per
        # event, about half of what importing the aggregates costs.
        if "Event" not in cls.__dict__:
            cls.Event = VaultAggregate.Event
        super().__init_subclass__(**kwargs)

    @classmethod
    def _start(cls, event_class: type, aggregate_id: UUID, now: datetime, **kwargs: Any):
        return cls._create(event_class, id=aggregate_id, timestamp=utc(now), **kwargs)

    def _trigger(self, event_class: type, now: datetime, **kwargs: Any) -> None:
        self.trigger_event(event_class, timestamp=utc(now), **kwargs)


def stable_snapshot(topic: str) -> type[Snapshot]:
    """A Snapshot subclass stored under a stable topic (the library's would be its module path)."""
    cls = type("Snapshot", (Snapshot,), {"TOPIC": topic, "__module__": __name__})
    register_topic(topic, cls)
    return cls
