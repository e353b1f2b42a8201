#!/usr/bin/env bash
# Installs the PostgreSQL client drivers of the client matrix
# (clients/, run by crates/eon/tests/it/clients.rs), when missing:
#   Python: psycopg 3, psycopg2, asyncpg, SQLAlchemy 2 in a virtualenv
#   Node:   node-postgres (clients/node/package.json) in clients/node
#   Java:   Debian's PostgreSQL JDBC driver, and a JDK if javac is missing
# into $EON_CLIENTS_DIR (default ~/.cache/eon-clients). Safe to run
# repeatedly; does nothing when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${EON_CLIENTS_DIR:-$HOME/.cache/eon-clients}"
mkdir -p "$dir"

# Pinned so that a driver release cannot change what CI tests.
python_packages=(
    "psycopg[binary]==3.3.9"
    "psycopg2-binary==2.9.13"
    "asyncpg==0.32.0"
    "SQLAlchemy==2.1.9"
)
stamp="$dir/venv/.installed"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${python_packages[*]}" ]; then
    echo "clients: installing ${python_packages[*]}" >&2
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install -q --disable-pip-version-check "${python_packages[@]}"
    echo "${python_packages[*]}" > "$stamp"
fi

if [ ! -d clients/node/node_modules/pg ]; then
    echo "clients: installing node-postgres" >&2
    (cd clients/node && npm install --no-audit --no-fund --silent)
fi

need=()
[ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
if [ ${#need[@]} -gt 0 ]; then
    echo "clients: installing ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    if ! $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
        $sudo apt-get update >/dev/null
        $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
    fi
fi
if [ ! -f "$dir/java/ClientTest.class" ] || [ clients/java/ClientTest.java -nt "$dir/java/ClientTest.class" ]; then
    mkdir -p "$dir/java"
    javac -d "$dir/java" clients/java/ClientTest.java
fi
