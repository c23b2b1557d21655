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


def resource_for(plan: dict[str, list[str]], protocol: str,
                 indicators: dict[str, str] | None = None) -> str:
    """Which of a grant's token resources serves a protocol: its resource indicator (RFC 8707)
    where it has one."""
    if indicators and protocol in indicators:
        return indicators[protocol]
    wanted = resource_for_protocol(protocol)
    if wanted in plan:
        return wanted
    rest = [key for key in plan if key not in (indicators or {}).values()]
    if len(rest) == 1:  # a custom provider: one resource serves every protocol
        return rest[0]
    raise InvalidInput(f"this grant has no {wanted} scopes for {protocol}")


# -- RFC 8707 resource indicators (custom providers) ----------------------------------------------

EVERY_PROTOCOL = "*"  # the key of a resource indicator that serves every protocol


def check_resource_indicator(uri: str) -> str:
    """An RFC 8707 resource indicator: an absolute URI without a fragment (section 2)."""
    uri = uri.strip()
    parts = urlsplit(uri)
    scheme_ok = bool(parts.scheme) and parts.scheme[0].isalpha() and all(
        c.isalnum() or c in "+-." for c in parts.scheme)
    if not scheme_ok or not (parts.netloc or parts.path) or "#" in uri or len(uri) > 2048 or \
            any(ord(c) < 0x21 or ord(c) == 0x7f for c in uri):
        raise InvalidInput(f"--resource takes an absolute URI without a fragment (RFC 8707), "
                           f"e.g. imaps://mail.example.com or urn:example:mail, not {uri!r}")
    return uri


def parse_resource_options(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--resource URI` (every protocol) and `--resource PROTOCOL=URI` (one), as
    {"*" or protocol: URI}; each key at most once."""
    resources: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        protocol = key.strip().lower()
        if sep and protocol in PROTOCOLS:
            target, uri = protocol, rest
        else:
            target, uri = EVERY_PROTOCOL, value
        if target in resources:
            raise InvalidInput(f"--resource is given twice for "
                               f"{'every protocol' if target == EVERY_PROTOCOL else target}")
        resources[target] = check_resource_indicator(uri)
    return resources


def indicators_for(resources: dict[str, str], protocols: tuple[str, ...]) -> dict[str, str]:
    """{protocol: resource indicator} for the protocols a grant covers that have one."""
    found = {p: resources.get(p) or resources.get(EVERY_PROTOCOL) for p in protocols}
    return {p: uri for p, uri in found.items() if uri}


def with_indicators(plan: dict[str, list[str]], indicators: dict[str, str],
                    protocols: tuple[str, ...]) -> dict[str, list[str]]:
    """A custom provider's plan with one token per resource indicator, each asking for the
    plan's scopes; a protocol without an indicator keeps the plan's own group."""
    if not indicators:
        return plan
    if len(plan) != 1:
        raise InvalidInput("--resource needs the client's scopes to form one group (bare "
                           "scopes such as mail.imap), not scopes of several resources")
    ((key, scopes),) = plan.items()
    result = {uri: list(scopes) for uri in dict.fromkeys(indicators.values())}
    if any(p not in indicators for p in protocols):
        result[key] = list(scopes)
    return result
