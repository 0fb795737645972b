#!/usr/bin/env bash
# Creates (once) the project's virtualenv in .venv and installs recall-lab into it, editable.
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
[ -x .venv/bin/python ] || python3 -m venv .venv
target="."
[ -n "$extras" ] && target=".[$extras]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$target"
