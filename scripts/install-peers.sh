#!/usr/bin/env bash
# Installs the Debian programs the interop tests talk to, with what each needs for the features the tests use,
# then VERIFIES every feature: a package being installed proves nothing (swaks installs fine without the Perl
# module its TLS needs, a Recommends that --no-install-recommends leaves out). Also builds Dovecot's imaptest
# from ../shared/tools/imaptest when that folder is there. Services are not started: each test starts its own.
# A missing feature stops the setup with one line naming it. Safe to run again (installs only what is missing,
# never rebuilds an imaptest that runs).
set -euo pipefail
cd "$(dirname "$0")/.."

# package -> why the tests need it
#   dovecot-core dovecot-imapd   the reference IMAP server (plain and STARTTLS)
#   dovecot-lmtpd                a domain on Dovecot (backend = "dovecot"): the lab delivers over LMTP
#   curl                         imap:// and smtp:// with STARTTLS (--ssl-reqd)
#   swaks libnet-ssleay-perl     SMTP with STARTTLS (swaks' TLS is Net::SSLeay)
#   neomutt                      an IMAP mail reader in batch mode
#   isync offlineimap3           two IMAP synchronisers (mbsync also over STARTTLS)
#   bsdutils                     `script`, the pty neomutt needs in batch mode
#   chromium                     the browser the web tests drive (Playwright, executable_path=/usr/bin/chromium)
#   fontconfig fonts-dejavu-core text in the browser's pages and screenshots (a Recommends otherwise)
PEERS="dovecot-core dovecot-imapd dovecot-lmtpd curl swaks libnet-ssleay-perl neomutt isync offlineimap3 util-linux bsdutils
       chromium fontconfig fonts-dejavu-core"
# What ../shared/tools/imaptest/build.sh compiles with; libdovecot itself comes from dovecot-core.
IMAPTEST_BUILD_DEPS="build-essential autoconf automake libtool pkg-config dovecot-dev dovecot-core"
IMAPTEST_SRC="../shared/tools/imaptest"
IMAPTEST_BIN="/usr/local/bin/imaptest"

# dovecot lives in /usr/sbin, outside a normal user's PATH; mbsync will not even print its version without HOME.
export PATH="$PATH:/usr/sbin:/sbin"
export HOME="${HOME:-/tmp}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
updated=0

installed() {  # true when dpkg has the package fully installed (not merely known, or removed with its config)
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

apt_install() {  # installs those of the given packages that are missing; one `apt-get update` per run
  local missing="" p
  for p in "$@"; do installed "$p" || missing="$missing $p"; done
  [ -n "$missing" ] || return 0
  if [ "$updated" = 0 ]; then $SUDO apt-get update -q; updated=1; fi
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -q --no-install-recommends $missing
}

imaptest_runs() {  # imaptest with no arguments complains about the missing user: proof that it loads and runs
  [ -x "$IMAPTEST_BIN" ] && [ -d /usr/local/share/imaptest/tests ] && match 'Missing username' "$IMAPTEST_BIN"
}

failures=0
need() {  # need "FEATURE" COMMAND...: runs the check; on failure prints one line naming the feature
  local what=$1; shift
  if ! "$@" >/dev/null 2>&1; then
    echo "install-peers: MISSING $what" >&2
    failures=$((failures + 1))
  fi
}
match() {  # match ERE COMMAND...: the command's output (whatever its exit status) has a line matching ERE.
  # The output is read whole first: `cmd | grep -q` under pipefail fails when grep stops reading early.
  local pattern=$1 out; shift
  out=$("$@" 2>&1) || true
  grep -Eq -- "$pattern" <<<"$out"
}

if command -v apt-get >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  apt_install $PEERS
  if [ -d "$IMAPTEST_SRC" ]; then
    if imaptest_runs; then
      echo "install-peers: imaptest already installed ($IMAPTEST_BIN)"
    else
      # shellcheck disable=SC2086
      apt_install $IMAPTEST_BUILD_DEPS
      FORCE=1 bash "$IMAPTEST_SRC/build.sh" \
        || { echo "install-peers: imaptest build failed (bash $IMAPTEST_SRC/build.sh, output above)" >&2; exit 1; }
    fi
  else
    echo "install-peers: imaptest skipped: $IMAPTEST_SRC is absent (the compliance tests will be skipped)"
  fi
  strict=1
else
  echo "install-peers: no apt-get here; install the peers yourself (tests whose peer is missing are skipped)" >&2
  strict=0
fi

# One check per feature the tests use. Each line says what is missing and, implicitly, which test would fail.
need "swaks (SMTP client)" swaks --version
need "swaks TLS (Net::SSLeay: libnet-ssleay-perl)" match "=== TLS supported" swaks --support
need "curl imap:// protocol" match "^Protocols:.* imap( |$)" curl -V
need "curl smtp:// protocol" match "^Protocols:.* smtp( |$)" curl -V
need "curl TLS (STARTTLS, --ssl-reqd)" match "^Features:.* SSL( |$)" curl -V
need "neomutt IMAP support" match "\\+imap( |$)" neomutt -v
need "neomutt TLS (gnutls or openssl)" match "\\+(gnutls|openssl)( |$)" neomutt -v
need "mbsync (isync)" mbsync --version
need "mbsync TLS (linked with libssl)" match "libssl" ldd "$(command -v mbsync || echo /nonexistent)"
need "offlineimap" offlineimap --version
need "dovecot" dovecot --version
need "dovecot TLS (openssl build)" match "openssl" dovecot --build-options
need "dovecot LMTP (dovecot-lmtpd)" test -x /usr/lib/dovecot/lmtp
need "dovecot lazy_expunge plugin (Recoverable Items)" match "lazy_expunge" ls /usr/lib/dovecot/modules
need "script (bsdutils: the pty for neomutt)" script --version
# the browser as the web tests use it: headless, as root without the sandbox, running a page's script
need "chromium headless (runs a page's script)" match "<p>ran</p>" timeout 60 chromium --headless --no-sandbox \
  --disable-gpu --dump-dom "data:text/html,<script>document.write('<p>ran</p>')</script>"
need "fonts for the browser (fc-list: fontconfig fonts-dejavu-core)" match "DejaVu" fc-list
if [ -d "$IMAPTEST_SRC" ]; then
  need "imaptest (bash $IMAPTEST_SRC/build.sh)" imaptest_runs
fi

if [ "$failures" -gt 0 ]; then
  if [ "$strict" = 1 ]; then
    echo "install-peers: $failures feature(s) missing after installing; the setup stops here" >&2
    exit 1
  fi
  echo "install-peers: $failures feature(s) missing; the tests that need them will be skipped or fail" >&2
fi
exit 0
