"""Stable names under which events are stored. They never change when a class is renamed or
moved; a new shape of an event gets a class_version and an upcaster instead.

Kept free of imports so that light readers (the cached-token path) can name events too.
"""

TOKEN_ROTATION = "vault.TokenRotation"
LINEAGE_STARTED = "vault.TokenRotation.Started"
ROTATION_RESEEDED = "vault.TokenRotation.Reseeded"
TOKENS_ISSUED = "vault.TokenRotation.TokensIssued"
TOKENS_DISCARDED = "vault.TokenRotation.TokensDiscarded"
