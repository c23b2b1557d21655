"""Data keys: one random key per subject (credential or grant; a TokenRotation reuses its grant's
key), wrapped by the root key with AAD = (vault id, originator id, subject id, root-key term) and
kept in `vault_keys`, outside the event store. Destroying a subject's rows crypto-shreds it.

Imports nothing of eventsourcing, so the cached-token path (vault/fastpath.py) stays light.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from adapters import crypto
from adapters.errors import ConcurrentChange, IntegrityViolation, SubjectPurged
from adapters.keyslots import RootKey
from adapters.store.base import KeyRow, Store

AUDIT_KEY_ID = "system:audit"
SIGNING_KEY_ID = "system:signing"
ROWS_KEY_ID = "system:rows"  # seals read-model rows, settings and purge tombstones
SETTINGS_KEY_ID = "system:settings"  # its recorded head is the settings' version
EVENT_FORMAT = 1


def event_aad(originator_id: str, version: int, topic: str) -> bytes:
    """What a stored event's ciphertext is bound to: its aggregate, version and type."""
    return crypto.aad(b"vault-event-v1", EVENT_FORMAT, originator_id, version, topic)


def head_mac(data_key: bytes, originator_id: str, version: int) -> bytes:
    """Authenticates an aggregate's newest version (key: derived from its data key)."""
    key = crypto.subkey(data_key, b"vault-head")
    return crypto.mac(key, crypto.aad(b"vault-head-v1", originator_id, version))


class RowSealer:
    """MACs for the plain rows a keyless writer could otherwise edit unseen: read-model rows and
    settings (over the table and every column but the MAC), and the tombstone a purge leaves in
    place of a data key. Its key is a system data key (`system:rows`), wrapped by the root key
    like every data key: a key rotation rewraps it and leaves every seal valid, so a command that
    unlocked before a rotation still reads and writes rows correctly."""

    def __init__(self, key: bytes, vault_id: str) -> None:
        self._key = crypto.subkey(key, b"vault-rows-v1")
        self.vault_id = vault_id
        self._prefix = vault_id.encode() + b"\0"
        self._shapes: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], bytes]] = {}

    def __repr__(self) -> str:
        return "RowSealer(...)"

    def mac(self, table: str, row: Mapping[str, Any]) -> bytes:
        # The repr of the column names and of the values is unambiguous for the text, integers
        # and NULLs rows hold (a listing checks every row: kept cheaper than JSON); the names
        # part is worked out once per table and row shape.
        shape = (table, tuple(row))
        known = self._shapes.get(shape)
        if known is None:
            names = tuple(sorted(k for k in row if k != "mac"))
            known = self._shapes[shape] = (names, b"vault-row-v1\0" + self._prefix
                                           + table.encode() + b"\0" + repr(names).encode())
        names, head = known
        values = tuple([int(v) if v.__class__ is bool else v for v in map(row.__getitem__, names)])
        return crypto.mac(self._key, head + repr(values).encode())

    def valid(self, table: str, row: Mapping[str, Any]) -> bool:
        stored = row.get("mac")
        return isinstance(stored, bytes | memoryview) and crypto.same(self.mac(table, row),
                                                                       bytes(stored))

    def check(self, table: str, row: Mapping[str, Any], what: str) -> None:
        if not self.valid(table, row):
            raise IntegrityViolation(
                f"{what} was edited outside vault (its MAC does not match); run `vault admin "
                "rebuild-projections` to recompute the read models from the events")

    def tombstone(self, originator_id: str, subject_id: str, shredded_at: str | None) -> bytes:
        return self.mac("vault_keys:purged", {"originator_id": originator_id,
                                              "subject_id": subject_id,
                                              "shredded_at": shredded_at})

    def is_tombstone(self, row: KeyRow) -> bool:
        """A key row without its key is a purge only with a tombstone vault sealed."""
        return row.wrapped is None and row.head_mac is not None and crypto.same(
            row.head_mac, self.tombstone(row.originator_id, row.subject_id, row.shredded_at))


def forged_purge(originator_id: str) -> IntegrityViolation:
    return IntegrityViolation(
        f"the data key of {originator_id} is gone without a purge record: it was deleted "
        "outside vault; what it protected is lost (restore a backup)")


class Keyring:
    """Data keys, unwrapped on demand with the root key and cached for this process only."""

    def __init__(self, store: Store, root: RootKey, vault_id: str, generation: int = 0) -> None:
        self.store = store
        self.root = root
        self.vault_id = vault_id
        self.generation = generation  # the header's: what new subjects' keys are made as
        self._keys: dict[str, bytes] = {}
        self._generations: dict[str, int] = {}

    def _aad(self, row_or_ids: KeyRow | tuple[str, str], term: int,
             generation: int | None = None) -> bytes:
        """A data key's wrap is bound to its vault, aggregate, subject, root-key term and (from
        the first `key rotate --reencrypt` on) its generation, so a row cannot claim a
        generation it was not wrapped as."""
        if isinstance(row_or_ids, KeyRow):
            originator, subject = row_or_ids.originator_id, row_or_ids.subject_id
            generation = row_or_ids.generation if generation is None else generation
        else:
            originator, subject = row_or_ids
        if not generation:
            return crypto.aad(b"vault-data-key-v1", self.vault_id, originator, subject, term)
        return crypto.aad(b"vault-data-key-v2", self.vault_id, originator, subject, term,
                          generation)

    def key(self, originator_id: str) -> bytes:
        try:
            return self._keys[originator_id]
        except KeyError:
            pass
        row = self.store.key_row(originator_id)
        if row is None:
            raise IntegrityViolation(f"no data key for {originator_id}: the key table was edited")
        self._keep(row)
        return self._keys[originator_id]

    def _keep(self, row: KeyRow) -> None:
        self._keys[row.originator_id] = self.unwrap(row)
        self._generations[row.originator_id] = row.generation or 0

    def generation_of(self, originator_id: str) -> int:
        """The generation of the data key this process holds for the aggregate."""
        self.key(originator_id)
        return self._generations.get(originator_id, 0)

    def refreshed(self, originator_id: str) -> bool:
        """After a ciphertext failed to open: whether the aggregate's data key was replaced
        since this process read it (a `key rotate --reencrypt` batch) — then the new one is
        kept, and the caller tries again; otherwise the failure stands."""
        row = self.store.key_row(originator_id) if self.store is not None else None
        if row is None or row.wrapped is None or originator_id not in self._generations \
                or (row.generation or 0) == self._generations[originator_id]:
            return False
        self._keep(row)
        return True

    def seals_refreshed(self) -> bool:
        """After a row seal or the settings' head failed: whether their keys were replaced
        since this process read them (the last step of `key rotate --reencrypt`)."""
        replaced = self.refreshed(ROWS_KEY_ID) | self.refreshed(SETTINGS_KEY_ID)
        if replaced:
            self._rows = None
        return replaced

    def load(self, rows: Iterable[KeyRow]) -> None:
        """Unwrap and keep the data keys of `rows` (key rows read by the caller: the cached-token
        path reads them without a store object)."""
        for row in rows:
            self._keep(row)

    @property
    def rows(self) -> RowSealer:
        sealer = getattr(self, "_rows", None)
        if sealer is None:
            sealer = self._rows = RowSealer(self.key(ROWS_KEY_ID), self.vault_id)
        return sealer

    # A vault from before tombstones, until it is upgraded: its purges have none yet.
    purges_unsealed = False

    def check_purged(self, row: KeyRow) -> None:
        """A key row without a key: a purge (SubjectPurged) or an edit (IntegrityViolation)."""
        unsealed = self.purges_unsealed and row.head_mac is None
        if not unsealed and not self.rows.is_tombstone(row):
            raise forged_purge(row.originator_id)
        raise SubjectPurged(f"{row.originator_id} was purged (its data key is destroyed)")

    def unwrap(self, row: KeyRow, root: RootKey | None = None) -> bytes:
        root = root or self.root
        if row.wrapped is None:
            self.check_purged(row)
        if row.term > root.term and self.store is not None and self.store.root_term() > root.term:
            raise ConcurrentChange("the root key was rotated since this command unlocked the "
                                   "vault; nothing was changed, run it again")
        if row.term != root.term:
            raise IntegrityViolation(f"data key of {row.originator_id} has root-key term "
                                     f"{row.term}, the vault is at term {root.term}")
        return crypto.unseal(root.key, row.wrapped, self._aad(row, row.term),
                             f"data key of {row.originator_id}")

    def create(self, originator_id: str, subject_id: str, created_at: str) -> KeyRow:
        """A new data key for a subject (of the vault's generation), or the subject's own key
        (and generation) for a related aggregate."""
        if subject_id != originator_id:
            key, generation = self.key(subject_id), self.generation_of(subject_id)
        else:
            key, generation = crypto.new_key(), self.generation
        return self.wrap(originator_id, subject_id, key, created_at, generation)

    def wrap(self, originator_id: str, subject_id: str, key: bytes, created_at: str,
             generation: int) -> KeyRow:
        """A key row for `key` (kept for this process too)."""
        row = self.wrapped_row(originator_id, subject_id, key, created_at, generation, self.root)
        self._keys[originator_id] = key
        self._generations[originator_id] = generation
        return row

    def wrapped_row(self, originator_id: str, subject_id: str, key: bytes, created_at: str,
                    generation: int, root: RootKey) -> KeyRow:
        """A key row for `key` wrapped under `root` as `generation` (nothing kept)."""
        wrapped = crypto.seal(root.key, key, self._aad((originator_id, subject_id), root.term,
                                                       generation))
        return KeyRow(originator_id, subject_id, root.term, wrapped, created_at,
                      generation=generation or None)

    def rewrap(self, rows: list[KeyRow], new_root: RootKey) -> list[KeyRow]:
        """The given live key rows wrapped again under a new root key (key rotation)."""
        return [row._replace(term=new_root.term,
                             wrapped=crypto.seal(new_root.key, self.unwrap(row),
                                                 self._aad(row, new_root.term)))
                for row in rows]

    def head_mac(self, originator_id: str, version: int) -> bytes:
        return head_mac(self.key(originator_id), originator_id, version)

    def recorded_head(self, originator_id: str) -> int:
        """The newest version recorded for an aggregate, after checking its MAC."""
        return self.verified_head(originator_id, self.store.key_row(originator_id))

    def verified_head(self, originator_id: str, row: KeyRow | None) -> int:
        """The head version `row` (the aggregate's key row) records, once its MAC is checked."""
        if row is None:
            raise IntegrityViolation(f"no data key for {originator_id}: the key table was edited")
        if row.wrapped is None:
            self.check_purged(row)
        if row.head_version is None or row.head_mac is None:
            raise IntegrityViolation(f"{originator_id} has no recorded head version")
        if originator_id not in self._keys:
            self._keep(row)  # the key of this very row: a re-encryption may replace it next
        if not crypto.same(self.head_mac(originator_id, row.head_version), row.head_mac) and (
                not self.refreshed(originator_id)
                or not crypto.same(self.head_mac(originator_id, row.head_version),
                                   row.head_mac)):
            raise IntegrityViolation(f"the recorded head version of {originator_id} was forged")
        return row.head_version

    def forget(self, subject_originators: list[str]) -> None:
        for originator in subject_originators:
            self._keys.pop(originator, None)
            self._generations.pop(originator, None)
        if ROWS_KEY_ID in subject_originators:
            self._rows = None  # made again from the key when next needed

    def forget_all(self) -> None:
        """Drop every key this keyring holds, the root key's reference included (a locked
        agent): what Python kept of the bytes is freed memory until it is reused."""
        self._keys.clear()
        self._generations.clear()
        self._rows = None
        self.root = None  # type: ignore[assignment]
