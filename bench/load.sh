#!/usr/bin/env bash
# Bulk loading: `eon load` of a CSV and a Parquet file into eon, against
# the same files loaded into PostgreSQL (its COPY FROM STDIN, fed by the
# same loader) on the same machine, in one run; prints rows/s of each and
# the ratios. A benchmark, not a test: nothing here passes or fails.
#
#   bench/load.sh [--rows 500000] [--batch-rows 50000]
#
# PostgreSQL: a scratch server (initdb in a temporary directory, default
# settings, fsync on). eon: a scratch `eon up` cluster (release build
# unless EON_BIN names another binary), default settings.
set -euo pipefail
cd "$(dirname "$0")/.."

rows=500000 batch_rows=50000
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) rows=$2; shift 2 ;;
        --batch-rows) batch_rows=$2; shift 2 ;;
        *) echo "usage: bench/load.sh [--rows N] [--batch-rows N]" >&2; exit 2 ;;
    esac
done

source bench/lib.sh
bench_setup load
start_postgres
start_eon
echo
echo "eon load: $rows rows, batches of $batch_rows, $(nproc) cores"
"$EON_BIN" bench-load --url "$eon_url" --baseline "$pg_url" --rows "$rows" --batch-rows "$batch_rows"
