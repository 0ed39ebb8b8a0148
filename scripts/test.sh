#!/usr/bin/env bash
# Set up (with test tools), then run the whole test suite offline. Extra arguments go to pytest.
# The PostgreSQL store tests run when RLHF_TEST_PG_URL is set (.ci/run starts a throwaway server:
#   eval "$(bash scripts/pg_test_server.sh start /tmp/pg)"); otherwise they are skipped, visibly.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/python -m pytest "$@"
