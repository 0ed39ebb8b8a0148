#!/usr/bin/env bash
# Set up, then run the main job on the embedded default: SFT of smollm2-135m-instruct on the demo data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/rlhf sft --config configs/sft.yaml --overwrite "$@"
