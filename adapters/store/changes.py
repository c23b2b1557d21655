"""What commits together with a batch of events (the write side only: a read needs none of it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.keyslots import SealedHeader
from adapters.store.base import AuditAppender, Head, KeyRow, RowMacs, ViewChange


@dataclass
class Changes:
    """Everything that commits together with a batch of events."""

    keys: list[KeyRow] = field(default_factory=list)
    key_term: int | None = None  # root-key term the new keys are wrapped under
    heads: list[Head] = field(default_factory=list)
    # Rewraps every live key row under a new root key (key rotation); run inside the transaction.
    rekey: Callable[[list[KeyRow]], list[KeyRow]] | None = None
    shred_subjects: list[str] = field(default_factory=list)
    shredded_at: str | None = None
    views: list[ViewChange] = field(default_factory=list)
    clear_views: bool = False
    # Runs first inside the transaction, with every other writer waiting (read-model rebuild).
    prepare: Callable[[Changes], None] | None = None
    # Runs inside the transaction after the header and the rekey, before anything else is
    # written (key rotate --reencrypt: the audit hand-over, a batch of subjects re-encrypted)
    within: Callable[[Any], None] | None = None
    settings: dict[str, str] = field(default_factory=dict)
    header: tuple[str, SealedHeader] | None = None  # (expected old checksum, new header)
    audit: AuditAppender | None = None
    rows: RowMacs | None = None  # seals every view row and setting written
    rows_generation: int | None = None  # of the seal's key: still the vault's at commit
    settings_version: int | None = None  # of `settings`, all of them, recorded in a head too
    # a vault from before sealed rows: add the columns, seal settings and purges as found
    # (`settings`: the ones it must have, where it had none)
    upgrade: bool = False
    # a sealed vault of an earlier schema: add the columns it lacks (the caller rebuilds the
    # read models, whose rows' MACs cover every column)
    add_columns: bool = False
