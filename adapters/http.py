"""The one place vault builds an HTTP client.

TLS verification is always on: the public roots (or SSL_CERT_FILE / SSL_CERT_DIR), plus a private
CA when VAULT_CA_FILE (or --ca-file) names one. Proxies come from the standard environment
variables (HTTPS_PROXY, NO_PROXY). Nothing here logs a request body or header.
"""

from __future__ import annotations

import os
import ssl

import httpx

from adapters.errors import AdapterError

USER_AGENT = "vault-mail-oauth/0.1"
TIMEOUT = httpx.Timeout(20.0, connect=10.0)


class HttpSetupError(AdapterError):
    pass


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    context = httpx.create_ssl_context(trust_env=True)
    extra = ca_file or os.environ.get("VAULT_CA_FILE")
    if extra:
        try:
            context.load_verify_locations(cafile=extra)
        except (OSError, ssl.SSLError) as e:
            raise HttpSetupError(f"cannot use the CA file {extra}: {e}") from None
    return context


def http_client(ca_file: str | None = None, timeout: httpx.Timeout = TIMEOUT) -> httpx.Client:
    return httpx.Client(
        verify=tls_context(ca_file), timeout=timeout, trust_env=True, follow_redirects=False,
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
    )
