#!/usr/bin/env bash
# `make bench`: the benchmark on SQLite, then on PostgreSQL when a cluster is
# reachable (make runs this under scripts/with-postgres.sh). One JSON line each.
# Extra arguments go to `tmcs bench` (e.g. --seconds 30 --handsets 32), which
# runs `tmcs-tools bench`; both come from `cargo build --release --workspace`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/tmcs
"$bin" bench "$@"
if [ -n "${PGHOST:-}" ]; then
  db="tmcs_bench_$$"
  psql -q -d postgres -c "CREATE DATABASE $db" >/dev/null
  TMCS_DATABASE__URL="postgres://${PGUSER:-postgres}:${PGPASSWORD:-}@${PGHOST}:${PGPORT:-5432}/$db" \
    "$bin" bench "$@"
else
  echo "PostgreSQL run skipped: no cluster (run through make bench)" >&2
fi
