#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Build the headless ml-connector appliance: a bootable Debian 12 (bookworm) raw
# disk image with the agent package installed and enabled.
#
#   firmware-image/build-image.sh [--deb FILE] [--out FILE]
#
# Needs root (mmdebstrap's root mode, file ownership in the ext4 image) and:
# mmdebstrap sfdisk mke2fs mkfs.vfat mtools syslinux jq (make image-deps).
# No loop devices and no mounts: the root file system is written with
# `mke2fs -d`, the FAT partitions with mkfs.vfat + mcopy, and syslinux installs
# its loader through mtools.
#
# Disk layout (MBR):
#   p1  FAT  MLCBOOT    syslinux, vmlinuz, initrd.img (mounted on /boot/firmware)
#   p2  FAT  MLCCONFIG  mlc-seed.json goes here (see firmware-image/README.md)
#   p3  ext4 mlcroot    the Debian system; last, so it can be grown
#
# The package archive is the build host's own: every apt source file under
# /etc/apt is handed to mmdebstrap as is.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
OUT=$TOP/build/image/ml-connector-appliance.img
DEB=
while [ $# -gt 0 ]; do
    case "$1" in
        --deb) DEB=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "build-image.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
case $DEB in ""|/*) ;; *) DEB=$PWD/$DEB ;; esac
[ "$(id -u)" = 0 ] || { echo "build-image.sh: run as root (mmdebstrap root mode, file ownership)" >&2; exit 2; }
for t in mmdebstrap sfdisk mke2fs mkfs.vfat mcopy mmd syslinux jq; do
    command -v "$t" >/dev/null || { echo "build-image.sh: '$t' is missing: run 'make image-deps'" >&2; exit 2; }
done

# our agent package: the newest build/packages/ml-connector-agent_*.deb
if [ -z "$DEB" ]; then
    DEB=$(ls -t "$TOP"/build/packages/ml-connector-agent_*.deb 2>/dev/null | head -n 1 || true)
fi
if [ -z "$DEB" ] || [ ! -f "$DEB" ]; then
    echo "build-image.sh: no build/packages/ml-connector-agent_*.deb: run 'make deb' first (or give --deb FILE)" >&2
    exit 2
fi
echo "image: agent package $DEB"

OUTDIR=$(dirname "$OUT")
WORK=$OUTDIR/work
mkdir -p "$OUTDIR"
rm -rf "$WORK"
mkdir -p "$WORK"
ROOTFS=$WORK/rootfs

# the host's apt sources (the mirror this machine is configured for)
set --
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] && grep -qE '^[[:space:]]*(deb |Types:)' "$f" && set -- "$@" "$f"
done
[ $# -gt 0 ] || { echo "build-image.sh: no apt sources under /etc/apt" >&2; exit 2; }
echo "image: apt sources from $*"

# apt (outside the chroot) installs our package with its dependencies; dpkg (inside)
# needs it at the same path
DEBTMP=$(mktemp -d /tmp/mlc-image-deb.XXXXXX)
trap 'rm -rf "$DEBTMP"' EXIT
cp "$DEB" "$DEBTMP/ml-connector-agent.deb"

# no documentation, manual pages, locales or info pages; kernel drivers a headless
# server appliance does not use (graphics, sound, cameras/TV, wireless, bluetooth,
# InfiniBand, staging) -- depmod runs after unpacking, so the module index fits.
set -f   # the patterns are for dpkg, not for this shell
EX=
for p in /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* \
         /usr/share/lintian/* /usr/share/linda/* /usr/share/bug/* /usr/share/zsh/* \
         /usr/share/bash-completion/completions/* \
         /usr/lib/modules/*/kernel/sound/* /usr/lib/modules/*/kernel/drivers/media/* \
         /usr/lib/modules/*/kernel/drivers/gpu/drm/amd/* /usr/lib/modules/*/kernel/drivers/gpu/drm/nouveau/* \
         /usr/lib/modules/*/kernel/drivers/gpu/drm/radeon/* /usr/lib/modules/*/kernel/drivers/gpu/drm/i915/* \
         /usr/lib/modules/*/kernel/drivers/net/wireless/* /usr/lib/modules/*/kernel/net/wireless/* \
         /usr/lib/modules/*/kernel/net/mac80211/* /usr/lib/modules/*/kernel/drivers/bluetooth/* \
         /usr/lib/modules/*/kernel/net/bluetooth/* /usr/lib/modules/*/kernel/drivers/infiniband/* \
         /usr/lib/modules/*/kernel/drivers/staging/* /usr/lib/modules/*/kernel/drivers/iio/* \
         /usr/lib/modules/*/kernel/drivers/isdn/* /usr/lib/modules/*/kernel/drivers/input/touchscreen/* \
         /lib/modules/*/kernel/sound/* /lib/modules/*/kernel/drivers/media/* \
         /lib/modules/*/kernel/drivers/gpu/drm/amd/* /lib/modules/*/kernel/drivers/gpu/drm/nouveau/* \
         /lib/modules/*/kernel/drivers/gpu/drm/radeon/* /lib/modules/*/kernel/drivers/gpu/drm/i915/* \
         /lib/modules/*/kernel/drivers/net/wireless/* /lib/modules/*/kernel/net/wireless/* \
         /lib/modules/*/kernel/net/mac80211/* /lib/modules/*/kernel/drivers/bluetooth/* \
         /lib/modules/*/kernel/net/bluetooth/* /lib/modules/*/kernel/drivers/infiniband/* \
         /lib/modules/*/kernel/drivers/staging/* /lib/modules/*/kernel/drivers/iio/* \
         /lib/modules/*/kernel/drivers/isdn/* /lib/modules/*/kernel/drivers/input/touchscreen/*; do
    EX="$EX --dpkgopt=path-exclude=$p"
done
for p in /usr/share/doc/*/copyright /usr/share/locale/locale.alias; do
    EX="$EX --dpkgopt=path-include=$p"
done

PKGS=linux-image-amd64,initramfs-tools,zstd,systemd-sysv,udev,dbus,systemd-resolved,systemd-timesyncd
PKGS=$PKGS,kmod,xz-utils,iproute2,ca-certificates,jq,util-linux,e2fsprogs,fdisk,less

# kernel modules are compressed with xz (kmod and initramfs-tools read .ko.xz): about
# two thirds of the root file system are modules otherwise
# shellcheck disable=SC2086
mmdebstrap --mode=root --variant=minbase --format=directory \
    --include="$PKGS" $EX \
    --aptopt='Acquire::Languages "none"' \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo COMPRESS=zstd > "$1/etc/initramfs-tools/conf.d/mlc-compress"' \
    --customize-hook="sync-in '$HERE/overlay' /" \
    --include="$DEBTMP/ml-connector-agent.deb" \
    --setup-hook="mkdir -p \"\$1$DEBTMP\" && cp '$DEBTMP/ml-connector-agent.deb' \"\$1$DEBTMP/\"" \
    --customize-hook="rm -rf \"\$1$DEBTMP\"" \
    --customize-hook='chroot "$1" sh -ec "
        find /lib/modules -name \"*.ko\" -print0 | xargs -0 -r -P 2 -n 200 xz -q --check=crc32
        for v in \$(ls /lib/modules); do depmod \$v; done
        update-initramfs -u -k all"' \
    bookworm "$ROOTFS" "$@"
set +f

R=$ROOTFS
# the status page listens on the LAN; mlc-firstboot gives it a login before the agent starts
C=$R/etc/ml-connector/agent.json
[ -f "$C" ] || { echo "build-image.sh: the package installed no $C" >&2; exit 1; }
jq '.agent.status_listen = "0.0.0.0:8089"' "$C" >"$WORK/agent.json" && cat "$WORK/agent.json" >"$C"
chroot "$R" systemctl enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
    mlc-firstboot.service mlc-agent.service
echo "image: mlc-agent.service $(chroot "$R" systemctl is-enabled mlc-agent.service)," \
     "mlc-firstboot.service $(chroot "$R" systemctl is-enabled mlc-firstboot.service)"
ln -sf ../run/systemd/resolve/stub-resolv.conf "$R/etc/resolv.conf"
mkdir -p "$R/boot/firmware"
: >"$R/etc/machine-id"   # each appliance makes its own at first boot
rm -rf "$R/var/lib/apt/lists/"* "$R/var/cache/apt/"*.bin "$R/var/log/"*.log "$R/tmp/"*
# the initrd lives on MLCBOOT (syslinux reads it there); the kernel hooks copy new ones
KVER=$(ls "$R/boot" | sed -n 's/^vmlinuz-//p' | sort -V | tail -n 1)
[ -n "$KVER" ] && [ -f "$R/boot/initrd.img-$KVER" ] || { echo "build-image.sh: no kernel/initrd in $R/boot" >&2; exit 1; }
mv "$R/boot/initrd.img-$KVER" "$WORK/initrd.img"
cp "$R/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
ln -s firmware/initrd.img "$R/boot/initrd.img-$KVER"   # update-initramfs -u still finds "its" initrd

# sizes in MiB; 1 MiB alignment
mib() { echo $(( ($(stat -c %s "$1") + 1048575) / 1048576 )); }
BOOT_MB=$(( 2 * ($(mib "$WORK/vmlinuz") + $(mib "$WORK/initrd.img")) + 8 ))   # room for one update
CFG_MB=8
USED_MB=$(du -sm "$R" | cut -f1)
(cd "$R" && du -sm usr/lib/modules usr/lib/x86_64-linux-gnu usr/bin usr/sbin usr/share boot var 2>/dev/null |
    sort -rn | awk '{printf "%s %s MiB; ", $2, $1}') >"$OUTDIR/.rootfs-du"
ROOT_MB=$(( USED_MB * 120 / 100 + 256 ))
S1=2048
S2=$(( S1 + BOOT_MB * 2048 ))
S3=$(( S2 + CFG_MB * 2048 ))
END=$(( S3 + ROOT_MB * 2048 ))

# p1: MLCBOOT
printf '%s\n' "SERIAL 0 115200" "DEFAULT mlc" "PROMPT 0" "TIMEOUT 0" "LABEL mlc" \
    "  LINUX /vmlinuz" "  INITRD /initrd.img" \
    "  APPEND root=LABEL=mlcroot ro rootwait quiet console=ttyS0,115200n8 console=tty0" \
    >"$WORK/syslinux.cfg"
rm -f "$WORK/boot.fat" "$WORK/config.fat"
mkfs.vfat -C -n MLCBOOT -h "$S1" "$WORK/boot.fat" $(( BOOT_MB * 1024 )) >/dev/null
mcopy -i "$WORK/boot.fat" "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/syslinux.cfg" ::/
# p2: MLCCONFIG
mkfs.vfat -C -n MLCCONFIG -h "$S2" "$WORK/config.fat" $(( CFG_MB * 1024 )) >/dev/null
mcopy -i "$WORK/config.fat" "$HERE/mlc-seed.example.json" ::/mlc-seed.example.json
# p3: mlcroot, written from the directory tree (owners, modes, links kept)
rm -f "$WORK/root.ext4"
mke2fs -q -t ext4 -L mlcroot -m 1 -d "$R" "$WORK/root.ext4" "${ROOT_MB}M"

TMP=$OUT.tmp
rm -f "$TMP"
truncate -s $(( END * 512 )) "$TMP"
printf '%s\n' "label: dos" "unit: sectors" \
    "start=$S1, size=$(( S2 - S1 )), type=c, bootable" \
    "start=$S2, size=$(( S3 - S2 )), type=c" \
    "start=$S3, size=$(( END - S3 )), type=83" | sfdisk -q "$TMP"
dd if="$WORK/boot.fat"   of="$TMP" bs=512 seek="$S1" conv=notrunc,sparse status=none
dd if="$WORK/config.fat" of="$TMP" bs=512 seek="$S2" conv=notrunc,sparse status=none
dd if="$WORK/root.ext4"  of="$TMP" bs=1M seek=$(( S3 / 2048 )) conv=notrunc,sparse status=none
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$TMP" bs=440 count=1 conv=notrunc status=none
syslinux --offset $(( S1 * 512 )) --install "$TMP"
mv "$TMP" "$OUT"
[ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"

SZ=$(stat -c %s "$OUT")
echo "image: $OUT"
echo "image: largest in root: $(cat "$OUTDIR/.rootfs-du" 2>/dev/null)"
echo "image: kernel $KVER; MLCBOOT $BOOT_MB MiB, MLCCONFIG $CFG_MB MiB, root $ROOT_MB MiB ($USED_MB MiB used)"
echo "IMAGE size $SZ bytes ($(( SZ / 1048576 )) MiB), $(du -m "$OUT" | cut -f1) MiB allocated (sparse file)"
