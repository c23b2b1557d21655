"""The consent use case: authorization code with PKCE (browser or manual) or device code, ending in
a ConsentGrant and the first tokens in its TokenRotation, audited.

The code is redeemed once and never retried (AADSTS54005). The `state` is checked in constant
time. The provider's ID token (asked for with the OpenID scopes, a nonce on the authorize request)
is verified and must name the mailbox, or the --account consenting for it; otherwise nothing is
stored. Talking to the person (printing the URL, opening the browser, reading a pasted redirect)
is the caller's: a `ConsentUI`.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from adapters.store.changes import Changes
from domain.credentials import ClientCredential
from domain.grants import ConsentGrant, grant_plan
from domain.identity import (
    NOT_CHECKED_NO_ID_TOKEN,
    NOT_CHECKED_NO_ISSUER,
    check_account_name,
    identity_scopes,
    not_checked,
    signed_in_account,
)
from domain.mailboxes import check_login, check_mailbox
from domain.rotation import TokenRotation
from domain.secret_value import SecretValue
from domain.vocabulary import ACTIVE, CONSENT_FLOWS
from vault.core import apply_views, use_case
from vault.errors import AlreadyExists, BadInput, OperationFailed
from vault.projections import grant_changes, rotation_changes
from vault.services.grants import GrantSummary, grant_summary
from vault.services.tokens import TokenRefreshFailed

if TYPE_CHECKING:  # the HTTP client and the loopback server are imported by a consent itself
    from adapters.id_token import OpenIdProvider
    from adapters.loopback import Redirect
    from adapters.oauth import DeviceAuthorization, OAuthClient, Tokens
    from vault.core import VaultCore
    from vault.providers import Providers
    from vault.services.clients import ClientService
    from vault.services.grants import GrantService

MANUAL_REDIRECT = "http://127.0.0.1/callback"


class ConsentUI(Protocol):
    def open_browser(self, url: str) -> bool: ...

    def show_authorize_url(self, url: str, opened: bool) -> None: ...

    def read_redirect_url(self) -> str: ...

    def show_device_code(self, device: DeviceAuthorization) -> None: ...


class ConsentFailed(OperationFailed):
    pass


def _loopback_target(redirect_uri: str | None) -> tuple[str, int, str]:
    """Path, port (0: any free port) and host name of the registered loopback redirect URI."""
    if redirect_uri and redirect_uri.startswith(("http://127.0.0.1", "http://localhost")):
        from urllib.parse import urlsplit

        parts = urlsplit(redirect_uri)
        return parts.path or "/", parts.port or 0, parts.hostname or "127.0.0.1"
    return "/callback", 0, "127.0.0.1"


@dataclass(eq=False)
class ConsentService:
    core: VaultCore
    clients: ClientService
    grants: GrantService
    providers: Providers
    sleep: Callable[[float], None]

    @use_case("consent")
    def consent(
        self, client: str, *, mailbox: str, protocols: tuple[str, ...], flow: str,
        ui: ConsentUI, open_browser: bool = True, timeout: float = 300.0,
        replace: bool = False, account: str | None = None, login: str | None = None,
    ) -> GrantSummary:
        """`account`: who signs in, where not the mailbox; `login`: the mail server's user
        name, where not the mailbox (kept from an earlier grant when None)."""
        from adapters.oauth import OAuthFailure

        if flow not in CONSENT_FLOWS:
            raise BadInput(f"--flow must be one of {', '.join(CONSENT_FLOWS)}")
        mailbox = check_mailbox(mailbox)
        expected = check_account_name(account) if account is not None else mailbox
        login = check_login(login) if login is not None else None  # before anyone signs in
        credential: ClientCredential = self.clients.credential(client)
        self.core.broker.record.subject["mailbox"] = mailbox
        self.core.broker.record.detail.update({"flow": flow, "protocols": list(protocols)})
        if account is not None:
            self.core.broker.record.detail["account"] = expected
        if login is not None:
            self.core.broker.record.detail["login"] = login
        plan = grant_plan(credential, protocols, None, flow)
        if flow == "device" and credential.provider == "google":
            raise BadInput("Google's device flow does not allow the Gmail scope: use "
                           "--flow browser or --flow manual")
        existing = self.core.reads.grants_of(str(credential.id), mailbox)
        if existing and existing[0].status == ACTIVE and not replace:
            raise AlreadyExists(f"{mailbox} already has an active grant under "
                                f"{credential.name!r}: add --replace to consent again")
        first = plan.first()
        # RFC 8707: the authorization names every resource the grant's tokens will be for, and
        # each token request the one it wants
        resources = tuple(dict.fromkeys(plan.indicators.values()))
        indicator = first if first in resources else None
        oauth = self.providers.oauth(credential)
        # Before anyone signs in: where the provider publishes its keys, which scopes it knows.
        openid = self._openid_provider(credential, oauth)
        identity = list(identity_scopes(credential.provider, openid is not None,
                                        openid.scopes_supported if openid else None))
        every_scope = list(dict.fromkeys([*(s for scopes in plan.scopes.values() for s in scopes),
                                          *identity]))
        nonce = None if flow == "device" else secrets.token_urlsafe(24)
        try:
            if flow == "device":
                device = oauth.start_device(every_scope, resources)
                ui.show_device_code(device)
                tokens = oauth.poll_device(device, self.sleep, resource=indicator)
            else:
                assert nonce is not None
                tokens = self._authorization_code(oauth, credential, mailbox, every_scope,
                                                  [*plan.scopes[first], *identity], flow, ui,
                                                  open_browser, timeout, nonce,
                                                  resources, indicator)
        except OAuthFailure as failure:
            raise TokenRefreshFailed(failure.diagnosis, False, mailbox) from None
        if tokens.refresh_token is None:
            raise ConsentFailed("the provider issued no refresh token: the grant would die "
                                "within the hour (is offline_access allowed for the app?)")
        signed_in = self._signed_in(credential, oauth, openid, tokens, expected, nonce)
        self.core.broker.record.detail["signed_in"] = (signed_in.get("account") if signed_in["checked"]
                                                       else "not checked")
        return self._record_consent(credential, mailbox, protocols, flow, tokens, first,
                                    existing[0].grant_uuid if existing else None, signed_in,
                                    login)

    def _openid_provider(self, credential: ClientCredential,
                         oauth: OAuthClient) -> OpenIdProvider | None:
        """The provider's OpenID configuration; None for a custom client without an issuer."""
        from adapters.id_token import discover_provider

        issuer = credential.endpoints.get("issuer")
        if not issuer:
            return None
        return discover_provider(oauth.http, issuer, provider=credential.provider)

    def _signed_in(self, credential: ClientCredential, oauth: OAuthClient,
                   openid: OpenIdProvider | None, tokens: Tokens, expected: str,
                   nonce: str | None) -> dict[str, Any]:
        """Who signed in, from the verified ID token; refused when it is not `expected`."""
        from adapters.id_token import IdTokenRejected, fetch_keys, verify_id_token

        if openid is None or tokens.id_token is None:
            reason = NOT_CHECKED_NO_ISSUER if openid is None else NOT_CHECKED_NO_ID_TOKEN
            self.core.warnings.append(f"{reason}: vault could not check who signed in, and records "
                                      "the grant's account as not checked")
            return not_checked(reason)
        try:
            claims = verify_id_token(tokens.id_token.reveal(), provider=openid,
                                     keys=fetch_keys(oauth.http, openid.jwks_uri),
                                     client_id=credential.client_id, nonce=nonce,
                                     now=self.core.now())
        except IdTokenRejected as e:
            raise ConsentFailed(f"{e}: refused, nothing was stored") from None
        signed_in = signed_in_account(claims, expected=expected, provider=credential.provider,
                                      tenant_pinned=openid.tenant_pinned)
        if not signed_in["checked"]:
            self.core.warnings.append(f"{signed_in['reason']}: vault could not check who signed in, "
                                      "and records the grant's account as not checked")
        return signed_in

    def _authorization_code(self, oauth, credential: ClientCredential, mailbox: str,
                            every_scope: list[str], first_scopes: list[str], flow: str,
                            ui: ConsentUI, open_browser: bool, timeout: float, nonce: str,
                            resources: tuple[str, ...], indicator: str | None):
        from adapters.loopback import LoopbackListener, parse_redirect
        from adapters.oauth import pkce_pair

        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(24)
        extra = ({"access_type": "offline", "prompt": "consent"}
                 if credential.provider == "google" else {})
        extra["nonce"] = nonce
        if flow == "browser":
            path, port, host_name = _loopback_target(credential.redirect_uri)
            with LoopbackListener(path, port, host_name) as listener:
                redirect_uri = listener.redirect_uri
                url = oauth.authorize_url(redirect_uri=redirect_uri, scopes=every_scope,
                                          state=state, challenge=challenge, login_hint=mailbox,
                                          extra=extra, resources=resources)
                opened = open_browser and ui.open_browser(url)
                ui.show_authorize_url(url, opened)
                redirect = listener.wait(timeout)
            if redirect is None:
                raise ConsentFailed(f"no answer from the browser within {timeout:.0f} s: the "
                                    "consent was not completed (run the command again)")
        else:
            redirect_uri = credential.redirect_uri or MANUAL_REDIRECT
            url = oauth.authorize_url(redirect_uri=redirect_uri, scopes=every_scope, state=state,
                                      challenge=challenge, login_hint=mailbox, extra=extra,
                                      resources=resources)
            ui.show_authorize_url(url, False)
            redirect = parse_redirect(ui.read_redirect_url())
        code = self._checked_code(redirect, state)
        # One resource per token request; the OpenID scopes ride along (Microsoft: "along with
        # OIDC scopes (profile, openid, email)"), so the ID token comes with the first token.
        redeem_scopes = list(dict.fromkeys(first_scopes))
        return oauth.redeem_code(code, redirect_uri, verifier, redeem_scopes, resource=indicator)

    @staticmethod
    def _checked_code(redirect: Redirect, state: str) -> SecretValue:
        from adapters.oauth import OAuthFailure
        from domain.diagnosis import CODE, classify

        if redirect.error:
            raise OAuthFailure(classify(http_status=400, error=redirect.error, context=CODE))
        if redirect.state and not redirect.state.isascii():  # vault's are URL-safe base64
            raise BadInput("the pasted redirect's state is not one vault made (it holds "
                           "characters vault never uses): paste the address of this consent")
        if not redirect.state or not hmac.compare_digest(redirect.state, state):
            raise ConsentFailed("the redirect's state does not match this consent: it belongs "
                                "to another attempt (or was forged); nothing was redeemed")
        if not redirect.code:
            raise ConsentFailed("the redirect carries no authorization code")
        return SecretValue(redirect.code)

    def _record_consent(self, credential: ClientCredential, mailbox: str,
                        protocols: tuple[str, ...], flow: str, tokens, first: str,
                        existing_uuid: str | None, signed_in: dict[str, Any],
                        login: str | None) -> GrantSummary:
        now = self.core.now()
        changes = Changes()
        if existing_uuid:
            grant: ConsentGrant = self.core.load_grant(existing_uuid)
            rotation: TokenRotation = self.core.load(grant.rotation_id)
            if grant.is_active:
                grant.revoke(now=now, reason="replaced by a new consent",
                             revoked_by=self.core.who)
            grant.regrant(now=now, client=credential, protocols=protocols, scopes=None,
                          method=flow, granted_at=now, granted_by=self.core.who, signed_in=signed_in,
                          login=login)
            rotation.reseed(now=now, refresh_token=tokens.refresh_token, issued_at=now,
                            source="consent")
        else:
            grant, rotation, changes.keys = self.grants.new_grant(
                credential, mailbox, protocols, None, method=flow, granted_at=now,
                refresh_token=tokens.refresh_token, signed_in=signed_in, login=login)
        rotation.record_tokens(now=now, attempt_id=None, resource=first,
                               access_token=tokens.access_token, expires_in=tokens.expires_in,
                               refresh_token=None, scope=tokens.scope)
        apply_views(changes, grant_changes(grant, credential.provider, credential.google_testing),
                    rotation_changes(rotation))
        self.core.commit(grant, rotation, changes=changes)
        return grant_summary(grant)
