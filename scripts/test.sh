#!/usr/bin/env bash
# Sets up the machine, then runs every check CI runs: format, lints, all tests, and the VM battery.
# Isolation tests need root (real namespaces, cgroups, seccomp); run this as root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
scripts/test-tools.sh  # s3s-fs for the S3 export tests
# Where test-tools.sh put it, also when CARGO_TARGET_DIR moves the target directory.
export CELLOS_S3S_FS="${CARGO_TARGET_DIR:-$PWD/target}/tools/bin/s3s-fs"
cargo test --workspace --no-fail-fast
scripts/api-test.sh  # a real `cellos serve`: Python clients, schemathesis, promtool; MCP via the Python SDK
scripts/vm-test.sh   # Debian 12's own kernel under qemu: pure cgroup v2, hybrid, no Landlock
