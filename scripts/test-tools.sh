#!/usr/bin/env bash
# Tools the tests run that Debian does not package, built from crates.io into target/tools:
#   s3s-fs  an S3-compatible server on a directory (SigV4, multipart), for the export tests.
# Idempotent: a tool already built at the pinned version is not built again.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${CARGO_TARGET_DIR:-$PWD/target}/tools
s3s_version=0.14.1
if [ "$("$root/bin/s3s-fs" --version 2>/dev/null || true)" != "s3s-fs $s3s_version" ]; then
  # Built for the host (no crt-static target), with its own lock file.
  cargo install --quiet --locked --root "$root" --target-dir "$root/build" \
    --target x86_64-unknown-linux-gnu s3s-fs@"$s3s_version" --features binary
fi
