"""What a mailbox probe's answer means, and what the admin should check. Pure: the wire talk is
in adapters/mail.py. Facts: docs/providers.md ("Clouds and hosts" and the 5.7.139 note).

Outcomes: ok; refused (the server does not accept this credential for this mailbox); temporary
(the server could not check it now: never reported as a bad credential); tls (certificate not
trusted or handshake failed); network (no connection, timeout); protocol (an unexpected answer).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from domain.clouds import CloudProfile

OK, REFUSED, TEMPORARY, TLS, NETWORK, PROTOCOL = (
    "ok", "refused", "temporary", "tls", "network", "protocol")

DEFAULT_PORTS = {  # (port, tls) when the cloud profile names only a host
    "imap": (993, "implicit"), "pop": (995, "implicit"), "smtp": (587, "starttls"),
    "graph": (443, "implicit"),
}



def mail_server(profile: CloudProfile, recorded: dict[str, dict[str, Any]],
                protocol: str) -> dict[str, Any] | None:
    """Where a client's mailboxes are served for one protocol: what `client set-servers`
    recorded, else the cloud profile's host on the protocol's usual port. None if neither
    knows (a custom provider)."""
    default_port, default_tls = DEFAULT_PORTS[protocol]
    mine = recorded.get(protocol) or {}
    host = mine.get("host") or getattr(profile.hosts, protocol)
    if not host:
        return None
    from_profile = not mine.get("host")
    return {"host": host, "port": mine.get("port") or default_port,
            "tls": mine.get("tls") or default_tls,
            "source": "cloud profile" if from_profile else "recorded",
            "unverified": from_profile and profile.is_unverified(f"hosts.{protocol}")}


# What to check when a server refuses a token, by provider: Exchange's settings for Microsoft,
# Gmail's for Google, and for any other server what holds everywhere (its own log says which).
EXCHANGE_CHECKLIST = (
    "the token's audience: IMAP/POP/SMTP need Outlook scopes (https://outlook.office.com/...), "
    "a Graph token is refused",
    "the protocol is enabled for the mailbox (Exchange: Set-CASMailbox -ImapEnabled/-PopEnabled "
    "$true; SMTP AUTH per mailbox)",
    "the user= address is the mailbox the token was issued for (or one it has FullAccess to)",
    "app-only: a service principal created from the Enterprise Application's object id, with "
    "permission on this mailbox (Add-MailboxPermission)",
)
GMAIL_CHECKLIST = (
    "the token's scope: Gmail's IMAP, POP and SMTP take only https://mail.google.com/",
    "the protocol is allowed: IMAP is always on for personal accounts; in Google Workspace the "
    "admin must allow IMAP/POP (Apps > Google Workspace > Gmail > End User Access), and POP is "
    "enabled per account in Gmail's settings",
    "the user= address is the account that consented (Gmail takes no delegated login)",
    "an app in testing: its refresh tokens end after 7 days and only listed test users may "
    "consent",
)
GENERIC_CHECKLIST = (
    "the token's scope and audience (resource) are the ones this server checks",
    "the user= address is the login this server expects for the mailbox (its token subject or "
    "a name it maps to it)",
    "the token is still valid where the server checks it (introspection or its signing keys)",
    "the server's log names the reason it refused the token",
)
CHECKLISTS = {"microsoft": EXCHANGE_CHECKLIST, "google": GMAIL_CHECKLIST}


# 535 5.7.139 has two causes Exchange tells apart only in its free text: SMTP AUTH switched off
# (for the tenant or the mailbox), or the tenant's security defaults, which disable SMTP AUTH
# whatever those settings say (Microsoft: "Enable or disable SMTP AUTH in Exchange Online").
SMTP_AUTH_DISABLED = ("SMTP AUTH is disabled for the tenant or the mailbox: enable it for this "
                      "mailbox (Set-CASMailbox -SmtpClientAuthenticationDisabled $false) or the "
                      "tenant (Set-TransportConfig -SmtpClientAuthenticationDisabled $false)")
SECURITY_DEFAULTS = ("the tenant's security defaults are on, which disable SMTP AUTH whatever "
                     "the Exchange settings say: an admin turns them off (Entra ID > Overview > "
                     "Properties > Manage security defaults), with Conditional Access in their "
                     "place; a Conditional Access policy can block it the same way")


@dataclass(frozen=True)
class MailVerdict:
    outcome: str
    diagnosis: str
    checklist: tuple[str, ...] = field(default=())


def decode_challenge(data: str) -> dict[str, str] | None:
    """The base64 JSON error challenge Dovecot and Google send before failing the command."""
    try:
        decoded = json.loads(base64.b64decode(data.strip(), validate=True))
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None


def _smtp_auth_blocked(reply: str) -> MailVerdict:
    """535 5.7.139: both causes, the one the server's text points at first."""
    causes = [SMTP_AUTH_DISABLED, SECURITY_DEFAULTS]
    lowered = reply.lower()
    if "security defaults" in lowered or "did not meet the criteria" in lowered:
        causes.reverse()
    return MailVerdict(REFUSED, "Exchange refuses SMTP AUTH for this mailbox (535 5.7.139), "
                                f"whatever the token: either {causes[0]}; or {causes[1]}",
                       tuple(causes))


def judge_refusal(protocol: str, reply: str, challenge: dict[str, str] | None,
                  provider: str = "custom") -> MailVerdict:
    """Classify the server's final answer to AUTHENTICATE / AUTH, with the checks of the
    provider the client belongs to (`custom`: a server vault knows nothing about)."""
    upper = reply.upper()
    if any(mark in upper for mark in ("[UNAVAILABLE]", "[SYS/TEMP]", "[TEMPFAIL]")) or \
            (protocol == "smtp" and reply[:1] == "4"):
        return MailVerdict(TEMPORARY, "the server could not check the token right now (its "
                                      "authorization service is unreachable or failing); this "
                                      "says nothing about the credential: try again later")
    if "5.7.139" in reply and provider == "microsoft":
        return _smtp_auth_blocked(reply)
    detail = ""
    if challenge:
        status = challenge.get("status", "")
        scope = challenge.get("scope")
        detail = f" (server: status {status}" + (f", scope {scope}" if scope else "") + ")"
    checklist = CHECKLISTS.get(provider, GENERIC_CHECKLIST) if protocol != "graph" else ()
    if provider == "microsoft" and ("AUTHENTICATE FAILED" in upper or "5.7.3" in reply):
        return MailVerdict(REFUSED, "Exchange refused the token" + detail, checklist)
    server = {"microsoft": "Exchange", "google": "Gmail"}.get(provider, "the server")
    return MailVerdict(
        REFUSED,
        f"{server} refused the token" + detail + ": it may have expired or been revoked, be "
        "for another resource or lack the mail scope, or belong to another mailbox than user=",
        checklist)
