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
  --secret-created "$(days_ago 700)" --redirect-uri http://localhost/callback

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

# 7. OAuth for real, against `vault sandbox`: a local identity provider that behaves like
#    Microsoft's v2.0 endpoints (every password is "sandbox"; its code is in sandbox/).
vault sandbox > "$tmp/sandbox.json" 2>/dev/null &
sandbox_pid=$!
trap 'kill $sandbox_pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do [ -s "$tmp/sandbox.json" ] && break; sleep 0.1; done
setting() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/sandbox.json" "$1"; }
base="$(setting base_url)"

step "vault client add demo --provider microsoft --tenant $(setting tenant) ... (sandbox endpoints)"
setting client_secret | vault client add demo --provider microsoft --tenant "$(setting tenant)" \
  --client-id "$(setting client_id)" --secret-stdin --authorize-url "$(setting authorize_url)" \
  --token-url "$(setting token_url)" --device-url "$(setting device_url)" \
  --issuer "$(setting issuer)"

step "vault consent demo --mailbox dave@contoso.com --protocols imap,smtp --flow device"
vault consent demo --mailbox dave@contoso.com --protocols imap,smtp --flow device \
  2> "$tmp/consent.err" &
consent_pid=$!
for _ in $(seq 100); do grep -q "enter the code" "$tmp/consent.err" && break; sleep 0.1; done
cat "$tmp/consent.err"
code=$(sed -n 's/.*enter the code \([A-Z]*\).*/\1/p' "$tmp/consent.err")
echo "(the person at the browser signs in as dave@contoso.com with the code $code)"
python3 -c 'import sys, urllib.parse, urllib.request; urllib.request.urlopen(sys.argv[1], urllib.parse.urlencode({"user_code": sys.argv[2], "username": "dave@contoso.com", "password": "sandbox"}).encode()).read()' "$base/devicelogin" "$code"
wait $consent_pid

step "vault token dave@contoso.com   # what mutt's imap_oauth_refresh_command runs"
vault token dave@contoso.com | cut -c1-32 | sed 's/$/... (cut short)/'
run vault refresh dave@contoso.com
step "# the provider now answers AADSTS700082 (refresh token idle too long):"
python3 -c 'import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="POST")).read()' "$base/sandbox/fail?code=700082"
step "vault refresh dave@contoso.com"
vault refresh dave@contoso.com || echo "(exit code $?)"

# 8. Unattended operation: what a systemd timer runs (docs/operations.md), the reports, and a
#    proven backup restored into a second home.
step "vault maintain --probe-every 0 --metrics-file $tmp/vault.prom --checkpoint-dir $tmp"
vault maintain --probe-every 0 --metrics-file "$tmp/vault.prom" --checkpoint-dir "$tmp" \
  || echo "(exit code $?: a step failed, the others ran)"
step "grep -c '^vault_' $tmp/vault.prom   # a node_exporter textfile"
grep -c '^vault_' "$tmp/vault.prom"
run vault report revocations
run vault report expiry --format html --output "$tmp/expiry.html"
run vault backup "$tmp/vault.backup"
step "VAULT_HOME=$tmp/restored vault restore $tmp/vault.backup"
VAULT_HOME="$tmp/restored" vault restore "$tmp/vault.backup"

printf '\nTour done: the temporary vault is removed now.\n'
