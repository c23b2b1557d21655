"""Domain rules, without any I/O: validation an admin needs, aggregates, stable topics."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

import pytest
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.utils import get_topic, resolve_topic

from domain import clouds, errors
from domain.credentials import ClientCredential
from domain.grants import ConsentGrant
from domain.mailboxes import check_mailbox
from domain.rotation import TokenRotation, rotation_id_for
from domain.scopes import GRAPH, MAIL, parse_protocols, plan_scopes
from domain.secret_value import SecretValue

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
GUID = "11111111-2222-3333-4444-555555555555"


def client(provider: str = "microsoft", cloud: str | None = None, **kw) -> ClientCredential:
    tenant = kw.pop("tenant", "contoso.onmicrosoft.com" if provider == "microsoft" else None)
    return ClientCredential.register(
        aggregate_id=uuid4(), now=NOW, name=kw.pop("name", "jira"), provider=provider,
        cloud=cloud, tenant=tenant, client_id=kw.pop("client_id", GUID if provider == "microsoft"
                                                     else "app.apps.googleusercontent.com"),
        **kw)


def test_a_guid_shaped_secret_is_refused_as_the_secret_id() -> None:
    c = client()
    with pytest.raises(errors.SecretLooksLikeId) as caught:
        c.add_secret(now=NOW, value=SecretValue("{1F2E3D4C-1111-2222-3333-444455556666}"))
    assert "Secret ID" in str(caught.value) and "AADSTS7000215" in str(caught.value)
    assert "1F2E3D4C" not in str(caught.value)
    assert c.secrets == []


@pytest.mark.parametrize("value", ["", "short", "has space inside-xxxxx", "two\nlines-xxxxxx"])
def test_secret_values_that_cannot_be_right_are_refused(value: str) -> None:
    with pytest.raises(errors.InvalidInput):
        client().add_secret(now=NOW, value=SecretValue(value))


def test_a_microsoft_client_id_must_be_the_application_guid() -> None:
    with pytest.raises(errors.InvalidInput, match="Application \\(client\\) ID"):
        client(client_id="jira-app")


@pytest.mark.parametrize("tenant,expected", [
    ("Contoso.OnMicrosoft.com", "contoso.onmicrosoft.com"),
    ("{AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE}", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
    ("Organizations", "organizations"),
])
def test_tenants_are_normalised(tenant: str, expected: str) -> None:
    assert client(tenant=tenant).tenant == expected


@pytest.mark.parametrize("tenant", [None, "", "not a tenant", "contoso"])
def test_microsoft_clients_need_a_well_formed_tenant(tenant) -> None:
    with pytest.raises(errors.InvalidInput):
        client(tenant=tenant)


def test_app_only_tokens_need_a_concrete_tenant() -> None:
    for generic in ("common", "organizations", "consumers", None):
        with pytest.raises(errors.InvalidInput, match="AADSTS9001023"):
            clouds.require_concrete_tenant(generic)
    clouds.require_concrete_tenant("contoso.onmicrosoft.com")


def test_endpoints_follow_the_cloud_and_tenant() -> None:
    gcc = client(cloud="gcc-high", tenant="agency.onmicrosoft.us")
    assert gcc.endpoints["token_url"] == (
        "https://login.microsoftonline.us/agency.onmicrosoft.us/oauth2/v2.0/token")
    china = client(cloud="china")
    assert china.endpoints["authorize_url"].startswith("https://login.chinacloudapi.cn/")


def test_custom_providers_need_endpoints_over_https() -> None:
    with pytest.raises(errors.InvalidInput, match="token-url"):
        client(provider="custom", client_id="abc")
    with pytest.raises(errors.InvalidInput, match="https"):
        client(provider="custom", client_id="abc",
               endpoints={"token_url": "http://idp.example.com/token"})
    ok = client(provider="custom", client_id="abc",
                endpoints={"token_url": "http://127.0.0.1:9000/token"})
    assert ok.endpoints["token_url"] == "http://127.0.0.1:9000/token"


def test_delegated_microsoft_grants_need_offline_access() -> None:
    profile = clouds.profile_for("microsoft")
    with pytest.raises(errors.MissingOfflineAccess):
        plan_scopes(profile, ("imap",), ("https://outlook.office.com/IMAP.AccessAsUser.All",))
    derived = plan_scopes(profile, ("imap",))
    assert "offline_access" in derived[MAIL]


def test_mail_and_graph_scopes_are_separate_token_requests() -> None:
    plan = plan_scopes(clouds.profile_for("microsoft"), ("imap", "smtp", "graph"))
    assert set(plan) == {MAIL, GRAPH}
    assert all(s.startswith("https://outlook.office.com/") or s == "offline_access"
               for s in plan[MAIL])
    assert all(s.startswith("https://graph.microsoft.com/") or s == "offline_access"
               for s in plan[GRAPH])


def test_imap_with_only_graph_scopes_is_refused() -> None:
    with pytest.raises(errors.MixedResources, match="Graph tokens are refused by IMAP"):
        plan_scopes(clouds.profile_for("microsoft"), ("imap",),
                    ("offline_access", "https://graph.microsoft.com/Mail.Read"))


def test_dot_default_cannot_be_mixed_with_named_scopes() -> None:
    with pytest.raises(errors.MixedResources, match="AADSTS70011"):
        plan_scopes(clouds.profile_for("microsoft"), ("imap",), (
            "offline_access", "https://outlook.office.com/.default",
            "https://outlook.office.com/IMAP.AccessAsUser.All"))


def test_gcc_high_scopes_follow_the_cloud() -> None:
    gcc = clouds.profile_for("microsoft", "gcc-high")
    plan = plan_scopes(gcc, ("imap", "graph"))
    assert "https://outlook.office365.us/IMAP.AccessAsUser.All" in plan[MAIL]
    assert "https://graph.microsoft.us/Mail.ReadWrite" in plan[GRAPH]
    with pytest.raises(errors.ScopeCloudMismatch, match="GCC High"):
        plan_scopes(gcc, ("imap",), ("offline_access",
                                     "https://outlook.office.com/IMAP.AccessAsUser.All"))


def test_google_has_one_mail_scope_and_no_graph() -> None:
    google = clouds.profile_for("google")
    assert plan_scopes(google, ("imap", "smtp")) == {MAIL: ["https://mail.google.com/"]}
    with pytest.raises(errors.InvalidInput, match="Graph"):
        plan_scopes(google, ("graph",))


def test_protocol_lists_are_parsed_strictly() -> None:
    assert parse_protocols("SMTP, imap,pop3") == ("imap", "pop", "smtp")
    with pytest.raises(errors.InvalidInput, match="unknown: ftp"):
        parse_protocols("imap,ftp")


def test_rotating_a_secret_retires_older_ones_unless_they_overlap() -> None:
    c = client()
    c.add_secret(now=NOW, value=SecretValue("first~secret-value-1"))
    c.rotate_secret(now=NOW, value=SecretValue("second~secret-value-2"))
    assert [s["ref"] for s in c.active_secrets()] == ["s2"]
    c.rotate_secret(now=NOW, value=SecretValue("third~secret-value-33"), overlap=True)
    assert [s["ref"] for s in c.active_secrets()] == ["s2", "s3"]
    assert c.current_secret()["ref"] == "s3"
    with pytest.raises(errors.RuleViolation):
        c.retire_secret(now=NOW, ref="s1", reason="again")


def test_a_removed_client_takes_no_more_commands() -> None:
    c = client()
    c.remove(now=NOW, reason="decommissioned")
    with pytest.raises(errors.ClientRemoved):
        c.add_secret(now=NOW, value=SecretValue("another~secret-1"))


def test_grants_check_mailbox_and_state() -> None:
    c = client()
    with pytest.raises(errors.InvalidInput):
        check_mailbox("not-an-address")
    assert check_mailbox(" Help@Contoso.COM ") == "Help@contoso.com"
    gid = uuid4()
    g = ConsentGrant.grant(aggregate_id=gid, rotation_id=rotation_id_for(gid), now=NOW, client=c,
                           mailbox="help@contoso.com", protocols=("imap",), scopes=None,
                           method="import", granted_at=None, granted_by="admin")
    with pytest.raises(errors.RuleViolation, match="already has an active grant"):
        g.regrant(now=NOW, client=c, protocols=("imap",), scopes=None, method="import",
                  granted_at=None, granted_by="admin")
    g.revoke(now=NOW, reason="left the company", revoked_by="admin")
    with pytest.raises(errors.GrantNotActive):
        g.revoke(now=NOW, reason="again", revoked_by="admin")
    g.record_probe(now=NOW, protocol="imap", outcome="refused", latency_ms=40, greeting=None,
                   diagnosis="NO AUTHENTICATE failed")
    g.regrant(now=NOW, client=c, protocols=("imap",), scopes=None, method="import",
              granted_at=None, granted_by="admin")
    assert g.status == "active"
    assert g.probes == {}  # the old consent's refused probe says nothing of the new one
    with pytest.raises(errors.InvalidInput, match="future"):
        ConsentGrant.grant(aggregate_id=uuid4(), rotation_id=uuid4(), now=NOW, client=c,
                           mailbox="a@contoso.com", protocols=("imap",), scopes=None,
                           method="import", granted_at=NOW + timedelta(days=1), granted_by="x")


def _rotation() -> TokenRotation:
    return TokenRotation.start(grant_id=uuid4(), now=NOW, refresh_token=SecretValue("rt-gen-1-xxxx"),
                               issued_at=NOW, source="import")


def test_rotation_keeps_the_newest_refresh_token_and_a_non_rotated_one() -> None:
    r = _rotation()
    r.begin_rotation(now=NOW, attempt_id="a1", resource=MAIL)
    assert r.interrupted_attempt is not None
    r.record_tokens(now=NOW, attempt_id="a1", resource=MAIL, access_token=SecretValue("at-1-xxxxx"),
                    expires_in=3600, refresh_token=SecretValue("rt-gen-2-xxxx"), scope="IMAP")
    assert r.refresh_token == SecretValue("rt-gen-2-xxxx") and r.generation == 2
    assert r.interrupted_attempt is None
    later = NOW + timedelta(minutes=10)
    r.record_tokens(now=later, attempt_id=None, resource=MAIL, access_token=SecretValue("at-2-xxxxx"),
                    expires_in=3600, refresh_token=SecretValue("rt-gen-2-xxxx"), scope="IMAP")
    assert r.generation == 2  # same refresh token back (Google): kept, not a new generation
    assert r.valid_access_token(MAIL, later, timedelta(minutes=5)) == SecretValue("at-2-xxxxx")
    assert r.valid_access_token(MAIL, later + timedelta(minutes=56), timedelta(minutes=5)) is None
    assert r.last_activity_at == later


def test_a_grant_breaks_only_on_a_refusal_in_a_later_attempt_the_interval_apart() -> None:
    r = _rotation()
    interval = timedelta(minutes=10)
    kw = dict(attempt_id=None, error_class="grant_invalid", error_code="70000")
    r.record_failure(now=NOW, transient=False, invalid_grant=True, **kw)
    assert r.refused_since == NOW and r.refusal_counts_from(interval) == NOW + interval
    assert not r.refusal_marks_broken(now=NOW, attempt_began_at=NOW, interval=interval)
    # the retry one second later inside the same command proves nothing
    r.record_failure(now=NOW + timedelta(seconds=1), transient=False, invalid_grant=True, **kw)
    assert not r.refusal_marks_broken(now=NOW + timedelta(seconds=1), attempt_began_at=NOW,
                                      interval=interval)
    # a transient failure keeps the streak; a later command 9 minutes on is still too early
    r.record_failure(now=NOW + timedelta(minutes=5), transient=True, invalid_grant=False,
                     **{**kw, "error_class": "transient"})
    assert r.refused_since == NOW
    began = NOW + timedelta(minutes=9)
    r.record_failure(now=began, transient=False, invalid_grant=True, **kw)
    assert not r.refusal_marks_broken(now=began, attempt_began_at=began, interval=interval)
    began = NOW + timedelta(minutes=10)
    r.record_failure(now=began, transient=False, invalid_grant=True, **kw)
    assert r.refusal_marks_broken(now=began, attempt_began_at=began, interval=interval)


def test_a_success_or_another_refusal_kind_ends_the_refused_once_state() -> None:
    r = _rotation()
    kw = dict(attempt_id=None, error_class="grant_invalid", error_code="70000")
    r.record_failure(now=NOW, transient=False, invalid_grant=True, **kw)
    r.record_tokens(now=NOW, attempt_id=None, resource=MAIL, access_token=SecretValue("at-1-xxxxx"),
                    expires_in=3600, refresh_token=SecretValue("rt-gen-2-xxxx"), scope="IMAP")
    assert r.refused_since is None
    r.record_failure(now=NOW, transient=False, invalid_grant=True, **kw)
    r.record_failure(now=NOW, transient=False, invalid_grant=False,
                     **{**kw, "error_class": "secret_invalid"})
    assert r.refused_since is None


def test_secrets_never_show_in_repr_of_events_or_aggregates() -> None:
    c = client()
    c.add_secret(now=NOW, value=SecretValue("visible-if-leaked~123"))
    rendered = repr(c) + repr(c.pending_events) + str(c.secrets) + f"{c.secrets[0]['value']}"
    assert "visible-if-leaked" not in rendered
    assert "<redacted>" in rendered


AGGREGATES = (ClientCredential, ConsentGrant, TokenRotation)


def test_every_event_is_stored_under_a_stable_registered_topic() -> None:
    seen = set()
    for aggregate in AGGREGATES:
        assert get_topic(aggregate) == aggregate.TOPIC
        assert resolve_topic(aggregate.Snapshot.TOPIC) is aggregate.Snapshot
        for name, value in vars(aggregate).items():
            if isinstance(value, type) and issubclass(value, CanMutateAggregate) \
                    and name != "Event":
                topic = getattr(value, "TOPIC", None)
                assert topic and topic.startswith("vault."), f"{aggregate.__name__}.{name}"
                assert ":" not in topic  # not a module path
                assert resolve_topic(topic) is value
                seen.add(topic)
    assert len(seen) >= 16


def test_a_renamed_event_class_still_reads_old_events_through_its_topic_and_upcasts() -> None:
    """Store an event of a v1 class, then read it back with a renamed class at v2."""
    from eventsourcing import utils
    from eventsourcing.persistence import Mapper

    from adapters.encryption import transcoder
    from domain.base import AggregateCreated, VaultAggregate

    def forget_test_topics() -> None:  # as in a new process where the code has changed
        for topic in ("vault.test.Widget", "vault.test.Widget.Made"):
            utils._topic_cache.pop(topic, None)

    class Widget(VaultAggregate):
        TOPIC = "vault.test.Widget"

        class Made(VaultAggregate.Event, AggregateCreated):
            TOPIC = "vault.test.Widget.Made"
            name: str

        def __init__(self, name: str) -> None:
            self.name = name

    mapper = Mapper(transcoder=transcoder())
    w = Widget._start(Widget.Made, uuid4(), NOW, name="w1")
    stored = mapper.to_stored_event(w.pending_events[0])
    assert stored.topic == "vault.test.Widget.Made"
    forget_test_topics()

    class Gadget(VaultAggregate):  # renamed class, same stable topics
        TOPIC = "vault.test.Widget"

        class Built(VaultAggregate.Event, AggregateCreated):
            TOPIC = "vault.test.Widget.Made"
            class_version = 2
            name: str
            colour: str

            @staticmethod
            def upcast_v1_v2(state: dict) -> None:
                state["colour"] = "unknown"

        def __init__(self, name: str, colour: str) -> None:
            self.name, self.colour = name, colour

    try:
        event = mapper.to_domain_event(stored)
        assert type(event).__name__ == "Built"
        gadget = event.mutate(None)
        assert isinstance(gadget, Gadget)
        assert (gadget.name, gadget.colour) == ("w1", "unknown")
    finally:
        forget_test_topics()


def test_dates_are_checked() -> None:
    c = client()
    with pytest.raises(errors.InvalidInput, match="after its creation"):
        c.add_secret(now=NOW, value=SecretValue("dated~secret-xyz"), created_on=date(2026, 1, 2),
                     expires_on=date(2026, 1, 1))


@pytest.mark.parametrize("url", ["http://localhost:@evil.example/token",
                                 "http://localhost.evil.example/token",
                                 "http://user@127.0.0.1/token", "http://127.0.0.1:x/token",
                                 "http://login.example.com/token"])
def test_plain_http_goes_only_to_this_host(url: str) -> None:
    """A client secret is posted to the token URL: over plain http only to loopback, checked on
    the parsed host (`http://localhost:@evil.example` is a request to evil.example)."""
    with pytest.raises(errors.InvalidInput, match="https"):
        client(provider="custom", tenant=None, client_id="app", endpoints={"token_url": url})
    with pytest.raises(errors.InvalidInput, match="redirect-uri"):
        client(redirect_uri=url)
    for fine in ("http://localhost", "http://127.0.0.1:8400/callback", "http://[::1]:9/x"):
        assert client(redirect_uri=fine).redirect_uri == fine


def test_an_alert_claim_lapses_and_failed_deliveries_back_off_per_channel() -> None:
    from domain.alerts import AlertState, wait_after_failures

    day = timedelta(hours=24)
    state = AlertState.open(key="grant-id|grant_broken|", now=NOW)
    state.claim_for(now=NOW, severity="critical", host="a")  # host a dies mid-send
    assert state.is_being_sent(NOW + timedelta(minutes=14))
    assert not state.is_being_sent(NOW + timedelta(minutes=15))  # lapsed: another host may

    state.record_sent(now=NOW, severity="critical", channels=["webhook"])
    assert state.is_open
    assert not state.due_on("webhook", "critical", NOW + timedelta(hours=1), day)
    assert state.due_on("email", "critical", NOW + timedelta(hours=1), day)  # not sent there
    for n in range(1, 4):
        state.record_failed(now=NOW + day, error="HTTP 500", channels=["webhook"])
        assert state.channel("webhook")["failures"] == n
    assert state.channel("email")["failures"] == 0 and state.retry_at("email") is None
    assert [wait_after_failures(n) for n in (0, 1, 2, 3, 7, 8, 1000)] == [
        timedelta(0), timedelta(minutes=5), timedelta(minutes=10), timedelta(minutes=20),
        timedelta(hours=5, minutes=20), timedelta(hours=6), timedelta(hours=6)]
    assert state.retry_at("webhook") == NOW + day + timedelta(minutes=20)
    state.record_sent(now=NOW + day, severity="critical", channels=["webhook"])
    assert state.retry_at("webhook") is None  # delivered: the streak is over
    state.resolve(now=NOW + day)
    assert not state.is_open and state.channels == {}
    assert state.due_on("webhook", "warning", NOW + day, day)  # back again: news, whatever its severity
