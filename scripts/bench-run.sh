#!/usr/bin/env bash
# Benchmarks `cellos run` of /bin/true with full isolation against bubblewrap with the same
# binds, in one run, and prints a table with the median ratio; then measures throughput of N
# concurrent cells for both. Needs root (cgroups, uid mapping). Usage: scripts/bench-run.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200}

scripts/setup.sh
cargo build --release -q
cellos=$PWD/target/x86_64-unknown-linux-gnu/release/cellos
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CELLOS_HOME=$work/home
"$cellos" keygen >/dev/null

# The same view of the host bwrap gets: read-only /usr (and the /bin, /lib... symlinks into it),
# read-only /etc, fresh /proc, minimal /dev, tmpfs /tmp, every namespace unshared.
bwrap_cmd=(bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/bin /bin
  --symlink usr/sbin /sbin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --ro-bind /etc /etc
  --proc /proc --dev /dev --tmpfs /tmp /bin/true)

hyperfine -N --style none --warmup 20 --runs "$runs" --export-json "$work/run.json" \
  -n cellos "$cellos run --quiet examples/bench/true.yaml" \
  -n bwrap "${bwrap_cmd[*]}" >/dev/null 2>&1

python3 - "$work/run.json" <<'PY'
import json, sys, statistics
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
def ms(name, key): return r[name][key] * 1000
print("## cellos run /bin/true vs bwrap --unshare-all --die-with-parent (same binds)\n")
print("| command | median ms | mean ms | min ms | max ms |")
print("|---|---|---|---|---|")
for n in ("cellos", "bwrap"):
    print(f"| {n} | {ms(n,'median'):.2f} | {ms(n,'mean'):.2f} | {ms(n,'min'):.2f} | {ms(n,'max'):.2f} |")
print(f"\nmedian ratio cellos/bwrap: **{r['cellos']['median']/r['bwrap']['median']:.2f}** (target <= 1.5)\n")
PY

# Throughput: total cells per second with N running at once (each cell has its own id).
total=64
for i in $(seq 1 $total); do
  sed "s/id: bench-true/id: bench-$i/" examples/bench/true.yaml > "$work/c$i.yaml"
done
echo "## Concurrent throughput ($total cells in total)"
echo
echo "| concurrency | cellos cells/s | bwrap cells/s | ratio |"
echo "|---|---|---|---|"
for n in 1 2 4 8; do
  t0=$(date +%s.%N)
  seq 1 $total | xargs -P "$n" -I{} "$cellos" run --quiet "$work/c{}.yaml" 2>/dev/null
  t1=$(date +%s.%N)
  seq 1 $total | xargs -P "$n" -I{} "${bwrap_cmd[@]}"
  t2=$(date +%s.%N)
  python3 -c "
c=$total/($t1-$t0); b=$total/($t2-$t1)
print(f'| $n | {c:.0f} | {b:.0f} | {c/b:.2f} |')"
done
