#!/usr/bin/env bash
# Set up (with test tools), start a throwaway PostgreSQL on loopback (installing Debian's postgresql where
# it is missing, as root), then run the whole test suite offline. Extra arguments go to pytest.
# This is exactly what CI runs (.ci/run calls it). To use a server of your own, set RLHF_TEST_PG_URL first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
if [ -z "${RLHF_TEST_PG_URL:-}" ]; then
  pgdir=$(mktemp -d /tmp/rlhf-pg.XXXXXX)
  trap 'bash scripts/pg_test_server.sh stop "$pgdir"; rm -rf "$pgdir"' EXIT
  # a port free right now, so two checkouts can test side by side
  RLHF_PG_PORT=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  export RLHF_PG_PORT
  if pg_env=$(bash scripts/pg_test_server.sh start "$pgdir"); then
    eval "$pg_env"
  else
    echo "[test] could not start PostgreSQL (see $pgdir/log): its store tests will be skipped, visibly" >&2
  fi
fi
set +e
.venv/bin/python -m pytest "$@"
code=$?
if [ "$code" -eq 5 ]; then
  echo "[test] pytest collected no tests; that is a failure" >&2
  code=1
fi
exit "$code"
