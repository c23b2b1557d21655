"""ClientCredential: one app registration (client id, tenant, cloud, endpoints) and its secrets.

Several secrets may be active at once while a rotation overlaps; the newest active one is current.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from domain.base import AggregateCreated, VaultAggregate, stable_snapshot
from domain.clouds import PROTOCOLS, CloudProfile, check_tenant, is_guid, profile_for
from domain.errors import ClientRemoved, InvalidInput, RuleViolation, SecretLooksLikeId
from domain.scopes import EVERY_PROTOCOL, check_resource_indicator
from domain.secret_value import SecretValue
from domain.vocabulary import AUTH_METHODS, TLS_MODES

CLIENT_SECRET, CERTIFICATE = "client_secret", "certificate"


def check_secret_value(secret: SecretValue) -> None:
    """Refuse values that cannot be a client secret's Value. Never echoes the value."""
    value = secret.reveal()
    if not value:
        raise InvalidInput("the secret is empty")
    if is_guid(value):
        raise SecretLooksLikeId()
    if any(c.isspace() for c in value):
        raise InvalidInput("the secret contains whitespace: was more than the Value pasted?")
    if len(value) < 8:
        raise InvalidInput("the secret is shorter than 8 characters: was it truncated?")


def _hex_thumbprint(value: str, digits: int, kind: str) -> str:
    value = value.replace(":", "").lower()
    if len(value) != digits or any(c not in "0123456789abcdef" for c in value):
        raise InvalidInput(f"a certificate thumbprint is {digits} hex digits ({kind})")
    return value


def check_client_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
        raise InvalidInput(
            "a client name is 1-64 letters, digits or . _ - @ (it names the app registration "
            "in commands, e.g. 'jira-prod')"
        )
    return name


class ClientCredential(VaultAggregate):
    TOPIC = "vault.ClientCredential"
    Snapshot = stable_snapshot("vault.ClientCredential.Snapshot")
    class_version = 4  # snapshots: 1 had no resources, 2 no Entra observation, 3 no renewal

    @staticmethod
    def upcast_v1_v2(state: dict) -> None:
        state["resources"] = {}

    @staticmethod
    def upcast_v2_v3(state: dict) -> None:
        state["entra"] = None

    @staticmethod
    def upcast_v3_v4(state: dict) -> None:
        state["renewal"] = None

    class Registered(VaultAggregate.Event, AggregateCreated):
        TOPIC = "vault.ClientCredential.Registered"
        class_version = 2
        name: str
        provider: str
        cloud: str
        tenant: str | None
        client_id: str
        endpoints: dict
        redirect_uri: str | None
        scopes: list
        google_testing: bool
        auth_method: str

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            """Version 1 had no choice of client authentication: it always posted the secret."""
            state["auth_method"] = "client_secret_post"

    class SecretAdded(VaultAggregate.Event):
        """`pending`: made by a renewal through Graph and held, not yet used: it becomes current
        once it works at the token endpoint (RenewalVerified)."""

        TOPIC = "vault.ClientCredential.SecretAdded"
        class_version = 2
        ref: str
        value: SecretValue
        secret_id: str | None
        created_on: date | None
        expires_on: date | None
        pending: bool

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            state["pending"] = False

        def apply(self, client: ClientCredential) -> None:
            client.secrets.append({
                "ref": self.ref, "kind": CLIENT_SECRET, "value": self.value,
                "secret_id": self.secret_id, "created_on": self.created_on,
                "expires_on": self.expires_on, "added_at": self.timestamp, "retired_at": None,
                "retired_reason": None, "pending": self.pending,
            })
            client.held_for_renewal(self.ref, self.pending)

    class CertificateAdded(VaultAggregate.Event):
        """A certificate credential (private_key_jwt): the private key is the secret part."""

        TOPIC = "vault.ClientCredential.CertificateAdded"
        class_version = 3
        ref: str
        private_key: SecretValue
        thumbprint: str  # SHA-1 of the DER certificate, hex (what Entra ID shows)
        subject: str
        not_before: date
        not_after: date
        thumbprint_sha256: str | None  # SHA-256 of the DER certificate, hex (x5t#S256)
        pending: bool  # held by a renewal through Graph until it works (as SecretAdded's)

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            """Version 1 kept only the SHA-1 thumbprint (and not the certificate): such a
            certificate signs RS256 assertions with x5t until it is added again."""
            state["thumbprint_sha256"] = None

        @staticmethod
        def upcast_v2_v3(state: dict) -> None:
            state["pending"] = False

        def apply(self, client: ClientCredential) -> None:
            client.secrets.append({
                "ref": self.ref, "kind": CERTIFICATE, "value": self.private_key,
                "secret_id": self.thumbprint, "created_on": self.not_before,
                "expires_on": self.not_after, "added_at": self.timestamp, "retired_at": None,
                "retired_reason": None, "subject": self.subject,
                "thumbprint_sha256": self.thumbprint_sha256, "pending": self.pending,
            })
            client.held_for_renewal(self.ref, self.pending)

    class SecretRetired(VaultAggregate.Event):
        TOPIC = "vault.ClientCredential.SecretRetired"
        class_version = 2
        ref: str
        reason: str
        by: str | None

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            """Version 1 did not say who retired it (the audit log still does)."""
            state["by"] = None

        def apply(self, client: ClientCredential) -> None:
            secret = client.secret(self.ref)
            secret["retired_at"] = self.timestamp
            secret["retired_reason"] = self.reason

    class SecretDatesRecorded(VaultAggregate.Event):
        TOPIC = "vault.ClientCredential.SecretDatesRecorded"
        ref: str
        created_on: date | None
        expires_on: date | None

        def apply(self, client: ClientCredential) -> None:
            secret = client.secret(self.ref)
            secret["created_on"] = self.created_on
            secret["expires_on"] = self.expires_on

    class MailServersSet(VaultAggregate.Event):
        """Where this client's mailboxes are served, when the cloud profile does not say (a
        custom provider) or says otherwise: {protocol: {host, port, tls}}."""

        TOPIC = "vault.ClientCredential.MailServersSet"
        servers: dict

        def apply(self, client: ClientCredential) -> None:
            client.mail_servers = self.servers

    class ResourcesSet(VaultAggregate.Event):
        """RFC 8707 resource indicators its token requests name (custom providers):
        {"*" or protocol: URI}."""

        TOPIC = "vault.ClientCredential.ResourcesSet"
        resources: dict

        def apply(self, client: ClientCredential) -> None:
            client.resources = self.resources

    class EntraObserved(VaultAggregate.Event):
        """What Entra listed of the app's credentials at a sync (domain/entra.py), and which
        of them are the ones vault holds: {"object_id", "passwords", "certificates" (each
        {key_id, display_name, hint or thumbprint, start, end}), "matches" {ref: key_id}}."""

        TOPIC = "vault.ClientCredential.EntraObserved"
        observation: dict

        def apply(self, client: ClientCredential) -> None:
            client.entra = self.observation

    class RenewalStarted(VaultAggregate.Event):
        """The intent of a renewal through Microsoft Graph, recorded before Entra is asked for
        anything: the nonce is in the new credential's display name, so a run that died after
        Entra made it finds it there. `retire_after`: seconds the old credential stays at Entra
        once the new one works."""

        TOPIC = "vault.ClientCredential.RenewalStarted"
        nonce: str
        kind: str
        display_name: str
        ends_at: datetime | None
        via: str | None
        home_tenant: str | None
        retire_after: int

        def apply(self, client: ClientCredential) -> None:
            client.renewal = {
                "nonce": self.nonce, "kind": self.kind, "display_name": self.display_name,
                "ends_at": self.ends_at, "via": self.via, "home_tenant": self.home_tenant,
                "retire_after": self.retire_after, "started_at": self.timestamp,
                "stage": "started", "new_ref": None, "remove": [], "remove_at": None}

    class RenewalVerified(VaultAggregate.Event):
        """The new credential worked at the token endpoint: it is current from now on. `remove`:
        the old ones to remove at Entra ({ref, key_id}), not before `remove_at`; `kept`: old
        ones retired in vault that vault could not identify at Entra (left there)."""

        TOPIC = "vault.ClientCredential.RenewalVerified"
        remove: list
        remove_at: datetime
        kept: list

        def apply(self, client: ClientCredential) -> None:
            renewal = client.renewal
            client.secret(renewal["new_ref"])["pending"] = False
            renewal.update(stage="verified", remove=self.remove, remove_at=self.remove_at)

    class RenewalEnded(VaultAggregate.Event):
        """The renewal is over: finished or given up (`outcome` says which and why). `removed`:
        the keyIds it removed at Entra (the old credentials; or, given up, the new one)."""

        TOPIC = "vault.ClientCredential.RenewalEnded"
        outcome: str
        removed: list

        def apply(self, client: ClientCredential) -> None:
            client.renewal = None

    class Removed(VaultAggregate.Event):
        TOPIC = "vault.ClientCredential.Removed"
        class_version = 2
        reason: str
        by: str | None

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            state["by"] = None

        def apply(self, client: ClientCredential) -> None:
            client.removed_at = self.timestamp
            client.removed_reason = self.reason
            client.removed_by = self.by

    def __init__(
        self, name: str, provider: str, cloud: str, tenant: str | None, client_id: str,
        endpoints: dict, redirect_uri: str | None, scopes: list, google_testing: bool,
        auth_method: str,
    ) -> None:
        self.name = name
        self.provider = provider
        self.cloud = cloud
        self.tenant = tenant
        self.client_id = client_id
        self.endpoints = endpoints
        self.redirect_uri = redirect_uri
        self.scopes = scopes
        self.google_testing = google_testing
        self.auth_method = auth_method
        self.mail_servers: dict[str, dict[str, Any]] = {}
        self.resources: dict[str, str] = {}  # RFC 8707 indicators: {"*" or protocol: URI}
        self.entra: dict[str, Any] | None = None  # the last sync's observation
        self.renewal: dict[str, Any] | None = None  # a renewal through Graph under way
        self.secrets: list[dict[str, Any]] = []
        self.removed_at: datetime | None = None
        self.removed_reason: str | None = None
        self.removed_by: str | None = None

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def register(
        cls, *, aggregate_id: UUID, now: datetime, name: str, provider: str, cloud: str | None,
        tenant: str | None, client_id: str, endpoints: dict[str, str | None] | None = None,
        redirect_uri: str | None = None, scopes: tuple[str, ...] = (),
        google_testing: bool = False, auth_method: str = "client_secret_post",
        resources: dict[str, str] | None = None,
    ) -> ClientCredential:
        """`resources`: RFC 8707 resource indicators (parse_resource_options), custom
        providers only."""
        name = check_client_name(name)
        profile = profile_for(provider, cloud)
        tenant = check_tenant(profile, tenant)
        client_id = client_id.strip()
        if not client_id or any(c.isspace() for c in client_id):
            raise InvalidInput("--client-id is empty or contains whitespace")
        if profile.is_microsoft and not is_guid(client_id):
            raise InvalidInput(
                "a Microsoft client id is the Application (client) ID, a GUID from the app's "
                "Overview page"
            )
        if google_testing and profile.provider != "google":
            raise InvalidInput("--google-testing applies to Google clients only")
        if auth_method not in AUTH_METHODS:
            raise InvalidInput(f"--auth-method must be one of {', '.join(AUTH_METHODS)}")
        if redirect_uri is not None and not (_is_https(redirect_uri)
                                             or _is_loopback_http(redirect_uri)):
            raise InvalidInput("--redirect-uri must be https:// or a loopback http:// address")
        resolved = {k: v for k, v in profile.endpoints(tenant).as_dict().items()}
        for key, value in (endpoints or {}).items():
            if value:
                resolved[key] = check_endpoint_url(key, value)
        if profile.provider == "custom" and not (resolved["token_url"] or resolved["issuer"]):
            raise InvalidInput("a custom provider needs --token-url (and --authorize-url) or --issuer")
        if resources and profile.provider != "custom":
            raise InvalidInput(
                "--resource is for custom providers (RFC 8707): Microsoft's v2.0 endpoints take "
                "the resource in the scope (e.g. https://outlook.office.com/IMAP.AccessAsUser.All)"
                " and reject a resource parameter; Google takes none")
        client = cls._start(
            cls.Registered, aggregate_id, now, name=name, provider=profile.provider,
            cloud=profile.cloud, tenant=tenant, client_id=client_id, endpoints=resolved,
            redirect_uri=redirect_uri, scopes=list(scopes), google_testing=google_testing,
            auth_method=auth_method,
        )
        if any(key != EVERY_PROTOCOL and key not in PROTOCOLS for key in resources or {}):
            raise InvalidInput("a resource indicator is for every protocol or for one of "
                               + ", ".join(PROTOCOLS))
        if resources:
            client._trigger(cls.ResourcesSet, now, resources={
                key: check_resource_indicator(uri) for key, uri in resources.items()})
        return client

    # -- queries ----------------------------------------------------------------------------

    @property
    def profile(self) -> CloudProfile:
        return profile_for(self.provider, self.cloud if self.provider == "microsoft" else None)

    @property
    def is_removed(self) -> bool:
        return self.removed_at is not None

    def secret(self, ref: str) -> dict[str, Any]:
        for secret in self.secrets:
            if secret["ref"] == ref or (secret["secret_id"] and secret["secret_id"] == ref):
                return secret
        raise InvalidInput(f"client {self.name!r} has no secret {ref!r}")

    def active_secrets(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Secrets and certificates in use: not retired, and not held by a renewal that has not
        yet seen them work."""
        return [s for s in self.secrets if s["retired_at"] is None and not s.get("pending")
                and (kind is None or s["kind"] == kind)]

    def held_for_renewal(self, ref: str, pending: bool) -> None:
        if pending:
            self.renewal.update(stage="received", new_ref=ref)

    def current_secret(self, kind: str | None = None) -> dict[str, Any] | None:
        """The credential token requests use: the newest active one of the kind the client
        authenticates with (a certificate for private_key_jwt, else a client secret)."""
        if kind is None:
            kind = CERTIFICATE if self.auth_method == "private_key_jwt" else CLIENT_SECRET
        active = self.active_secrets(kind)
        return active[-1] if active else None

    # -- commands ---------------------------------------------------------------------------

    def _check_not_removed(self) -> None:
        if self.is_removed:
            raise ClientRemoved(f"client {self.name!r} was removed")

    def add_secret(
        self, *, now: datetime, value: SecretValue, secret_id: str | None = None,
        created_on: date | None = None, expires_on: date | None = None, pending: bool = False,
    ) -> str:
        self._check_not_removed()
        self._check_renewal_holds(pending, CLIENT_SECRET)
        if not pending:
            self._check_no_renewal()
        check_secret_value(value)
        if secret_id is not None:
            if not is_guid(secret_id):
                raise InvalidInput("--secret-id is the secret's ID, a GUID")
            secret_id = secret_id.strip("{}").lower()
            if any(s["secret_id"] == secret_id for s in self.secrets):
                raise InvalidInput(f"client {self.name!r} already has secret ID {secret_id}")
        _check_secret_dates(created_on, expires_on, now)
        if any(s["value"] == value for s in self.active_secrets(CLIENT_SECRET)):
            raise InvalidInput(f"client {self.name!r} already holds this secret")
        ref = f"s{sum(1 for s in self.secrets if s['kind'] == CLIENT_SECRET) + 1}"
        self._trigger(
            self.SecretAdded, now, ref=ref, value=value, secret_id=secret_id,
            created_on=created_on, expires_on=expires_on, pending=pending,
        )
        return ref

    def retire_secret(self, *, now: datetime, ref: str, reason: str,
                      by: str | None = None) -> None:
        self._check_not_removed()
        self._check_no_renewal()
        self._retire(now, ref, reason, by)

    def _retire(self, now: datetime, ref: str, reason: str, by: str | None) -> None:
        secret = self.secret(ref)
        if secret["retired_at"] is not None:
            raise RuleViolation(f"secret {secret['ref']} of {self.name!r} is already retired")
        self._trigger(self.SecretRetired, now, ref=secret["ref"], reason=reason, by=by)

    def _check_no_renewal(self) -> None:
        """While a renewal through Graph is under way, its credentials are the renewal's to
        change: a credential added, retired or removed beside it would be retired, removed at
        Entra or left current by it."""
        if self.renewal is not None:
            raise RuleViolation(
                f"client {self.name!r} has a renewal through Microsoft Graph under way (since "
                f"{self.renewal['started_at']:%Y-%m-%d %H:%M} UTC, {self.renewal['stage']}): "
                f"finish it (`vault maintain`, or the same rotate command again) or give it up "
                f"(`vault client abandon-renewal {self.name}`) first; nothing was changed")

    def add_certificate(
        self, *, now: datetime, private_key: SecretValue, thumbprint: str, subject: str,
        not_before: date, not_after: date, overlap: bool = False, by: str | None = None,
        thumbprint_sha256: str | None = None, pending: bool = False,
    ) -> str:
        """Add a certificate credential as current; older certificates retire unless overlap.
        The same certificate again is accepted only to record its SHA-256 thumbprint, which
        certificates added before vault kept it lack (they sign RS256 assertions meanwhile)."""
        self._check_not_removed()
        self._check_renewal_holds(pending, CERTIFICATE)
        if not pending:
            self._check_no_renewal()
        thumbprint = _hex_thumbprint(thumbprint, 40, "SHA-1")
        if thumbprint_sha256 is not None:
            thumbprint_sha256 = _hex_thumbprint(thumbprint_sha256, 64, "SHA-256")
        if any(s["secret_id"] == thumbprint and (s.get("thumbprint_sha256")
                                                 or thumbprint_sha256 is None)
               for s in self.active_secrets(CERTIFICATE)):
            raise InvalidInput(f"client {self.name!r} already holds certificate {thumbprint}")
        # Self-signed certificates often run to 3000 or 9999; only overflow is refused.
        check_plausible_date(not_after, "the certificate's end date", not_after=date(9000, 1, 1))
        if not_after <= not_before:
            raise InvalidInput("the certificate's end date is not after its start date")
        if not_after < now.date():
            raise InvalidInput(f"the certificate expired on {not_after}")
        older = [s["ref"] for s in self.active_secrets(CERTIFICATE)]
        ref = f"c{sum(1 for s in self.secrets if s['kind'] == CERTIFICATE) + 1}"
        self._trigger(self.CertificateAdded, now, ref=ref, private_key=private_key,
                      thumbprint=thumbprint, subject=subject, not_before=not_before,
                      not_after=not_after, thumbprint_sha256=thumbprint_sha256, pending=pending)
        if not overlap and not pending:
            for old in older:
                self._retire(now, old, f"replaced by {ref}", by)
        return ref

    def rotate_secret(
        self, *, now: datetime, value: SecretValue, secret_id: str | None = None,
        created_on: date | None = None, expires_on: date | None = None, overlap: bool = False,
        by: str | None = None,
    ) -> str:
        """Add the new secret as current; retire the older ones unless they should overlap."""
        self.check_rotates_secrets()
        older = [s["ref"] for s in self.active_secrets(CLIENT_SECRET)]
        ref = self.add_secret(
            now=now, value=value, secret_id=secret_id, created_on=created_on,
            expires_on=expires_on,
        )
        if not overlap:
            for old in older:
                self._retire(now, old, f"replaced by {ref}", by)
        return ref

    def check_rotates_secrets(self) -> None:
        """A certificate client never sends a client secret: one added to it would be reported
        current while the certificate goes on signing every request (and expiring)."""
        self._check_not_removed()
        if self.auth_method == "private_key_jwt":
            raise RuleViolation(
                f"client {self.name!r} authenticates with a certificate (private_key_jwt), not "
                f"a client secret: renew it with `vault client add-certificate {self.name} "
                "--certificate-file PEM`; nothing was changed")

    def record_secret_dates(
        self, *, now: datetime, ref: str, created_on: date | None, expires_on: date | None
    ) -> None:
        self._check_not_removed()
        secret = self.secret(ref)
        _check_secret_dates(created_on, expires_on, now)
        self._trigger(
            self.SecretDatesRecorded, now, ref=secret["ref"], created_on=created_on,
            expires_on=expires_on,
        )

    def set_mail_servers(self, *, now: datetime, servers: dict[str, str]) -> None:
        """`servers`: {protocol: "host:port[/implicit|starttls|plain]"}; empty text clears one."""
        self._check_not_removed()
        merged = dict(self.mail_servers)
        for protocol, text in servers.items():
            if protocol not in PROTOCOLS:
                raise InvalidInput(f"unknown protocol {protocol!r}")
            if not text:
                merged.pop(protocol, None)
                continue
            address, _, tls = text.partition("/")
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536 or \
                    tls not in ("", *TLS_MODES):
                raise InvalidInput(f"--{protocol} takes HOST:PORT[/implicit|starttls|plain], "
                                   f"not {text!r}")
            merged[protocol] = {"host": host.strip("[]"), "port": int(port), "tls": tls or None}
        self._trigger(self.MailServersSet, now, servers=merged)

    def observe_entra(self, *, now: datetime, observation: dict[str, Any]) -> bool:
        """Record what a sync saw at Entra; False (nothing recorded) when it is what the last
        sync saw."""
        self._check_not_removed()
        if observation == self.entra:
            return False
        self._trigger(self.EntraObserved, now, observation=observation)
        return True

    # -- renewal through Microsoft Graph (issue 14) ----------------------------------------
    # started (intent) -> received (the new credential held, pending) -> verified (current;
    # the old ones retired in vault, to be removed at Entra at remove_at) -> ended. A process
    # killed between two steps leaves the renewal where it was; the next run finishes it.

    def _check_renewal_holds(self, pending: bool, kind: str) -> None:
        renewal = self.renewal
        if pending and not (renewal and renewal["stage"] == "started"
                            and renewal["kind"] == kind):
            raise RuleViolation("a pending credential belongs to a renewal that has started")

    def start_renewal(self, *, now: datetime, nonce: str, kind: str, via: str | None,
                      home_tenant: str | None, lifetime_days: int | None,
                      retire_after: int) -> str:
        """Record the intent; the display name the new credential gets at Entra."""
        self._check_not_removed()
        if self.renewal is not None:
            raise RuleViolation(f"client {self.name!r} has a renewal under way since "
                                f"{self.renewal['started_at']:%Y-%m-%d %H:%M} UTC")
        if kind == CLIENT_SECRET:
            self.check_rotates_secrets()
        elif self.auth_method != "private_key_jwt":
            raise RuleViolation(f"client {self.name!r} authenticates with a client secret: "
                                "renew it with `vault client rotate-secret --via-graph`")
        if lifetime_days is not None and not 1 <= lifetime_days <= 3650:
            raise InvalidInput("--lifetime-days takes 1 to 3650 days")
        if not 0 <= retire_after <= 366 * 86400:
            raise InvalidInput("--retire-after takes at most a year")
        display_name = f"vault {now:%Y-%m-%d} {nonce}"
        ends_at = now + timedelta(days=lifetime_days) if lifetime_days else None
        self._trigger(self.RenewalStarted, now, nonce=nonce, kind=kind,
                      display_name=display_name, ends_at=ends_at, via=via,
                      home_tenant=home_tenant, retire_after=retire_after)
        return display_name

    def verify_renewal(self, *, now: datetime, key_ids: dict[str, str],
                       by: str | None = None) -> list[str]:
        """The new credential works: make it current, retire the older ones of its kind in vault,
        and schedule their removal at Entra (`key_ids`: {ref: Entra's keyId} of those Entra
        lists). Returns the refs retired."""
        renewal = self.renewal
        if renewal is None or renewal["stage"] != "received":
            raise RuleViolation(f"client {self.name!r} has no renewal waiting for verification")
        new_ref = renewal["new_ref"]
        if self.secret(new_ref)["retired_at"] is not None:
            raise RuleViolation(f"{new_ref} of {self.name!r} was retired during its renewal")
        older = [s["ref"] for s in self.active_secrets(renewal["kind"])
                 if s["added_at"] < renewal["started_at"]]
        remove = [{"ref": ref, "key_id": key_ids[ref]} for ref in older if ref in key_ids]
        self._trigger(self.RenewalVerified, now, remove=remove,
                      remove_at=now + timedelta(seconds=renewal["retire_after"]),
                      kept=[ref for ref in older if ref not in key_ids])
        for ref in older:
            self._retire(now, ref, f"replaced by {new_ref} (renewed through Microsoft Graph)",
                         by)
        return older

    def end_renewal(self, *, now: datetime, outcome: str, removed: list[str],
                    by: str | None = None) -> None:
        """The renewal is over; a new credential it still holds unused (given up) retires."""
        renewal = self.renewal
        if renewal is None:
            raise RuleViolation(f"client {self.name!r} has no renewal under way")
        new = self.secret(renewal["new_ref"]) if renewal["new_ref"] else None
        if new is not None and new.get("pending") and new["retired_at"] is None:
            self._retire(now, new["ref"], f"its renewal was given up: {outcome}"[:200], by)
        self._trigger(self.RenewalEnded, now, outcome=outcome, removed=removed)

    def remove(self, *, now: datetime, reason: str, by: str | None = None) -> None:
        self._check_not_removed()
        self._check_no_renewal()
        self._trigger(self.Removed, now, reason=reason, by=by)


EARLIEST, LATEST = date(2000, 1, 1), date(2199, 12, 31)


def check_plausible_date(value: date | None, what: str, *, not_after: date = LATEST) -> None:
    if value is not None and not EARLIEST <= value <= not_after:
        raise InvalidInput(f"{what} {value} is not plausible (between {EARLIEST} and {not_after})")


def _check_secret_dates(created_on: date | None, expires_on: date | None, now: datetime) -> None:
    check_plausible_date(created_on, "the secret's creation date",
                         not_after=now.date() + timedelta(days=1))
    check_plausible_date(expires_on, "the secret's expiry date")
    if created_on and expires_on and expires_on <= created_on:
        raise InvalidInput("the secret's expiry date must be after its creation date")


def check_endpoint_url(name: str, url: str) -> str:
    """An endpoint (`token_url`, `issuer` ...) vault may call: https, or http to loopback."""
    if not _is_https(url) and not _is_loopback_http(url):
        raise InvalidInput(f"--{name.replace('_', '-')} must be an https:// URL")
    return url


def _is_https(url: str) -> bool:
    """An https URL that parses, with a host (`https://[x/` does not: found now, not at the
    first token request)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname)


def _is_loopback_http(url: str) -> bool:
    """Plain http is allowed only to a loopback identity provider (tests, `vault sandbox`) or
    redirect: bare `http://localhost` is email-oauth2-proxy's default, and the providers let a
    native app's loopback redirect use any port. Parsed, not prefix-matched:
    `http://localhost:@evil.example/` is a request to evil.example."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return False
    return (parts.scheme == "http" and "@" not in parts.netloc
            and parts.hostname in ("127.0.0.1", "localhost", "::1"))
