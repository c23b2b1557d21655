"""Fixtures of the end-to-end tier: the `vault` command through its entry point."""

from __future__ import annotations

import pytest

from tests.conftest import Harness, add_sandbox_client
from tests.consent import sandbox_consent


@pytest.fixture
def granted(sqlite_vault: Harness, sandbox) -> Harness:
    """A grant for IMAP and SMTP with a cached access token, which the cached-token path can
    serve."""
    add_sandbox_client(sqlite_vault, sandbox)
    sandbox_consent(sqlite_vault, sandbox, protocols=("imap", "smtp"))
    return sqlite_vault
