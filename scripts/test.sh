#!/usr/bin/env bash
# The test command of the README: unit tests, conformance suites,
# integration tests against real clusters, sqllogictest files and the psql
# smoke test — everything `cargo test --workspace` runs, after installing
# the system packages the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/cargo-env.sh
cargo test --workspace --no-run
cargo test --workspace "$@"
