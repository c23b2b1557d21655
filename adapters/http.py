"""The one place vault builds an HTTP client.

TLS verification is always on: the public roots (or SSL_CERT_FILE / SSL_CERT_DIR), plus a private
CA when the settings name one (--ca-file, VAULT_CA_FILE). Proxies come from the standard
environment variables (HTTPS_PROXY, NO_PROXY). Nothing here logs a request body or header.
"""

from __future__ import annotations

import ssl

import httpx

from adapters.errors import AdapterError
from domain.errors import OperationFailed

USER_AGENT = "vault-mail-oauth/0.1"
TIMEOUT = httpx.Timeout(20.0, connect=10.0)


class HttpSetupError(OperationFailed, AdapterError):
    pass


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    context = httpx.create_ssl_context(trust_env=True)
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise HttpSetupError(f"cannot use the CA file {ca_file}: {e}") from None
    return context


def http_client(ca_file: str | None = None, timeout: httpx.Timeout = TIMEOUT,
                transport: httpx.BaseTransport | None = None) -> httpx.Client:
    return httpx.Client(
        verify=tls_context(ca_file), timeout=timeout, trust_env=True, follow_redirects=False,
        transport=transport,
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
    )


def transport_failure(error: httpx.TransportError, url: str) -> tuple[str, str, str]:
    """What went wrong reaching `url`, for the domain's classification: (kind, "host:port",
    cause in words). Kinds are domain.diagnosis.NETWORK_CAUSES. Nothing here is a secret: the
    URL is an endpoint, the causes come from the local resolver, socket and TLS library."""
    import socket

    endpoint = _endpoint(url)
    chain: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    root = chain[-1]
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "tls", endpoint, f"TLS failure: certificate not trusted ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return "tls", endpoint, f"TLS failure: {cause.reason or cause}"
        if isinstance(cause, socket.gaierror):
            if cause.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)):
                return "dns", endpoint, "name not found"
            return "dns", endpoint, f"name lookup failed ({cause.strerror or cause})"
        if isinstance(cause, ConnectionRefusedError):
            return "refused", endpoint, "connection refused"
    if isinstance(error, httpx.ProxyError):
        return "proxy", endpoint, f"the proxy failed ({root})"
    if isinstance(error, httpx.ConnectTimeout):
        return "timeout", endpoint, "timed out connecting"
    if isinstance(error, httpx.TimeoutException):
        return "timeout", endpoint, "timed out waiting for the answer"
    if isinstance(error, httpx.RemoteProtocolError):
        return "protocol", endpoint, "the server closed the connection without an HTTP answer"
    if isinstance(error, httpx.ReadError | httpx.WriteError) or isinstance(
            root, ConnectionResetError | BrokenPipeError):
        return "reset", endpoint, "the connection was reset"
    if isinstance(root, OSError) and root.strerror:
        return "other", endpoint, root.strerror.lower()
    return "other", endpoint, type(error).__name__


def _endpoint(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "?"
    port = parsed.port or {"https": 443, "http": 80}.get(parsed.scheme)
    host = parsed.host or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host
