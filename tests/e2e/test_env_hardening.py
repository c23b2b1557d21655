"""eventsourcing reads settings from environment variables (prefixed with the application's name,
or not at all). None of them may switch off persistence or encryption."""

from __future__ import annotations

import json

import pytest
from eventsourcing.persistence import Mapper

from adapters.encryption import EncryptedMapper
from tests.conftest import Harness, add_client
from vault.core import VaultCore
from vault.errors import WiringError

SENTINEL = "EnvHardening~secret-0123456789"
HOSTILE = {
    prefix + name: value
    for prefix in ("", "VAULT_", "VAULTAPPLICATION_", "VAULTCORE_", "APPLICATION_")
    for name, value in {
        "PERSISTENCE_MODULE": "eventsourcing.popo",
        "INFRASTRUCTURE_FACTORY": "eventsourcing.popo",
        "MAPPER_TOPIC": "eventsourcing.persistence:Mapper",
        "CIPHER_TOPIC": "eventsourcing.cipher:AESCipher",
        "CIPHER_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor",
        "TRANSCODER_TOPIC": "eventsourcing.persistence:JSONTranscoder",
        "IS_SNAPSHOTTING_ENABLED": "no",
        "SQLITE_DBNAME": ":memory:",
        "CREATE_TABLE": "no",
        "APPLICATION_RECORDER_TOPIC": "eventsourcing.popo:POPOApplicationRecorder",
    }.items()
}


def test_stray_eventsourcing_variables_change_nothing(vault: Harness, monkeypatch) -> None:
    for name, value in HOSTILE.items():
        monkeypatch.setenv(name, value)
    add_client(vault, secret=SENTINEL)
    with vault.app() as app:
        assert type(app.core.mapper) is EncryptedMapper
        assert app.core.mapper.cipher is None and app.core.mapper.compressor is None
        assert app.core.recorder is app.core.store.recorder and app.core.snapshots is not None
    for name in HOSTILE:
        monkeypatch.delenv(name)
    shown = json.loads(vault.ok("client", "show", "jira", "--reveal-secret", "--json").out)
    assert shown["secret"] == SENTINEL  # persisted in the real store ...
    assert SENTINEL.encode() not in vault.stored_bytes()  # ... and encrypted


def test_the_application_refuses_to_start_with_another_mapper(vault: Harness) -> None:
    class Plain(VaultCore):
        def construct_mapper(self):
            return Mapper(transcoder=super().construct_mapper().transcoder)

    from adapters.keyslots import read_key_file, unlock
    from vault.bootstrap import open_settings_store

    store = open_settings_store(vault.settings)
    sealed = store.read_header()
    header = sealed.parse()
    root, slot = unlock(header, read_key_file(str(vault.key_file)))
    with pytest.raises(WiringError, match="mapper is Mapper"):
        Plain(store=store, header=header, header_checksum=sealed.checksum, root=root,
              unlocked_with=slot)
    store.close()


def test_use_cases_never_override_eventsourcing_application_methods() -> None:
    """A core method named like one of Application's (`_record` once was) would silently
    replace the library's persistence step."""
    from eventsourcing.application import Application

    overridden = {"__init__", "close", "construct_env", "construct_factory", "construct_mapper",
                  "construct_recorder", "construct_snapshot_store", "name",
                  "snapshotting_intervals", "snapshotting_projectors",
                  "take_snapshot"}  # on purpose: the key a re-encryption replaced is read again
    ours = {name for cls in VaultCore.__mro__
            if cls.__module__.split(".")[0] in ("vault", "domain", "adapters")
            for name in vars(cls) if not name.startswith("__")}
    assert (ours & set(dir(Application))) - overridden == set()
