#!/usr/bin/env bash
# Fetches the kernel that `linux-image-amd64` names on this Debian release (Debian 12: 6.1) with
# `apt-get download` and unpacks it into DIR/kernel/<package>, once. Prints that directory.
# Nothing is installed into the host's /boot: the kernel is only booted under qemu.
set -euo pipefail
dir="$1"
kernel_package() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
pkg="$(kernel_package)"
[ -n "$pkg" ] || { apt-get update -qq && pkg="$(kernel_package)"; }
[ -n "$pkg" ] || { echo "vm: apt-cache names no kernel behind linux-image-amd64 (run apt-get update)" >&2; exit 1; }
out="$dir/kernel/$pkg"
if [ ! -f "$out/.unpacked" ]; then
  mkdir -p "$dir/debs" "$out"
  # _apt cannot write into a directory under a 0700 home; download as root into a private one.
  (cd "$dir/debs" && apt-get download -q "$pkg" 2>&1 | grep -v "^W: Download is performed unsandboxed" >&2 || true)
  deb="$(ls "$dir/debs/${pkg}"_*.deb | head -n 1)"
  dpkg-deb -x "$deb" "$out"
  # The package leaves modules.dep to its postinst; the initramfs builder needs it.
  depmod -b "$out" "$(ls "$out/lib/modules")"
  touch "$out/.unpacked"
fi
echo "$out"
