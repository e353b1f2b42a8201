#!/usr/bin/env bash
# The test command of the README: unit tests, conformance suites,
# integration tests against real clusters, sqllogictest files and the psql
# smoke test — everything `cargo test --workspace` runs, after installing
# the system packages and PostgreSQL drivers the tests need, and
# PostgreSQL's regression tests (for crates/eon/tests/it/regress.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/clients.sh
scripts/pg-regress.sh
source scripts/cargo-env.sh
# The tree is rustfmt-formatted; keep it so (skipped if rustfmt is absent).
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all --check >/dev/null || { echo "test: run \`cargo fmt --all\` (the tree is not formatted)" >&2; exit 1; }
fi
cargo test --workspace --no-run
cargo test --workspace "$@"
