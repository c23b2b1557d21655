"""Composition: the one place that picks concrete adapters, creates a vault, unlocks one, and
builds its services (`Vault`).

Unlocking: read the header, check its checksum and KDF bounds (no key needed), obtain the unlock
material (key file, passphrase), open a keyslot, then check the header's HMAC with the root key.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from adapters import crypto
from adapters.errors import IntegrityViolation
from adapters.keyring import (
    AUDIT_KEY_ID,
    ROWS_KEY_ID,
    SETTINGS_KEY_ID,
    SIGNING_KEY_ID,
    RowSealer,
    head_mac,
)
from adapters.keyslots import (
    Header,
    KeyFile,
    Passphrase,
    RootKey,
    UnlockMaterial,
    new_slot,
    seal_header,
    unlock,
)
from adapters.store import Head, KeyRow, Store, open_store
from adapters.store.changes import Changes
from vault.audit import AuditRecord, AuditSealer, os_actor
from vault.core import VaultCore, system_clock
from vault.errors import AlreadyExists, BadInput
from vault.providers import Providers
from vault.reads import REQUIRED_SETTINGS
from vault.services.alerts import AlertService
from vault.services.audit import AuditService
from vault.services.backups import BackupService
from vault.services.clients import ClientService
from vault.services.consent import ConsentService
from vault.services.entra import EntraService
from vault.services.grants import GrantService
from vault.services.importers import ImportService
from vault.services.keys import KeyService
from vault.services.maintenance import MaintenanceService
from vault.services.probes import ProbeService
from vault.services.reports import ReportService
from vault.services.tokens import TokenService

Sleep = Callable[[float], None]


class Vault:
    """Every use case of an unlocked vault, one service per topic, over one encrypted event store
    (`core`) and one HTTP client (`providers`); closing it closes both."""

    def __init__(self, core: VaultCore, *, ca_file: str | None = None, sleep: Sleep = time.sleep,
                 transport: Any = None) -> None:
        self.core = core
        self.providers = providers = Providers(ca_file, transport)
        self.clients = clients = ClientService(core, providers=providers, sleep=sleep)
        self.grants = grants = GrantService(core, clients=clients, providers=providers)
        self.tokens = tokens = TokenService(core, clients=clients, grants=grants,
                                            providers=providers, sleep=sleep)
        self.consent = ConsentService(core, clients=clients, grants=grants, providers=providers,
                                      sleep=sleep)
        self.probes = probes = ProbeService(core, grants=grants, tokens=tokens,
                                            providers=providers)
        self.entra = entra = EntraService(core, clients=clients, providers=providers, sleep=sleep)
        self.keys = KeyService(core)
        self.audit = audit = AuditService(core)
        self.reports = reports = ReportService(core, clients=clients, grants=grants, audit=audit)
        self.alerts = alerts = AlertService(core, grants=grants, reports=reports, probes=probes,
                                            tokens=tokens, providers=providers, sleep=sleep)
        self.maintenance = MaintenanceService(core, tokens=tokens, probes=probes, alerts=alerts,
                                              audit=audit, entra=entra)
        self.backups = BackupService(core)
        self.importers = ImportService(core, clients=clients, grants=grants)

    @property
    def warnings(self) -> list[str]:
        """For the admin, printed after the command's output."""
        return self.core.warnings

    def close(self) -> None:
        try:
            self.providers.close()
        finally:
            self.core.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Settings:
    home: Path
    store_url: str | None = None
    ca_file: str | None = None  # a private CA for HTTPS, besides the public roots

    @property
    def location(self) -> str:
        if self.store_url:
            from adapters.store.postgres import redact_url

            return redact_url(self.store_url)
        return str(self.home)


def default_home() -> Path:
    from platformdirs import user_data_path

    return user_data_path("vault", appauthor=False)


def settings_from_env(home: str | None = None, ca_file: str | None = None) -> Settings:
    try:
        home_path = Path(home or os.environ.get("VAULT_HOME") or default_home()).expanduser()
    except RuntimeError as e:  # "~name" of a user this system does not know
        raise BadInput(f"the vault home: {e}") from None
    return Settings(home=home_path, store_url=os.environ.get("VAULT_STORE") or None,
                    ca_file=ca_file or os.environ.get("VAULT_CA_FILE") or None)


def open_settings_store(settings: Settings, *, create: bool = False,
                        read_only: bool = False) -> Store:
    return open_store(settings.home, settings.store_url, create=create, read_only=read_only)


def init_vault(
    settings: Settings, materials: list[tuple[UnlockMaterial, str]], *, kdf: str = "moderate",
    clock: Callable[[], datetime] = system_clock, actor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create a vault: header with one keyslot per material, system keys, first audit entry."""
    store = open_settings_store(settings, create=True)
    try:
        if store.is_initialised():
            raise AlreadyExists(f"a vault already exists in {settings.location}")
        store.create_schema()
        now = clock()
        vault_id = str(uuid4())
        root = RootKey(term=1, key=crypto.new_key())
        signing_seed, audit_key = crypto.new_key(), crypto.new_key()
        rows_key, settings_key = crypto.new_key(), crypto.new_key()
        slots = [new_slot(None, root, vault_id, material, label, now.isoformat(), kdf=kdf,
                          slot_id=number)
                 for number, (material, label) in enumerate(materials, start=1)]
        public_key = bytes(crypto.signing_key(signing_seed).verify_key)
        header = Header(vault_id=vault_id, created_at=now.isoformat(), root_term=1,
                        audit_public_key=public_key, keyslots=tuple(slots), row_macs=True)
        keyring_rows = [_system_key_row(root, vault_id, key_id, key, now)
                        for key_id, key in ((AUDIT_KEY_ID, audit_key),
                                            (SIGNING_KEY_ID, signing_seed),
                                            (ROWS_KEY_ID, rows_key),
                                            (SETTINGS_KEY_ID, settings_key))]
        record = AuditRecord("init", detail={
            "keyslots": [f"{s.slot_id}:{s.kind}" for s in slots], "kdf": kdf})
        sealer = AuditSealer(audit_key, signing_seed, vault_id, record, actor or os_actor(), now,
                             first=True)
        try:
            store.commit([], Changes(header=(None, seal_header(header, root)),
                                     keys=keyring_rows, key_term=root.term, audit=sealer,
                                     settings=dict(REQUIRED_SETTINGS), settings_version=1,
                                     heads=[Head(SETTINGS_KEY_ID, 1, head_mac(
                                         settings_key, SETTINGS_KEY_ID, 1))],
                                     rows=RowSealer(rows_key, vault_id)))
        except Exception as e:
            if store.is_initialised():
                raise AlreadyExists(f"a vault already exists in {settings.location}") from e
            raise
        return {"vault_id": vault_id, "location": settings.location,
                "keyslots": [{"id": s.slot_id, "kind": s.kind, "label": s.label}
                             for s in slots]}
    finally:
        store.close()


def _system_key_row(root: RootKey, vault_id: str, key_id: str, key: bytes,
                    now: datetime) -> KeyRow:
    aad = crypto.aad(b"vault-data-key-v1", vault_id, key_id, key_id, root.term)
    return KeyRow(key_id, key_id, root.term, crypto.seal(root.key, key, aad), now.isoformat())


MaterialSource = Callable[[Header], UnlockMaterial]


def open_vault(
    settings: Settings, material_source: MaterialSource, *,
    clock: Callable[[], datetime] = system_clock, actor: dict[str, Any] | None = None,
    slot_id: int | None = None, sleep: Sleep = time.sleep, transport: Any = None,
) -> Vault:
    """The vault `settings` name, unlocked, upgraded if it is from an older version.
    `sleep` is what back-off and polling wait with; `transport` answers HTTP instead of the
    network (httpx's MockTransport, in tests)."""
    core = unlock_store(open_settings_store(settings), material_source, clock=clock,
                        actor=actor, slot_id=slot_id)
    app = Vault(core, ca_file=settings.ca_file, sleep=sleep, transport=transport)
    try:
        app.maintenance.upgrade()
    except BaseException:
        app.close()
        raise
    return app


def unlock_store(
    store: Store, material_source: MaterialSource, *,
    clock: Callable[[], datetime] = system_clock, actor: dict[str, Any] | None = None,
    slot_id: int | None = None,
) -> VaultCore:
    """The vault in `store`, unlocked (the store is closed if that fails)."""
    try:
        sealed = store.read_header()
        header = sealed.parse()  # checksum and KDF bounds before any KDF runs
        material = material_source(header)
        root, slot = unlock(header, material, slot_id)
        sealed.verify_mac(root)
        return VaultCore(store=store, header=header, header_checksum=sealed.checksum,
                         root=root, unlocked_with=slot, clock=clock, actor=actor,
                         unlock_material=material)
    except BaseException:
        store.close()
        raise


def read_public_header(settings: Settings) -> tuple[Store, Header]:
    """For keyless commands (audit verify, checkpoint export): the header, never unlocked."""
    store = open_settings_store(settings, read_only=True)
    try:
        return store, store.read_header().parse()
    except BaseException:
        store.close()
        raise


__all__ = [
    "IntegrityViolation", "KeyFile", "Passphrase", "Settings", "Vault", "init_vault",
    "open_vault", "read_public_header", "settings_from_env",
]
