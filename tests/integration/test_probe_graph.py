"""Graph probes against `vault sandbox`'s sliver of Microsoft Graph: delegated and app-only."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from tests.conftest import Harness, add_sandbox_client
from tests.consent import SANDBOX_MAILBOX as MAILBOX
from tests.consent import sandbox_consent


def _graph_args(server) -> list[str]:
    port = urlsplit(server.base_url).port
    return ["--protocol", "graph", "--host", "127.0.0.1", "--port", str(port), "--tls", "plain"]


def test_delegated_graph_probe_reads_the_inbox(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    sandbox_consent(vault, sandbox, protocols=("imap", "graph"))
    result = vault.ok("probe", MAILBOX, *_graph_args(sandbox), "--json")
    (graph,) = json.loads(result.out)
    assert (graph["outcome"], graph["detail"]["messages"]) == ("ok", 3)
    shown = json.loads(vault.ok("grant", "show", MAILBOX, "--json").out)
    assert shown["probes"]["graph"]["outcome"] == "ok"
    status = json.loads(vault.ok("status", "--json").out)
    assert status["grants"][0]["probes"] == {"graph": "ok"}


def test_app_only_graph_probe_uses_the_users_path(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    vault.ok("grant", "add-app", "--client", "demo", "--mailbox", "shared@contoso.com",
             "--protocols", "graph")
    (graph,) = json.loads(vault.ok("probe", "shared@contoso.com", *_graph_args(sandbox),
                                   "--json").out)
    assert graph["outcome"] == "ok" and graph["detail"]["messages"] == 3


def test_a_refused_graph_token_is_explained_and_exits_1(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    sandbox_consent(vault, sandbox, protocols=("graph",))
    sandbox.state.access_tokens.clear()  # the provider forgot every token (revoked)
    result = vault.run("probe", MAILBOX, *_graph_args(sandbox))
    assert result.code == 1 and "refused" in result.out
    assert "InvalidAuthenticationToken" in result.out
    token = vault.ok("token", MAILBOX, "--protocol", "graph").out.strip()
    assert token not in result.text and token.encode() not in vault.stored_bytes()


def test_graph_over_untrusted_tls_and_plaintext_rules(vault: Harness, sandbox) -> None:
    add_sandbox_client(vault, sandbox)
    sandbox_consent(vault, sandbox, protocols=("graph",))
    port = urlsplit(sandbox.base_url).port
    # https to a plain-HTTP server: the handshake fails; never a silent downgrade
    result = vault.run("probe", MAILBOX, "--protocol", "graph", "--host", "127.0.0.1",
                       "--port", str(port), "--json")
    (graph,) = json.loads(result.out)
    assert result.code == 1 and graph["outcome"] in ("tls", "network")
