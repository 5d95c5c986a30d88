#!/bin/bash
# Build the real guest of the end-to-end tests and of the nova detection
# benchmark: a Debian cloud kernel and a busybox initramfs whose /init powers
# the guest off from inside, like "shutdown -h now" does.
#
# Usage: tools/guest-image.sh      build if needed, print the directory that
#                                  holds vmlinuz and initrd.img
#
# The guest sleeps hn_poweroff_after=SECONDS (kernel command line; default
# 1) and then runs "poweroff -f": libvirt reports SHUTDOWN/GUEST, then
# STOPPED/SHUTDOWN. Needs the Debian packages busybox-static and cpio, and
# apt-get download of the kernel package; the result is cached outside the
# checkout, under a name hashing this script and the package versions.

set -euo pipefail

GUEST_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GUEST_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/hypervisor-notifier
GUEST_BUSYBOX=/bin/busybox

guest_die() {
    printf 'guest-image: ERROR: %s\n' "$*" >&2
    exit 1
}

# The versioned kernel package behind Debian's linux-image-cloud-amd64.
guest_kernel_package() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '/Depends: linux-image-/ {print $2; exit}'
}

guest_init() {
    cat <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
after=1
for word in $(/bin/busybox cat /proc/cmdline); do
    case $word in
        hn_poweroff_after=*) after=${word#hn_poweroff_after=} ;;
    esac
done
echo "hn-guest: up; powering off in $after s"
/bin/busybox sleep "$after"
/bin/busybox poweroff -f
INIT
}

guest_build() {
    local package version sum dir work
    [[ -x $GUEST_BUSYBOX ]] ||
        guest_die "$GUEST_BUSYBOX missing (Debian busybox-static)"
    command -v cpio >/dev/null || guest_die "cpio missing (Debian cpio)"
    package=$(guest_kernel_package)
    if [[ -z $package ]]; then
        apt-get update -q >&2
        package=$(guest_kernel_package)
    fi
    [[ -n $package ]] ||
        guest_die "no linux-image-cloud-amd64 in the apt sources"
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
    mkdir -p "$work/initramfs/bin" "$work/initramfs/proc" "$dir.tmp"
    cp "$GUEST_BUSYBOX" "$work/initramfs/bin/busybox"
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
