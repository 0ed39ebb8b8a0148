#!/usr/bin/env bash
# Set up, then run the main job on the embedded defaults: one round of the whole loop (SFT -> candidates ->
# simulated ranking -> reward model -> DPO -> comparison report) with smollm2-135m-instruct and minilm-l6.
# Extra arguments are config overrides for `rlhf demo` (e.g. run.output_root=/tmp/runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/rlhf demo "$@"
