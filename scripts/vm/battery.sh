#!/bin/sh
# The guest battery: each check prints one machine-readable line,
#   CELLOS-VM {"check":"NAME","ok":true|false,"detail":"..."}
# which the host (scripts/vm-test.sh) asserts on. Usage: battery.sh CGROUP_MODE (v2 | hybrid).
mode="$1"
export CELLOS_HOME=/var/lib/cellos
out=/tmp/out

result() { # NAME OK(true|false) DETAIL
  detail="$(printf '%s' "$3" | tr -d '"\\' | tr '\n\t' '  ' | cut -c1-4000)"
  printf 'CELLOS-VM {"check":"%s","ok":%s,"detail":"%s"}\n' "$1" "$2" "$detail"
}

# Run a spec; $status is cellos's exit status, $out holds stdout+stderr.
run() {
  cellos run "/specs/$1.yaml" >"$out" 2>&1
  status=$?
}

# The CloudEvents of one cell, one per line.
events() { cellos events --json --cell "$1" 2>/dev/null; }

expect_output() { # CHECK SPEC WORD
  run "$2"
  if [ "$status" = 0 ] && grep -q "$3" "$out"; then
    result "$1" true "exit 0, printed $3"
  else
    result "$1" false "exit $status: $(cat "$out")"
  fi
}

if [ "$mode" = v2 ]; then
  mechanisms="memory.max memory.swap.max pids.max cpu.max"
else
  mechanisms="memory.limit_in_bytes pids.max cpu.cfs_quota_us"
fi

if ! grep -q landlock /sys/kernel/security/lsm 2>/dev/null; then
  # Booted without Landlock: a cell that needs it (the default) is refused, and the refusal names it.
  run host-cell
  if [ "$status" = 125 ] && grep -qi landlock "$out"; then
    result landlock-required true "exit 125: $(cat "$out")"
  else
    result landlock-required false "exit $status: $(cat "$out")"
  fi
  # A cell whose spec allows it (minAbi: 0) runs, and its evidence says Landlock was not enforced.
  run nolandlock-cell
  enforced="$(events nolandlock-cell | grep isolation.v1.enforced)"
  if [ "$status" = 0 ] && grep -q nolandlock-ok "$out" \
    && printf '%s' "$enforced" | grep -q '"landlockEnforced":false'; then
    result landlock-optional true "exit 0, isolation.v1.enforced: landlockEnforced false"
  else
    result landlock-optional false "exit $status: $(cat "$out") evidence: $enforced"
  fi
  cellos verify >"$out" 2>&1
  result log-verifies "$([ $? = 0 ] && echo true || echo false)" "$(cat "$out")"
  exit 0
fi

cellos doctor >"$out" 2>&1
result doctor "$([ $? = 0 ] && echo true || echo false)" "$(cat "$out")"

expect_output rootfs-host host-cell host-ok
expect_output rootfs-path path-cell path-ok
expect_output rootfs-oci oci-cell oci-ok

# Landlock evidence: the ABI applied and exactly the targeted rights it leaves unenforced.
enforced="$(events host-cell | grep isolation.v1.enforced)"
abi="$(printf '%s' "$enforced" | sed -n 's/.*"landlockAbi":\([0-9]*\).*/\1/p')"
case "$abi" in
  1) want='"landlockUnenforced":["refer","truncate","ioctlDev"]' ;;
  2) want='"landlockUnenforced":["truncate","ioctlDev"]' ;;
  3 | 4) want='"landlockUnenforced":["ioctlDev"]' ;;
  5) want='"landlockUnenforced":[]' ;;
  *) want='a landlockAbi from 1 to 5' ;;
esac
if printf '%s' "$enforced" | grep -qF "$want" \
  && printf '%s' "$enforced" | grep -q '"landlockEnforced":true'; then
  result landlock-evidence true "ABI $abi: $want"
else
  result landlock-evidence false "ABI $abi, expected $want: $enforced"
fi

# A cell requiring Landlock ABI 3 is refused below it, naming the release that brings it.
run abi3-cell
if [ "${abi:-0}" -lt 3 ]; then
  if [ "$status" = 125 ] && grep -q "Landlock ABI 3" "$out" && grep -q "Linux 6.2" "$out" \
    && ! grep -q abi3-ok "$out"; then
    result landlock-min-abi true "ABI $abi: exit 125: $(cat "$out")"
  else
    result landlock-min-abi false "ABI $abi: exit $status: $(cat "$out")"
  fi
elif [ "$status" = 0 ] && grep -q abi3-ok "$out"; then
  result landlock-min-abi true "ABI $abi: ran"
else
  result landlock-min-abi false "ABI $abi: exit $status: $(cat "$out")"
fi

run limits-cell
enforced="$(events limits-cell | grep isolation.v1.enforced)"
missing=""
for m in $mechanisms; do
  printf '%s' "$enforced" | grep -q "$m" || missing="$missing $m"
done
if [ "$status" = 0 ] && grep -q limits-ok "$out" && [ -z "$missing" ]; then
  result limits-enforced true "mechanisms: $mechanisms"
else
  result limits-enforced false "exit $status, missing:$missing; $(cat "$out")"
fi

run oom-cell
if [ "$status" = 137 ] && events oom-cell | grep limit.v1.hit | grep -qi oom; then
  result oom-reported true "exit 137, limit.v1.hit names the OOM kill"
else
  result oom-reported false "exit $status: $(cat "$out"); $(events oom-cell | grep limit.v1.hit)"
fi

run pids-cell
if events pids-cell | grep limit.v1.hit | grep -qi pids; then
  result pids-reported true "exit $status, limit.v1.hit names pids"
else
  result pids-reported false "exit $status: $(cat "$out")"
fi

run seccomp-cell
if [ "$status" = 0 ] && grep -q denied "$out" && ! grep -q escaped "$out"; then
  result seccomp-denies true "unshare -U refused inside the cell"
else
  result seccomp-denies false "exit $status: $(cat "$out")"
fi

# Pause and resume through the cgroup freezer: a running cell's output stops while it is paused
# and goes on after resume.
cellos run /specs/pause-cell.yaml >/tmp/pause.out 2>&1 &
runner=$!
sleep 3
cellos pause pause-cell >"$out" 2>&1
paused=$?
sleep 0.5
a=$(grep -c tick /tmp/pause.out)
sleep 1.5
b=$(grep -c tick /tmp/pause.out)
cellos resume pause-cell >>"$out" 2>&1
resumed=$?
sleep 1.5
c=$(grep -c tick /tmp/pause.out)
cellos kill pause-cell >/dev/null 2>&1
wait "$runner" 2>/dev/null
if [ "$paused" = 0 ] && [ "$resumed" = 0 ] && [ "$a" -gt 0 ] && [ "$a" = "$b" ] && [ "$c" -gt "$b" ]; then
  result pause-resume true "ticks $a, $b while paused, $c after resume; $(cat "$out")"
else
  result pause-resume false "pause $paused, resume $resumed, ticks $a/$b/$c; $(cat "$out")"
fi

# A networked cell: veth, nftables inside the cell, the host table, forwarding and masquerade.
# Its peer is a "world" network namespace beyond the host (cells may not reach the host itself).
# Port 9000 there is declared, 9001 is not, and both listen. iproute2's ip is called by its
# path: busybox sh prefers its own applet, which has no netns support.
/usr/sbin/ip netns add world
/usr/sbin/ip link add wv0 type veth peer name wv1
/usr/sbin/ip link set wv1 netns world
/usr/sbin/ip addr add 192.0.2.1/24 dev wv0
/usr/sbin/ip link set wv0 up
/usr/sbin/ip netns exec world ip addr add 192.0.2.2/24 dev wv1
/usr/sbin/ip netns exec world ip link set wv1 up
/usr/sbin/ip netns exec world ip link set lo up
/usr/sbin/ip netns exec world nc -ll -p 9000 -e /bin/echo net-ok >/dev/null 2>&1 &
allowed=$!
/usr/sbin/ip netns exec world nc -ll -p 9001 -e /bin/echo reached >/dev/null 2>&1 &
denied=$!
run net-cell
kill "$allowed" "$denied" 2>/dev/null
wait "$allowed" "$denied" 2>/dev/null
if [ "$status" = 0 ] && grep -q net-ok "$out" && grep -q blocked "$out"; then
  result egress-enforced true "declared port reached, undeclared port dropped"
else
  result egress-enforced false "exit $status: $(cat "$out")"
fi

# A session cell on `cellos serve`: execs with the cell's confinement and their exit status, a
# timeout that kills the exec's whole tree (124), a file round trip, and a clean destroy.
cellos serve >/tmp/serve.log 2>&1 &
server=$!
i=0
while [ ! -S "$CELLOS_HOME/cellos.sock" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
id="$(cellos create /specs/session-cell.yaml 2>"$out")"
cellos exec "$id" -- sh -c 'echo exec-ok $(id -u); exit 3' >>"$out" 2>&1
exec_status=$?
cellos exec --timeout-ms 300 "$id" -- sh -c 'sleep 100 & sleep 100' >>"$out" 2>&1
timeout_status=$?
left="$(cellos exec "$id" -- sh -c 'ps -o comm | grep -c sleep' 2>>"$out")"
printf 'round-trip' | cellos cp - "$id:/work/f" >>"$out" 2>&1
copied="$(cellos cp "$id:/work/f" - 2>>"$out")"
cellos rm "$id" >>"$out" 2>&1
rm_status=$?
kill -TERM "$server"
wait "$server"
serve_status=$?
if [ "$exec_status" = 3 ] && grep -q "exec-ok 1000" "$out" && [ "$timeout_status" = 124 ] \
  && [ "$left" = 0 ] && [ "$copied" = round-trip ] && [ "$rm_status" = 0 ] && [ "$serve_status" = 0 ]; then
  result session-exec true "exec exit 3 as uid 1000, timeout 124 with no sleep left, file round trip, rm 0, serve exit 0"
else
  result session-exec false "exec $exec_status, timeout $timeout_status, left $left, copied $copied, rm $rm_status, serve $serve_status: $(cat "$out") $(cat /tmp/serve.log)"
fi

# User processes: kernel threads (empty cmdline) come and go by themselves. The glob is expanded
# before this function starts any child, so its own helpers are never counted (a pipeline's
# would be, or not, depending on which of its processes had started). /proc files report size
# 0, so each cmdline is read rather than its size tested.
user_processes() {
  n=0
  for p in /proc/[0-9]*; do
    [ -n "$(tr -d '\0' <"$p/cmdline" 2>/dev/null)" ] && n=$((n + 1))
  done
  echo "$n"
}

# Residue: 50 cells, then the host holds no more mounts, cgroups, processes or records than before.
snapshot() {
  echo "mounts=$(wc -l </proc/self/mountinfo)"
  echo "cgroups=$(find /sys/fs/cgroup -type d | wc -l)"
  echo "procs=$(user_processes)"
  # Run records and network leases; the lease directory itself stays.
  echo "records=$(find "$CELLOS_HOME/run" -type f 2>/dev/null | wc -l)"
}
before="$(snapshot)"
failed=0
i=0
while [ $i -lt 50 ]; do
  cellos run /specs/loop-cell.yaml >/dev/null 2>&1 || failed=$((failed + 1))
  i=$((i + 1))
done
after="$(snapshot)"
if [ "$failed" = 0 ] && [ "$before" = "$after" ]; then
  result residue-after-50 true "$(echo $after)"
else
  result residue-after-50 false "$failed failed; before: $(echo $before); after: $(echo $after)"
fi

cellos verify >"$out" 2>&1
result log-verifies "$([ $? = 0 ] && echo true || echo false)" "$(cat "$out")"
