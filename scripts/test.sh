#!/usr/bin/env bash
# Sets up the machine, then runs every check CI runs: format, lints, and all tests.
# Isolation tests need root (real namespaces, cgroups, seccomp); run this as root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
