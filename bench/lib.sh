# Shared by the benchmark scripts: a release eon binary, a scratch
# PostgreSQL server and a scratch eon cluster, both on free ports of
# 127.0.0.1, removed on exit. Source it from the repository's root:
#
#   source bench/lib.sh
#   bench_setup NAME        # the binary, the work dir, the exit trap
#   start_postgres          # sets pg_port, pg_url, pg_bin
#   start_eon               # sets eon_port, eon_url

bench_setup() {
    scripts/setup.sh --postgres
    source scripts/cargo-env.sh
    if [ -z "${EON_BIN:-}" ]; then
        cargo build --release -p eon >&2
        EON_BIN=$PWD/${CARGO_TARGET_DIR:-target}/release/eon
        [ -x "$EON_BIN" ] || EON_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/eon
    fi
    work=$(mktemp -d "/tmp/eon-$1.XXXXXX")
    chmod 755 "$work"
    pg_pid_file=""
    eon_pid=""
    trap bench_cleanup EXIT
    # PostgreSQL refuses to run as root: use its own account then.
    pg_bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
}

free_port() {
    while :; do
        local p=$(( 20000 + RANDOM % 30000 ))
        if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo $p; return; fi
    done
}

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

bench_cleanup() {
    [ -n "$eon_pid" ] && kill "$eon_pid" 2>/dev/null && wait "$eon_pid" 2>/dev/null || true
    if [ -n "$pg_pid_file" ]; then as_pg "$pg_bin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}

# A scratch PostgreSQL (initdb, default settings, fsync on, trust auth).
start_postgres() {
    pg_port=$(free_port)
    as_pg mkdir -p "$work/pg" 2>/dev/null || { mkdir -p "$work/pg"; chown postgres "$work/pg"; }
    [ "$(id -u)" -eq 0 ] && chown postgres "$work/pg"
    as_pg "$pg_bin/initdb" -D "$work/pg" -U postgres --auth=trust >/dev/null
    as_pg "$pg_bin/pg_ctl" -D "$work/pg" -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1" -l "$work/pg/log" -w start >/dev/null
    pg_pid_file=$work/pg/postmaster.pid
    pg_url="postgresql://postgres@127.0.0.1:$pg_port/postgres?sslmode=disable"
    echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on port $pg_port" >&2
}

# A scratch `eon up` cluster with its default settings.
start_eon() {
    eon_port=$(free_port)
    local http_port
    http_port=$(free_port)
    "$EON_BIN" up --data-dir "$work/eon" --pg-port "$eon_port" --http-port "$http_port" >"$work/eon.out" 2>&1 &
    eon_pid=$!
    for _ in $(seq 100); do
        grep -q "is up" "$work/eon.out" 2>/dev/null && break
        sleep 0.2
    done
    grep -q "is up" "$work/eon.out" || { cat "$work/eon.out" >&2; exit 1; }
    eon_url="postgresql://eon:$(cat "$work/eon/admin-password")@127.0.0.1:$eon_port/eon?sslmode=disable"
    echo "eon on port $eon_port" >&2
}
