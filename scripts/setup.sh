#!/usr/bin/env bash
# Installs what CellOS needs on a fresh Debian 12 machine. Idempotent: packages already present
# are not fetched again, and the apt index is refreshed only when something is missing.
set -euo pipefail

packages=(
  nftables       # egress enforcement inside each cell's network namespace
  iproute2       # network namespaces and the test internets of the egress tests
  strace         # the egress tests prove `cellos run` executes no networking tool
  python3        # example workloads and isolation probes run inside cells
  python3-pip    # workload corpus: pip installs a local wheel inside a cell
  gcc            # workload corpus: a cell builds a C program and runs it
  libc6-dev      # headers and crt files gcc links that program with
  git            # workload corpus: git init and commit inside a cell
  bubblewrap     # the peer `cellos run` is benchmarked against
  hyperfine      # times whole commands in scripts/bench-run.sh
  dnsmasq-base   # upstream DNS server in egress tests
  iperf3         # throughput through egress rules in scripts/bench-egress.sh
  openssl        # TLS server and self-signed certificate of the egress tests' internet
  qemu-system-x86  # boots Debian's own kernel for scripts/vm-test.sh (software emulation)
  busybox-static   # the VM guest's userland
  kmod             # depmod, for the modules.dep of the VM guest's kernel
  python3-venv     # scripts/api-test.sh: httpx, requests, pytest, schemathesis and mcp from PyPI
  prometheus       # promtool checks what `cellos serve` serves at /metrics
  curl             # scripts/api-test.sh waits for the server and fetches /metrics
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${missing[*]} (run with sudo)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install the Rust toolchain (rustup)" >&2; exit 1; }
