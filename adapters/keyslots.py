"""The vault header and its keyslots, as in LUKS: one root key, opened by any of several slots.

A passphrase slot derives a key-encryption key with Argon2id; a key-file slot derives it from a
32-byte random file with keyed BLAKE2b. Each slot wraps the same root key (AEAD, associated data
= vault id, slot id, kind, KDF parameters, root-key term).

The header is JSON kept beside a SHA-256 checksum and an HMAC under a key derived from the root
key. The checksum and the bounds of the KDF parameters are checked before any KDF runs (an edited
header is refused without spending a second or a gigabyte on it); the HMAC is checked once the root
key is open, so a header rewritten with a matching checksum is still caught.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from typing import Any, NamedTuple

from adapters import crypto
from adapters.errors import IntegrityViolation, UnlockFailed, UnsafeFile
from domain.secret_value import SecretValue

FORMAT = "vault-header/1"
KDF_PROFILES: dict[str, tuple[int, int]] = {
    # name: (opslimit, memlimit) for Argon2id; moderate is about 1 s and 256 MiB here.
    "interactive": (2, 64 * 1024 * 1024),
    "moderate": (3, 256 * 1024 * 1024),
    "sensitive": (4, 1024 * 1024 * 1024),
}
OPSLIMIT_BOUNDS = (2, 10)
MEMLIMIT_BOUNDS = (64 * 1024 * 1024, 1024 * 1024 * 1024)
SALT_BYTES = 16
KEYFILE_PREFIX = "vault-keyfile-v1:"
MIN_PASSPHRASE = 8
MAX_KEYSLOTS = 16


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise IntegrityViolation(f"vault header: {what} is not valid base64") from None


class Keyslot(NamedTuple):
    slot_id: int
    kind: str  # passphrase | keyfile
    label: str
    created_at: str
    salt: bytes
    wrapped_root: bytes
    opslimit: int | None = None
    memlimit: int | None = None

    def kdf_description(self) -> str:
        if self.kind == "keyfile":
            return "key file (BLAKE2b)"
        return f"Argon2id ops={self.opslimit} mem={self.memlimit // (1024 * 1024)} MiB"

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.slot_id, "kind": self.kind, "label": self.label,
            "created_at": self.created_at, "salt": _b64(self.salt),
            "wrapped_root": _b64(self.wrapped_root),
        }
        if self.kind == "passphrase":
            data["kdf"] = {"alg": "argon2id13", "opslimit": self.opslimit,
                           "memlimit": self.memlimit}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Keyslot:
        kind = data.get("kind")
        if kind not in ("passphrase", "keyfile"):
            raise IntegrityViolation(f"vault header: unknown keyslot kind {kind!r}")
        slot = cls(
            slot_id=_int(data.get("id"), "keyslot id"), kind=kind,
            label=str(data.get("label", "")), created_at=str(data.get("created_at", "")),
            salt=_unb64(data.get("salt"), "keyslot salt"),
            wrapped_root=_unb64(data.get("wrapped_root"), "wrapped root key"),
        )
        if len(slot.salt) != SALT_BYTES:
            raise IntegrityViolation("vault header: keyslot salt has the wrong length")
        if kind == "passphrase":
            kdf = data.get("kdf") or {}
            if kdf.get("alg") != "argon2id13":
                raise IntegrityViolation("vault header: unknown KDF algorithm")
            ops, mem = _int(kdf.get("opslimit"), "opslimit"), _int(kdf.get("memlimit"), "memlimit")
            # Bounds before any KDF runs: no downgrade below 'interactive', no absurd cost.
            if not OPSLIMIT_BOUNDS[0] <= ops <= OPSLIMIT_BOUNDS[1]:
                raise IntegrityViolation(f"vault header: Argon2id opslimit {ops} out of bounds")
            if not MEMLIMIT_BOUNDS[0] <= mem <= MEMLIMIT_BOUNDS[1]:
                raise IntegrityViolation(f"vault header: Argon2id memlimit {mem} out of bounds")
            slot = slot._replace(opslimit=ops, memlimit=mem)
        return slot

    def wrap_aad(self, vault_id: str, term: int) -> bytes:
        return crypto.aad(
            b"vault-keyslot-v1", vault_id, self.slot_id, self.kind, self.salt,
            self.opslimit or 0, self.memlimit or 0, term,
        )


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise IntegrityViolation(f"vault header: {what} is not a number")
    return value


class Header(NamedTuple):
    vault_id: str
    created_at: str
    root_term: int
    audit_public_key: bytes
    keyslots: tuple[Keyslot, ...] = ()
    # Read-model rows, settings and purges are sealed (adapters/keyring.py RowSealer). Kept in
    # the authenticated header, so nobody without the key can make a vault look like one from
    # before sealing (whose upgrade seals rows as it finds them).
    row_macs: bool = False
    # `key rotate --reencrypt`: the generation every data key is (or is being) made anew as
    key_generation: int = 0

    def to_json(self) -> str:
        body = {
            "format": FORMAT, "vault_id": self.vault_id, "created_at": self.created_at,
            "root_term": self.root_term, "audit_public_key": self.audit_public_key.hex(),
            "keyslots": [s.as_json() for s in self.keyslots],
        }
        if self.row_macs:
            body["row_macs"] = True
        if self.key_generation:
            body["key_generation"] = self.key_generation
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Header:
        try:
            body = json.loads(text)
        except ValueError:
            raise IntegrityViolation("vault header is not valid JSON") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise IntegrityViolation("vault header has an unknown format")
        try:
            public_key = bytes.fromhex(str(body.get("audit_public_key")))
        except ValueError:
            raise IntegrityViolation("vault header: audit public key is not hex") from None
        slots = body.get("keyslots")
        if not isinstance(slots, list) or not slots:
            raise IntegrityViolation("vault header has no keyslots")
        if len(slots) > MAX_KEYSLOTS:  # each passphrase slot may cost a KDF run: bounded
            raise IntegrityViolation(f"vault header has {len(slots)} keyslots (at most "
                                     f"{MAX_KEYSLOTS})")
        return cls(
            vault_id=str(body.get("vault_id")), created_at=str(body.get("created_at")),
            root_term=_int(body.get("root_term"), "root term"), audit_public_key=public_key,
            keyslots=tuple(Keyslot.from_json(s) for s in slots),
            row_macs=body.get("row_macs") is True,
            key_generation=_int(body.get("key_generation", 0), "key generation"),
        )

    def next_slot_id(self) -> int:
        return max((s.slot_id for s in self.keyslots), default=0) + 1

    def slot(self, slot_id: int) -> Keyslot:
        for s in self.keyslots:
            if s.slot_id == slot_id:
                return s
        raise KeyError(slot_id)


class SealedHeader(NamedTuple):
    """The header as stored: its JSON text, a checksum, and an HMAC under the root key."""

    body: str
    checksum: str
    mac: str

    @staticmethod
    def checksum_of(body: str) -> str:
        return crypto.sha256(b"vault-header-checksum-v1\0", body.encode()).hex()

    def parse(self) -> Header:
        """Check the checksum and bounds; no key needed, no KDF run."""
        if not crypto.same(self.checksum_of(self.body).encode(), self.checksum.encode()):
            raise IntegrityViolation("vault header was edited or corrupted (checksum mismatch)")
        return Header.from_json(self.body)

    def verify_mac(self, root: RootKey) -> None:
        if not crypto.same(header_mac(root, self.body).encode(), self.mac.encode()):
            raise IntegrityViolation(
                "vault header was edited (its authentication code does not match the root key)"
            )


class RootKey(NamedTuple):
    term: int
    key: bytes

    def __repr__(self) -> str:
        return f"RootKey(term={self.term})"


def header_mac(root: RootKey, body: str) -> str:
    return crypto.mac(crypto.subkey(root.key, b"vault-header-mac"), body.encode()).hex()


def seal_header(header: Header, root: RootKey) -> SealedHeader:
    body = header.to_json()
    return SealedHeader(body=body, checksum=SealedHeader.checksum_of(body),
                        mac=header_mac(root, body))


# -- unlock material -------------------------------------------------------------------------


class Passphrase(NamedTuple):
    value: SecretValue

    kind = "passphrase"


class KeyFile(NamedTuple):
    path: str
    secret: bytes

    kind = "keyfile"

    def __repr__(self) -> str:
        return f"KeyFile(path={self.path!r})"


UnlockMaterial = Passphrase | KeyFile


def _kek(slot: Keyslot, material: UnlockMaterial) -> bytes:
    if isinstance(material, Passphrase):
        assert slot.opslimit is not None and slot.memlimit is not None
        return crypto.argon2id(
            material.value.reveal().encode(), slot.salt, slot.opslimit, slot.memlimit
        )
    return crypto.subkey(material.secret, b"vault-keyfile", salt=slot.salt)


def new_slot(
    header: Header | None, root: RootKey, vault_id: str, material: UnlockMaterial, label: str,
    created_at: str, kdf: str = "moderate", slot_id: int | None = None,
) -> Keyslot:
    if slot_id is None:
        slot_id = header.next_slot_id() if header else 1
    salt = crypto.random_bytes(SALT_BYTES)
    if isinstance(material, Passphrase):
        ops, mem = KDF_PROFILES[kdf]
        slot = Keyslot(slot_id, "passphrase", label, created_at, salt, b"", ops, mem)
    else:
        slot = Keyslot(slot_id, "keyfile", label, created_at, salt, b"")
    wrapped = crypto.seal(_kek(slot, material), root.key, slot.wrap_aad(vault_id, root.term))
    return slot._replace(wrapped_root=wrapped)


def rewrap_slot(slot: Keyslot, header: Header, material: UnlockMaterial, new_root: RootKey) -> Keyslot:
    """Wrap a new root key into an existing slot, which `material` must open."""
    if open_slot(slot, header, material) is None:
        raise UnlockFailed(f"the material given for keyslot {slot.slot_id} does not open it")
    fresh = slot._replace(salt=crypto.random_bytes(SALT_BYTES))
    wrapped = crypto.seal(_kek(fresh, material), new_root.key,
                          fresh.wrap_aad(header.vault_id, new_root.term))
    return fresh._replace(wrapped_root=wrapped)


def open_slot(slot: Keyslot, header: Header, material: UnlockMaterial) -> RootKey | None:
    if slot.kind != material.kind:
        return None
    try:
        key = crypto.unseal(
            _kek(slot, material), slot.wrapped_root,
            slot.wrap_aad(header.vault_id, header.root_term), "keyslot",
        )
    except IntegrityViolation:
        return None
    return RootKey(term=header.root_term, key=key)


def unlock(header: Header, material: UnlockMaterial, slot_id: int | None = None) -> tuple[RootKey, Keyslot]:
    """Try each slot of the material's kind; wrong material fails with one clear message."""
    candidates = [s for s in header.keyslots if s.kind == material.kind
                  and (slot_id is None or s.slot_id == slot_id)]
    if not candidates:
        raise UnlockFailed(f"this vault has no {material.kind} keyslot"
                           + (f" with id {slot_id}" if slot_id is not None else ""))
    for slot in candidates:
        root = open_slot(slot, header, material)
        if root is not None:
            return root, slot
    if isinstance(material, Passphrase):
        raise UnlockFailed("wrong passphrase: no keyslot of this vault opens with it")
    raise UnlockFailed(f"wrong key file: {material.path} opens no keyslot of this vault")


# -- key files -------------------------------------------------------------------------------


def write_key_file(path: str) -> KeyFile:
    """Create a new key file (0600, never overwriting) holding 32 random bytes."""
    secret = crypto.new_key()
    text = KEYFILE_PREFIX + base64.urlsafe_b64encode(secret).decode() + "\n"
    parent = os.path.dirname(path) or "."
    if not os.path.exists(parent):
        raise FileNotFoundError(f"directory {parent} does not exist")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return KeyFile(path=path, secret=secret)


SYSTEMD_CREDENTIAL = "vault.key"


def key_file_from_environment() -> str | None:
    """VAULT_KEY_FILE; else the key systemd handed this service with
    `LoadCredential=vault.key:/etc/vault/service.key` (in $CREDENTIALS_DIRECTORY, a directory
    only the service can read, on a non-swappable file system, gone when the service stops)."""
    path = os.environ.get("VAULT_KEY_FILE")
    if path:
        return path
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and os.path.isfile(os.path.join(credentials, SYSTEMD_CREDENTIAL)):
        return os.path.join(credentials, SYSTEMD_CREDENTIAL)
    return None


def _systemd_credential(path: str, info: os.stat_result) -> bool:
    """systemd hands a credential over as a root:root file and grants the service's user read
    access through an ACL entry, which shows as a group-read bit (the ACL mask): tolerated for
    such a file, in $CREDENTIALS_DIRECTORY, a directory others cannot enter, and nowhere else."""
    if (info.st_uid, info.st_gid) != (0, 0):
        return False
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if not credentials:
        return False
    directory = os.path.realpath(credentials)
    try:
        private = not os.stat(directory).st_mode & 0o007
    except OSError:
        return False
    return private and os.path.dirname(os.path.realpath(path)) == directory


def read_key_file(path: str) -> KeyFile:
    """Read a key file, refusing one that others could read (like ssh does)."""
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang the command.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise UnlockFailed(f"key file {path} does not exist") from None
    except OSError as e:
        raise UnlockFailed(f"key file {path} cannot be opened: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UnlockFailed(f"key file {path} is not a regular file")
        if info.st_mode & (0o037 if _systemd_credential(path, info) else 0o077):
            raise UnsafeFile(
                f"key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
            )
        data = f.read(256)
    text = data.decode("ascii", "replace").strip()
    if not text.startswith(KEYFILE_PREFIX):
        raise UnlockFailed(f"{path} is not a vault key file")
    try:
        secret = base64.urlsafe_b64decode(text[len(KEYFILE_PREFIX):])
    except ValueError:
        raise UnlockFailed(f"{path} is not a vault key file") from None
    if len(secret) != crypto.KEY_BYTES:
        raise UnlockFailed(f"{path} is not a vault key file")
    return KeyFile(path=path, secret=secret)
