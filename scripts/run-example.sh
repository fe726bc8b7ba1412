#!/usr/bin/env bash
# Sets up the machine, builds CellOS and runs the main job: a real isolated cell from
# examples/specs/hello.yaml on the embedded default (JSONL event log, local exports), then
# verifies the signed event log.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release -q
./target/x86_64-unknown-linux-gnu/release/cellos run "${1:-examples/specs/hello.yaml}"
./target/x86_64-unknown-linux-gnu/release/cellos verify
