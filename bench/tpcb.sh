#!/usr/bin/env bash
# TPC-B (pgbench's built-in "TPC-B (sort of)" script) against eon and
# against PostgreSQL on the same machine, in one run; prints both TPS and
# the ratio. A benchmark, not a test: nothing here passes or fails.
#
#   bench/tpcb.sh [--clients 8] [--seconds 30] [--scale 1]
#
# PostgreSQL: a scratch server (initdb in a temporary directory, default
# settings, fsync on) loaded with `pgbench -i`, run once at its default
# isolation (READ COMMITTED) and once at SERIALIZABLE, eon's default.
# eon: a scratch `eon up` cluster (release build) with the same four tables
# and rows created by SQL — eon has no char(n) yet, so the fillers are
# varchar(n) — run with `pgbench -n` (no vacuum).
#
# Both runs use `--max-tries`, so a transaction refused with 40001 (eon
# never waits for a row lock; it refuses the later writer) is retried by
# pgbench and counted once when it commits. Retries are shown.
set -euo pipefail
cd "$(dirname "$0")/.."

clients=8 seconds=30 scale=1
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) clients=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --scale) scale=$2; shift 2 ;;
        *) echo "usage: bench/tpcb.sh [--clients N] [--seconds N] [--scale N]" >&2; exit 2 ;;
    esac
done
threads=$(( clients < 2 ? clients : 2 ))

source bench/lib.sh
bench_setup tpcb
start_postgres
echo "pgbench -i -s $scale" >&2
pgbench -h 127.0.0.1 -p "$pg_port" -U postgres -i -q -s "$scale" postgres >/dev/null 2>&1
start_eon
echo "eon: the pgbench tables by SQL, scale $scale" >&2
psql -q -v ON_ERROR_STOP=1 "$eon_url" >/dev/null <<SQL
CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler varchar(88));
CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler varchar(84));
CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler varchar(84));
CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler varchar(22));
INSERT INTO pgbench_branches SELECT i, 0, NULL FROM generate_series(1, $scale) AS g(i);
INSERT INTO pgbench_tellers SELECT i, (i - 1) / 10 + 1, 0, NULL FROM generate_series(1, 10 * $scale) AS g(i);
INSERT INTO pgbench_accounts SELECT i, (i - 1) / 100000 + 1, 0, '' FROM generate_series(1, 100000 * $scale) AS g(i);
SQL

# run NAME URL [PGOPTIONS] -> one table row
run() {
    local name=$1 url=$2 opts=${3:-}
    echo "running $name for ${seconds}s with $clients clients" >&2
    local out
    out=$(PGOPTIONS=$opts pgbench -n -c "$clients" -j "$threads" -T "$seconds" --max-tries=1000 "$url" 2>&1) || {
        echo "$out" >&2
        exit 1
    }
    local tps lat done_ retried failed
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
    done_=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    retried=$(sed -n 's/^number of transactions retried: [0-9]* (\([0-9.]*\)%).*/\1/p' <<<"$out")
    failed=$(sed -n 's/^number of failed transactions: [0-9]* (\([0-9.]*\)%).*/\1/p' <<<"$out")
    printf '%s|%s|%s|%s|%s|%s\n' "$name" "$tps" "$lat" "$done_" "${retried:-0}" "${failed:-0}"
}

rows=()
rows+=("$(run "postgresql (read committed)" "$pg_url")")
rows+=("$(run "postgresql (serializable)" "$pg_url" "-c default_transaction_isolation=serializable")")
rows+=("$(run "eon (serializable)" "$eon_url")")

echo
echo "TPC-B (pgbench built-in), scale $scale, $clients clients, ${seconds}s each, $(nproc) cores"
printf '%-30s %10s %12s %10s %9s %8s\n' target tps "latency ms" commits "retried%" "failed%"
for r in "${rows[@]}"; do
    IFS='|' read -r name tps lat n ret fail <<<"$r"
    printf '%-30s %10.1f %12.2f %10s %9s %8s\n' "$name" "$tps" "$lat" "$n" "$ret" "$fail"
done
IFS='|' read -r _ pg_rc _ <<<"${rows[0]}"
IFS='|' read -r _ pg_ser _ <<<"${rows[1]}"
IFS='|' read -r _ eon_tps _ <<<"${rows[2]}"
awk -v e="$eon_tps" -v a="$pg_rc" -v b="$pg_ser" 'BEGIN {
    printf "eon / postgresql (read committed): %.3f\n", e / a
    printf "eon / postgresql (serializable):   %.3f\n", e / b
}'
