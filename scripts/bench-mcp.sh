#!/usr/bin/env bash
# Benchmarks `cellos mcp` in one run: the `run` tool with /bin/true through MCP stdio, end to
# end from the official Python MCP SDK (call to result: a fresh cell, the exec, its destroy),
# against `cellos run /bin/true` (a fresh process), alternating round by round; and 20 parallel
# `run` calls from one session against one. Needs root. Usage: scripts/bench-mcp.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-100}

scripts/setup.sh
cargo build --release -q
venv=target/api-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check 'mcp>=1.20,<2'
CELLOS_BIN=$PWD/target/x86_64-unknown-linux-gnu/release/cellos "$venv/bin/python" scripts/bench_mcp.py "$rounds"
