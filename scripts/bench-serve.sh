#!/usr/bin/env bash
# Benchmarks `cellos serve` in one run, against its peers in the same run, and prints tables:
# API create + exec /bin/true + destroy against `cellos run /bin/true`; exec latency in a running
# cell (p50/p99) against a cold `bwrap ... /bin/true`; 20 concurrent creates against one create;
# memory per idle session cell (the cell's own cgroup plus the server's growth per cell).
# Needs root. Usage: scripts/bench-serve.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-100}

scripts/setup.sh
cargo build --release -q
venv=target/api-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check 'httpx>=0.27,<0.29'
CELLOS_BIN=$PWD/target/x86_64-unknown-linux-gnu/release/cellos "$venv/bin/python" scripts/bench_serve.py "$rounds"
