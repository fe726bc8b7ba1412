#!/usr/bin/env bash
# Egress benchmarks, each a ratio measured in one run, printed as tables:
#   1. network-scope setup per cell: `cellos run` of /bin/true with egress declared vs without;
#   2. DNS round-trip from inside one cell: through the CellOS DNS proxy vs straight to the same
#      dnsmasq (allowed by a CIDR rule, so both take the cell's veth and the host's forwarding);
#   3. iperf3 TCP throughput through an allowed CIDR rule vs the same path without rules (a plain
#      namespace with a veth to the host and no nftables table; target ratio >= 0.9);
#   4. the same through an allowed IPv6 CIDR rule (the cell's IPv6 /64, forwarded and
#      masqueraded by the host), against row 3's cell over IPv4.
# The "internet" is a network namespace built here (dnsmasq and an iperf3 server in it) and
# removed on exit, like everything else this script creates. Needs root.
# With CELLOS_BENCH_BEFORE=/path/to/another/cellos, row 1 also times that binary in the same
# hyperfine run (a before/after comparison under the same load).
# Usage: scripts/bench-egress.sh [setup-runs] [dns-queries] [iperf-seconds] [iperf-rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}
queries=${2:-2000}
seconds=${3:-5}
rounds=${4:-5}

scripts/setup.sh
cargo build --release -q -p cellos
cellos=${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release/cellos

# Index 254 of the test internets (crates/cellos/tests/egress/internet.rs): claiming its
# namespace name keeps the egress tests from using the same addresses meanwhile.
ns=cellos-egi-254
hif=egi254
plain=cellos-egb-plain-$$
pif=egbp$$
dns_ip=198.19.254.53
srv_ip=198.19.254.10
srv6_ip=2001:db8:254::10
work=$(mktemp -d)
pids=()
forward_before=$(sysctl -n net.ipv4.ip_forward)

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  ip link del "$hif" 2>/dev/null || true
  ip link del "$pif" 2>/dev/null || true
  ip netns del "$plain" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward="$forward_before"
  rm -rf "$work"
}
ip netns add "$ns" || { echo "bench-egress: $ns exists (another run or test uses it)" >&2; exit 1; }
trap cleanup EXIT
export CELLOS_HOME=$work/home
"$cellos" keygen >/dev/null

# The internet: veth to the host, dnsmasq and iperf3 on loopback addresses, a host route.
ip link add "$hif" type veth peer name up0 netns "$ns"
ip addr add 198.18.254.1/24 dev "$hif"
ip link set "$hif" up
ip -n "$ns" link set lo up
ip -n "$ns" addr add 198.18.254.2/24 dev up0
ip -n "$ns" link set up0 up
ip -n "$ns" route add default via 198.18.254.1
ip -n "$ns" addr add "$dns_ip/32" dev lo
ip -n "$ns" addr add "$srv_ip/32" dev lo
ip route add 198.19.254.0/24 via 198.18.254.2
ip addr add 2001:db8:ffff:254::1/64 dev "$hif" nodad
ip -n "$ns" addr add 2001:db8:ffff:254::2/64 dev up0 nodad
ip -n "$ns" addr add "$srv6_ip/128" dev lo nodad
ip -n "$ns" route add default via 2001:db8:ffff:254::1
ip route add 2001:db8:254::/48 via 2001:db8:ffff:254::2
ip netns exec "$ns" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
  --bind-interfaces --listen-address="$dns_ip" --user=root --pid-file= --local-ttl=300 \
  --address=/bench.example/"$srv_ip" &
pids+=($!)
ip netns exec "$ns" iperf3 -s -B "$srv_ip" -p 5201 >/dev/null 2>&1 &
pids+=($!)
ip netns exec "$ns" iperf3 -s -B "$srv6_ip" -p 5202 >/dev/null 2>&1 &
pids+=($!)

# The baseline path: a namespace like a cell's (veth to the host, host forwarding), no rules.
sysctl -qw net.ipv4.ip_forward=1
ip netns add "$plain"
ip link add "$pif" type veth peer name eth0 netns "$plain"
ip addr add 198.18.253.1/30 dev "$pif"
ip link set "$pif" up
ip -n "$plain" link set lo up
ip -n "$plain" addr add 198.18.253.2/30 dev eth0
ip -n "$plain" link set eth0 up
ip -n "$plain" route add default via 198.18.253.1
for _ in $(seq 50); do
  python3 - "$dns_ip" <<'PY' && break
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05bench\x07example\x00\x00\x01\x00\x01", (sys.argv[1], 53))
s.recv(512)
PY
  sleep 0.1
done

spec() { # id, argv (JSON list), authority YAML (may be empty)
  cat > "$work/$1.yaml" <<EOF
apiVersion: cellos.io/v1
kind: ExecutionCell
spec:
  id: $1
  run:
    argv: $2
    timeoutMs: 120000
    limits:
      memoryMaxBytes: 256Mi
      pidsMax: 64
  lifetime:
    ttlSeconds: 300
  filesystem:
    rootfs: host
$3
EOF
  echo "$work/$1.yaml"
}
egress="  authority:
    egressRules:
      - { host: bench.example, port: 443 }
      - { cidr: \"$dns_ip/32\", port: 53, protocol: udp }
      - { cidr: \"$srv_ip/32\", port: 5201 }
      - { cidr: \"$srv6_ip/128\", port: 5202 }"

# 1. Setup time per cell.
plain_spec=$(spec bench-egress-none '["/bin/true"]' "")
net_spec=$(spec bench-egress-net '["/bin/true"]' "$egress")
before=()
if [ -n "${CELLOS_BENCH_BEFORE:-}" ]; then
  before=(-n before-without "$CELLOS_BENCH_BEFORE run --quiet $plain_spec"
          -n before-with "$CELLOS_BENCH_BEFORE run --quiet --dns-upstream $dns_ip:53 $net_spec")
fi
hyperfine -N --style none --warmup 5 --runs "$runs" --export-json "$work/setup.json" \
  -n without "$cellos run --quiet $plain_spec" \
  -n with "$cellos run --quiet --dns-upstream $dns_ip:53 $net_spec" "${before[@]}" >/dev/null 2>&1
# The same, each cell started 300 ms after the previous one ended: back to back, a cell's
# link set-up waits behind the kernel's deletion of the previous cell's veth (finishing in the
# background, it holds the rtnl lock through RCU grace periods); spaced out, it does not.
hyperfine -N --style none --warmup 2 --runs "$(( (runs + 1) / 2 ))" --prepare "sleep 0.3" \
  --export-json "$work/setup-spaced.json" \
  -n without "$cellos run --quiet $plain_spec" \
  -n with "$cellos run --quiet --dns-upstream $dns_ip:53 $net_spec" >/dev/null 2>&1

# 2. DNS round-trips from inside one cell, alternating proxy and direct queries: the same name
#    again and again (after the first, answered from the proxy's cache), and names never asked
#    before (each one goes upstream and is pinned) on a gated rule (the in-memory pin table
#    only) and on a port pinned in nftables (one netlink batch per answer).
read -r -d '' dns_py <<PY || true
import socket, struct, time, json, statistics
def server():
    for line in open("/etc/resolv.conf"):
        p = line.split()
        if p[:1] == ["nameserver"]: return p[1]
def query(name):
    labels = b"".join(bytes([len(l)]) + l for l in name.encode().split(b"."))
    return b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x00\x01\x00\x01"
def rtt(s, addr, i, q):
    m = struct.pack(">H", i & 0xFFFF) + q[2:]
    t = time.perf_counter_ns(); s.sendto(m, addr)
    while s.recv(512)[:2] != m[:2]: pass
    return (time.perf_counter_ns() - t) / 1000
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
proxy_addr, direct_addr, same = (server(), 53), ("$dns_ip", 53), query("bench.example")
r = {k: [] for k in ("proxy", "direct", "proxy_new_gated", "proxy_new_pinned", "direct_new")}
for i in range($queries):
    r["proxy"].append(rtt(s, proxy_addr, 2 * i, same))
    r["direct"].append(rtt(s, direct_addr, 2 * i + 1, same))
# Separately, so that the slow nft runs do not disturb the round trips above; fewer, as each
# one runs a process.
for i in range(max(50, $queries // 10)):
    r["proxy_new_gated"].append(rtt(s, proxy_addr, 3 * i, query(f"n{i}.gate.bench.example")))
    r["proxy_new_pinned"].append(rtt(s, proxy_addr, 3 * i + 1, query(f"n{i}.pin.bench.example")))
    r["direct_new"].append(rtt(s, direct_addr, 3 * i + 2, query(f"n{i}.new.bench.example")))
out = {k: statistics.median(v) for k, v in r.items()}
out.update({k + "_p99": sorted(v)[int(len(v) * .99)] for k, v in r.items()})
print(json.dumps(out))
PY
dns_egress="$egress
      - { host: \"*.gate.bench.example\", port: 443 }
      - { host: \"*.pin.bench.example\", port: 8443 }"
dns_spec=$(spec bench-egress-dns "$(python3 -c 'import json,sys; print(json.dumps(["/usr/bin/python3","-c",sys.argv[1]]))' "$dns_py")" "$dns_egress")
"$cellos" run --dns-upstream "$dns_ip:53" "$dns_spec" > "$work/dns.json" 2>/dev/null

# 3. Throughput: the cell through its allowed rule, then the plain namespace, alternating for
#    a few rounds so that load elsewhere on the host hits both sides alike; medians compared.
iperf_spec=$(spec bench-egress-iperf "[\"/usr/bin/iperf3\", \"-c\", \"$srv_ip\", \"-t\", \"$seconds\", \"-J\"]" "$egress")
iperf6_spec=$(spec bench-egress-iperf6 "[\"/usr/bin/iperf3\", \"-c\", \"$srv6_ip\", \"-p\", \"5202\", \"-t\", \"$seconds\", \"-J\"]" "$egress")
for round in $(seq "$rounds"); do
  "$cellos" run --dns-upstream "$dns_ip:53" "$iperf_spec" > "$work/iperf-cell-$round.json" 2>/dev/null
  ip netns exec "$plain" iperf3 -c "$srv_ip" -t "$seconds" -J > "$work/iperf-plain-$round.json"
  "$cellos" run --dns-upstream "$dns_ip:53" "$iperf6_spec" > "$work/iperf-cell6-$round.json" 2>/dev/null
done

python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
w, rounds = sys.argv[1], int(sys.argv[2])
setup = {r["command"]: r for r in json.load(open(f"{w}/setup.json"))["results"]}
spaced = {r["command"]: r for r in json.load(open(f"{w}/setup-spaced.json"))["results"]}
dns = json.load(open(f"{w}/dns.json"))
def gbps(kind):
    return [json.load(open(f"{w}/iperf-{kind}-{r}.json"))["end"]["sum_received"]["bits_per_second"] / 1e9 for r in range(1, rounds + 1)]
cell_runs, base_runs, cell6_runs = gbps("cell"), gbps("plain"), gbps("cell6")
cell6 = statistics.median(cell6_runs)
cell, base = statistics.median(cell_runs), statistics.median(base_runs)
w_ms, wo_ms = setup["with"]["median"] * 1000, setup["without"]["median"] * 1000
print("## Egress (scripts/bench-egress.sh)\n")
print("| measure | with CellOS egress | baseline | ratio |")
print("|---|---|---|---|")
print(f"| `cellos run` /bin/true, median (egress declared vs none) | {w_ms:.2f} ms | {wo_ms:.2f} ms | {w_ms / wo_ms:.2f} |")
print(f"| network-scope setup per cell, back to back (difference) | {w_ms - wo_ms:.2f} ms | | |")
sw_ms, swo_ms = spaced["with"]["median"] * 1000, spaced["without"]["median"] * 1000
print(f"| `cellos run` /bin/true, cells 300 ms apart, median (egress vs none) | {sw_ms:.2f} ms | {swo_ms:.2f} ms | {sw_ms / swo_ms:.2f} |")
print(f"| network-scope setup per cell, 300 ms apart (difference) | {sw_ms - swo_ms:.2f} ms | | |")
if "before-with" in setup:
    bw, bwo = setup["before-with"]["median"] * 1000, setup["before-without"]["median"] * 1000
    print(f"| CELLOS_BENCH_BEFORE: `cellos run` /bin/true, median (egress vs none) | {bw:.2f} ms | {bwo:.2f} ms | {bw / bwo:.2f} |")
    print(f"| CELLOS_BENCH_BEFORE: network-scope setup per cell (difference) | {bw - bwo:.2f} ms | | |")
print(f"| DNS round-trip from a cell, median (proxy vs direct to dnsmasq) | {dns['proxy']:.0f} us | {dns['direct']:.0f} us | {dns['proxy'] / dns['direct']:.2f} |")
print(f"| DNS round-trip, p99 | {dns['proxy_p99']:.0f} us | {dns['direct_p99']:.0f} us | {dns['proxy_p99'] / dns['direct_p99']:.2f} |")
for key, what in (("gated", "gated rule, in-memory pin"), ("pinned", "nftables-pinned port, pinned over netlink")):
    p, d = dns[f"proxy_new_{key}"], dns["direct_new"]
    print(f"| DNS round-trip, names never asked before, median ({what}) | {p:.0f} us | {d:.0f} us | {p / d:.2f} |")
print(f"| iperf3 TCP throughput, median of {rounds} alternating runs (allowed CIDR rule vs no rules) | {cell:.2f} Gbit/s | {base:.2f} Gbit/s | {cell / base:.2f} (target >= 0.9) |")
print(f"| iperf3 TCP throughput over IPv6, median of {rounds} runs (allowed IPv6 CIDR rule vs the cell over IPv4) | {cell6:.2f} Gbit/s | {cell:.2f} Gbit/s | {cell6 / cell:.2f} |")
print("\niperf3 rounds (Gbit/s), cell: " + ", ".join(f"{x:.2f}" for x in cell_runs) + "; no rules: " + ", ".join(f"{x:.2f}" for x in base_runs)
      + "; cell over IPv6: " + ", ".join(f"{x:.2f}" for x in cell6_runs))
PY
