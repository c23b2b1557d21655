"""Use cases for the vault's own keys: keyslots (passphrases, key files) and root-key rotation.

- add-passphrase / add-keyfile / remove / passwd change only the header: the root key is wrapped
  into (or out of) a slot; no data is re-encrypted.
- rotate makes a new root-key term and rewraps every data key under it, in one transaction with
  the new header (the system keys with them: audit, signing, and the key that seals rows, whose
  seals stay valid). Like `cryptsetup reencrypt`, every remaining keyslot must be opened to
  receive the new root key: slots nobody opens are kept only if listed to drop (--drop-slot),
  else refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters import crypto
from adapters.keyslots import (
    KDF_PROFILES,
    MAX_KEYSLOTS,
    Header,
    Keyslot,
    Passphrase,
    RootKey,
    UnlockMaterial,
    new_slot,
    open_slot,
    rewrap_slot,
    seal_header,
)
from adapters.store.base import audit_handovers
from adapters.store.changes import Changes
from vault.audit import Handover
from vault.core import VaultCore, use_case
from vault.errors import BadInput, NotFound, VaultError
from vault.services.reencrypt import BATCH_SUBJECTS, Progress, Reencryption


@dataclass(frozen=True)
class KeyslotSummary:
    """A keyslot as `key list` shows it (adapters.keyslots.Keyslot holds its wrapped key)."""

    id: int
    kind: str
    label: str
    kdf: str
    created_at: str
    used_now: bool  # it unlocked the vault for this command


@dataclass(frozen=True)
class RemovedKeyslot:
    removed: int
    remaining: list[int]


@dataclass(frozen=True)
class ChangedPassphrase:
    slot: int
    kdf: str


@dataclass(frozen=True)
class RootKeyRotation:
    root_term: int
    data_keys_rewrapped: int
    keyslots: list[int]
    dropped: list[int]  # keyslots removed instead of rewrapped


def slot_summary(slot: Keyslot, unlocked_with: Keyslot) -> KeyslotSummary:
    return KeyslotSummary(id=slot.slot_id, kind=slot.kind, label=slot.label,
                          kdf=slot.kdf_description(), created_at=slot.created_at,
                          used_now=slot.slot_id == unlocked_with.slot_id)


@dataclass(eq=False)
class KeyService:
    core: VaultCore


    def _replace_header(self, header: Header, root: RootKey, changes: Changes | None = None) -> None:
        """Write a new header if nobody changed it since this command unlocked the vault."""
        changes = changes or Changes()
        sealed = seal_header(header, root)
        changes.header = (self.core.header_checksum, sealed)
        self.core.commit(changes=changes)
        self.core.header, self.core.header_checksum = header, sealed.checksum
        self.core.wipe_freed_pages()  # the old wraps of a removed or changed keyslot

    @use_case("key list")
    def list_keyslots(self) -> list[KeyslotSummary]:
        return [slot_summary(s, self.core.unlocked_with) for s in self.core.header.keyslots]

    @use_case("key add")
    def add_keyslot(self, material: UnlockMaterial, *, label: str,
                    kdf: str = "moderate") -> KeyslotSummary:
        if kdf not in KDF_PROFILES:
            raise BadInput(f"--kdf must be one of {', '.join(KDF_PROFILES)}")
        self.core.broker.record.action = f"key add-{material.kind}"
        if len(self.core.header.keyslots) >= MAX_KEYSLOTS:
            raise BadInput(f"a vault has at most {MAX_KEYSLOTS} keyslots")
        slot = new_slot(self.core.header, self.core.root, self.core.header.vault_id, material, label,
                        self.core.now().isoformat(), kdf=kdf)
        self.core.broker.record.detail.update({"slot": slot.slot_id, "kind": slot.kind,
                                               "label": label})
        self._replace_header(self.core.header._replace(keyslots=(*self.core.header.keyslots, slot)),
                             self.core.root)
        return slot_summary(slot, self.core.unlocked_with)

    @use_case("key remove")
    def remove_keyslot(self, slot_id: int) -> RemovedKeyslot:
        slots = [s for s in self.core.header.keyslots if s.slot_id != slot_id]
        if len(slots) == len(self.core.header.keyslots):
            raise NotFound(f"no keyslot {slot_id} (see `vault key list`)")
        if not slots:
            raise VaultError("refusing to remove the last keyslot: the vault could never be "
                             "opened again")
        self.core.broker.record.detail.update({"slot": slot_id})
        self._replace_header(self.core.header._replace(keyslots=tuple(slots)), self.core.root)
        return RemovedKeyslot(removed=slot_id, remaining=[s.slot_id for s in slots])

    @use_case("key passwd")
    def change_passphrase(self, new: Passphrase, *, kdf: str | None = None) -> ChangedPassphrase:
        """Rewrap the root key in the passphrase slot that opened the vault; nothing else moves."""
        old = self.core.unlocked_with
        if old.kind != "passphrase":
            raise BadInput("unlock with the passphrase you want to change (not a key file)")
        profile = kdf or _profile_of(old)
        slot = new_slot(self.core.header, self.core.root, self.core.header.vault_id, new, old.label,
                        self.core.now().isoformat(), kdf=profile, slot_id=old.slot_id)
        slots = tuple(slot if s.slot_id == old.slot_id else s for s in self.core.header.keyslots)
        self.core.broker.record.detail.update({"slot": slot.slot_id, "kdf": profile})
        self._replace_header(self.core.header._replace(keyslots=slots), self.core.root)
        self.core.unlocked_with, self.core.unlock_material = slot, new
        return ChangedPassphrase(slot=slot.slot_id, kdf=slot.kdf_description())

    @use_case("key rotate")
    def rotate_root_key(
        self, others: list[UnlockMaterial], *, drop: tuple[int, ...] = ()
    ) -> RootKeyRotation:
        new_root = RootKey(term=self.core.root.term + 1, key=crypto.new_key())
        new_header = self.core.header._replace(root_term=new_root.term)
        slots, dropped = self._rewrapped_slots(others, drop, new_root)
        new_header = new_header._replace(keyslots=tuple(slots))
        rewrapped: list[int] = []

        def rekey(rows: list) -> list:
            rewrapped.append(len(rows))
            return self.core.keyring.rewrap(rows, new_root)

        self.core.broker.record.detail.update({"term": new_root.term, "dropped_slots": dropped})
        self._replace_header(new_header, new_root, Changes(rekey=rekey))
        self.core.root = new_root
        self.core.keyring.root = new_root
        self.core.unlocked_with = next(s for s in slots if s.slot_id == self.core.unlocked_with.slot_id)
        return RootKeyRotation(root_term=new_root.term, data_keys_rewrapped=rewrapped[0],
                               keyslots=[s.slot_id for s in slots], dropped=dropped)

    @use_case("key rotate --reencrypt")
    def reencrypt(self, others: list[UnlockMaterial], *, drop: tuple[int, ...] = (),
                  progress: Progress | None = None,
                  batch: int = BATCH_SUBJECTS) -> Reencryption:
        """A new root key, audit key and signing key, and a new data key for every subject
        with its events and snapshots sealed anew (vault/services/reencrypt.py); an unfinished
        re-encryption (a kill, a lost connection) is resumed instead, with the keys it made."""
        from vault.services.reencrypt import Reencryptor, proven_key, unfinished

        worker = Reencryptor(self.core, progress, batch)
        record = self.core.broker.record
        generation = self.core.header.key_generation
        proven = bool(self.core.store.query("SELECT 1 AS x FROM vault_meta WHERE key = ?",
                                            (proven_key(generation),)))
        resumed = generation > 0 and unfinished(self.core.store.key_rows(), generation, proven)
        handover_at = None
        if not resumed:
            new_root = RootKey(term=self.core.root.term + 1, key=crypto.new_key())
            slots, dropped = self._rewrapped_slots(others, drop, new_root)
            record.detail.update({"term": new_root.term, "dropped_slots": dropped,
                                  "generation": self.core.header.key_generation + 1})
            handover_at = worker.start(tuple(slots), new_root)
            self.core.unlocked_with = next(s for s in slots
                                           if s.slot_id == self.core.unlocked_with.slot_id)
        elif others or drop:
            raise BadInput("a re-encryption under way is resumed with the keys it made: "
                           "--other-key-file, --other-passphrase-file and --drop-slot apply "
                           "to a new one only")
        record.detail.update({"generation": self.core.header.key_generation,
                              "resumed": resumed, "handover_at": handover_at})
        subjects, events, batches = worker.run_batches()
        worker.finish()
        aggregates, entries = worker.prove()
        record.detail.update({"step": "proven", "aggregates": aggregates})
        self.core.broker.write(record)  # the proof, in an entry of its own
        with self.core.store.read() as tx:
            handovers = [Handover.from_json(h) for h in audit_handovers(tx)]
        return Reencryption(
            generation=self.core.header.key_generation, root_term=self.core.root.term,
            resumed=resumed, subjects=subjects, events=events, batches=batches,
            handover_at=handovers[-1].size, aggregates_proven=aggregates,
            audit_entries=entries)

    def _rewrapped_slots(self, others: list[UnlockMaterial], drop: tuple[int, ...],
                         new_root: RootKey) -> tuple[list[Keyslot], list[int]]:
        """Every keyslot wrapped anew around `new_root`, or dropped where asked; refused
        (nothing changed) while a slot nobody opened would be left behind."""
        materials = [self.core.unlock_material, *others]
        slots, missing, dropped = [], [], []
        for slot in self.core.header.keyslots:
            material = next((m for m in materials if slot.kind == m.kind
                             and open_slot(slot, self.core.header, m) is not None), None)
            if material is not None:
                slots.append(rewrap_slot(slot, self.core.header, material, new_root))
            elif slot.slot_id in drop:
                dropped.append(slot.slot_id)
            else:
                missing.append(f"{slot.slot_id} ({slot.kind} '{slot.label}')")
        if missing:
            raise BadInput(
                "a new root key must be wrapped into every keyslot; nothing opens keyslot(s) "
                f"{', '.join(missing)}: give their key files (--other-key-file) or passphrase "
                "files (--other-passphrase-file), or remove them with --drop-slot"
            )
        return slots, dropped


def _profile_of(slot: Keyslot) -> str:
    for name, (ops, mem) in KDF_PROFILES.items():
        if (ops, mem) == (slot.opslimit, slot.memlimit):
            return name
    return "moderate"
