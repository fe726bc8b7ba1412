#!/usr/bin/env bash
# Boots Debian 12's own kernel under qemu (software emulation) three times: pure cgroup v2, hybrid
# cgroups (v1 hierarchies hold the controllers), and without Landlock. Each guest runs
# scripts/vm/battery.sh on CellOS's release binaries; this script asserts on the results it prints
# and exits non-zero if any expected check is missing or failed.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release -q
vm=target/vm
mkdir -p "$vm"
kernel="$(scripts/vm/kernel.sh "$vm")"
scripts/vm/initramfs.sh "$kernel" target/x86_64-unknown-linux-gnu/release "$vm/initramfs.cpio.gz"

# boot name | kernel command line | checks that must pass
boots=(
  "v2|cgroup_no_v1=all lsm=landlock,yama cellos.cgroup=v2|doctor rootfs-host rootfs-path rootfs-oci landlock-evidence landlock-min-abi limits-enforced oom-reported pids-reported seccomp-denies pause-resume egress-enforced session-exec residue-after-50 log-verifies"
  "hybrid|lsm=landlock,yama cellos.cgroup=hybrid|doctor rootfs-host rootfs-path rootfs-oci landlock-evidence landlock-min-abi limits-enforced oom-reported pids-reported seccomp-denies pause-resume egress-enforced session-exec residue-after-50 log-verifies"
  "no-landlock|cgroup_no_v1=all lsm=yama cellos.cgroup=v2|landlock-required landlock-optional log-verifies"
)

failures=0
printf '%-12s %-18s %-6s %s\n' boot check result detail
for boot in "${boots[@]}"; do
  IFS='|' read -r name cmdline expected <<<"$boot"
  log="$vm/$name.log"
  start=$(date +%s)
  timeout 900 qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 \
    -kernel "$kernel/boot/vmlinuz-"* -initrd "$vm/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 quiet $cmdline" \
    -nographic -no-reboot -nic none </dev/null >"$log" 2>&1 || true
  secs=$(( $(date +%s) - start ))
  python3 scripts/vm/assert.py "$name" "$log" "$secs" $expected || failures=$((failures + 1))
done
[ "$failures" = 0 ] || { echo "vm-test: $failures boot(s) failed; guest logs in $vm/" >&2; exit 1; }
