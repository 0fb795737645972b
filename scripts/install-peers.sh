#!/usr/bin/env bash
# Installs the Debian programs the interop tests talk to: Dovecot (the reference IMAP server), curl, swaks,
# neomutt, isync (mbsync) and offlineimap; bsdutils has `script`, the pty neomutt needs in batch mode.
# Services are not started here: each test starts what it needs.
set -euo pipefail
PEERS="dovecot-imapd dovecot-core curl swaks neomutt isync offlineimap3 util-linux bsdutils"
if command -v apt-get >/dev/null 2>&1; then
  missing=""
  for p in $PEERS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends $missing
  fi
else
  echo "install-peers: no apt-get here; tests that need a peer will be skipped" >&2
fi
