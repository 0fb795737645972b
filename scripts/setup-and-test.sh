#!/usr/bin/env bash
# Sets up a fresh Debian machine (Python packages, the Debian peers) and runs the whole test suite.
# Run as root (or with sudo available). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-peers.sh
python3 -m pip install -q -e '.[test]'
exec python3 -m pytest -q -p no:cacheprovider -n 2 "$@"
