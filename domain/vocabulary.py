"""The words vault's records, rules and commands share: statuses, protocols, providers, clouds,
severities, flows and output formats.

Kept free of imports, like domain/topics.py: the CLI's choice lists and the light paths name them
without loading the aggregates (and eventsourcing). The domain modules use these very objects.
"""

# A grant's status (ConsentGrant, and the `status` column of its read-model row).
ACTIVE = "active"
NEEDS_RECONSENT = "needs-reconsent"
REVOKED = "revoked"
GRANT_STATUSES = (ACTIVE, NEEDS_RECONSENT, REVOKED)
# A client's status in its read-model row.
CLIENT_ACTIVE, CLIENT_REMOVED = "active", "removed"
# How a grant came to be (ConsentGrant.method); the first three are the consent flows.
CONSENT_FLOWS = ("browser", "manual", "device")
GRANT_METHODS = ("browser", "device", "manual", "import", "app-only")

PROTOCOLS = ("imap", "pop", "smtp", "graph")
MAIL_PROTOCOLS = ("imap", "pop", "smtp")
PROVIDERS = ("microsoft", "google", "custom")
# Microsoft's national clouds, in the order the CLI offers them (domain/clouds.py's profiles).
MICROSOFT_CLOUD_NAMES = ("global", "gcc-high", "dod", "china")
# Client authentication at the token endpoint; the first two send a client secret.
AUTH_METHODS = ("client_secret_post", "client_secret_basic", "private_key_jwt", "none")
SECRET_AUTH_METHODS = AUTH_METHODS[:2]

# Expiry findings, least severe first.
INFO, WARNING, CRITICAL = "info", "warning", "critical"
SEVERITIES = (INFO, WARNING, CRITICAL)

# Mailbox probes: how TLS starts, and the SASL mechanisms (also what `vault token` can print).
TLS_MODES = ("implicit", "starttls", "plain")
SASL_MECHANISMS = ("xoauth2", "oauthbearer")

# Output formats: of every listing, `vault expiry`, `vault token`, `vault app-token`, the audit and
# revocation reports, and the expiry report.
LISTING_FORMATS = ("table", "json")
EXPIRY_FORMATS = (*LISTING_FORMATS, "prometheus")
TOKEN_FORMATS = ("token", *SASL_MECHANISMS, "json")
APP_TOKEN_FORMATS = ("token", "json")
REPORT_FORMATS = ("table", "json", "csv", "html")
EXPIRY_REPORT_FORMATS = ("html", "json")
