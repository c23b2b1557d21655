"""The login name a grant logs in to the mail server with, and how SASL carries it."""

from __future__ import annotations

import base64
from uuid import uuid4

import pytest

from adapters.sasl import initial_response
from domain.errors import InvalidInput
from domain.grants import ConsentGrant
from domain.rotation import rotation_id_for
from tests.unit.test_domain import NOW, client


def _grant(login: str | None = None) -> ConsentGrant:
    gid = uuid4()
    return ConsentGrant.grant(aggregate_id=gid, rotation_id=rotation_id_for(gid), now=NOW,
                              client=client(), mailbox="Help@Contoso.com", protocols=("imap",),
                              scopes=None, method="import", granted_at=None, granted_by="admin",
                              login=login)


def test_the_login_is_the_mailbox_unless_set() -> None:
    grant = _grant()
    assert grant.login is None and grant.sasl_user == "Help@contoso.com"
    assert [type(e).__name__ for e in grant.collect_events()] == ["Granted"]


def test_a_login_is_recorded_and_changed_only_when_it_differs() -> None:
    grant = _grant(" helpdesk ")
    assert grant.sasl_user == "helpdesk"
    assert [type(e).__name__ for e in grant.collect_events()] == ["Granted", "LoginSet"]
    assert grant.set_login(now=NOW, login="helpdesk") is False
    assert grant.set_login(now=NOW, login="HELPDESK") is True  # a server may tell case apart
    assert grant.set_login(now=NOW, login="Help@contoso.com") is True  # the mailbox again
    assert grant.login is None and grant.sasl_user == "Help@contoso.com"
    assert grant.set_login(now=NOW, login=None) is False
    assert [type(e).__name__ for e in grant.collect_events()] == ["LoginSet", "LoginSet"]


@pytest.mark.parametrize("login", ["", "   ", "two words", "tab\there", "ctl\x01a", "x" * 257])
def test_a_login_that_no_sasl_exchange_can_carry_is_refused(login: str) -> None:
    with pytest.raises(InvalidInput, match="--login"):
        _grant(login)
    with pytest.raises(InvalidInput, match="--login"):
        _grant().set_login(now=NOW, login=login)


def test_oauthbearer_escapes_the_authzid_as_rfc_5801_says() -> None:
    raw = base64.b64decode(initial_response("oauthbearer", "a,b=c", "T", "mail.test", 993))
    assert raw == b"n,a=a=2Cb=3Dc,\x01host=mail.test\x01port=993\x01auth=Bearer T\x01\x01"
    raw = base64.b64decode(initial_response("xoauth2", "alice", "T"))
    assert raw == b"user=alice\x01auth=Bearer T\x01\x01"
