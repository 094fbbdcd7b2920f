#!/usr/bin/env bash
# Set up a fresh machine for ZegFormer Studio: a Python 3.11 virtual environment in .venv with the
# pinned requirements. Does nothing when .venv is already up to date with requirements.txt.
#   bash scripts/setup.sh            # library + app
#   bash scripts/setup.sh --browser  # also Debian's Chromium, for the browser test
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)

if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] creating .venv with $($PY --version) (the first time takes 3-10 minutes)"
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # pip (not uv/poetry): pip finds the local torch wheels on this kind of machine.
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi

# The project itself, editable and without dependencies (they are pinned above): the console
# commands zegformer-demo, -evaluate, -train, -prepare and -hub in .venv/bin, running this checkout.
if [ ! -x .venv/bin/zegformer-demo ]; then
  echo "[setup] installing the zegformer-* commands into .venv/bin"
  .venv/bin/python -m pip install -q --no-deps -e .
fi

if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null; then
  echo "[setup] installing Debian's chromium for the browser test"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
