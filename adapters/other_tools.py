"""What people have today, read into accounts vault can import: a mutt_oauth2.py token file
(its decrypted JSON) and an email-oauth2-proxy configuration (whose tokens are Fernet-encrypted
with a key derived from the account's password, PBKDF2-HMAC-SHA256 over the stored salt)."""

from __future__ import annotations

import base64
import binascii
import configparser
import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from domain.clouds import MAIL_PROTOCOLS, MICROSOFT_CLOUDS, microsoft_cloud_of_login_host
from domain.errors import InvalidInput
from domain.secret_value import SecretValue

GOOGLE_HOSTS = ("accounts.google.com", "oauth2.googleapis.com", "www.googleapis.com")
# mutt_oauth2.py's built-in registrations (its `registrations` table)
MUTT_SCOPES = {
    "microsoft": ("offline_access", "https://outlook.office.com/IMAP.AccessAsUser.All",
                  "https://outlook.office.com/POP.AccessAsUser.All",
                  "https://outlook.office.com/SMTP.Send"),
    "google": ("https://mail.google.com/",),
}
# email-oauth2-proxy: PBKDF2 iterations it has used (current, and before 2023-10-17)
PROXY_ITERATIONS = (1_200_000, 100_000)
MAX_ITERATIONS = 10_000_000


@dataclass
class Account:
    """One mailbox of the old tool: the app it signs in with and its refresh token."""

    source: str
    mailbox: str
    provider: str
    client_id: str
    tenant: str | None = None
    cloud: str | None = None
    client_secret: SecretValue | None = None
    refresh_token: SecretValue | None = None
    scopes: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ()
    endpoints: dict[str, str | None] = field(default_factory=dict)
    redirect_uri: str | None = None
    problem: str | None = None  # why it cannot become a grant (it is reported, not imported)


def protocols_for(provider: str, scopes: tuple[str, ...],
                  served: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Which protocols a scope list covers. Where the scopes cannot say (a custom provider's
    scopes that name no protocol, Microsoft's `.default`), the protocols the old tool serves
    (`served`, e.g. the proxy's server sections); () when neither tells."""
    if provider == "google":  # one scope covers every protocol
        return ("imap", "pop", "smtp") if "https://mail.google.com/" in scopes else ()
    found = []
    for scope in scopes:
        if provider == "custom":  # e.g. "mail.imap", "imap", "smtp:send": words, not URLs
            words = set(scope.lower().replace(":", ".").replace("/", ".").split("."))
            named = [p for p, marks in (("imap", {"imap"}), ("pop", {"pop", "pop3"}),
                                        ("smtp", {"smtp", "submission"})) if words & marks]
        else:
            name = scope.rsplit("/", 1)[-1].lower()
            named = [p for p, marker in (("imap", "imap."), ("pop", "pop."), ("smtp", "smtp.send"),
                                         ("graph", "mail."))
                     if name.startswith(marker) and (p != "graph" or "graph.microsoft" in scope)]
        found += [p for p in named if p not in found]
    if not found:
        found = [p for p in MAIL_PROTOCOLS if p in served]
    return tuple(p for p in ("imap", "pop", "smtp", "graph") if p in found)


def parse_mutt_oauth2(text: str, client_id: str | None = None,
                      client_secret: SecretValue | None = None) -> Account:
    """The JSON mutt_oauth2.py keeps (decrypt it first: `gpg -d TOKENFILE | vault import ...`).
    NeoMutt's script stores the app's client id and secret in it; mutt's keeps them in the
    script itself, so they can be given instead."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"not a decrypted mutt_oauth2.py token file (JSON error at line "
                           f"{e.lineno}); decrypt it first, e.g. gpg --decrypt FILE") from None
    except (ValueError, RecursionError):
        raise InvalidInput("not a mutt_oauth2.py token file: its JSON nests too deeply or holds "
                           "a number too long to read") from None
    if not isinstance(data, dict):
        raise InvalidInput("not a mutt_oauth2.py token file: expected a JSON object")
    given = {k: _mutt_string(data, k) for k in ("registration", "email", "refresh_token",
                                                 "client_id", "client_secret", "tenant")}
    registration = given["registration"].lower()
    if registration not in MUTT_SCOPES:
        raise InvalidInput(f"unknown mutt_oauth2.py registration {registration!r}: "
                           "expected google or microsoft")
    missing = [k for k in ("email", "refresh_token") if not given[k]]
    if missing:
        raise InvalidInput(f"the token file lacks {', '.join(missing)}")
    client_id = (given["client_id"] or client_id or "").strip()
    if not client_id:
        raise InvalidInput("the token file holds no client_id (mutt's script keeps it in its "
                           "registrations table): give --client-id")
    scopes = MUTT_SCOPES[registration]
    return Account(
        source="mutt_oauth2.py", mailbox=given["email"].strip(), provider=registration,
        client_id=client_id,
        tenant=given["tenant"].strip() or ("common" if registration == "microsoft" else None),
        client_secret=SecretValue(given["client_secret"]) if given["client_secret"] else
        client_secret,
        refresh_token=SecretValue(given["refresh_token"]), scopes=scopes,
        protocols=protocols_for(registration, scopes))


def _mutt_string(data: dict, key: str) -> str:
    """mutt_oauth2.py writes every one of these as a string ('' until known); anything else
    is a hand-made or corrupt file, refused rather than turned into text with str()."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"the token file's {key} is not a string")
    return value


def _decrypt(password: SecretValue, salt: bytes, iterations: tuple[int, ...],
             values: dict[str, str]) -> dict[str, SecretValue]:
    """Those values a key of one of the iteration counts opens, each on its own as the proxy's
    MultiFernet does (PBKDF2 at 1.2 M rounds costs about half a second, so keys are derived
    one at a time, and only while a value is still closed)."""
    opened: dict[str, SecretValue] = {}
    for count in iterations:
        if len(opened) == len(values):
            break
        kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=count)
        fernet = Fernet(base64.urlsafe_b64encode(kdf.derive(password.reveal().encode())))
        for key, value in values.items():
            if key in opened:
                continue
            try:
                opened[key] = SecretValue(fernet.decrypt(value.encode()).decode())
            except (InvalidToken, UnicodeError):
                continue
    return opened


def _provider(permission_url: str | None, token_url: str,
              scopes: tuple[str, ...] = ()) -> tuple[str, str | None, str | None]:
    """(provider, cloud, tenant) from the proxy's endpoint URLs: every sign-in host of a
    Microsoft cloud (21Vianet has two); GCC High and DoD share theirs, DoD shows in its scopes."""
    parts = urlsplit(token_url)
    host = (parts.hostname or "").lower()
    cloud = microsoft_cloud_of_login_host(host)
    if cloud:
        tenant = parts.path.strip("/").split("/")[0] or "common"
        dod = MICROSOFT_CLOUDS["dod"]
        dod_only = {r.lower() for r in (*dod.mail_resource_aliases, dod.graph_resource or "")}
        if cloud == "gcc-high" and any(s.lower().startswith(tuple(dod_only)) for s in scopes):
            cloud = "dod"
        return "microsoft", cloud, tenant
    if host in GOOGLE_HOSTS or "accounts.google.com" in (permission_url or ""):
        return "google", None, None
    return "custom", None, None


def _served_protocols(parser: configparser.ConfigParser) -> tuple[str, ...]:
    """The protocols the proxy listens for: its server sections, [IMAP-1993], [SMTP-1587]..."""
    kinds = {section.split("-", 1)[0].lower() for section in parser.sections()
             if "-" in section and "@" not in section}
    return tuple(p for p in MAIL_PROTOCOLS if p in kinds)


PLACEHOLDER = "*** your"  # the proxy's example sections


def parse_email_oauth2_proxy(text: str, password: SecretValue | None) -> list[Account]:
    """Every account section (`[user@example.com]`) of an emailproxy.config. With the proxy's
    `allow_catch_all_accounts`, options missing from an account come from `[@domain]`, then
    `[@]`, as the proxy reads them. Its untouched example sections are left out."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error as e:
        raise InvalidInput(f"not an email-oauth2-proxy configuration: {e.message.splitlines()[0]}"
                           ) from None
    try:
        catch_all = parser.getboolean("emailproxy", "allow_catch_all_accounts", fallback=False)
    except ValueError:
        raise InvalidInput("[emailproxy] allow_catch_all_accounts is not a boolean (True or "
                           "False)") from None
    accounts = []
    for section in parser.sections():
        if "@" not in section or section.startswith("@"):
            continue  # server sections, and catch-all templates (no tokens of their own)

        def get(option: str, account: str = section) -> str | None:
            for name in (account, *((f"@{account.split('@')[-1]}", "@") if catch_all else ())):
                if parser.has_option(name, option):
                    return parser.get(name, option)
            return None

        if PLACEHOLDER in (get("client_id") or ""):
            continue
        # the proxy reads an account's token from its own section only: a catch-all's would be
        # another account's
        own_token = parser.get(section, "refresh_token", fallback=None)
        accounts.append(_proxy_account(section, get, own_token, password,
                                       _served_protocols(parser)))
    if not accounts:
        raise InvalidInput("no account sections ([you@example.com]) in the configuration")
    return accounts


def _proxy_account(mailbox: str, get, refresh_token: str | None,
                   password: SecretValue | None, served: tuple[str, ...] = ()) -> Account:
    token_url = get("token_url") or ""
    scopes = tuple((get("oauth2_scope") or "").split())
    try:
        provider, cloud, tenant = _provider(get("permission_url"), token_url, scopes)
    except ValueError:  # urlsplit: an unclosed IPv6 bracket, say
        raise InvalidInput(f"[{mailbox}] token_url is not a URL") from None
    account = Account(
        source="email-oauth2-proxy", mailbox=mailbox, provider=provider,
        client_id=(get("client_id") or "").strip(), tenant=tenant, cloud=cloud, scopes=scopes,
        protocols=protocols_for(provider, scopes, served), redirect_uri=get("redirect_uri"),
        endpoints=({"authorize_url": get("permission_url"), "token_url": token_url}
                   if provider == "custom" else {}))
    flow = get("oauth2_flow") or "authorization_code"
    if flow not in ("authorization_code", "device"):
        account.problem = (f"oauth2_flow = {flow}: not a delegated grant (for client credentials "
                           "use `vault grant add-app`)")
        return account
    if not token_url or not account.client_id:
        account.problem = "the section lacks token_url or client_id"
        return account
    if not account.protocols:
        account.problem = ("neither its oauth2_scope nor the proxy's server sections say which "
                           "protocols it serves: import it with `vault grant import --protocols`")
        return account
    plain_secret = get("client_secret")
    if plain_secret and PLACEHOLDER in plain_secret:
        plain_secret = None
    encrypted_secret = get("client_secret_encrypted")
    # the proxy signs in with the certificate only when the account has no client secret
    certificate = get("jwt_certificate_path") and get("jwt_key_path")
    if certificate and not (plain_secret or encrypted_secret):
        account.problem = ("signs in with a certificate (jwt_certificate_path), which is not "
                           "imported: add the app with `vault client add --certificate-file`, "
                           "then run `vault consent`")
        return account
    if not refresh_token:
        account.problem = "no refresh token yet (the proxy never signed in): run `vault consent`"
        return account
    if password is None:
        raise InvalidInput("the proxy's tokens are encrypted with the account's password: give "
                           "--password-stdin or --password-file")
    try:
        salt = base64.b64decode(get("token_salt") or "", validate=True)
        count = int(get("token_iterations") or PROXY_ITERATIONS[1])
    except (binascii.Error, ValueError):
        salt, count = b"", 0
    if not salt or not 1 <= count <= MAX_ITERATIONS:
        account.problem = "its token_salt or token_iterations is not valid"
        return account
    # as the proxy does: a plain client_secret (perhaps just edited) wins, and the encrypted one
    # is then never opened (it may be stale, under an old password)
    sealed = {"refresh_token": refresh_token}
    if not plain_secret and encrypted_secret:
        sealed["client_secret"] = encrypted_secret
    opened = _decrypt(password, salt, tuple(dict.fromkeys((count, *PROXY_ITERATIONS))), sealed)
    if len(opened) < len(sealed):
        closed = "tokens" if "refresh_token" not in opened else "client_secret_encrypted"
        account.problem = f"the password does not decrypt its {closed}"
        return account
    account.refresh_token = opened["refresh_token"]
    account.client_secret = SecretValue(plain_secret) if plain_secret else opened.get(
        "client_secret")
    return account
