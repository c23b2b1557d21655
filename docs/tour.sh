#!/usr/bin/env bash
# A scripted tour of vault on the embedded SQLite store, in a temporary home that is removed at
# the end. Run it from the README's first command; it needs `vault` on PATH.
set -euo pipefail

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export VAULT_HOME="$tmp/vault"
unset VAULT_STORE VAULT_KEY_FILE

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "$*"; "$@"; }
days_ago() { date -u -d "-$1 days" +%F; }
days_ahead() { date -u -d "+$1 days" +%F; }

echo "vault tour: a throw-away vault in $VAULT_HOME"

# 1. A vault with two keyslots: a passphrase for people, a key file for services (cron, systemd).
export VAULT_PASSPHRASE='tour passphrase - not for real use'
run vault init --kdf interactive --key-file "$tmp/service.key"
unset VAULT_PASSPHRASE
export VAULT_KEY_FILE="$tmp/service.key"

# 2. An app registration. The secret comes from stdin, never from the command line.
#    Pasting the Secret ID (a GUID) instead of its Value is the classic mistake: refused.
step "printf '8f2c1d3e-4b5a-6978-8a9b-0c1d2e3f4a5b' | vault client add jira-prod ... --secret-stdin"
printf '8f2c1d3e-4b5a-6978-8a9b-0c1d2e3f4a5b' | vault client add jira-prod --provider microsoft \
  --tenant contoso.onmicrosoft.com --client-id 3f9a1c2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b \
  --secret-stdin || echo "(exit code $? - refused, nothing stored)"

step "printf 'Tour~Secret.Value-...' | vault client add jira-prod ... --secret-created $(days_ago 700)"
printf 'Tour~Secret.Value-0123456789abcdefghij' | vault client add jira-prod \
  --provider microsoft --tenant contoso.onmicrosoft.com \
  --client-id 3f9a1c2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b --secret-stdin \
  --secret-created "$(days_ago 700)"

# 3. A mailbox's refresh token, imported from an older tool (issued 80 days ago: idle soon).
step "printf 'M.C5_BAY.tour-refresh-token' | vault grant import --client jira-prod --mailbox helpdesk@contoso.com ..."
printf 'M.C5_BAY.tour-refresh-token-0123456789' | vault grant import --client jira-prod \
  --mailbox helpdesk@contoso.com --protocols imap,smtp --refresh-token-stdin \
  --granted-at "$(days_ago 80)"

# 4. What is there, and what will expire next.
run vault status
run vault expiry
step "vault expiry --check   # for Nagios/Icinga/cron: 0 ok, 1 warning, 2 critical, 3 unknown"
vault expiry --check || echo "(exit code $?)"

# 5. Rotate the secret before it expires; the history keeps both, secrets redacted.
step "printf 'Tour~New.Secret.Value-...' | vault client rotate-secret jira-prod --secret-stdin --secret-expires $(days_ahead 730)"
printf 'Tour~New.Secret.Value-abcdefghij0123456' | vault client rotate-secret jira-prod \
  --secret-stdin --secret-expires "$(days_ahead 730)"
run vault history jira-prod
run vault history helpdesk@contoso.com

# 6. Who did what: the encrypted, hash-chained audit log, and its signed checkpoint.
run vault audit log --limit 6
run vault audit checkpoint --export "$tmp/checkpoint.txt"
step "vault audit verify --trusted $tmp/checkpoint.txt   # needs no key"
env -u VAULT_KEY_FILE vault audit verify --trusted "$tmp/checkpoint.txt"

printf '\nTour done: the temporary vault is removed now.\n'
