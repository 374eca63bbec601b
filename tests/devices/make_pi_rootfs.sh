#!/bin/sh
# Build (once) an arm64 Debian bookworm rootfs that plays a Raspberry Pi under qemu-user emulation.
#
# Usage: tests/devices/make_pi_rootfs.sh [CACHE_DIR]     (root; default /var/cache/edgebench-pi)
# Leaves CACHE_DIR/rootfs/ (python3, venv, pip, openssh-server) and CACHE_DIR/rootfs.ok when done;
# a second run with the stamp present does nothing, so CI can cache CACHE_DIR between runs.
# Recipe and pitfalls: ../shared/FACTS.md (no /sys bind: LiteRT's cpuinfo segfaults; QEMU_CPU=cortex-a72).
set -eu

CACHE=${1:-${EDGEBENCH_PI_CACHE:-/var/cache/edgebench-pi}}
ROOTFS=$CACHE/rootfs

if [ "$(id -u)" != 0 ]; then
  echo "make_pi_rootfs: needs root (mmdebstrap, chroot, binfmt)" >&2
  exit 2
fi
if [ -f "$CACHE/rootfs.ok" ]; then
  echo "make_pi_rootfs: $ROOTFS is ready (cached)" >&2
  exit 0
fi

need=""
command -v mmdebstrap >/dev/null || need="$need mmdebstrap"
command -v qemu-aarch64-static >/dev/null || need="$need qemu-user-static"
command -v update-binfmts >/dev/null || need="$need binfmt-support"
command -v arch-test >/dev/null || need="$need arch-test"
if [ -n "$need" ]; then
  echo "make_pi_rootfs: installing$need" >&2
  apt-get update -qq >&2 && apt-get install -y $need >&2
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
if ! arch-test arm64 >/dev/null 2>&1; then
  echo "make_pi_rootfs: this kernel cannot run arm64 binaries (binfmt_misc + qemu-aarch64 missing)" >&2
  exit 2
fi

mkdir -p "$CACHE"
rm -rf "$ROOTFS" "$CACHE/rootfs.part"
echo "make_pi_rootfs: mmdebstrap arm64 bookworm into $ROOTFS (about 4 minutes)" >&2
# Directory format: no tarball to unpack; an interrupted build leaves only rootfs.part behind.
mmdebstrap --arch=arm64 --variant=apt --format=directory \
  --include=python3,python3-venv,python3-pip,ca-certificates,openssh-server,procps \
  bookworm "$CACHE/rootfs.part"
mv "$CACHE/rootfs.part" "$ROOTFS"
# The chroot resolves names and checks TLS with the host's files (pip inside, if it ever needs the index).
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
mkdir -p "$ROOTFS/run/sshd" "$ROOTFS/root/.ssh"
chmod 700 "$ROOTFS/root/.ssh"
# A Pi-like identity, so device facts read as such.
echo raspberrypi-emulated > "$ROOTFS/etc/hostname"
touch "$CACHE/rootfs.ok"
echo "make_pi_rootfs: ready at $ROOTFS" >&2
