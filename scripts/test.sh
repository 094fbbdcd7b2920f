#!/usr/bin/env bash
# Set up (if needed: .venv and Debian's chromium for the browser test) and run every test.
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k fidelity
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
