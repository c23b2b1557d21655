"""RFC 8707 resource indicators: what `client add --resource` takes, and the plan of a grant
whose client names them."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.credentials import ClientCredential
from domain.errors import InvalidInput
from domain.grants import ConsentGrant
from domain.rotation import rotation_id_for
from domain.scopes import parse_resource_options
from tests.unit.test_domain import NOW

IMAP_URI, SMTP_URI = "imaps://mail.example.test", "urn:example:submission"


def _custom(resources: dict[str, str] | None, scopes=("offline_access", "mail.imap", "mail.smtp"),
            provider: str = "custom") -> ClientCredential:
    return ClientCredential.register(
        aggregate_id=uuid4(), now=NOW, name="idp", provider=provider, cloud=None,
        tenant="contoso.onmicrosoft.com" if provider == "microsoft" else None,
        client_id="00000000-0000-0000-0000-000000000001" if provider == "microsoft" else "app",
        endpoints={"token_url": "https://idp.example.test/token"}, scopes=tuple(scopes),
        resources=resources)


def _grant(client: ClientCredential, protocols=("imap", "pop", "smtp")) -> ConsentGrant:
    gid = uuid4()
    return ConsentGrant.grant(aggregate_id=gid, rotation_id=rotation_id_for(gid), now=NOW,
                              client=client, mailbox="alice@example.test", protocols=protocols,
                              scopes=None, method="manual", granted_at=None, granted_by="admin")


def test_options_name_every_protocol_or_one() -> None:
    assert parse_resource_options([IMAP_URI]) == {"*": IMAP_URI}
    assert parse_resource_options([f"IMAP={IMAP_URI}", f"smtp={SMTP_URI}"]) == {
        "imap": IMAP_URI, "smtp": SMTP_URI}
    assert parse_resource_options([]) == {}


@pytest.mark.parametrize("values", [
    ["mail.example.test"],  # not absolute
    ["https://mail.example.test/#frag"],  # RFC 8707 section 2: no fragment
    ["https://mail example.test/"],
    ["imap="],
    [IMAP_URI, "https://other.example.test/"],  # two for every protocol
    [f"imap={IMAP_URI}", f"imap={SMTP_URI}"],
])
def test_malformed_or_repeated_indicators_are_refused(values: list[str]) -> None:
    with pytest.raises(InvalidInput, match="--resource"):
        parse_resource_options(values)


@pytest.mark.parametrize("provider", ["microsoft", "google"])
def test_only_custom_providers_take_indicators(provider: str) -> None:
    with pytest.raises(InvalidInput, match="custom providers"):
        _custom({"*": IMAP_URI}, scopes=(), provider=provider)


def test_one_indicator_for_every_protocol_makes_one_token() -> None:
    grant = _grant(_custom({"*": IMAP_URI}))
    assert grant.indicators == {"imap": IMAP_URI, "pop": IMAP_URI, "smtp": IMAP_URI}
    assert list(grant.scopes) == [IMAP_URI]
    assert {p: grant.resource_for(p) for p in grant.protocols} == dict.fromkeys(
        ("imap", "pop", "smtp"), IMAP_URI)
    assert grant.indicator(IMAP_URI) == IMAP_URI


def test_indicators_per_protocol_make_a_token_each_and_the_rest_keep_the_plain_one() -> None:
    grant = _grant(_custom({"imap": IMAP_URI, "smtp": SMTP_URI}))
    assert grant.indicators == {"imap": IMAP_URI, "smtp": SMTP_URI}
    assert set(grant.scopes) == {IMAP_URI, SMTP_URI, "default"}
    assert grant.scopes[IMAP_URI] == grant.scopes[SMTP_URI] == grant.scopes["default"]
    assert (grant.resource_for("imap"), grant.resource_for("smtp"), grant.resource_for("pop")) == (
        IMAP_URI, SMTP_URI, "default")
    assert grant.indicator("default") is None  # its requests name no resource


def test_a_client_without_indicators_plans_as_before() -> None:
    grant = _grant(_custom(None))
    assert grant.indicators is None and list(grant.scopes) == ["default"]
    assert grant.resource_for("smtp") == "default" and grant.indicator("default") is None


def test_a_client_snapshot_from_before_indicators_loads() -> None:
    from eventsourcing.persistence import Mapper, StoredEvent

    from adapters.encryption import transcoder

    mapper = Mapper(transcoder=transcoder())
    client = _custom({"*": IMAP_URI})
    client.collect_events()
    stored = mapper.to_stored_event(ClientCredential.Snapshot.take(client))
    state = mapper.transcoder.decode(stored.state)
    assert state["state"].pop("class_version") == 4
    del state["state"]["resources"], state["state"]["entra"], state["state"]["renewal"]
    old = StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                      mapper.transcoder.encode(state))
    restored = mapper.to_domain_event(old).mutate(None)
    assert restored.resources == {} and restored.entra is None and restored.renewal is None
