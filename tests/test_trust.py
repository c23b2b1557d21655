"""What a keyless writer can do to the database must never be vouched for (issue 9, items 1-4, 6).

Each test edits the database as someone with write access but no key would, then checks that the
next command refuses with exit 5 instead of extending, showing or acting on what was edited.
"""

from __future__ import annotations

import pytest

from tests.conftest import Harness, add_client, import_grant
from vault.audit import entry_hash


def _verify(h: Harness):
    return h.run("audit", "verify", VAULT_KEY_FILE=None)


@pytest.fixture
def used(vault: Harness) -> Harness:
    add_client(vault)
    import_grant(vault)
    for _ in range(4):
        vault.ok("status")
    return vault


# -- 1. appends extend only a proven log ---------------------------------------------------------

def _recompute_chain_without(h: Harness, seq: int) -> None:
    """Delete entry `seq`, renumber the later ones and recompute every hash after it: a chain
    that is consistent, but no longer the one the head was signed over."""
    rows = h.sql("SELECT seq, prev_hash, header, nonce, ciphertext, entry_hash FROM vault_audit "
                 "ORDER BY seq")
    h.sql("DELETE FROM vault_audit WHERE seq >= ?", (seq,))
    prev = bytes(rows[seq - 2][5])
    for old in rows[seq:]:
        new_seq = old[0] - 1
        digest = entry_hash(new_seq, prev, old[2], bytes(old[3]), bytes(old[4]))
        h.sql("INSERT INTO vault_audit (seq, prev_hash, header, nonce, ciphertext, entry_hash) "
              "VALUES (?, ?, ?, ?, ?, ?)", (new_seq, prev, old[2], bytes(old[3]),
                                            bytes(old[4]), digest))
        prev = digest


@pytest.mark.parametrize("cut", ["tail", "all entries", "entries and head", "middle, rechained"])
def test_an_append_never_re_signs_a_cut_log(used: Harness, cut: str) -> None:
    size = used.sql("SELECT MAX(seq) FROM vault_audit")[0][0]
    if cut == "tail":
        used.sql("DELETE FROM vault_audit WHERE seq > ?", (size - 3,))
    elif cut == "all entries":
        used.sql("DELETE FROM vault_audit")
    elif cut == "entries and head":
        used.sql("DELETE FROM vault_audit")
        used.sql("DELETE FROM vault_audit_checkpoint")
    else:
        _recompute_chain_without(used, 3)
    assert _verify(used).code == 5
    for args in (("status",), ("client", "list"), ("token", "help@contoso.com")):
        refused = used.run(*args)
        assert refused.code == 5, (args, refused.text)
        assert "audit log" in refused.err and "Traceback" not in refused.text
    if cut == "tail":
        assert f"entries {size - 2}-{size} were deleted" in refused.err
    # nothing was appended or re-signed: the cut is still there for verify to see
    assert _verify(used).code == 5
    assert used.sql("SELECT COUNT(*) FROM vault_audit")[0][0] < size


def test_the_cached_token_path_refuses_a_cut_log_too(used: Harness) -> None:
    from tests.conftest import record_refreshes

    app = used.app()
    try:
        record_refreshes(app, "help@contoso.com", 1)
    finally:
        app.close()
    assert used.ok("token", "help@contoso.com").out.startswith("AT-RT-000000")
    before = used.sql("SELECT MAX(seq) FROM vault_audit")[0][0]
    used.sql("DELETE FROM vault_audit WHERE seq = ?", (before,))
    refused = used.run("token", "help@contoso.com")
    assert refused.code == 5 and refused.out == ""
    assert used.sql("SELECT MAX(seq) FROM vault_audit")[0][0] == before - 1
