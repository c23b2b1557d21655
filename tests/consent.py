"""Consents run in-process, as a person at the browser would give them: one `consent()` for every
test that needs a grant from a real flow, with a `ScriptedConsent` for the peer signed in at
(the oidc-provider peer, or `vault sandbox`)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import httpx

from tests.support import Sleeps

SignIn = Callable[[str, str, str], str]  # (authorize URL, user, password) -> the final redirect


def sandbox_sign_in(url: str, user: str, password: str) -> str:
    """Sign in at `vault sandbox`'s authorize page; the redirect it answers with."""
    page = httpx.get(url).text
    form = {k: unescape(v) for k, v in re.findall(r"name='([^']+)' value='([^']*)'", page)}
    form.update(username=user, password=password)
    return httpx.post(url.split("?")[0], data=form).headers["location"]


def sandbox_approve(uri: str, user_code: str, user: str, password: str) -> None:
    """Approve a device code at `vault sandbox`'s verification page."""
    httpx.post(uri, data={"user_code": user_code, "username": user, "password": password})


class ScriptedConsent:
    """The person at the browser, scripted: signs in over HTTP and lets the redirect reach
    vault's loopback listener (browser flow), pastes it back (manual flow), or approves the
    device code (device flow)."""

    def __init__(self, sign_in: SignIn, username: str, password: str,
                 device_approver: Callable[[str, str, str, str], None] | None = None) -> None:
        self.sign_in = sign_in
        self.username, self.password = username, password
        self.redirect: str | None = None
        self.device_approver = device_approver

    @classmethod
    def at_oidc(cls, peer: Any, user: str, password: str) -> ScriptedConsent:
        return cls(peer.complete_authorization, user, password, peer.approve_device_code)

    @classmethod
    def at_sandbox(cls, user: str, password: str = "sandbox") -> ScriptedConsent:
        return cls(sandbox_sign_in, user, password, sandbox_approve)

    def open_browser(self, url: str) -> bool:
        def person() -> None:
            redirect = self.sign_in(url, self.username, self.password)
            httpx.get(redirect, timeout=10)

        threading.Thread(target=person, daemon=True).start()
        return True

    def show_authorize_url(self, url: str, opened: bool) -> None:
        if not opened:
            self.redirect = self.sign_in(url, self.username, self.password)

    def read_redirect_url(self) -> str:
        assert self.redirect is not None
        return self.redirect

    def show_device_code(self, device: Any) -> None:
        assert self.device_approver is not None, "this consent has no device approver"
        self.device_approver(device.verification_uri, device.user_code, self.username,
                             self.password)


# People of the oidc-provider peer (tests/peers/oidc), with their passwords.
ALICE = ("alice@example.test", "alice-password-123")
BOB = ("bob@example.test", "bob-password-123")
# signs in as `carol` (the token's subject, the mail server's login); her mailbox and email
# claim are carol@example.test
CAROL = ("carol", "carol-password-123")
CAROL_MAILBOX = "carol@example.test"
SANDBOX_MAILBOX = "carol@contoso.com"


def consent_two_hours_ago(h: Any, sign_in: SignIn, client: str,
                          user: tuple[str, str] = ALICE) -> None:
    """A consent recorded with a clock two hours back: its access token is already expired."""
    past = datetime.now(UTC) - timedelta(hours=2)
    consent(h, ScriptedConsent(sign_in, *user), client=client, mailbox=user[0],
            clock=lambda: past)


def oidc_consent(h: Any, peer: Any, flow: str = "manual", *, client: str = "idp",
                 protocols: tuple[str, ...] = ("imap",), user: tuple[str, str] = ALICE,
                 mailbox: str | None = None, **kwargs: Any) -> Any:
    """A consent at the oidc-provider peer, signed in as `user`, for their own mailbox unless
    another is named."""
    return consent(h, ScriptedConsent.at_oidc(peer, *user), client=client,
                   mailbox=mailbox if mailbox is not None else user[0], protocols=protocols,
                   flow=flow, **kwargs)


def sandbox_consent(h: Any, server: Any, flow: str = "manual",
                    clock: Callable[[], datetime] | None = None, mailbox: str = SANDBOX_MAILBOX,
                    client: str = "demo", **kwargs: Any) -> Any:
    """A consent for `mailbox` at `vault sandbox` (a client added by add_sandbox_client), signed
    in as that mailbox. A clock given moves the sandbox's clock too: it stamps its ID tokens with it."""
    if clock is not None:
        server.state.clock = lambda: clock().timestamp()
    return consent(h, ScriptedConsent.at_sandbox(mailbox), client=client, mailbox=mailbox,
                   flow=flow, clock=clock, **kwargs)


def sandbox_fail_next(server: Any, code: int = 0, count: int = 1, status: int | None = None) -> None:
    """Make the sandbox's token endpoint answer the next `count` requests with AADSTS `code`
    (or the HTTP `status`)."""
    query = f"code={code}&count={count}" + (f"&status={status}" if status else "")
    httpx.post(f"{server.base_url}/sandbox/fail?{query}")


def consent(h: Any, ui: ScriptedConsent, *, client: str, mailbox: str,
            protocols: tuple[str, ...] = ("imap",), flow: str = "manual",
            clock: Callable[[], datetime] | None = None, sleep: Callable[[float], None] | None = None,
            warnings: list[str] | None = None, **kwargs: Any) -> Any:
    """Run `vault consent` in-process on the harness `h` (the clock and sleep injected; waits
    recorded, never slept); the grant's summary. `warnings` collects what it told the admin."""
    with h.app(clock=clock, sleep=sleep if sleep is not None else Sleeps()) as app:
        result = app.consent.consent(client, mailbox=mailbox, protocols=protocols, flow=flow,
                                     ui=ui, timeout=30, **kwargs)
        if warnings is not None:
            warnings.extend(app.warnings)
    return result
