"""Worker processes for the concurrency tests: `python -m tests.workers rotate ...`."""

from __future__ import annotations

import sys
from pathlib import Path

from adapters.keyslots import read_key_file
from domain.secret_value import SecretValue
from vault.bootstrap import Settings, open_vault


def rotate(home: str, store_url: str, key_file: str, client: str, count: int, tag: str) -> None:
    settings = Settings(home=Path(home), store_url=store_url or None)
    material = read_key_file(key_file)
    with open_vault(settings, lambda header: material) as app:
        for i in range(count):
            app.clients.rotate_secret(client, secret=SecretValue(f"{tag}~rotation-{i:04d}-xyz"),
                                      overlap=True)


def crash_after_token_response(home: str, store_url: str, key_file: str, mailbox: str) -> None:
    """Ask for a token whose refresh reaches the provider, then die (like a kill -9) as soon as
    the provider's answer arrives: after the provider rotated, before vault committed."""
    import os

    import httpx

    from adapters.http import tls_context

    class DieOnTokenAnswer(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            if request.url.path.endswith("/token") and response.status_code == 200:
                response.read()
                os._exit(17)
            return response

    ca_file = os.environ.get("VAULT_CA_FILE")
    settings = Settings(home=Path(home), store_url=store_url or None, ca_file=ca_file)
    material = read_key_file(key_file)
    with open_vault(settings, lambda header: material,
                    transport=DieOnTokenAnswer(verify=tls_context(ca_file))) as app:
        app.tokens.access_token(mailbox)
    raise SystemExit("the token request never reached the provider")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "rotate":
        home, store_url, key_file, client, count, tag = args
        rotate(home, store_url, key_file, client, int(count), tag)
    elif command == "crash-after-token-response":
        crash_after_token_response(*args)
    else:
        raise SystemExit(f"unknown worker command {command}")
