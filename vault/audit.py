"""The audit log: encrypted entries, hash-chained over their ciphertext, with a signed head.

entry_hash = SHA-256("vault-audit-entry-v1" | seq | prev_hash | header | nonce | ciphertext)
The chain starts from SHA-256("vault-audit-genesis-v1" | vault id). Every append re-signs the head
(Ed25519 over "vault-audit-checkpoint-v1", vault id, size, head hash, time), so cutting the tail
breaks the signature. Verifying needs no key at all: only the public key in the header. A
rollback to an older, self-consistent copy is caught by comparing with a checkpoint exported
earlier and kept elsewhere (`vault audit checkpoint --export`, `vault audit verify --trusted`).
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from adapters import crypto
from adapters.errors import IntegrityViolation
from adapters.store import AuditAppender, AuditRow, Checkpoint

CHECKPOINT_FILE_HEADER = "vault-audit-checkpoint-v1"
T = TypeVar("T")


def os_actor() -> dict[str, Any]:
    """Who runs this command: the account of the process's user id (not $USER or $LOGNAME, which
    the caller sets at will), the host, the process; and, as sudo reports it, who called sudo
    (an environment variable, so a claim of the caller's, next to the account that is not)."""
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no passwd entry (containers)
        user = f"uid:{uid}"
    actor: dict[str, Any] = {"user": user, "uid": uid, "host": os.uname().nodename,
                             "pid": os.getpid()}
    if os.environ.get("SUDO_USER"):
        actor["sudo_user"] = os.environ["SUDO_USER"]
    return actor


def actor_name(actor: dict[str, Any]) -> str:
    """The name recorded in events (`by`, `revoked_by`): the account, and the sudo caller."""
    sudo = actor.get("sudo_user")
    return f"{sudo} (sudo as {actor['user']})" if sudo else actor["user"]


def genesis(vault_id: str) -> bytes:
    return crypto.sha256(b"vault-audit-genesis-v1\0", vault_id.encode())


def entry_hash(seq: int, prev_hash: bytes, header: str, nonce: bytes, ciphertext: bytes) -> bytes:
    head = header.encode()
    return crypto.sha256(
        b"vault-audit-entry-v1\0", struct.pack(">q", seq), prev_hash,
        struct.pack(">I", len(head)), head, nonce, ciphertext,
    )


def _entry_aad(vault_id: str, seq: int, prev_hash: bytes, header: str) -> bytes:
    return crypto.aad(b"vault-audit-v1", vault_id, seq, prev_hash, header)


def checkpoint_message(vault_id: str, size: int, head: bytes, signed_at: str) -> bytes:
    return f"{CHECKPOINT_FILE_HEADER}\n{vault_id}\n{size}\n{head.hex()}\n{signed_at}\n".encode()


HANDOVER_HEADER = "vault-audit-handover-v1"


def handover_message(vault_id: str, size: int, head: bytes, old_key: bytes, new_key: bytes,
                     signed_at: str) -> bytes:
    return (f"{HANDOVER_HEADER}\n{vault_id}\n{size}\n{head.hex()}\n{old_key.hex()}\n"
            f"{new_key.hex()}\n{signed_at}\n").encode()


class Handover(NamedTuple):
    """`key rotate --reencrypt` handing the audit log over to a new audit key and signing key:
    entries 1..size stay sealed as they were (readable with the old audit key, which the vault
    keeps), later ones use the new keys. Both signing keys sign this record: the old one vouches
    for its successor, so a checkpoint trusted before the hand-over still anchors the log."""

    size: int
    head: bytes  # the hash of entry `size`
    old_public_key: bytes
    new_public_key: bytes
    signed_at: str
    old_signature: bytes
    new_signature: bytes

    def message(self, vault_id: str) -> bytes:
        return handover_message(vault_id, self.size, self.head, self.old_public_key,
                                self.new_public_key, self.signed_at)

    def verifies(self, vault_id: str) -> bool:
        message = self.message(vault_id)
        return crypto.verify_signature(self.old_public_key, message, self.old_signature) and \
            crypto.verify_signature(self.new_public_key, message, self.new_signature)

    def to_json(self) -> str:
        return json.dumps({"size": self.size, "head": self.head.hex(),
                           "old_public_key": self.old_public_key.hex(),
                           "new_public_key": self.new_public_key.hex(),
                           "signed_at": self.signed_at,
                           "old_signature": self.old_signature.hex(),
                           "new_signature": self.new_signature.hex()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Handover:
        try:
            body = json.loads(text)
            return cls(int(body["size"]), bytes.fromhex(body["head"]),
                       bytes.fromhex(body["old_public_key"]),
                       bytes.fromhex(body["new_public_key"]), str(body["signed_at"]),
                       bytes.fromhex(body["old_signature"]),
                       bytes.fromhex(body["new_signature"]))
        except (ValueError, KeyError, TypeError):
            raise IntegrityViolation("an audit hand-over record is malformed (it was edited "
                                     "outside vault)") from None


def sign_handover(vault_id: str, size: int, head: bytes, old_seed: bytes, new_seed: bytes,
                  signed_at: str) -> Handover:
    old_key, new_key = crypto.signing_key(old_seed), crypto.signing_key(new_seed)
    old_public, new_public = bytes(old_key.verify_key), bytes(new_key.verify_key)
    message = handover_message(vault_id, size, head, old_public, new_public, signed_at)
    return Handover(size, head, old_public, new_public, signed_at,
                    old_key.sign(message).signature, new_key.sign(message).signature)


def audit_key_ids(handovers: list[Handover]) -> Callable[[int], str]:
    """Which audit key opens entry `seq`: the one of its generation (`system:audit@N` for the
    entries before the N+1th hand-over), the current one after the last."""
    from adapters.keyring import AUDIT_KEY_ID

    sizes = sorted(h.size for h in handovers)

    def key_id(seq: int) -> str:
        for n, size in enumerate(sizes):
            if seq <= size:
                return f"{AUDIT_KEY_ID}@{n}"
        return AUDIT_KEY_ID

    return key_id


class AuditRecord:
    """What a command did, to whom, with what outcome. Never holds a secret value."""

    def __init__(self, action: str, subject: dict[str, str] | None = None,
                 detail: dict[str, Any] | None = None) -> None:
        self.action = action
        self.subject: dict[str, str] = subject if subject is not None else {}
        self.detail: dict[str, Any] = detail if detail is not None else {}
        self.outcome = "ok"
        self.written = False

    def content(self, actor: dict[str, Any], at: datetime) -> dict[str, Any]:
        return {"at": at.isoformat(), "action": self.action, "subject": self.subject,
                "outcome": self.outcome, "detail": self.detail, **actor}


class AuditSealer(AuditAppender):
    """Seals the record as it stands when its transaction appends it (details filled in by the
    command up to that moment are included)."""

    def __init__(self, audit_key: bytes, signing_seed: bytes, vault_id: str,
                 record: AuditRecord, actor: dict[str, Any], at: datetime,
                 *, public_key: bytes | None = None, first: bool = False) -> None:
        self.first = first  # the init entry: the only one that may start a log
        # the header's (authenticated when the vault was unlocked): what the head must verify with
        self.public_key = public_key
        self.audit_key = audit_key
        self.signing_seed = signing_seed
        self.vault_id = vault_id
        self.record = record
        self.actor = actor
        self.moment = at
        self.at = at.isoformat()
        self.signing_key: Any = None  # the key made from the seed, where the caller keeps one

    def check_head(self, last: AuditRow | None, head: Checkpoint | None) -> None:
        if last is None and head is None and self.first:
            return
        public_key = self.public_key or bytes(crypto.signing_key(self.signing_seed).verify_key)
        problem = head_problem(last, head, self.vault_id, public_key)
        if problem:
            raise IntegrityViolation(f"audit log: {problem}; nothing was done (the log is only "
                                     "ever extended from its signed head: restore a backup, "
                                     "see `vault audit verify`)")

    def seal(self, seq: int, prev_hash: bytes | None) -> AuditRow:
        prev = prev_hash if prev_hash is not None else genesis(self.vault_id)
        header = json.dumps({"v": 1, "at": self.at}, sort_keys=True, separators=(",", ":"))
        content = self.record.content(self.actor, self.moment)
        plaintext = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        blob = crypto.seal(self.audit_key, plaintext, _entry_aad(self.vault_id, seq, prev, header))
        nonce, ciphertext = blob[: crypto.NONCE_BYTES], blob[crypto.NONCE_BYTES:]
        return AuditRow(seq, prev, header, nonce, ciphertext,
                        entry_hash(seq, prev, header, nonce, ciphertext))

    def sign(self, size: int, head_hash: bytes) -> Checkpoint:
        message = checkpoint_message(self.vault_id, size, head_hash, self.at)
        key = self.signing_key or crypto.signing_key(self.signing_seed)
        signature = key.sign(message).signature
        return Checkpoint(size, head_hash, self.at, signature)


class AuditBroker:
    """The one choke point every use case passes (the full CLI's services, the cached-token path,
    restore): one record per use case, written in the same transaction as the change it
    describes, or — for reads and refusals — in a short transaction of its own before anything
    is returned. If the entry cannot be written, nothing is shown or changed.

    `append(sealer)` writes one entry on its own (a store commit with only the audit entry);
    `keys(key_id)` gives the audit and signing keys once the vault is unlocked."""

    def __init__(self, *, vault_id: str, public_key: bytes, actor: dict[str, Any],
                 clock: Callable[[], datetime], keys: Callable[[str], bytes],
                 append: Callable[[AuditSealer], None]) -> None:
        self.vault_id = vault_id
        self.public_key = public_key
        self.actor = actor
        self.clock = clock
        self.keys = keys
        self.append = append
        self.current: AuditRecord | None = None  # the running use case's record

    @property
    def who(self) -> str:
        return actor_name(self.actor)

    @property
    def record(self) -> AuditRecord:
        if self.current is None:
            from vault.errors import WiringError

            raise WiringError("a change outside a use case would not be audited")
        return self.current

    def run(self, action: str, work: Callable[[], T]) -> T:
        """`work` under a record of its own, or under the running use case's (nested calls)."""
        from adapters.errors import AdapterError
        from domain.errors import DomainError
        from vault.errors import AuditWriteFailed, VaultError

        if self.current is not None:
            return work()  # nested: the outer record covers it
        record = self.current = AuditRecord(action)
        try:
            result = work()
        except (DomainError, VaultError, AdapterError) as error:
            self.current = None
            if not record.written and not isinstance(error, AuditWriteFailed):
                record.outcome = "refused" if isinstance(error, DomainError) else "failed"
                record.detail["error"] = str(error)[:300]
                self.write(record, quiet=True)
            raise
        finally:
            self.current = None
        if not record.written:
            self.write(record)
        return result

    @contextmanager
    def item(self, **subject: str) -> Iterator[AuditRecord]:
        """One item of a batch use case under a record of its own, so that its commits carry its
        subject only; the use case's record, which `run` writes last unless a commit has carried
        it, is left for the batch's summary."""
        batch = self.record
        self.current = AuditRecord(batch.action, subject=dict(subject))
        try:
            yield self.current
        finally:
            self.current = batch

    def sealer(self, record: AuditRecord | None = None) -> AuditSealer:
        """What a commit appends: the running record (or `record`), sealed as it then stands."""
        from adapters.keyring import AUDIT_KEY_ID, SIGNING_KEY_ID

        return AuditSealer(self.keys(AUDIT_KEY_ID), self.keys(SIGNING_KEY_ID), self.vault_id,
                           record or self.record, self.actor, self.clock(),
                           public_key=self.public_key)

    def write(self, record: AuditRecord, quiet: bool = False) -> None:
        """Write `record` on its own (a read's or a refusal's entry)."""
        try:
            self.append(self.sealer(record))
            record.written = True
        except Exception as e:
            if quiet:
                return  # the original error is what the admin needs to see
            from eventsourcing.persistence import PersistenceError

            from adapters.errors import AuditAppendFailed
            from vault.errors import AuditWriteFailed

            if isinstance(e, AuditAppendFailed | PersistenceError):
                raise AuditWriteFailed(
                    "the audit log could not be written; nothing was shown or changed") from e
            raise


def head_problem(last: AuditRow | None, head: Checkpoint | None, vault_id: str,
                 public_key: bytes) -> str | None:
    """What is wrong between the last entry and the signed head, if anything."""
    if head is None:
        return ("its signed head is missing" if last is not None
                else "it is empty and its signed head is missing: the log was wiped")
    message = checkpoint_message(vault_id, head.size, head.head_hash, head.signed_at)
    if not crypto.verify_signature(public_key, message, head.signature):
        return "its signed head does not verify (it was forged or edited)"
    if last is None:
        return f"it is empty but its signed head covers {head.size} entries: the log was wiped"
    if last.seq < head.size:
        missing = (f"entry {head.size} was" if last.seq + 1 == head.size
                   else f"entries {last.seq + 1}-{head.size} were")
        return (f"it ends at entry {last.seq} but its signed head covers {head.size} entries: "
                f"{missing} deleted")
    if last.seq > head.size:
        return (f"entries {head.size + 1}-{last.seq} are not covered by its signed head "
                f"(size {head.size}): they were added outside vault")
    if not crypto.same(last.entry_hash, head.head_hash):
        return (f"entry {last.seq} is not the one its signed head covers: entries were "
                "deleted, inserted or rewritten")
    return None


def decrypt_entry(audit_key: bytes, vault_id: str, row: AuditRow) -> dict[str, Any]:
    plaintext = crypto.unseal(audit_key, row.nonce + row.ciphertext,
                              _entry_aad(vault_id, row.seq, row.prev_hash, row.header),
                              f"audit entry {row.seq}")
    return json.loads(plaintext)


class TrustedCheckpoint(NamedTuple):
    vault_id: str
    size: int
    head: bytes
    signed_at: str
    public_key: bytes
    signature: bytes


def export_checkpoint(vault_id: str, public_key: bytes, cp: Checkpoint) -> str:
    return "\n".join([
        CHECKPOINT_FILE_HEADER, f"origin: {vault_id}", f"size: {cp.size}",
        f"head: {cp.head_hash.hex()}", f"time: {cp.signed_at}",
        f"public-key: {public_key.hex()}",
        f"signature: {base64.b64encode(cp.signature).decode()}", "",
    ])


def parse_checkpoint(text: str) -> TrustedCheckpoint:
    lines = text.strip().splitlines()
    if not lines or lines[0].strip() != CHECKPOINT_FILE_HEADER:
        raise ValueError("not a vault audit checkpoint file")
    fields_: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            fields_[key.strip()] = value.strip()
    try:
        cp = TrustedCheckpoint(
            vault_id=fields_["origin"], size=int(fields_["size"]),
            head=bytes.fromhex(fields_["head"]), signed_at=fields_["time"],
            public_key=bytes.fromhex(fields_["public-key"]),
            signature=base64.b64decode(fields_["signature"], validate=True),
        )
    except (KeyError, ValueError):
        raise ValueError("the checkpoint file is incomplete or malformed") from None
    message = checkpoint_message(cp.vault_id, cp.size, cp.head, cp.signed_at)
    if not crypto.verify_signature(cp.public_key, message, cp.signature):
        raise ValueError("the checkpoint file's signature does not verify")
    return cp


class VerifyReport:
    def __init__(self) -> None:
        self.entries = 0
        self.problems: list[str] = []
        self.checkpoint_size: int | None = None
        self.trusted_size: int | None = None
        self.handovers_followed = 0  # signing-key hand-overs between the trusted key and now

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_log(
    rows: Iterable[AuditRow], checkpoint: Checkpoint | None, vault_id: str, public_key: bytes,
    trusted: TrustedCheckpoint | None = None, handovers: Iterable[Handover] = (),
) -> VerifyReport:
    """Check chain, hashes, the signed head and (optionally) a trusted earlier checkpoint,
    which may be signed by a signing key the log was handed over from (`handovers`, each
    signed by both keys and naming the entry it was made at)."""
    report = VerifyReport()
    prev = genesis(vault_id)
    expected_seq = 1
    trusted_hash_seen: bytes | None = None
    handovers = sorted(handovers, key=lambda h: h.size)
    at_handover = {h.size: h for h in handovers}
    for row in rows:
        if row.seq != expected_seq:
            kind = "missing" if row.seq > expected_seq else "out of order"
            report.problems.append(f"entry {expected_seq} is {kind} (found entry {row.seq})")
            break
        if not crypto.same(row.prev_hash, prev):
            report.problems.append(
                f"entry {row.seq} does not follow entry {row.seq - 1}: entries were inserted, "
                "deleted or reordered")
            break
        computed = entry_hash(row.seq, row.prev_hash, row.header, row.nonce, row.ciphertext)
        if not crypto.same(computed, row.entry_hash):
            report.problems.append(f"entry {row.seq} was altered (its hash does not match)")
            break
        if trusted is not None and row.seq == trusted.size:
            trusted_hash_seen = row.entry_hash
        handover = at_handover.get(row.seq)
        if handover is not None and not crypto.same(handover.head, row.entry_hash):
            report.problems.append(f"the audit key hand-over at entry {row.seq} names another "
                                   "entry: entries were rewritten")
            break
        prev = row.entry_hash
        report.entries = row.seq
        expected_seq += 1

    if report.entries == 0 and not report.problems:
        report.problems.append("the audit log is empty: every vault starts with its init entry, "
                               "so the log was wiped")
    if checkpoint is None:
        report.problems.append("the signed checkpoint is missing")
    else:
        report.checkpoint_size = checkpoint.size
        message = checkpoint_message(vault_id, checkpoint.size, checkpoint.head_hash,
                                     checkpoint.signed_at)
        if not crypto.verify_signature(public_key, message, checkpoint.signature):
            report.problems.append("the checkpoint's signature does not verify")
        elif not report.problems:
            if checkpoint.size > report.entries:
                report.problems.append(
                    f"the log was truncated: the signed checkpoint covers {checkpoint.size} "
                    f"entries, only {report.entries} remain")
            elif checkpoint.size < report.entries:
                report.problems.append(
                    f"{report.entries - checkpoint.size} entries after the signed checkpoint "
                    f"(size {checkpoint.size}) are not covered by its signature")
            elif not crypto.same(checkpoint.head_hash, prev):
                report.problems.append("the signed checkpoint does not match the last entry")

    chain_problem = _handover_problem(handovers, vault_id, public_key, report.entries)
    if chain_problem:
        report.problems.append(chain_problem)
    if trusted is not None:
        report.trusted_size = trusted.size
        # the key in force at its size (at a hand-over's own size, the head is signed by both)
        since = [h for h in handovers if h.size >= trusted.size]
        keys = ([since[0].old_public_key]
                + ([since[0].new_public_key] if since[0].size == trusted.size else [])
                if since else [public_key])
        report.handovers_followed = len(since) - (
            1 if since and crypto.same(trusted.public_key, since[0].new_public_key) else 0)
        if trusted.vault_id != vault_id:
            report.problems.append("the trusted checkpoint belongs to another vault")
        elif not any(crypto.same(trusted.public_key, key) for key in keys):
            report.problems.append(
                "the vault's audit signing key differs from the trusted checkpoint's (and no "
                "hand-over signed by it leads to the vault's)")
        elif trusted.size > report.entries:
            report.problems.append(
                f"rollback: the trusted checkpoint covers {trusted.size} entries but this "
                f"database has {report.entries}: it is an older copy or was cut short")
        elif trusted.size > 0 and (trusted_hash_seen is None
                                   or not crypto.same(trusted_hash_seen, trusted.head)):
            report.problems.append(
                f"entry {trusted.size} differs from the trusted checkpoint: history was rewritten")
    return report


def _handover_problem(handovers: list[Handover], vault_id: str, public_key: bytes,
                      entries: int) -> str | None:
    """Each hand-over signed by both its keys, each handing over from the key the one before
    handed to, the last to the header's key, none beyond the log's end."""
    for n, h in enumerate(handovers):
        if not h.verifies(vault_id):
            return f"the audit key hand-over at entry {h.size} does not verify (forged or edited)"
        if n and not crypto.same(handovers[n - 1].new_public_key, h.old_public_key):
            return f"the audit key hand-over at entry {h.size} does not follow the one before"
        if h.size > entries:
            return (f"the audit key hand-over at entry {h.size} is beyond the log's end "
                    f"({entries}): entries were deleted")
    if handovers and not crypto.same(handovers[-1].new_public_key, public_key):
        return "the last audit key hand-over is not to the vault's signing key"
    return None


def raise_if_broken(report: VerifyReport) -> None:
    if not report.ok:
        raise IntegrityViolation("audit log: " + "; ".join(report.problems))
