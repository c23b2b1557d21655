"""Alerting against a real webhook receiver on loopback (one alert per finding, a resend when
severity rises or after the interval, retries with back-off, nothing when nothing changed), e-mail
through the real Dovecot submission service to the sink, and the Prometheus textfile."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from domain.secret_value import SecretValue
from tests.conftest import Harness, add_client, add_oidc_client, import_grant, point_at
from tests.consent import ALICE, oidc_consent
from tests.support import Clock, Sleeps
from vault.render.machine import to_json
from vault.services.alerts import AlertRun

T0 = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)


def _secret_expiring(h: Harness, client: str, on: date) -> None:
    h.ok("client", "set-secret-dates", client, "s1", "--created", "2026-06-01",
         "--expires", on.isoformat())


@pytest.fixture
def fleet(vault: Harness) -> Harness:
    """jira's secret ends in 20 days (warning), crm's in 40 (nothing yet); one fresh grant."""
    add_client(vault, "jira")
    add_client(vault, "crm")
    _secret_expiring(vault, "jira", T0.date() + timedelta(days=20))
    _secret_expiring(vault, "crm", T0.date() + timedelta(days=40))
    import_grant(vault, "help@contoso.com", "jira")
    return vault


def _alert(h: Harness, clock: Clock, receiver, sleeps: Sleeps | None = None, **kwargs) -> AlertRun:
    with h.app(clock=clock, sleep=sleeps if sleeps is not None else Sleeps()) as app:
        return app.alerts.alert(webhook=SecretValue(receiver.url), **kwargs)


NOTHING = AlertRun(sent=0, alerts=[], resolved=0, delivered={}, errors=[], pending=[])


def _pending(result: AlertRun) -> list[tuple[str, str, str, datetime | None]]:
    """(channel, client, kind, next try) of what a run left pending."""
    return sorted((p.channel, p.client, p.kind, p.next_try and datetime.fromisoformat(p.next_try))
                  for p in result.pending)


def _summary(alerts: list[dict]) -> list[tuple[str, str, str]]:
    return sorted((a["kind"], a["client"], a["severity"]) for a in alerts)


def test_one_alert_per_finding_then_on_a_rise_then_after_the_interval(fleet: Harness,
                                                                      webhook) -> None:
    clock = Clock(T0)
    assert _alert(fleet, clock, webhook).sent == 1
    assert _summary(webhook.alerts()) == [("client_secret_expiry", "jira", "warning")]
    (payload,) = webhook.received
    assert payload["severity"] == "warning" and payload["source"] == "vault"

    clock.at = T0 + timedelta(hours=3)  # nothing changed: nothing sent
    assert _alert(fleet, clock, webhook) == NOTHING
    assert webhook.attempts == 1

    webhook.clear()
    clock.at = T0 + timedelta(days=14)  # jira 6 days left: critical; crm 26 days: warning
    assert _alert(fleet, clock, webhook).sent == 2
    assert _summary(webhook.alerts()) == [("client_secret_expiry", "crm", "warning"),
                                          ("client_secret_expiry", "jira", "critical")]
    assert webhook.attempts == 1  # both in one POST

    webhook.clear()
    clock.at += timedelta(hours=23)
    assert _alert(fleet, clock, webhook).sent == 0
    clock.at += timedelta(hours=1)  # 24 h unchanged: reminded once more
    assert _summary(_alert(fleet, clock, webhook).alerts) == [
        ("client_secret_expiry", "crm", "warning"), ("client_secret_expiry", "jira", "critical")]
    clock.at += timedelta(hours=4)
    assert _alert(fleet, clock, webhook, resend_after=timedelta(hours=2)).sent == 2
    assert webhook.attempts == 2

    webhook.clear()
    clock.at += timedelta(hours=1)
    assert _alert(fleet, clock, webhook, min_severity="critical").sent == 0
    assert webhook.attempts == 0


def test_retries_on_500_with_back_off_and_a_failed_delivery_is_sent_again(fleet: Harness,
                                                                          webhook) -> None:
    clock = Clock(T0)
    webhook.script = [500, 503]
    sleeps = Sleeps()
    assert _alert(fleet, clock, webhook, sleeps).sent == 1
    assert webhook.attempts == 3 and len(webhook.received) == 1
    assert sleeps == [1.0, 2.0]

    webhook.clear()
    clock.at = T0 + timedelta(days=14)
    webhook.script = [500] * 4
    failed = _alert(fleet, clock, webhook, sleeps)
    assert failed.sent == 0 and "HTTP 500" in failed.errors[0]
    assert "s3cr3t" not in to_json(failed)
    retry = clock.at + timedelta(minutes=5)
    assert _pending(failed) == [("webhook", "crm", "client_secret_expiry", retry),
                                ("webhook", "jira", "client_secret_expiry", retry)]
    assert webhook.attempts == 4 and webhook.received == []

    audit = json.loads(fleet.ok("audit", "log", "--json").out)
    assert [e["outcome"] for e in audit if e["action"] == "alert"][-1] == "failed"
    clock.at += timedelta(minutes=10)  # the next run sends what did not get through
    assert _alert(fleet, clock, webhook).sent == 2
    assert webhook.attempts == 5


def test_a_finding_that_clears_and_comes_back_is_news_again(fleet: Harness, webhook) -> None:
    """jira's warning is sent; the secret gets a later end date (the finding is gone), then the
    date turns out wrong: within the 24 h resend interval, it is sent again."""
    clock = Clock(T0)
    assert _alert(fleet, clock, webhook).sent == 1
    _secret_expiring(fleet, "jira", T0.date() + timedelta(days=400))
    clock.at += timedelta(hours=1)
    assert _alert(fleet, clock, webhook) == replace(NOTHING, resolved=1)
    clock.at += timedelta(hours=1)
    assert _alert(fleet, clock, webhook).resolved == 0  # resolved once
    _secret_expiring(fleet, "jira", T0.date() + timedelta(days=20))
    clock.at += timedelta(hours=1)
    assert _summary(_alert(fleet, clock, webhook).alerts) == [
        ("client_secret_expiry", "jira", "warning")]
    assert webhook.attempts == 2
    # a finding that only drops below --min-severity has not gone: it is not resolved
    clock.at += timedelta(hours=1)
    assert _alert(fleet, clock, webhook, min_severity="critical").resolved == 0


def test_while_the_receiver_is_down_deliveries_back_off(fleet: Harness, webhook) -> None:
    clock = Clock(T0)
    webhook.script = [500] * 12  # three runs' worth of four attempts each
    waits = []
    for _ in range(3):
        failed = _alert(fleet, clock, webhook)
        waits.append(clock.at)
        retry = clock.at + timedelta(minutes=5 * 2 ** (len(waits) - 1))  # 5, 10, 20 minutes
        assert failed.sent == 0 and _pending(failed) == [
            ("webhook", "jira", "client_secret_expiry", retry)]
        clock.at += timedelta(minutes=4)  # inside the back-off: not tried, but still pending
        waiting = _alert(fleet, clock, webhook)
        assert waiting.sent == 0 and waiting.errors == []
        assert _pending(waiting) == [("webhook", "jira", "client_secret_expiry", retry)]
        assert "HTTP 500" in waiting.pending[0].error
        clock.at = retry + timedelta(minutes=1)
    assert webhook.attempts == 12  # the runs inside a back-off did not call the receiver
    assert _alert(fleet, clock, webhook).sent == 1  # it came back: delivered
    assert webhook.attempts == 13 and len(webhook.received) == 1
    clock.at += timedelta(minutes=30)
    assert _alert(fleet, clock, webhook).sent == 0  # and the back-off is over


def test_the_sending_grant_is_checked_before_anything_is_claimed(fleet: Harness,
                                                                 webhook) -> None:
    fleet.ok("grant", "import", "--client", "jira", "--mailbox", "reader@contoso.com",
             "--protocols", "imap", "--refresh-token-stdin", input="M.R3_BAY.reader-0123456789")
    for via, words in (("nobody@contoso.com", "no such grant"),
                       ("reader@contoso.com", "does not cover smtp")):
        result = fleet.run("alert", "--email-to", "ops@contoso.com", "--via", via,
                           VAULT_WEBHOOK_URL=webhook.url)
        assert result.code == 2 and words in result.err, result.text
        result = fleet.run("maintain", "--email-to", "ops@contoso.com", "--via", via)
        assert result.code == 2 and words in result.err, result.text
    assert webhook.attempts == 0
    assert "AlertClaimed" not in fleet.ok("history", "jira", "--json").out

    # a sending grant that breaks is a failed channel, not a bad plan: the webhook still sends
    fleet.ok("grant", "revoke", "help@contoso.com", "--reason", "mailbox closed")
    _secret_expiring(fleet, "jira", date.today() + timedelta(days=10))
    result = fleet.run("alert", "--email-to", "ops@contoso.com", "--via", "help@contoso.com",
                       VAULT_WEBHOOK_URL=webhook.url)
    assert result.code == 1 and "1 alert(s) sent by webhook" in result.out
    assert "pending on email (jira client secret expiry (warning))" in result.err
    assert [a["client"] for a in webhook.alerts()] == ["jira"]


def test_long_lived_alert_states_are_snapshotted(fleet: Harness, webhook) -> None:
    clock = Clock(T0)
    for _ in range(12):  # jira's warning: two events (claimed, sent) a day
        assert "jira" in {a["client"] for a in _alert(fleet, clock, webhook).alerts}
        clock.at += timedelta(days=1)
    snapshots = fleet.sql("SELECT COUNT(*) FROM stored_snapshots")[0][0]
    assert snapshots >= 1
    # and it loads from the snapshot: still due once a day, not twice
    assert "jira" in {a["client"] for a in _alert(fleet, clock, webhook).alerts}
    clock.at += timedelta(hours=1)
    assert _alert(fleet, clock, webhook).sent == 0


def test_retry_after_is_honoured_up_to_a_cap_and_network_errors_are_retried(
        fleet: Harness, webhook) -> None:
    clock = Clock(T0)
    webhook.script = [(429, {"Retry-After": "7"}), (503, {"Retry-After": "3600"})]
    sleeps = Sleeps()
    assert _alert(fleet, clock, webhook, sleeps).sent == 1
    assert sleeps == [7.0, 30.0] and webhook.attempts == 3  # an hour is capped at 30 s

    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/hooks/s3cr3t-hook-token"
    sleeps.clear()
    clock.at += timedelta(days=14)  # critical now: due again
    with fleet.app(clock=clock, sleep=sleeps) as app:
        (error,) = app.alerts.alert(webhook=SecretValue(closed)).errors
    assert sleeps == [1.0, 2.0, 4.0] and "ConnectError" in error
    assert "s3cr3t" not in error and "127.0.0.1/..." in error


def test_a_refusing_receiver_is_not_retried(fleet: Harness, webhook) -> None:
    _secret_expiring(fleet, "jira", date.today() + timedelta(days=10))
    webhook.script = [404]
    result = fleet.run("alert", VAULT_WEBHOOK_URL=webhook.url)
    assert result.code == 1 and "HTTP 404" in result.err
    assert webhook.attempts == 1
    assert "s3cr3t" not in result.text and "Traceback" not in result.text


def test_the_cli_reads_the_url_from_a_file_or_the_environment(fleet: Harness, webhook,
                                                              tmp_path: Path) -> None:
    url_file = tmp_path / "hook.url"
    url_file.write_text(webhook.url + "\n")
    url_file.chmod(0o600)
    _secret_expiring(fleet, "jira", date.today() + timedelta(days=10))
    first = fleet.ok("alert", "--webhook-file", str(url_file), "--min-severity", "info")
    assert "alert(s) sent" in first.out and webhook.paths[0].endswith("s3cr3t-hook-token")
    assert fleet.ok("alert", "--min-severity", "info",
                    VAULT_WEBHOOK_URL=webhook.url).out.strip() == "nothing new to send"
    assert webhook.attempts == 1
    audit = fleet.ok("audit", "log", "--json").out
    assert '"alert"' in audit and "s3cr3t" not in audit
    assert not any("s3cr3t" in text for text in fleet.outputs)

    assert fleet.ok("alert", VAULT_WEBHOOK_URL=webhook.url + "\n").code == 0  # stripped
    for bad, words in (("ftp://example.com/x", "https://"),
                       ("http://hooks.example.com/s3cr3t", "https://"), ("", "give")):
        result = fleet.run("alert", VAULT_WEBHOOK_URL=bad)
        assert result.code == 2 and words in result.err, result.text
        assert "s3cr3t" not in result.text
    assert fleet.run("alert", "--webhook", webhook.url).code == 2  # never on the command line


def test_hosts_racing_for_one_finding_send_it_once(fleet: Harness, webhook) -> None:
    """Two `vault alert` on one store at the same moment: claims conflict, one host sends."""
    import threading

    clock = Clock(T0)
    barrier = threading.Barrier(4)
    results: list[int] = []

    def host() -> None:
        with fleet.app(clock=clock) as app:
            barrier.wait()
            results.append(app.alerts.alert(webhook=SecretValue(webhook.url)).sent)

    threads = [threading.Thread(target=host) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 0, 0, 1]
    assert _summary(webhook.alerts()) == [("client_secret_expiry", "jira", "warning")]


# -- e-mail ---------------------------------------------------------------------------------------


def test_an_email_alert_goes_through_dovecot_submission_with_xoauth2(
        sqlite_vault: Harness, oidc, dovecot, mail_ca, mail_sink, webhook) -> None:
    h = sqlite_vault
    add_oidc_client(h, oidc, scopes="openid offline_access mail.imap mail.smtp")
    oidc_consent(h, oidc, protocols=("smtp",))
    point_at(h, dovecot)
    _secret_expiring(h, "idp", date.today() + timedelta(days=3))
    mail_sink.clear()
    ca = {"VAULT_CA_FILE": str(mail_ca.ca_path)}
    sent = h.ok("alert", "--email-to", "ops@example.test", "--via", ALICE[0], **ca)
    assert "1 alert(s) sent" in sent.out
    (message,) = mail_sink.wait_for(1)
    text = message.content.decode()
    assert list(message.rcpt_tos) == ["ops@example.test"]
    assert "[vault critical] 1 credential alert(s)" in text
    assert "CRITICAL client secret expiry: idp" in text
    assert "nothing new" in h.ok("alert", "--email-to", "ops@example.test", "--via", ALICE[0],
                                 **ca).out
    assert "--via" in h.run("alert", "--email-to", "ops@example.test").err

    # e-mail gets through, the webhook does not: sent (not repeated), but exit 1 and audited so
    _secret_expiring(h, "idp", date.today() + timedelta(days=400))  # gone ...
    assert "nothing new" in h.ok("alert", "--email-to", "ops@example.test", "--via", ALICE[0],
                                 **ca).out
    _secret_expiring(h, "idp", date.today() + timedelta(days=3))  # ... and back: news again
    webhook.script = [404]
    both = h.run("alert", "--email-to", "ops@example.test", "--via", ALICE[0],
                 VAULT_WEBHOOK_URL=webhook.url, **ca)
    assert both.code == 1 and "sent by email" in both.out and "HTTP 404" in both.err
    assert "pending on webhook" in both.err
    assert len(mail_sink.wait_for(2)) == 2
    audit = json.loads(h.ok("audit", "log", "--json").out)
    assert [e["outcome"] for e in audit if e["action"] == "alert"][-1] == "failed"
    assert "nothing new" in h.ok("alert", "--email-to", "ops@example.test", "--via", ALICE[0],
                                 **ca).out


# -- Prometheus -----------------------------------------------------------------------------------


def test_the_prometheus_file_parses_and_says_what_expires(fleet: Harness,
                                                          tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    out = tmp_path / "vault.prom"
    fleet.ok("expiry", "--format", "prometheus", "--output", str(out))
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert not list(tmp_path.glob(".vault-*"))  # the temporary file was renamed into place
    families = {f.name: f for f in text_string_to_metric_families(out.read_text())}
    ends = {s.labels["client"]: s.value
            for s in families["vault_secret_expiry_timestamp_seconds"].samples}
    jira_end = datetime.combine(T0.date() + timedelta(days=21), datetime.min.time(), tzinfo=UTC)
    assert ends == {"jira": jira_end.timestamp(),
                    "crm": jira_end.timestamp() + 20 * 86400}
    (idle,) = families["vault_refresh_token_idle_days"].samples
    assert idle.labels == {"client": "jira", "mailbox": "help@contoso.com"} and idle.value == 0
    (status,) = families["vault_grant_status"].samples
    assert status.labels["status"] == "active" and status.value == 1
    assert families["vault_metrics_timestamp_seconds"].samples[0].value > 0
    stdout = {f.name for f in text_string_to_metric_families(
        fleet.ok("expiry", "--format", "prometheus").out)}
    assert stdout == set(families)


def test_failed_probes_reach_the_prometheus_file_and_alerts(sqlite_vault: Harness, oidc,
                                                            dovecot, mail_ca, webhook) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    h = sqlite_vault
    add_oidc_client(h, oidc, scopes="openid offline_access mail.imap mail.pop")
    oidc_consent(h, oidc, protocols=("imap", "pop"))
    point_at(h, dovecot)
    h.run("probe", ALICE[0], "--protocol", "imap", VAULT_CA_FILE=str(mail_ca.ca_path))
    h.run("probe", ALICE[0], "--protocol", "pop")  # without the CA: a TLS failure
    families = {f.name: f for f in text_string_to_metric_families(
        h.ok("expiry", "--format", "prometheus").out)}
    success = {s.labels["protocol"]: s.value for s in families["vault_probe_success"].samples}
    assert success == {"imap": 1, "pop": 0}
    latency = {s.labels["protocol"]: s.value
               for s in families["vault_probe_latency_seconds"].samples}
    assert 0 < latency["imap"] < 30
    h.ok("alert", VAULT_WEBHOOK_URL=webhook.url)
    (alert,) = webhook.alerts()
    assert (alert["kind"], alert["mailbox"], alert["ref"]) == ("probe_failed", ALICE[0], "pop")
    assert alert["severity"] == "warning" and "vault probe" in alert["advice"]


def test_purging_a_grant_shreds_its_alerts_and_no_name_is_in_the_clear(
        vault: Harness, webhook) -> None:
    add_client(vault, "jira")
    import_grant(vault, "help@contoso.com", "jira")
    (grant_uuid,) = vault.sql("SELECT grant_uuid FROM view_grants")[0]
    clock = Clock(T0 + timedelta(days=80))  # the refresh token idle for 80 days: a warning
    assert _alert(vault, clock, webhook).sent == 1
    (alert,) = webhook.alerts()
    assert alert["kind"] == "refresh_token_idle"
    live = "SELECT COUNT(*) FROM vault_keys WHERE subject_id = ? AND wrapped IS NOT NULL"
    assert int(vault.sql(live, (grant_uuid,))[0][0]) == 3  # grant, lineage, alert
    assert b"help@contoso.com" not in b"".join(
        str(r).encode() for r in vault.sql("SELECT originator_id, subject_id FROM vault_keys"))
    vault.ok("grant", "revoke", "help@contoso.com", "--reason", "gone", "--purge")
    assert int(vault.sql(live, (grant_uuid,))[0][0]) == 0
    clock.at += timedelta(days=2)
    assert _alert(vault, clock, webhook).sent == 0  # nothing left to say about it


# -- pending deliveries: said, exit 1, and other channels are not held back ----------------------


def test_a_failed_delivery_is_pending_until_its_channel_delivers_it(fleet: Harness,
                                                                    webhook) -> None:
    """After a failed delivery, later runs say what is pending on which channel and when it is
    tried next, and exit 1 (alert and maintain), until the channel delivers it."""
    _secret_expiring(fleet, "jira", date.today() + timedelta(days=10))
    webhook.script = [500] * 4
    failed = fleet.run("alert", VAULT_WEBHOOK_URL=webhook.url)
    assert failed.code == 1 and "HTTP 500" in failed.err and "s3cr3t" not in failed.text

    # the receiver works again, but the channel waits out its back-off: said, not swallowed
    again = fleet.run("alert", VAULT_WEBHOOK_URL=webhook.url)
    assert again.code == 1 and "nothing new" not in again.out, again.text
    for result in (failed, again):
        assert result.out.strip() == "nothing sent; pending on webhook"
        assert "1 finding(s) pending on webhook (jira client secret expiry (warning)): " \
               "1 delivery attempt(s) failed in a row, the last: webhook " in result.err
        assert "HTTP 500" in result.err and "next try at" in result.err
    maintain = fleet.run("maintain", "--probe-every", "0", VAULT_WEBHOOK_URL=webhook.url)
    assert maintain.code == 1, maintain.text
    assert "maintain: alert failed: nothing sent; pending on webhook" in maintain.err
    assert webhook.attempts == 4  # not hammered meanwhile

    clock = Clock(datetime.now(UTC) + timedelta(minutes=6))  # the back-off (5 min) is over
    assert _summary(_alert(fleet, clock, webhook).alerts) == [
        ("client_secret_expiry", "jira", "warning")]
    assert fleet.ok("alert", VAULT_WEBHOOK_URL=webhook.url).out.strip() == "nothing new to send"
    audit = json.loads(fleet.ok("audit", "log", "--json").out)
    assert [e["outcome"] for e in audit  # each run's summing-up entry (claims have their own)
            if e["action"] == "alert" and "due" in e["detail"]] == [
        "failed", "failed", "failed", "ok", "ok"]


def test_a_channel_in_back_off_holds_back_no_other_channel(
        sqlite_vault: Harness, oidc, dovecot, mail_ca, mail_sink, webhook,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook fails: the finding goes out by e-mail (Dovecot submission, XOAUTH2) in the
    same run, is pending on the webhook while it waits, then reaches the webhook too, without
    being mailed twice. A finding that appears meanwhile waits with the webhook's back-off
    (doubling), but is mailed at once."""
    h = sqlite_vault
    add_oidc_client(h, oidc, scopes="openid offline_access mail.imap mail.smtp")
    oidc_consent(h, oidc, protocols=("smtp",))
    point_at(h, dovecot)
    _secret_expiring(h, "idp", date.today() + timedelta(days=3))
    mail_sink.clear()
    clock = Clock(datetime.now(UTC))
    start = clock.at
    channels = {"email_to": "ops@example.test", "via": ALICE[0]}

    def run(**kwargs) -> AlertRun:
        with h.app(clock=clock, sleep=Sleeps()) as app:
            return app.alerts.alert(webhook=SecretValue(webhook.url), **channels, **kwargs)

    monkeypatch.setenv("VAULT_CA_FILE", str(mail_ca.ca_path))  # Dovecot's TLS certificate
    webhook.script = [500] * 4
    first = run()
    assert first.delivered == {"email": 1} and len(mail_sink.wait_for(1)) == 1
    assert _pending(first) == [("webhook", "idp", "client_secret_expiry",
                                start + timedelta(minutes=5))]

    clock.at = start + timedelta(minutes=2)  # the webhook works, but waits its turn
    add_client(h, "crm")
    _secret_expiring(h, "crm", date.today() + timedelta(days=2))  # new meanwhile
    second = run()
    assert second.delivered == {"email": 1}  # crm, at once; idp is not mailed again
    assert _pending(second) == [
        ("webhook", "crm", "client_secret_expiry", start + timedelta(minutes=5)),
        ("webhook", "idp", "client_secret_expiry", start + timedelta(minutes=5))]
    assert webhook.attempts == 4 and len(mail_sink.wait_for(2)) == 2

    webhook.script = [500] * 4  # down again when its turn comes: 10 minutes now
    clock.at = start + timedelta(minutes=6)
    third = run()
    assert third.sent == 0 and third.delivered == {}
    retry = clock.at + timedelta(minutes=10)
    assert [p[3] for p in _pending(third)] == [retry, retry]

    clock.at = retry
    fourth = run()
    assert fourth.delivered == {"webhook": 2} and fourth.pending == []
    assert sorted(a["client"] for a in webhook.alerts()) == ["crm", "idp"]
    clock.at += timedelta(minutes=1)
    assert run() == NOTHING
    assert len(mail_sink.wait_for(2)) == 2  # each mailed once


def test_alert_states_stored_before_channels_were_kept_apart_still_load() -> None:
    """Version 1 kept one delivery record for all channels: its AlertFailed (every channel of
    that run failed) and its snapshots load, and the one record stands for each channel."""
    from dataclasses import replace

    from domain.alerts import ANY_CHANNEL, AlertState

    state = AlertState.open(key="subject|client_secret_expiry|s1", now=T0)
    state.record_sent(now=T0, severity="warning", channels=["webhook"])
    snapshot = AlertState.Snapshot.take(state)
    v1 = {k: v for k, v in snapshot.state.items() if k not in ("channels", "class_version")}
    v1.update(failures=2, last_failed_at=T0 + timedelta(hours=1))
    loaded = replace(snapshot, state=v1).mutate(None)
    later = T0 + timedelta(hours=1, minutes=9)
    for channel in ("webhook", "email"):
        assert loaded.retry_at(channel) == T0 + timedelta(hours=1, minutes=10)  # 2 failures
        assert not loaded.due_on(channel, "warning", later, timedelta(hours=24))
        assert loaded.due_on(channel, "critical", later, timedelta(hours=24))
    event = {"error": "HTTP 500"}
    AlertState.AlertFailed.upcast_v1_v2(event)
    assert event["channels"] == [ANY_CHANNEL]
