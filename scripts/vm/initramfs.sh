#!/usr/bin/env bash
# Builds the guest's initramfs: busybox-static, CellOS's release binaries, nft and ip, the kernel modules
# cells need (overlayfs and netfilter are modules in Debian's kernel), the battery and its specs,
# a directory rootfs and an OCI layout for image cells.
# Usage: initramfs.sh KERNEL_DIR BIN_DIR OUT_CPIO
set -euo pipefail
kernel="$1" bin="$2" out="$3"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,proc,sys,dev,tmp,run,var/lib,lib/modules,specs,images}
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
# nft and ip are dynamically linked: bring each with the libraries ldd names, at the same paths.
mkdir -p "$root/usr/sbin"
for tool in nft ip; do
  path="$(command -v "$tool")"
  install -m 0755 "$path" "$root/usr/sbin/$tool"
  for lib in $(ldd "$path" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -nL "$lib" "$root$lib"
  done
done
for b in cellos cellos-cell-init cellos-telemetry-agent; do
  install -m 0755 "$bin/$b" "$root/usr/local/bin/$b"
done

# Modules and their dependencies, as modules.dep lists them (paths relative to the version dir).
kver="$(ls "$kernel/lib/modules")"
mods="$kernel/lib/modules/$kver"
mkdir -p "$root/lib/modules/$kver"
cp "$mods/modules.dep" "$mods/modules.builtin" "$root/lib/modules/$kver/"
# nftables expressions (objref for named counters, log, reject, nat, ...) are modules of their
# own; bring them all rather than the ones today's rulesets happen to use.
netfilter="$(cd "$mods" && find kernel/net/netfilter kernel/net/ipv4/netfilter kernel/net/ipv6/netfilter \
  -name 'nf*.ko' -exec basename {} .ko \;)"
want=(crc32c_generic overlay veth $netfilter)
for m in "${want[@]}"; do
  line="$(grep -E "(^|/)${m}\.ko:" "$mods/modules.dep" || true)"
  [ -n "$line" ] || continue
  for f in $(echo "$line" | tr -d ':'); do
    mkdir -p "$root/lib/modules/$kver/$(dirname "$f")"
    cp -n "$mods/$f" "$root/lib/modules/$kver/$f"
  done
done

cat > "$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$root/etc/group" <<'G'
root:x:0:
nogroup:x:65534:
G
echo "127.0.0.1 localhost" > "$root/etc/hosts"
echo "nameserver 127.0.0.1" > "$root/etc/resolv.conf"
echo "cellos-vm" > "$root/etc/hostname"

install -m 0755 "$here/guest-init.sh" "$root/init"
install -m 0755 "$here/battery.sh" "$root/battery.sh"
cp "$here"/specs/*.yaml "$root/specs/"

# A directory rootfs ({path} cells): busybox and its applets, no /etc.
mkdir -p "$root/images/busybox/bin"
cp /bin/busybox "$root/images/busybox/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ -e "$root/images/busybox/bin/$applet" ] || ln -s busybox "$root/images/busybox/bin/$applet"
done
python3 "$here/oci_layout.py" /bin/busybox "$root/images/oci"

(cd "$root" && find . -print0 | busybox cpio -o -H newc -0 2>/dev/null) | gzip -1 > "$out"
