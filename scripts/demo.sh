#!/usr/bin/env bash
# Sets up recall-lab on a fresh machine and runs the teaching demo.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e .
exec recall-lab demo "$@"
