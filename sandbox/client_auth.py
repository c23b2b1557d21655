"""Client authentication at the token endpoint, as Entra ID checks it: one of the app's secrets
(in the form or by HTTP Basic), or a private_key_jwt client assertion signed by a registered
certificate. A secret added through Graph's addPassword is refused until it has propagated (Entra
answers AADSTS7000215 for the first seconds or minutes), an expired one is AADSTS7000222, and a
removed one is simply not the app's any more: 7000215."""

from __future__ import annotations

import base64
import hmac
import json
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote

from adapters.crypto import b64url, b64url_decode
from sandbox.failures import SandboxError

if TYPE_CHECKING:
    from sandbox.directory import Application
    from sandbox.state import SandboxState

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def authenticate(state: SandboxState, form: dict[str, str], authorization: str,
                 endpoint_path: str) -> Application:
    """The app the request names and proves it is, or SandboxError. `authorization` is the
    Authorization header ("" without one); an assertion's audience must end with
    `endpoint_path`."""
    if form.get("client_assertion_type") == JWT_BEARER:
        return _check_assertion(state, form, endpoint_path)
    client_id, secret = form.get("client_id"), form.get("client_secret")
    if authorization.startswith("Basic "):
        try:
            pair = base64.b64decode(authorization[6:]).decode()
        except ValueError:
            pair = ""  # names no app: 700016 below
        left, _, right = pair.partition(":")
        client_id, secret = unquote(left), unquote(right)
    app = state.applications.get(client_id or "")
    if app is None:
        raise SandboxError(700016)
    now = state.clock()
    with state.lock:
        matching = [p for p in app.passwords if secret is not None
                    and hmac.compare_digest(secret.encode(), p.secret.encode())]
    if not matching or now < matching[0].usable_from:
        raise SandboxError(7000215)
    if now > matching[0].end:
        raise SandboxError(7000222)
    return app


def _check_assertion(state: SandboxState, form: dict[str, str],
                     endpoint_path: str) -> Application:
    """The certificate is found by its `x5t#S256` (SHA-256 of the DER) or `x5t` (SHA-1)
    thumbprint among those registered; the signature is PS256 (RSASSA-PSS, SHA-256, MGF1,
    32-byte salt: RFC 7518) or RS256 (PKCS#1 v1.5); anything else fails signature validation
    (700027). An assertion outside its nbf/exp window is 700024."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        head, body, signature = form.get("client_assertion", "").split(".")
        header = json.loads(b64url_decode(head))
        claims = json.loads(b64url_decode(body))
        raw_signature = b64url_decode(signature)
    except ValueError:
        raise SandboxError(700027) from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise SandboxError(700027)
    app = state.applications.get(str(claims.get("iss")))
    if app is None or claims.get("sub") != app.app_id:
        raise SandboxError(700016)
    if not str(claims.get("aud", "")).endswith(endpoint_path):
        raise SandboxError(700027)
    now = time.time()
    try:
        if float(claims.get("exp", 0)) < now or float(claims.get("nbf", 0)) > now + 300:
            raise SandboxError(700024)
    except (TypeError, ValueError):
        raise SandboxError(700027) from None
    pads = {"PS256": padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                 salt_length=padding.PSS.DIGEST_LENGTH),
            "RS256": padding.PKCS1v15()}
    pad = pads.get(header.get("alg"))
    if pad is None:
        raise SandboxError(700027)
    for certificate in list(app.certificates):
        if "x5t#S256" in header:
            matches = b64url(certificate.fingerprint(hashes.SHA256())) == header["x5t#S256"]
        else:
            matches = b64url(certificate.fingerprint(hashes.SHA1())) == header.get(  # noqa: S303
                "x5t")
        if not matches:
            continue
        try:
            certificate.public_key().verify(raw_signature, f"{head}.{body}".encode(), pad,
                                            hashes.SHA256())
        except InvalidSignature:
            raise SandboxError(700027) from None
        with state.lock:
            state.assertions.append(
                {k: header[k] for k in ("alg", "x5t", "x5t#S256") if k in header})
        return app
    raise SandboxError(700027)
