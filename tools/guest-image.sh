#!/bin/bash
# Build the real guest of the end-to-end tests and of the nova detection
# benchmark: a Debian kernel, the few modules the tests need from the same
# package, and a busybox initramfs whose /init does what the kernel command
# line's hn_mode= says (default poweroff):
#
#   poweroff  sleep hn_poweroff_after=SECONDS (default 1), then "poweroff -f",
#             like "shutdown -h now": libvirt reports SHUTDOWN/GUEST, then
#             STOPPED/SHUTDOWN.
#   watchdog  start the i6300esb watchdog (2 s heartbeat), feed it once, never
#             again: it fires about 4 s later.
#   panic     load pvpanic and crash the kernel (sysrq c): the pvpanic device
#             tells the hypervisor.
#   ioerror   load virtio_blk and write 16 MiB to each disk of hn_disks=
#             (default vda; e.g. vdb,vda), in that order, synced.
#
# Usage: tools/guest-image.sh      build if needed, print the directory that
#                                  holds vmlinuz and initrd.img
#
# The kernel is Debian's generic linux-image-amd64 (its cloud flavour has no
# driver for the emulated watchdogs). Needs the Debian packages
# busybox-static, cpio and kmod (modinfo), and apt-get download of the kernel
# package; the result is cached outside the checkout, under a name hashing
# this script and the package versions.

set -euo pipefail

GUEST_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GUEST_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/hypervisor-notifier
GUEST_BUSYBOX=/bin/busybox
GUEST_KERNEL_META=linux-image-amd64
# The modules the modes load, each with what it needs.
GUEST_MODULES="i6300esb pvpanic-mmio virtio_pci virtio_blk"

guest_die() {
    printf 'guest-image: ERROR: %s\n' "$*" >&2
    exit 1
}

# The versioned kernel package behind Debian's meta package.
guest_kernel_package() {
    apt-cache depends "$GUEST_KERNEL_META" 2>/dev/null |
        awk '/Depends: linux-image-/ {print $2; exit}'
}

guest_init() {
    cat <<'INIT'
#!/bin/busybox sh
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t devtmpfs dev /dev
mode=poweroff
after=1
disks=vda
for word in $($bb cat /proc/cmdline); do
    case $word in
        hn_mode=*) mode=${word#hn_mode=} ;;
        hn_disks=*) disks=${word#hn_disks=} ;;
        hn_poweroff_after=*) after=${word#hn_poweroff_after=} ;;
    esac
done
# load MODULE [PARAM...]: what it needs first (a second insmod fails: ignored).
load() {
    name=$1
    shift
    for needed in $($bb cat "/lib/modules/$name.needs"); do
        $bb insmod "/lib/modules/$needed.ko" 2>/dev/null
    done
    $bb insmod "/lib/modules/$name.ko" "$@"
}
idle() {
    while :; do $bb sleep 3600; done
}
echo "hn-guest: up ($mode)"
case $mode in
    watchdog)
        load i6300esb heartbeat=2
        # Opened, fed once, closed without the magic character: it runs on.
        echo 1 >/dev/watchdog
        idle ;;
    panic)
        load pvpanic-mmio
        echo c >/proc/sysrq-trigger
        idle ;;
    ioerror)
        load virtio_pci
        load virtio_blk
        for disk in $(echo "$disks" | $bb tr , ' '); do
            while [ ! -b "/dev/$disk" ]; do $bb sleep 0.1; done
            $bb dd if=/dev/zero of="/dev/$disk" bs=1M count=16 conv=fsync
        done
        idle ;;
esac
$bb sleep "$after"
$bb poweroff -f
INIT
}

# guest_module TREE DIR NAME: copy module NAME and what it needs from the
# kernel package's TREE to DIR; DIR/NAME.needs lists those, in load order.
guest_module() {
    local tree=$1 dir=$2 name=$3 file dep needs=()
    [[ -f $dir/$name.ko ]] && return 0
    file=$(find "$tree" -name "$name.ko" -print -quit)
    [[ -n $file ]] || guest_die "the kernel package has no module $name"
    cp "$file" "$dir/$name.ko"
    for dep in $(modinfo -F depends "$file" | tr , ' '); do
        guest_module "$tree" "$dir" "$dep"
        # shellcheck disable=SC2207 # module names have no blanks
        needs+=($(cat "$dir/$dep.needs") "$dep")
    done
    printf '%s\n' "${needs[@]}" | awk 'NF && !seen[$0]++' >"$dir/$name.needs"
}

guest_build() {
    local package version sum dir work root
    [[ -x $GUEST_BUSYBOX ]] ||
        guest_die "$GUEST_BUSYBOX missing (Debian busybox-static)"
    command -v cpio >/dev/null || guest_die "cpio missing (Debian cpio)"
    command -v modinfo >/dev/null || guest_die "modinfo missing (Debian kmod)"
    package=$(guest_kernel_package)
    if [[ -z $package ]]; then
        apt-get update -q >&2
        package=$(guest_kernel_package)
    fi
    [[ -n $package ]] ||
        guest_die "no $GUEST_KERNEL_META in the apt sources"
    version=$(apt-cache policy "$package" | awk '/Candidate:/ {print $2}')
    sum=$( (cat "${BASH_SOURCE[0]}"; echo "$package $version";
            sha256sum "$GUEST_BUSYBOX") | sha256sum | cut -c1-16)
    dir=$GUEST_CACHE/guest-$sum
    if [[ -f $dir/vmlinuz && -f $dir/initrd.img ]]; then
        echo "$dir"
        return 0
    fi
    printf 'guest-image: building %s from %s %s\n' \
        "$dir" "$package" "$version" >&2
    work=$(mktemp -d)
    # apt-get download drops its privileges to _apt, who must reach it.
    chmod 755 "$work"
    # shellcheck disable=SC2064 # expand now: work is local
    trap "rm -rf '$work'" EXIT
    (cd "$work" && apt-get download -q "$package=$version" >&2)
    dpkg-deb -x "$work"/*.deb "$work/kernel"
    root=$work/initramfs
    mkdir -p "$root/bin" "$root/proc" "$root/dev" "$root/lib/modules" \
        "$dir.tmp"
    cp "$GUEST_BUSYBOX" "$root/bin/busybox"
    for module in $GUEST_MODULES; do
        guest_module "$work/kernel/lib/modules" "$root/lib/modules" "$module"
    done
    guest_init >"$work/initramfs/init"
    chmod 755 "$work/initramfs/init"
    (cd "$work/initramfs" && find . | cpio -o -H newc --quiet | gzip -1) \
        >"$dir.tmp/initrd.img"
    cp "$work"/kernel/boot/vmlinuz-* "$dir.tmp/vmlinuz"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    echo "$dir"
}

cd "$GUEST_REPO"
guest_build
