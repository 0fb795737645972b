#!/usr/bin/env bash
# Creates (once) the project's virtualenv in .venv and installs recall-lab into it, editable, then checks that
# what was installed imports: pip can "succeed" into a broken venv (a Python upgraded under it), and a failure
# should be one line here rather than an ImportError in the middle of a test run.
# Why a virtualenv: Debian's python3 is "externally managed" (PEP 668), so pip may not install into it.
# Usage: bash scripts/ensure-venv.sh [EXTRAS]   e.g. "test"; prints nothing on success.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends python3-venv python3-pip
  fi
fi
# A venv whose interpreter no longer starts (its base Python was replaced) is rebuilt, not patched.
if [ -e .venv/bin/python ] && ! .venv/bin/python -c '' >/dev/null 2>&1; then rm -rf .venv; fi
[ -x .venv/bin/python ] || python3 -m venv .venv
target="."
[ -n "$extras" ] && target=".[$extras]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$target"
modules="recall_lab.harness.cli recall_lab.fake_servers.domain recall_lab.harness.web"
[[ ",$extras," == *",test,"* ]] && modules="$modules pytest pytest_asyncio xdist hypothesis trustme playwright.sync_api"
for m in $modules; do
  .venv/bin/python -c "import $m" >/dev/null 2>&1 \
    || { echo "ensure-venv: .venv cannot import $m after installing; the setup stops here" >&2; exit 1; }
done
[ -x .venv/bin/recall-lab ] || { echo "ensure-venv: .venv/bin/recall-lab was not installed" >&2; exit 1; }
