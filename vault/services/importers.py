"""Importing what people have today: each account becomes a client (reused when the vault already
holds that app) and a grant whose history starts at the import. Nothing is overwritten: a mailbox
already granted under that client is reported and left alone."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from adapters.errors import AdapterError, IntegrityViolation
from domain.vocabulary import CLIENT_ACTIVE
from vault.core import use_case
from vault.errors import BadInput, VaultError

if TYPE_CHECKING:  # the readers (cryptography's Fernet) are imported by the import commands
    from adapters.other_tools import Account
    from vault.core import VaultCore
    from vault.services.clients import ClientService
    from vault.services.grants import GrantService


@dataclass(frozen=True)
class ImportOutcome:
    """One account: `outcome` imported, exists (left as it is) or skipped (`detail` says why);
    `client` the vault's client it is (or was already) under."""

    mailbox: str
    client: str | None
    outcome: str
    detail: str | None


@dataclass(eq=False)
class ImportService:
    core: VaultCore
    clients: ClientService
    grants: GrantService

    @use_case("import")
    def import_accounts(self, accounts: list[Account], *,
                        client: str | None = None) -> list[ImportOutcome]:
        apps = {(a.provider, a.client_id, a.tenant) for a in accounts if not a.problem}
        if client and len(apps) > 1:
            raise BadInput(f"the accounts use {len(apps)} different apps: leave out --client "
                           "and vault names one client per app")
        summary = self.core.broker.record
        summary.detail.update({"source": accounts[0].source if accounts else None,
                               "accounts": len(accounts)})
        results = []
        for account in accounts:
            row = ImportOutcome(mailbox=account.mailbox, client=None, outcome="skipped",
                                detail=account.problem)
            if account.problem is None:
                with self.core.broker.item(mailbox=account.mailbox):
                    try:
                        row = self._import_one(account, client)
                    except (AdapterError, IntegrityViolation):
                        raise  # the store or the world failed, not this account
                    except VaultError as e:
                        row = replace(row, detail=str(e))
            results.append(row)
        outcomes = Counter(r.outcome for r in results)
        summary.detail.update({k: outcomes[k] for k in ("imported", "exists", "skipped")})
        if outcomes["skipped"]:
            summary.outcome = "failed"  # as the exit code says
        return results

    def _client_for(self, account: Account, wanted: str | None) -> tuple[str, bool]:
        """(name, created): the vault's client for this app, registered if it has none."""
        clients = self.core.reads.models().clients
        for row in clients:
            if (row.provider, row.client_id, row.status) == (
                    account.provider, account.client_id, CLIENT_ACTIVE) and (
                    (row.tenant or "").casefold() == (account.tenant or "").casefold()):
                return row.name, False
        taken = {r.name_key for r in clients}
        name = wanted or f"{account.provider}-{account.client_id[:8]}"
        base, n = name, 1
        while name.casefold() in taken:
            n += 1
            name = f"{base}-{n}"
        self.clients.add_client(name=name, provider=account.provider, client_id=account.client_id,
                                cloud=account.cloud, tenant=account.tenant, secret=account.client_secret,
                                redirect_uri=account.redirect_uri,
                                scopes=account.scopes if account.provider == "custom" else (),
                                endpoints=account.endpoints or None)
        return name, True

    def _import_one(self, account: Account, wanted: str | None) -> ImportOutcome:
        name, created = self._client_for(account, wanted)
        if self.core.reads.grants_of(self.clients.client_row(name).client_uuid, account.mailbox):
            return ImportOutcome(mailbox=account.mailbox, client=name, outcome="exists",
                                 detail="already granted under this client: left as it is")
        assert account.refresh_token is not None
        self.grants.import_grant(client=name, mailbox=account.mailbox, protocols=account.protocols,
                                 refresh_token=account.refresh_token,
                                 scopes=account.scopes if account.provider != "google" else None)
        return ImportOutcome(mailbox=account.mailbox, client=name, outcome="imported",
                             detail=f"{'new' if created else 'existing'} client; "
                                    f"protocols {','.join(account.protocols)}")
