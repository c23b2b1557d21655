"""P14: hostile input never crashes the CLI: only documented exit codes, never a traceback."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Harness, add_client, import_grant

WORDS = ["client", "grant", "key", "audit", "admin", "config", "status", "expiry", "history",
         "add", "list", "show", "remove", "import", "revoke", "rotate-secret", "retire-secret",
         "set-secret-dates", "verify", "log", "checkpoint", "set", "passwd", "rotate",
         "jira", "help@contoso.com", "--json", "--format", "json", "xml", "--as-of", "--within",
         "--check", "--client", "--mailbox", "--protocols", "imap,graph", "--reason", "--purge",
         "--provider", "microsoft", "google", "custom", "--tenant", "common", "--client-id",
         "--secret-stdin", "--secret-file", "--refresh-token-stdin", "--scopes", "--limit",
         "-1", "0", "2026-02-30", "--expires", "--reveal-secret", "--export", "--trusted",
         "--drop-slot", "--kdf", "sensitive", "s1", "s99", "--cloud", "gcc-high", "--home"]
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=40)
ARGS = st.lists(st.one_of(st.sampled_from(WORDS), TEXT), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(args=ARGS, stdin=st.one_of(st.none(), TEXT))
def test_hostile_arguments_get_a_documented_exit_code(sqlite_vault: Harness, args, stdin) -> None:
    if not getattr(sqlite_vault, "_seeded", False):
        add_client(sqlite_vault)
        import_grant(sqlite_vault)
        sqlite_vault._seeded = True
    if "--home" in args or "--export" in args:
        args = [a for a in args if a not in ("--home", "--export")]
    result = sqlite_vault.run(*args, input=stdin)
    assert result.code in (0, 1, 2, 3, 4, 5), (args, result.text)
    assert "Traceback" not in result.text, (args, result.text)
    assert "internal error" not in result.text, (args, result.text)
