# Sourced by the project's scripts: one place for the build settings, so every
# build (tests, CI, benchmarks) shares one set of compiled artifacts.
# mold links much faster than the default linker; it is used only where
# installed (scripts/setup.sh installs it), so a plain `cargo run` still works.
if command -v mold >/dev/null 2>&1; then
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-fuse-ld=mold"
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
