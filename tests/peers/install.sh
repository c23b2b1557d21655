#!/usr/bin/env bash
# Install what the test suite's peers need, on Debian 12; the tests themselves install nothing.
#
#   Dovecot        dovecot-imapd dovecot-pop3d dovecot-submissiond (its system-wide instance is kept
#                  from starting, and stopped and disabled if it runs: the tests start their own)
#   Chromium       chromium (the browser consent test), and libatomic1 for Playwright's driver
#   systemd        systemd-analyze (the example units in docs/systemd)
#   mail clients   msmtp mutt neomutt isync getmail6 offlineimap3 curl, and the SASL XOAUTH2
#                  plugin libsasl2-modules-kdexoauth2 (mbsync's), for the configurations in
#                  docs/clients (none of them runs a service)
#   Node.js, npm   nodejs npm, unless node and npm are on PATH already (the OIDC peer needs a newer
#                  Node.js than Debian 12's 18, e.g. NodeSource's 22: an old node is refused)
#   OIDC peer      npm ci in tests/peers/oidc, unless node_modules matches package-lock.json
#
# Idempotent: when everything is there it changes nothing and takes well under a second (no
# apt-get update). apt-get needs root: run it as root, or as a user who may sudo. One line per thing
# found or installed; apt's and npm's output only when they fail.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
oidc_dir=$here/oidc
lock_file=$oidc_dir/package-lock.json
stamp=$oidc_dir/node_modules/.vault-package-lock.sha256  # tests/peers/oidc_peer.py reads it too
dovecot_packages=(dovecot-imapd dovecot-pop3d dovecot-submissiond)
policy=/usr/sbin/policy-rc.d

die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

log=$(mktemp "${TMPDIR:-/tmp}/peers-install.XXXXXX")
sudo=()
own_policy=
cleanup() {
  rm -f "$log"
  if [ -n "$own_policy" ]; then as_root rm -f "$policy" || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

as_root() { ${sudo[@]+"${sudo[@]}"} "$@"; }
get_root() {  # false when neither root nor able to sudo
  [ "$(id -u)" -eq 0 ] && return 0
  command -v sudo >/dev/null || return 1
  sudo=(sudo)
}

package_installed() {
  local status
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) || return 1
  [ "$status" = "ii " ]
}

# -- Debian packages ------------------------------------------------------------------------------

missing=()   # packages to install
pending=()   # "<thing>: installed ..." lines to print once they are
dovecot_missing=()
for package in "${dovecot_packages[@]}"; do
  package_installed "$package" || dovecot_missing+=("$package")
done
if [ ${#dovecot_missing[@]} -eq 0 ]; then
  echo "dovecot: found ${dovecot_packages[*]}"
else
  missing+=("${dovecot_missing[@]}")
  pending+=("dovecot: installed ${dovecot_missing[*]}")
fi

want_command() {  # want_command BINARY PACKAGE: BINARY on PATH, else install PACKAGE
  local path
  if path=$(command -v "$1"); then
    echo "$1: found $path"
  else
    missing+=("$2")
    pending+=("$1: installed Debian's $2")
  fi
}
want_command chromium chromium
# Playwright's own node (its driver) links libatomic.so.1, which chromium does not pull in
if package_installed libatomic1; then
  echo "libatomic1: found (Playwright's driver)"
else
  missing+=(libatomic1)
  pending+=("libatomic1: installed (Playwright's driver)")
fi
want_command systemd-analyze systemd
want_command node nodejs
want_command npm npm
# The mail clients whose configurations docs/clients holds (tests/integration/test_mail_clients.py)
want_command msmtp msmtp
want_command mutt mutt
want_command neomutt neomutt
want_command mbsync isync
want_command getmail getmail6
want_command offlineimap offlineimap3
want_command curl curl
# mbsync authenticates through Cyrus SASL, which has no XOAUTH2 mechanism without a plugin
if package_installed libsasl2-modules-kdexoauth2; then
  echo "libsasl2-modules-kdexoauth2: found (mbsync's SASL XOAUTH2)"
else
  missing+=(libsasl2-modules-kdexoauth2)
  pending+=("libsasl2-modules-kdexoauth2: installed (mbsync's SASL XOAUTH2)")
fi

if [ ${#missing[@]} -gt 0 ]; then
  if ! get_root; then
    echo "missing Debian packages: ${missing[*]}"
    echo "install them as root, then run this script again:"
    echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    exit 1
  fi
  command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
  # invoke-rc.d and deb-systemd-invoke ask policy-rc.d; 101 = "action forbidden": the packages'
  # services (dovecot's above all) are not started. Containers usually have one already.
  if [ ! -e "$policy" ]; then
    own_policy=1
    as_root sh -c "printf '#!/bin/sh\n# temporary, written by tests/peers/install.sh\nexit 101\n' >$policy
                   chmod 755 $policy"
  fi
  # --no-remove: never take a package away (e.g. NodeSource's nodejs, which conflicts with Debian's npm)
  apt=(env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l apt-get -q)
  if ! as_root "${apt[@]}" update >"$log" 2>&1 \
      || ! as_root "${apt[@]}" install -y --no-install-recommends --no-remove "${missing[@]}" >>"$log" 2>&1; then
    cat "$log" >&2
    die "apt-get failed (output above)"
  fi
  if [ -n "$own_policy" ]; then as_root rm -f "$policy"; own_policy=; fi
  printf '%s\n' "${pending[@]}"
fi

# -- the system-wide Dovecot instance -------------------------------------------------------------

# The tests start their own instances; the packaged one (Debian enables it) has no business running.
stop=() pid=
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  if systemctl --quiet is-active dovecot.service dovecot.socket 2>/dev/null \
      || systemctl --quiet is-enabled dovecot.service dovecot.socket 2>/dev/null; then
    stop=(systemctl --quiet disable --now dovecot.service dovecot.socket)
  fi
elif [ -r /run/dovecot/master.pid ]; then
  pid=$(cat /run/dovecot/master.pid)
  if [[ $pid =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dovecot ]; then
    stop=(kill "$pid")
  fi
fi
if [ ${#stop[@]} -gt 0 ]; then
  if get_root && as_root "${stop[@]}"; then
    if [ -n "$pid" ]; then
      for _ in $(seq 100); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
    fi
    echo "dovecot: stopped the system-wide instance (${stop[*]})"
  else  # not fatal: the tests' own instances do not collide with it
    echo "dovecot: the system-wide instance runs or is enabled; stop it as root: ${stop[*]}"
  fi
fi

# -- the OIDC peer's node_modules -----------------------------------------------------------------

# oidc-provider 9 calls URL.parse, which Node.js 18 lacks (its authors support 22 LTS and later; 20.20
# works too). Debian 12's nodejs is 18: the peer would die at start-up with
# "URL.parse is not a function".
node_version=$(node -p 'process.version + (typeof URL.parse === "function" ? "" : " too old")')
if [[ $node_version == *" too old" ]]; then
  die "node ${node_version% too old} ($(command -v node)) cannot run the OIDC peer: oidc-provider 9 needs" \
      "URL.parse (Node.js 22 LTS or later; Debian 12's nodejs is 18). Install a newer Node.js (e.g." \
      "NodeSource's nodejs 22) and run this script again"
fi

digest=$(sha256sum "$lock_file")
digest=${digest%% *}
if [ "$(cat "$stamp" 2>/dev/null || true)" = "$digest" ]; then
  echo "oidc peer: found node_modules matching package-lock.json"
else
  if ! (cd "$oidc_dir" && npm ci --no-audit --no-fund) >"$log" 2>&1; then
    cat "$log" >&2
    die "npm ci in $oidc_dir failed (output above)"
  fi
  echo "$digest" >"$stamp"
  echo "oidc peer: installed node_modules (npm ci)"
fi
