#!/bin/sh
# curl speaks IMAP (and POP3 and SMTP) with a bearer token (--oauth2-bearer: OAUTHBEARER, or
# XOAUTH2 where the server offers only that). This prints the envelope (date, subject, sender...)
# of every message in INBOX; FETCH ENVELOPE marks nothing as read. The token reaches curl on its
# standard input (--config -), not on its command line, where `ps` would show it to everyone.
set -eu
token=$(vault token {{MAILBOX}})
printf 'oauth2-bearer = "%s"\n' "$token" |
  curl --silent --show-error --fail --config - \
    --cacert '{{CA_FILE}}' --user '{{MAILBOX}}:' \
    --request 'FETCH 1:* ENVELOPE' 'imaps://{{IMAP_HOST}}:{{IMAP_PORT}}/INBOX'
