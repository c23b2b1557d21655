"""Scope plans: which scopes a grant asks for, grouped by the resource each token is for.

A token is for one resource. IMAP/POP/SMTP scopes (the Outlook resource) and Graph scopes are
never mixed in one token request (AADSTS700022); a grant that covers both keeps one refresh token
and asks for one access token per resource.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from domain.clouds import (
    MAIL_PROTOCOLS,
    MICROSOFT_CLOUDS,
    OIDC_SCOPES,
    PROTOCOLS,
    CloudProfile,
)
from domain.errors import (
    InvalidInput,
    MissingOfflineAccess,
    MixedResources,
    ScopeCloudMismatch,
)

# Resource names used as keys: stable words, not URLs, so a plan reads well in `grant show`.
MAIL = "mail"
GRAPH = "graph"
DEFAULT = "default"


def parse_protocols(text: str) -> tuple[str, ...]:
    items = [p.strip().lower() for p in text.replace(" ", ",").split(",") if p.strip()]
    aliases = {"pop3": "pop", "submission": "smtp"}
    items = [aliases.get(p, p) for p in items]
    unknown = [p for p in items if p not in PROTOCOLS]
    if unknown or not items:
        raise InvalidInput(
            f"protocols must be a comma-separated list of {', '.join(PROTOCOLS)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    return tuple(p for p in PROTOCOLS if p in items)


def parse_scopes(text: str) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(s for s in text.replace(",", " ").split() if s))
    if not scopes:
        raise InvalidInput("--scopes is empty")
    for scope in scopes:
        if any(ord(c) < 0x21 or c in '"\\' for c in scope):
            raise InvalidInput(f"malformed scope {scope!r}")
    return scopes


def _origin(scope: str) -> str | None:
    if "://" not in scope:
        return None
    parts = urlsplit(scope)
    return f"{parts.scheme}://{parts.netloc}/".lower()


def resource_of(profile: CloudProfile, scope: str) -> str | None:
    """The resource a scope belongs to: MAIL, GRAPH, an origin URL, or None for OIDC scopes."""
    if scope in OIDC_SCOPES:
        return None
    origin = _origin(scope)
    if profile.is_microsoft:
        if origin is None:  # a bare scope such as "Mail.Read" means Microsoft Graph
            return GRAPH
        if origin in _mail_origins(profile):
            return MAIL
        if origin == (profile.graph_resource or "").lower():
            return GRAPH
        for other in MICROSOFT_CLOUDS.values():
            if other.cloud != profile.cloud and origin in (
                *_mail_origins(other), (other.graph_resource or "").lower(),
            ):
                raise ScopeCloudMismatch(
                    f"scope {scope} belongs to {other.title}, but this client is on "
                    f"{profile.title}: use {profile.mail_resource} for mail and "
                    f"{profile.graph_resource} for Graph"
                )
        return origin
    if profile.provider == "google" and origin == "https://mail.google.com/":
        return MAIL
    return origin or DEFAULT


def _mail_origins(profile: CloudProfile) -> tuple[str, ...]:
    """The origins a cloud's mail scopes may name: its mail resources and its app-only scope's."""
    return tuple(r.lower() for r in (*profile.mail_resources,
                                     _origin(profile.app_only_mail_scope or "") or "") if r)


def resource_url(scopes: list[str]) -> str | None:
    """Which resource a group of scopes is for, as a URL (e.g. https://outlook-dod.office365.us/);
    None when its scopes name none (a custom provider's bare scopes)."""
    for scope in scopes:
        origin = _origin(scope)
        if origin:
            return origin
    return None


def _by_resource(profile: CloudProfile, scopes: tuple[str, ...]) -> dict[str, list[str]]:
    plan: dict[str, list[str]] = {}
    for scope in scopes:
        resource = resource_of(profile, scope)
        if resource is not None:
            plan.setdefault(resource, []).append(scope)
    return plan


def plan_scopes(
    profile: CloudProfile,
    protocols: tuple[str, ...],
    scopes: tuple[str, ...] | None = None,
) -> dict[str, list[str]]:
    """Group the scopes a grant asks for by resource; each group is one token request.

    `scopes` overrides the scopes derived from the protocols (a custom provider needs it).
    """
    if scopes is None:
        derived: list[str] = []
        for protocol in protocols:
            derived.extend(profile.protocol_scopes(protocol))
        scopes = tuple(dict.fromkeys(derived))
        if profile.provider != "google":
            scopes = ("offline_access", *scopes)
    elif profile.is_microsoft and "offline_access" not in scopes:
        raise MissingOfflineAccess()

    oidc = [s for s in scopes if s in OIDC_SCOPES]
    if profile.is_microsoft and "offline_access" not in oidc:
        raise MissingOfflineAccess()
    plan = _by_resource(profile, scopes)
    if not plan:
        raise InvalidInput("no resource scope given: only OpenID scopes such as offline_access")
    for resource, group in plan.items():
        if any(s.endswith("/.default") for s in group) and len(group) > 1:
            raise MixedResources(
                f".default cannot be mixed with named scopes for {resource} (AADSTS70011)"
            )
        group.extend(oidc)

    mail_wanted = [p for p in protocols if p in MAIL_PROTOCOLS]
    if profile.provider in ("microsoft", "google"):
        if mail_wanted and MAIL not in plan:
            needs = (f"{', '.join(mail_wanted)} need{'s' if len(mail_wanted) == 1 else ''} a "
                     f"mail scope ({' or '.join(f'{r}...' for r in profile.mail_resources)})")
            others = [r for r in plan if r not in (MAIL, GRAPH)]
            if others:  # a resource this cloud does not know for mail: say which, not "Graph"
                raise MixedResources(
                    f"{needs}: {', '.join(others)} is not a mail resource of {profile.title}")
            raise MixedResources(f"{needs}: Graph tokens are refused by IMAP, POP and SMTP")
        if "graph" in protocols and GRAPH not in plan:
            raise MixedResources("graph needs a Microsoft Graph scope (e.g. Mail.ReadWrite)")
    return plan


def resource_for_protocol(protocol: str) -> str:
    return GRAPH if protocol == "graph" else MAIL


def plan_app_only(
    profile: CloudProfile, protocols: tuple[str, ...], scopes: tuple[str, ...] | None = None
) -> dict[str, list[str]]:
    """Client-credentials (app-only) scopes: `<resource>/.default`, one request per resource."""
    if scopes:
        plan = _by_resource(profile, scopes)
        if not plan:
            raise InvalidInput("app-only access needs a resource scope such as .../.default")
        return plan
    if profile.provider == "google":
        raise InvalidInput("Google mailboxes are reached app-only through service accounts, "
                           "which vault does not manage; use a consent grant")
    if not profile.is_microsoft:
        raise InvalidInput("a custom provider's app-only scopes must be given with --scopes")
    plan: dict[str, list[str]] = {}
    if any(p in MAIL_PROTOCOLS for p in protocols):
        plan[MAIL] = [profile.app_only_mail_scope or ""]
    if "graph" in protocols:
        plan[GRAPH] = [f"{profile.graph_resource}.default"]
    return plan


def resource_for(plan: dict[str, list[str]], protocol: str) -> str:
    """Which of a grant's token resources serves a protocol."""
    wanted = resource_for_protocol(protocol)
    if wanted in plan:
        return wanted
    if len(plan) == 1:  # a custom provider: one resource serves every protocol
        return next(iter(plan))
    raise InvalidInput(f"this grant has no {wanted} scopes for {protocol}")
