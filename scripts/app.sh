#!/usr/bin/env bash
# Set up (if needed) and run the Gradio app on http://127.0.0.1:7860.
#   bash scripts/app.sh                    # real weights from ZEGFORMER_WEIGHTS / ZEGFORMER_CLIP_WEIGHTS
#   bash scripts/app.sh --random-weights   # the whole UI on the tiny untrained model
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python app.py "$@"
