#!/bin/sh
# PID 1 of the test VM. Moves out of the initramfs into a tmpfs (the initramfs root cannot be
# pivoted away from, and every cell pivots), mounts what a host has (proc, sys, dev, the cgroup
# layout named by `cellos.cgroup=` on the kernel command line), loads the modules cells need,
# runs the battery and powers off.
export PATH=/usr/local/bin:/usr/sbin:/bin
if [ ! -e /.in-tmpfs ]; then
  mount -t proc proc /proc
  mkdir /newroot
  mount -t tmpfs -o mode=0755 tmpfs /newroot
  for entry in /*; do
    case "$entry" in /proc|/newroot) ;; *) cp -a "$entry" /newroot/ ;; esac
  done
  mkdir -p /newroot/proc
  touch /newroot/.in-tmpfs
  umount /proc
  exec switch_root /newroot /init
fi

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run

mode="$(sed -n 's/.*cellos\.cgroup=\([a-z0-9]*\).*/\1/p' /proc/cmdline)"
case "$mode" in
  v2)
    # As systemd leaves it: cgroup2 at /sys/fs/cgroup, controllers enabled for the tree.
    mount -t cgroup2 cgroup2 /sys/fs/cgroup
    echo "+memory +pids +cpu" > /sys/fs/cgroup/cgroup.subtree_control
    ;;
  hybrid)
    # As a hybrid systemd host: v1 hierarchies hold the controllers, an empty v2 tree beside.
    mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup
    for c in memory pids cpu,cpuacct; do
      mkdir "/sys/fs/cgroup/$c"
      mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
    done
    mkdir /sys/fs/cgroup/unified
    mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
    ;;
esac
# crc32c first: libcrc32c (under nf_tables) needs it and modules.dep does not say so.
for m in crc32c_generic overlay veth $(cd /lib/modules/*/ && find kernel -name 'nf*.ko' -exec basename {} .ko \;); do
  modprobe "$m" 2>/dev/null
done
ip link set lo up
mkdir -p /var/lib/cellos

echo "CELLOS-VM-BEGIN $(uname -r) cgroup=$mode lsm=$(cat /sys/kernel/security/lsm 2>/dev/null)"
/battery.sh "$mode"
echo "CELLOS-VM-END"
poweroff -f
