"""Tables vault keeps beside eventsourcing's stored_events and stored_snapshots.

Written once for both databases: `{blob}` and `{int}` become BLOB/BYTEA and INTEGER/BIGINT.
- vault_header: the header JSON, its checksum and HMAC (keyslots live in the JSON).
- vault_keys: one wrapped data key per aggregate (TokenRotation rows repeat their grant's key under
  the grant's subject id); deleting a subject's rows crypto-shreds its events. Each row also holds
  the aggregate's newest version with a MAC, so deleting its last events is detected.
  A purged row keeps a tombstone instead: no key, and a MAC (under the row key, derived from
  the root key) over its ids and purge time, so a key deleted by someone else is not a purge.
- vault_settings: non-secret settings shared by every host (expiry thresholds), all rewritten
  together with the settings' version, which the `system:settings` key row records as its head.
- vault_audit / vault_audit_checkpoint: the encrypted, hash-chained audit log and its signed head.
- view_*: read models, maintained in the same transaction as the events they follow; each row
  carries the versions of the aggregates it was projected from.
- Every vault_settings and view_* row carries a MAC (`mac`) over its table and all its columns,
  under a key derived from the root key: plain rows, but none a keyless writer can edit.
"""

SCHEMA_VERSION = "6"

TABLES = [
    """CREATE TABLE IF NOT EXISTS vault_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS vault_header (
        id {int} PRIMARY KEY CHECK (id = 1),
        body TEXT NOT NULL,
        checksum TEXT NOT NULL,
        mac TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS vault_keys (
        originator_id TEXT PRIMARY KEY,
        subject_id TEXT NOT NULL,
        term {int} NOT NULL,
        wrapped {blob},
        created_at TEXT NOT NULL,
        shredded_at TEXT,
        head_version {int},
        head_mac {blob},
        generation {int})""",
    "CREATE INDEX IF NOT EXISTS vault_keys_subject ON vault_keys (subject_id)",
    """CREATE TABLE IF NOT EXISTS vault_settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        version {int},
        mac {blob})""",
    """CREATE TABLE IF NOT EXISTS vault_audit (
        seq {int} PRIMARY KEY,
        prev_hash {blob} NOT NULL,
        header TEXT NOT NULL,
        nonce {blob} NOT NULL,
        ciphertext {blob} NOT NULL,
        entry_hash {blob} NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS vault_audit_checkpoint (
        id {int} PRIMARY KEY CHECK (id = 1),
        size {int} NOT NULL,
        head_hash {blob} NOT NULL,
        signed_at TEXT NOT NULL,
        signature {blob} NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS view_clients (
        client_uuid TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        name_key TEXT NOT NULL UNIQUE,
        provider TEXT NOT NULL,
        cloud TEXT NOT NULL,
        tenant TEXT,
        client_id TEXT NOT NULL,
        auth_method TEXT NOT NULL,
        status TEXT NOT NULL,
        google_testing {int} NOT NULL,
        active_secrets {int} NOT NULL,
        entra_foreign TEXT,
        renewal TEXT,
        registered_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        version {int} NOT NULL,
        mac {blob})""",
    """CREATE TABLE IF NOT EXISTS view_secrets (
        client_uuid TEXT NOT NULL,
        ref TEXT NOT NULL,
        kind TEXT NOT NULL,
        secret_id TEXT,
        created_on TEXT,
        expires_on TEXT,
        added_at TEXT NOT NULL,
        retired_at TEXT,
        is_current {int} NOT NULL,
        entra_expires_on TEXT,
        at_entra {int},
        client_version {int},
        mac {blob},
        PRIMARY KEY (client_uuid, ref))""",
    """CREATE TABLE IF NOT EXISTS view_grants (
        grant_uuid TEXT PRIMARY KEY,
        rotation_uuid TEXT NOT NULL UNIQUE,
        client_uuid TEXT NOT NULL,
        client_name TEXT NOT NULL,
        provider TEXT NOT NULL,
        google_testing {int} NOT NULL,
        mailbox TEXT NOT NULL,
        mailbox_key TEXT NOT NULL,
        login TEXT,
        protocols TEXT NOT NULL,
        resources TEXT NOT NULL,
        status TEXT NOT NULL,
        status_reason TEXT,
        status_changed_at TEXT,
        method TEXT NOT NULL,
        granted_at TEXT NOT NULL,
        granted_by TEXT NOT NULL,
        rt_present {int},
        rt_generation {int},
        rt_issued_at TEXT,
        rt_last_used_at TEXT,
        last_refresh_at TEXT,
        refreshes {int},
        access_expires TEXT,
        last_error TEXT,
        pending_attempt {int},
        refused_since TEXT,
        probes TEXT,
        updated_at TEXT NOT NULL,
        grant_version {int},
        rotation_version {int},
        mac {blob},
        UNIQUE (client_uuid, mailbox_key))""",
    "CREATE INDEX IF NOT EXISTS view_grants_mailbox ON view_grants (mailbox_key)",
]

VIEW_TABLES = ("view_clients", "view_secrets", "view_grants")
# Each read-model table's primary key (the row a MAC is written back to).
VIEW_KEYS = {"view_clients": ("client_uuid",), "view_secrets": ("client_uuid", "ref"),
             "view_grants": ("grant_uuid",)}
# Columns schema versions 2 to 6 added; a vault created earlier gets them when it is upgraded.
ADDED_COLUMNS = (("vault_settings", "mac", "{blob}"), ("vault_settings", "version", "{int}"),
                 ("view_clients", "mac", "{blob}"),
                 ("view_secrets", "client_version", "{int}"), ("view_secrets", "mac", "{blob}"),
                 ("view_grants", "grant_version", "{int}"),
                 ("view_grants", "rotation_version", "{int}"), ("view_grants", "mac", "{blob}"),
                 ("view_grants", "refused_since", "TEXT"),
                 ("view_grants", "login", "TEXT"),  # schema 3
                 ("view_secrets", "entra_expires_on", "TEXT"),  # schema 4
                 ("view_secrets", "at_entra", "{int}"), ("view_clients", "entra_foreign", "TEXT"),
                 ("view_clients", "renewal", "TEXT"),  # schema 5
                 ("vault_keys", "generation", "{int}"))  # schema 6


def ddl(blob: str, integer: str) -> list[str]:
    return [t.format(blob=blob, int=integer) for t in TABLES]
