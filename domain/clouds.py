"""Cloud profiles as data: where each provider and national cloud signs in, which resource a
mail protocol's scopes belong to, and where its mail servers are.

Facts, each with its source (and "(unverified)" where no Microsoft page confirms it):
docs/providers.md, "Clouds and hosts". A cloud is a first-class profile, never a string scattered
through code; everything else asks the profile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from domain.errors import InvalidInput
from domain.vocabulary import MAIL_PROTOCOLS as MAIL_PROTOCOLS  # re-exported
from domain.vocabulary import PROTOCOLS, PROVIDERS

GENERIC_TENANTS = ("common", "organizations", "consumers")
# Scopes that belong to no resource: they ride along with any token request.
OIDC_SCOPES = frozenset({"offline_access", "openid", "profile", "email"})

_GUID = re.compile(
    r"^\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?$"
)
_DOMAIN = re.compile(r"^(?=.{3,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def is_guid(value: str) -> bool:
    return bool(_GUID.match(value.strip()))


@dataclass(frozen=True)
class Endpoints:
    authorize_url: str | None = None
    token_url: str | None = None
    device_url: str | None = None
    revoke_url: str | None = None
    issuer: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "authorize_url": self.authorize_url,
            "token_url": self.token_url,
            "device_url": self.device_url,
            "revoke_url": self.revoke_url,
            "issuer": self.issuer,
        }


@dataclass(frozen=True)
class MailHosts:
    imap: str | None
    pop: str | None
    smtp: str | None
    graph: str | None


@dataclass(frozen=True)
class CloudProfile:
    provider: str  # microsoft | google | custom
    cloud: str  # global | gcc-high | dod | china | google | custom
    title: str
    login_host: str | None
    mail_resource: str | None  # delegated IMAP/POP/SMTP scopes live under this resource
    app_only_mail_scope: str | None
    graph_resource: str | None
    hosts: MailHosts
    # Fields no Microsoft page confirms: "mail_resource", "app_only_mail_scope", "hosts.smtp"...
    unverified: tuple[str, ...] = field(default=())
    # Other sign-in hosts of the same cloud instance (another tool's configuration may name them)
    login_aliases: tuple[str, ...] = field(default=())
    # Other resources Exchange accepts mail scopes under in this cloud (`--scopes` may name them)
    mail_resource_aliases: tuple[str, ...] = field(default=())

    @property
    def is_microsoft(self) -> bool:
        return self.provider == "microsoft"

    @property
    def login_hosts(self) -> tuple[str, ...]:
        return tuple(h for h in (self.login_host, *self.login_aliases) if h)

    @property
    def mail_resources(self) -> tuple[str, ...]:
        """Every resource a delegated mail scope of this cloud may name, the default first."""
        return tuple(r for r in (self.mail_resource, *self.mail_resource_aliases) if r)

    def is_unverified(self, fact: str) -> bool:
        return fact in self.unverified

    def endpoints(self, tenant: str | None) -> Endpoints:
        if self.is_microsoft:
            base = f"https://{self.login_host}/{tenant}/oauth2/v2.0"
            return Endpoints(
                authorize_url=f"{base}/authorize",
                token_url=f"{base}/token",
                device_url=f"{base}/devicecode",
                issuer=f"https://{self.login_host}/{tenant}/v2.0",
            )
        if self.provider == "google":
            return Endpoints(
                authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
                token_url="https://oauth2.googleapis.com/token",
                device_url="https://oauth2.googleapis.com/device/code",
                revoke_url="https://oauth2.googleapis.com/revoke",
                issuer="https://accounts.google.com",
            )
        return Endpoints()

    def protocol_scopes(self, protocol: str) -> tuple[str, ...]:
        """The delegated scopes a protocol needs in this cloud (without offline_access)."""
        if protocol not in PROTOCOLS:
            raise InvalidInput(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
        if self.provider == "google":
            if protocol == "graph":
                raise InvalidInput("Google has no Graph API: choose imap, pop or smtp")
            return ("https://mail.google.com/",)
        if self.is_microsoft:
            if protocol == "graph":
                return (f"{self.graph_resource}Mail.ReadWrite", f"{self.graph_resource}Mail.Send")
            name = {"imap": "IMAP.AccessAsUser.All", "pop": "POP.AccessAsUser.All",
                    "smtp": "SMTP.Send"}[protocol]
            return (f"{self.mail_resource}{name}",)
        raise InvalidInput(
            "a custom provider has no built-in scopes: give them with --scopes"
        )


MICROSOFT_CLOUDS: dict[str, CloudProfile] = {
    "global": CloudProfile(
        provider="microsoft", cloud="global", title="Microsoft 365 (global, GCC moderate)",
        login_host="login.microsoftonline.com",
        mail_resource="https://outlook.office.com/",
        app_only_mail_scope="https://outlook.office365.com/.default",
        graph_resource="https://graph.microsoft.com/",
        hosts=MailHosts("outlook.office365.com", "outlook.office365.com", "smtp.office365.com",
                        "graph.microsoft.com"),
    ),
    "gcc-high": CloudProfile(
        provider="microsoft", cloud="gcc-high", title="Microsoft 365 US Government GCC High",
        login_host="login.microsoftonline.us",
        mail_resource="https://outlook.office365.us/",
        app_only_mail_scope="https://outlook.office365.us/.default",
        graph_resource="https://graph.microsoft.us/",
        # Microsoft's GCC High endpoint list names outlook.office365.us for 25/587 (and 993/995);
        # smtp.office365.us appears only in third-party code.
        hosts=MailHosts("outlook.office365.us", "outlook.office365.us", "outlook.office365.us",
                        "graph.microsoft.us"),
        unverified=("mail_resource", "app_only_mail_scope"),
    ),
    "dod": CloudProfile(
        provider="microsoft", cloud="dod", title="Microsoft 365 US Government DoD",
        login_host="login.microsoftonline.us",
        # Exchange in DoD is served from outlook-dod.office365.us; which resource its delegated
        # mail scopes name is documented nowhere: the US Government one is the default and the
        # DoD host is accepted too (a grant shows which it uses).
        mail_resource="https://outlook.office365.us/",
        mail_resource_aliases=("https://outlook-dod.office365.us/",),
        app_only_mail_scope="https://outlook.office365.us/.default",
        graph_resource="https://dod-graph.microsoft.us/",
        hosts=MailHosts("outlook-dod.office365.us", "outlook-dod.office365.us",
                        "outlook-dod.office365.us", "dod-graph.microsoft.us"),
        unverified=("mail_resource", "app_only_mail_scope"),
    ),
    "china": CloudProfile(
        provider="microsoft", cloud="china", title="Microsoft 365 operated by 21Vianet (China)",
        login_host="login.chinacloudapi.cn",
        # Microsoft's national-cloud page and its 21Vianet endpoint list name this one; Entra's
        # instance metadata lists both as aliases of one authority.
        login_aliases=("login.partner.microsoftonline.cn",),
        mail_resource="https://partner.outlook.cn/",
        app_only_mail_scope="https://partner.outlook.cn/.default",
        graph_resource="https://microsoftgraph.chinacloudapi.cn/",
        # Microsoft lists *.partner.outlook.cn for 443/80 only: no page names the mail hosts.
        hosts=MailHosts("partner.outlook.cn", "partner.outlook.cn", "smtp.partner.outlook.cn",
                        "microsoftgraph.chinacloudapi.cn"),
        unverified=("mail_resource", "app_only_mail_scope", "hosts.imap", "hosts.pop",
                    "hosts.smtp"),
    ),
}

GOOGLE = CloudProfile(
    provider="google", cloud="google", title="Google Workspace / Gmail",
    login_host="accounts.google.com", mail_resource="https://mail.google.com/",
    app_only_mail_scope=None, graph_resource=None,
    hosts=MailHosts("imap.gmail.com", "pop.gmail.com", "smtp.gmail.com", None),
)

CUSTOM = CloudProfile(
    provider="custom", cloud="custom", title="Custom OAuth2 / OpenID provider",
    login_host=None, mail_resource=None, app_only_mail_scope=None, graph_resource=None,
    hosts=MailHosts(None, None, None, None),
)


def profile_for(provider: str, cloud: str | None = None) -> CloudProfile:
    if provider == "microsoft":
        cloud = cloud or "global"
        try:
            return MICROSOFT_CLOUDS[cloud]
        except KeyError:
            raise InvalidInput(
                f"unknown Microsoft cloud {cloud!r}; choose from {', '.join(MICROSOFT_CLOUDS)}"
            ) from None
    if cloud not in (None, provider):
        raise InvalidInput(f"--cloud applies to Microsoft only, not to {provider}")
    if provider == "google":
        return GOOGLE
    if provider == "custom":
        return CUSTOM
    raise InvalidInput(f"unknown provider {provider!r}; choose from {', '.join(PROVIDERS)}")


def microsoft_cloud_of_login_host(host: str) -> str | None:
    """The Microsoft cloud a sign-in host belongs to (GCC High and DoD share theirs: GCC High)."""
    host = host.lower()
    for profile in MICROSOFT_CLOUDS.values():
        if host in profile.login_hosts:
            return profile.cloud
    return None


def check_tenant(profile: CloudProfile, tenant: str | None) -> str | None:
    """A Microsoft tenant is a GUID, a verified domain, or one of the generic names."""
    if not profile.is_microsoft:
        if tenant:
            raise InvalidInput(f"--tenant applies to Microsoft only, not to {profile.provider}")
        return None
    if not tenant:
        raise InvalidInput(
            "Microsoft clients need --tenant: the Directory (tenant) ID from the app's "
            "Overview page, or the tenant's domain"
        )
    tenant = tenant.strip()
    lowered = tenant.lower()
    if lowered in GENERIC_TENANTS:
        return lowered
    if is_guid(tenant):
        return tenant.strip("{}").lower()
    if _DOMAIN.match(lowered):
        return lowered
    raise InvalidInput(
        f"tenant {tenant!r} is neither a GUID, a domain name, nor one of "
        f"{', '.join(GENERIC_TENANTS)}"
    )


def require_concrete_tenant(tenant: str | None) -> None:
    """App-only (client-credentials) tokens need a real tenant: 'common' fails (AADSTS9001023)."""
    if tenant is None or tenant in GENERIC_TENANTS:
        raise InvalidInput(
            f"app-only tokens need a concrete tenant (GUID or domain), not {tenant!r}: "
            "Microsoft answers AADSTS9001023 for the generic endpoints"
        )


def token_url_in_tenant(token_url: str, tenant: str | None, home_tenant: str) -> str:
    """The token endpoint of `home_tenant`: the client's token URL with its tenant segment (the
    first of its path, as Microsoft's are: /{tenant}/oauth2/v2.0/token) replaced."""
    from urllib.parse import quote, unquote, urlsplit, urlunsplit

    home_tenant = home_tenant.strip()
    if not home_tenant or home_tenant.lower() in GENERIC_TENANTS or "/" in home_tenant:
        raise InvalidInput("--home-tenant is the app's home tenant: its GUID or domain, not "
                           f"{home_tenant!r}")
    parts = urlsplit(token_url)
    segments = parts.path.split("/")
    if len(segments) < 2 or tenant is None or unquote(segments[1]).lower() != tenant.lower():
        raise InvalidInput("--home-tenant needs a token URL that names the client's tenant "
                           "(https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token)")
    segments[1] = quote(home_tenant, safe="")
    return urlunsplit(parts._replace(path="/".join(segments)))
