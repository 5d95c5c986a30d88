#!/bin/bash
# Build and run the project's vSphere API simulator, tools/vcsim/main.go
# (govmomi's simulator package from Debian; no network but apt).
#
# Usage: tools/vcsim.sh build          build if needed, print the binary's path
#        tools/vcsim.sh run [FLAGS]    build if needed, then exec the binary:
#                                      it prints "URL=https://..." and serves
#                                      until SIGTERM (run -help lists FLAGS)
#
# The binary is cached outside the checkout, under a name hashing its source
# and the Go and govmomi package versions, so that later runs and fresh
# clones on the same machine reuse it. stdout carries only the path (build)
# or the simulator's own output (run); the rest goes to stderr.

set -euo pipefail

VCSIM_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VCSIM_SRC_DIR=$VCSIM_REPO/tools/vcsim
VCSIM_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/hypervisor-notifier
VCSIM_PACKAGES=(golang-go golang-github-vmware-govmomi-dev)
# The packages' own Go, whatever else is on PATH.
VCSIM_GO=/usr/bin/go

vcsim_die() {
    printf 'vcsim: ERROR: %s\n' "$*" >&2
    exit 1
}

vcsim_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == \
        "install ok installed" ]]
}

# Install what is missing; apt-get update only when a first try fails (no
# package lists yet, or stale ones).
vcsim_packages() {
    local pkg
    local -a missing=()
    for pkg in "${VCSIM_PACKAGES[@]}"; do
        vcsim_installed "$pkg" || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        vcsim_die "missing Debian packages (install as root): ${missing[*]}"
    fi
    printf 'vcsim: installing %s\n' "${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "${missing[@]}" >&2; then
        apt-get update -q >&2
        apt-get install -y -q "${missing[@]}" >&2
    fi
}

# Prints the path of the binary, building it first if it is not cached.
vcsim_build() {
    local sum bin
    vcsim_packages
    sum=$(
        cat "$VCSIM_SRC_DIR"/*.go
        dpkg-query -W -f='${Version}\n' "${VCSIM_PACKAGES[@]}"
    ) || vcsim_die "cannot read $VCSIM_SRC_DIR or the package versions"
    sum=$(sha256sum <<<"$sum")
    bin=$VCSIM_CACHE/vcsim-${sum:0:16}
    if [[ ! -x $bin ]]; then
        printf 'vcsim: building %s\n' "$bin" >&2
        mkdir -p "$VCSIM_CACHE"
        VCSIM_TMP=$(mktemp -d "$VCSIM_CACHE/build.XXXXXX")
        trap 'rm -rf "$VCSIM_TMP"' EXIT
        # GOPATH mode against /usr/share/gocode; a throwaway GOPATH and build
        # cache (100 MB). Concurrent builds each rename their own complete
        # binary into place.
        if (cd "$VCSIM_SRC_DIR" &&
            env GO111MODULE=off GOPATH="$VCSIM_TMP/gopath:/usr/share/gocode" \
                GOCACHE="$VCSIM_TMP/cache" GOFLAGS= GOPROXY=off CGO_ENABLED=0 \
                "$VCSIM_GO" build -o "$VCSIM_TMP/vcsim" . >&2); then
            mv -f "$VCSIM_TMP/vcsim" "$bin"
        fi
        rm -rf "$VCSIM_TMP"
        trap - EXIT
        [[ -x $bin ]] || vcsim_die "go build failed"
    fi
    printf '%s\n' "$bin"
}

case ${1:-} in
    build)
        [[ $# -eq 1 ]] || vcsim_die "usage: $0 build"
        vcsim_build
        ;;
    run)
        shift
        VCSIM_BIN=$(vcsim_build)
        exec "$VCSIM_BIN" "$@"
        ;;
    *)
        vcsim_die "usage: $0 build | run [FLAGS]"
        ;;
esac
