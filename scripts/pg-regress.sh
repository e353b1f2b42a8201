#!/usr/bin/env bash
# Fetches PostgreSQL 15's own regression tests (src/test/regress: sql/,
# expected/, data/ and parallel_schedule) from Debian's source package
# postgresql-15, for the comparison in crates/eon/tests/it/regress.rs,
# into $EON_PG_REGRESS_DIR (default ~/.cache/eon-pg-regress). Enables apt's
# source packages (deb-src) when they are not. Safe to run repeatedly;
# does nothing when the files are there.
set -euo pipefail
dir="${EON_PG_REGRESS_DIR:-$HOME/.cache/eon-pg-regress}"
if [ -f "$dir/parallel_schedule" ] && [ -d "$dir/expected" ]; then
    exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
if ! apt-cache showsrc postgresql-15 2>/dev/null | grep -q '^Version'; then
    echo "pg-regress: enabling apt source packages (deb-src)" >&2
    $sudo tee /etc/apt/sources.list.d/eon-deb-src.sources >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    $sudo apt-get update >/dev/null
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
# A mirror may list a version whose files it no longer has: take the first
# one that downloads (only the upstream tarball is needed).
for version in $(apt-cache showsrc postgresql-15 | awk '/^Version:/ {print $2}' | sort -rV); do
    echo "pg-regress: fetching postgresql-15 $version sources" >&2
    if apt-get source --download-only "postgresql-15=$version" >/dev/null 2>&1 || ls postgresql-15_*.orig.tar.* >/dev/null 2>&1; then
        break
    fi
done
tarball="$(ls postgresql-15_*.orig.tar.* | head -1)"
tar xf "$tarball" --wildcards '*/src/test/regress/sql/*' '*/src/test/regress/expected/*' \
    '*/src/test/regress/data/*' '*/src/test/regress/parallel_schedule'
mkdir -p "$(dirname "$dir")"
rm -rf "$dir"
mv postgresql-*/src/test/regress "$dir"
echo "pg-regress: PostgreSQL's regression tests are in $dir" >&2
