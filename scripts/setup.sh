#!/usr/bin/env bash
# Installs what eon's tests need beyond the Rust toolchain, when missing:
#   mold               a faster linker (used if present, see cargo-env.sh)
#   postgresql-client  psql, for the psql smoke test (and pgbench)
#   nodejs, python3    runtimes of the example front ends (examples/frontends)
# and with --postgres, for the benchmarks (bench/):
#   postgresql         a PostgreSQL server (initdb, pg_ctl) as the baseline
# Safe to run repeatedly; does nothing when everything is there.
set -euo pipefail

need=()
command -v mold >/dev/null 2>&1 || need+=(mold)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ "${1:-}" = "--postgres" ]; then
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
fi
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "setup: installing ${need[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
    $sudo apt-get update >/dev/null
    $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi
