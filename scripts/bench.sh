#!/usr/bin/env bash
# `make bench`: one JSON line per scenario.
#   signing  on SQLite, then on PostgreSQL when a cluster is reachable (make
#            runs this under scripts/with-postgres.sh);
#   relay    payments through the FSP and bank simulators (mode fsp+bank):
#            signed→settled per second and p99, beside the authorisations of
#            the same run (RELAY_SECONDS, default 10);
#   ocsp     the plain-HTTP OCSP responder against `openssl ocsp -index`;
#   population  on PostgreSQL: N subscribers seeded with real wrapped keys and
#            certificates, payers drawn at random from all of them, at
#            N = 1,000 and N = 100,000 (POPULATIONS overrides; POP_SECONDS
#            sets each timed phase, default 20).
#   submit   FSP submissions alone, 8 mTLS clients, against the in-process
#            rate of parsing the iMS and checking its two signatures; on
#            SQLite, then on PostgreSQL when a cluster is reachable
#            (SUBMIT_SECONDS, default 10).
# Extra arguments go to the signing runs of `tmcs bench` (e.g. --seconds 30
# --handsets 32), which runs `tmcs-tools bench`; both come from
# `cargo build --release --workspace`. OCSP_SECONDS sets the OCSP phase (10).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/tmcs
"$bin" bench --scenario signing "$@"
if [ -n "${PGHOST:-}" ]; then
  db="tmcs_bench_$$"
  psql -q -d postgres -c "CREATE DATABASE $db" >/dev/null
  TMCS_DATABASE__URL="postgres://${PGUSER:-postgres}:${PGPASSWORD:-}@${PGHOST}:${PGPORT:-5432}/$db" \
    "$bin" bench --scenario signing "$@"
  for n in ${POPULATIONS:-1000 100000}; do
    db="tmcs_pop_${n}_$$"
    psql -q -d postgres -c "CREATE DATABASE $db" >/dev/null
    TMCS_DATABASE__URL="postgres://${PGUSER:-postgres}:${PGPASSWORD:-}@${PGHOST}:${PGPORT:-5432}/$db" \
      "$bin" bench --population "$n" --seconds "${POP_SECONDS:-20}"
    psql -q -d postgres -c "DROP DATABASE $db" >/dev/null
  done
else
  echo "PostgreSQL run skipped: no cluster (run through make bench)" >&2
fi
"$bin" bench --scenario relay --seconds "${RELAY_SECONDS:-10}"
"$bin" bench --scenario ocsp --seconds "${OCSP_SECONDS:-10}"
"$bin" bench --scenario submit --seconds "${SUBMIT_SECONDS:-10}"
if [ -n "${PGHOST:-}" ]; then
  db="tmcs_submit_$$"
  psql -q -d postgres -c "CREATE DATABASE $db" >/dev/null
  TMCS_DATABASE__URL="postgres://${PGUSER:-postgres}:${PGPASSWORD:-}@${PGHOST}:${PGPORT:-5432}/$db" \
    "$bin" bench --scenario submit --seconds "${SUBMIT_SECONDS:-10}"
fi
