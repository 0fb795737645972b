#!/usr/bin/env bash
# Sets up recall-lab on a fresh machine (a virtualenv in .venv) and runs the teaching demo.
# Extra arguments go to `recall-lab demo` (e.g. --realtime).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-venv.sh
exec .venv/bin/recall-lab demo "$@"
