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

scripts/setup.sh --postgres
source scripts/cargo-env.sh
if [ -z "${EON_BIN:-}" ]; then
    cargo build --release -p eon >&2
    EON_BIN=$PWD/${CARGO_TARGET_DIR:-target}/release/eon
    [ -x "$EON_BIN" ] || EON_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/eon
fi

free_port() {
    while :; do
        local p=$(( 20000 + RANDOM % 30000 ))
        if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo $p; return; fi
    done
}

work=$(mktemp -d /tmp/eon-tpcb.XXXXXX)
chmod 755 "$work"
pg_pid_file=""
eon_pid=""
cleanup() {
    [ -n "$eon_pid" ] && kill "$eon_pid" 2>/dev/null && wait "$eon_pid" 2>/dev/null || true
    if [ -n "$pg_pid_file" ]; then as_pg "$pg_bin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# PostgreSQL refuses to run as root: use its own account then.
pg_bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pg_port=$(free_port)
as_pg mkdir -p "$work/pg" 2>/dev/null || { mkdir -p "$work/pg"; chown postgres "$work/pg"; }
[ "$(id -u)" -eq 0 ] && chown postgres "$work/pg"
as_pg "$pg_bin/initdb" -D "$work/pg" -U postgres --auth=trust >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$work/pg" -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1" -l "$work/pg/log" -w start >/dev/null
pg_pid_file=$work/pg/postmaster.pid
echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on port $pg_port: pgbench -i -s $scale" >&2
pgbench -h 127.0.0.1 -p "$pg_port" -U postgres -i -q -s "$scale" postgres >/dev/null 2>&1

eon_port=$(free_port) http_port=$(free_port)
"$EON_BIN" up --data-dir "$work/eon" --pg-port "$eon_port" --http-port "$http_port" >"$work/eon.out" 2>&1 &
eon_pid=$!
for _ in $(seq 100); do
    grep -q "is up" "$work/eon.out" 2>/dev/null && break
    sleep 0.2
done
grep -q "is up" "$work/eon.out" || { cat "$work/eon.out" >&2; exit 1; }
echo "eon on port $eon_port: the pgbench tables by SQL, scale $scale" >&2
eon_url="postgresql://eon:$(cat "$work/eon/admin-password")@127.0.0.1:$eon_port/eon?sslmode=disable"
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

pg_url="postgresql://postgres@127.0.0.1:$pg_port/postgres?sslmode=disable"
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
