#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on loopback for the tests and print its URL.
#   eval "$(bash scripts/pg_test_server.sh start DIR)"   -> exports RLHF_TEST_PG_URL
#   bash scripts/pg_test_server.sh stop DIR
# Installs Debian's postgresql package when its server binaries are missing (needs root, as in CI).
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?data directory}
port=${RLHF_PG_PORT:-54329}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ "$cmd" = stop ]; then
  [ -n "$bindir" ] && runuser -u postgres -- "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  exit 0
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/postgres" ]; then
  echo "[pg] installing postgresql (apt)" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
mkdir -p "$dir"; chown postgres "$dir"
runuser -u postgres -- "$bindir/initdb" -D "$dir/data" --auth-local=trust --auth-host=trust --no-sync -U postgres >/dev/null
runuser -u postgres -- "$bindir/pg_ctl" -D "$dir/data" -w -l "$dir/log" \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
psql -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE rlhf_test" >/dev/null
echo "export RLHF_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:$port/rlhf_test"
