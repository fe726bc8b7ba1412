#!/usr/bin/env bash
# Drives a real `cellos serve` the way programs will: Python's httpx over the Unix socket and
# requests over TLS on loopback (tests/api), schemathesis against its generated /openapi.json,
# and promtool on its /metrics; and its MCP server (`cellos mcp` on stdio and streamable HTTP,
# `/mcp` on `cellos serve`) through the official Python MCP SDK (tests/mcp). Run as root after
# scripts/setup.sh (scripts/test.sh does both).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/api-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
  'httpx>=0.27,<0.29' 'requests>=2.31' 'pytest>=8' 'schemathesis>=4.3,<5' 'websockets>=13' \
  'mcp>=1.20,<2'

cargo build -q --bin cellos --bin cellos-cell-init
bin="$PWD/target/x86_64-unknown-linux-gnu/debug/cellos"
export CELLOS_BIN="$bin"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/api
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/mcp

# A server of its own for the contract checks, so their cells never meet the tests' cells.
home="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
token="schema-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "$token" > "$home/token"
"$bin" --home "$home" serve --listen "tcp:127.0.0.1:$port" --token-file "$home/token" \
  2>"$home/serve.log" &
pid=$!
cleanup() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$home"; }
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$port/metrics" > "$home/metrics.txt"
promtool check metrics < "$home/metrics.txt"
echo "promtool: /metrics is valid"

# Per-operation settings --checks all cannot take on the command line:
# - createCell: the body schema is the document's structure, but a well-formed spec can still
#   fail the spec's semantic validation (422 invalid-spec / unsupported-spec with the located
#   problems), which no JSON Schema of the body expresses; 422 is an answer to valid input too.
# - execWebSocket: a valid handshake is answered 101 and the connection becomes a WebSocket
#   (whose first frames report the exec or its problem), which schemathesis, speaking plain
#   HTTP, would then reuse for its next request. Only handshakes that violate the schema are
#   sent (each must be refused with 400); the WebSocket itself is covered by
#   crates/cellos-server/tests/websocket.rs.
# - streamEvents: an SSE stream never ends on its own, so schemathesis reads each one until
#   the request timeout; one second shows the stream works without making the run 10 s per case.
cat > "$home/schemathesis.toml" <<'TOML'
[[operations]]
include-operation-id = "createCell"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

[[operations]]
include-operation-id = "execWebSocket"
generation.mode = "negative"
phases.stateful.enabled = false

[[operations]]
include-operation-id = "streamEvents"
request-timeout = 1
TOML
"$venv/bin/schemathesis" --config-file "$home/schemathesis.toml" \
  run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all --max-examples 25 --seed 1 --workers 1