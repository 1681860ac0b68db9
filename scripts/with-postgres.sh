#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster (pg_virtualenv from
# postgresql-common): PGHOST/PGPORT/PGUSER/PGPASSWORD point at it and the
# cluster is dropped afterwards. TMCS_TEST_PG=required makes the PostgreSQL
# tests fail (not skip) if the cluster is somehow unreachable. -t keeps the
# cluster in a temporary directory even as root, so two runs on one machine
# (two work trees, or make bench during make test) do not collide on the
# fixed cluster name 15/regress under /etc/postgresql.
set -euo pipefail
if ! command -v pg_virtualenv >/dev/null; then
  echo "error: pg_virtualenv not found (apt-get install postgresql-common postgresql)" >&2
  exit 1
fi
export TMCS_TEST_PG=required
export TMCS_TEST_STRICT=1
exec pg_virtualenv -t -o "max_connections=300" "$@"
