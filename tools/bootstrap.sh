#!/bin/bash
# Make this checkout runnable on a Debian 12 machine, as root, without
# systemd: the virtualenv .venv with tox and bindep, the Debian packages of
# bindep.txt, a running libvirtd and a RabbitMQ on 127.0.0.1:5672.
#
# Usage: tools/bootstrap.sh [BINDEP_PROFILE...]      (default profile: test)
#    or: source tools/bootstrap.sh [BINDEP_PROFILE...]
# Sourcing also exports PBR_VERSION into the caller when pbr cannot get a
# version from git. Give the profiles explicitly when sourcing: without
# arguments "source" hands the caller's own arguments on.
#
# Idempotent, and silent and quick (well under 3 s) when all is in place:
# it prints one line for each step that had something to do.

BOOTSTRAP_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BOOTSTRAP_VENV=$BOOTSTRAP_REPO/.venv
BOOTSTRAP_TEST_URI=test+unix:///default

bootstrap_say() {
    printf 'bootstrap: %s\n' "$*"
}

bootstrap_die() {
    printf 'bootstrap: ERROR: %s\n' "$*" >&2
    exit 1
}

# apt-get update is slow; run it at most once, and only when something is
# actually going to be installed.
bootstrap_apt_install() {
    if [[ -z ${bootstrap_apt_updated:-} ]]; then
        apt-get update -q
        bootstrap_apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# Debian's python3 lacks ensurepip unless python3-venv is installed, and
# "python3 -m venv" then fails halfway. Only checked when creating the venv.
bootstrap_venv() {
    local bin=$BOOTSTRAP_VENV/bin
    if [[ ! -x $bin/python ]]; then
        if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
            bootstrap_say "installing python3-venv"
            bootstrap_apt_install python3-venv
        fi
        bootstrap_say "creating virtualenv $BOOTSTRAP_VENV"
        python3 -m venv "$BOOTSTRAP_VENV"
    fi
    if [[ ! -x $bin/tox || ! -x $bin/bindep ]]; then
        bootstrap_say "installing tox and bindep into $BOOTSTRAP_VENV"
        "$bin/pip" install -q tox bindep
    fi
}

# Opening the TCP connection is the cheapest honest test that a broker is
# there; timeout guards against a port that drops packets.
bootstrap_rabbit_answers() {
    timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672' 2>/dev/null
}

bootstrap_packages() {
    local missing rc=0 pkg
    local -a wanted=()
    missing=$("$BOOTSTRAP_VENV/bin/bindep" -b -f "$BOOTSTRAP_REPO/bindep.txt" \
        "$@") || rc=$?
    # bindep exits 1 when it lists missing packages; anything else, or 1
    # with an empty list, is bindep itself failing.
    if [[ $rc -ne 0 && ( $rc -ne 1 || -z $missing ) ]]; then
        bootstrap_die "bindep failed (exit $rc): $missing"
    fi
    for pkg in $missing; do
        # The dev and CI machines run a RabbitMQ started by hand from
        # Debian's package: leave that one alone.
        if [[ $pkg == rabbitmq-server ]] && bootstrap_rabbit_answers; then
            continue
        fi
        wanted+=("$pkg")
    done
    if [[ ${#wanted[@]} -gt 0 ]]; then
        bootstrap_say "installing Debian packages: ${wanted[*]}"
        bootstrap_apt_install "${wanted[@]}"
    fi
}

# The end-to-end tests' qemu guests run as root: as the default qemu user
# every define of a guest waits ~40 s. libvirtd reads qemu.conf at start, so
# a running one is restarted once, when the setting is first added.
bootstrap_qemu_conf() {
    local conf=/etc/libvirt/qemu.conf
    if [[ ! -f $conf ]] || grep -q '^user = "root"' "$conf"; then
        return 0
    fi
    bootstrap_say "running qemu guests as root ($conf)"
    printf '\n# tools/bootstrap.sh\nuser = "root"\ngroup = "root"\n' >>"$conf"
    if pgrep -x libvirtd >/dev/null; then
        bootstrap_say "restarting libvirtd to read $conf"
        pkill -x libvirtd
        while pgrep -x libvirtd >/dev/null; do
            sleep 0.1
        done
    fi
}

# No systemd on these machines: the daemons are started by hand, and a
# fresh daemon takes a moment before it accepts connections.
bootstrap_libvirt() {
    local daemon i
    bootstrap_qemu_conf
    for daemon in virtlogd libvirtd; do
        if ! pgrep -x "$daemon" >/dev/null; then
            bootstrap_say "starting $daemon"
            "$daemon" -d
        fi
    done
    for ((i = 0; i < 150; i++)); do
        if virsh -c "$BOOTSTRAP_TEST_URI" version >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    bootstrap_die "libvirtd did not answer on $BOOTSTRAP_TEST_URI in 30 s"
}

bootstrap_rabbitmq() {
    if bootstrap_rabbit_answers; then
        return 0
    fi
    if ! command -v rabbitmq-server >/dev/null; then
        bootstrap_say "no RabbitMQ on 127.0.0.1:5672 and rabbitmq-server" \
            "is not installed (it is in bindep profile 'test')" >&2
        return 0
    fi
    bootstrap_say "starting rabbitmq-server"
    # "-detached" returns at once, even when the node then fails to boot,
    # and "rabbitmqctl await_startup" fails at once until the node has
    # registered with epmd. "rabbitmqctl wait PIDFILE" instead blocks until
    # the node wrote its pid file and booted, so give it a known pid file
    # (in the home of the rabbitmq user, who runs the node).
    local pidfile=/var/lib/rabbitmq/bootstrap-rabbitmq.pid
    rm -f "$pidfile"
    RABBITMQ_PID_FILE=$pidfile rabbitmq-server -detached
    rabbitmqctl -q wait "$pidfile" --timeout 60 ||
        bootstrap_die "RabbitMQ did not start within 60 s"
}

# pbr reads the version from git; outside a checkout, or in one without a
# commit yet, it needs to be told.
bootstrap_pbr_version() {
    if [[ -n ${PBR_VERSION:-} ]]; then
        return 0
    fi
    git -C "$BOOTSTRAP_REPO" rev-parse -q --verify HEAD &>/dev/null ||
        export PBR_VERSION=0.0.0
}

bootstrap_main() {
    if [[ $# -eq 0 ]]; then
        set -- test
    fi
    bootstrap_venv
    bootstrap_packages "$@"
    bootstrap_libvirt
    bootstrap_rabbitmq
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    bootstrap_main "$@"
else
    # Sourced: do the work in a child bash, so that neither the strict
    # options nor an exit on error reach the caller's shell (and a caller's
    # "source ... ||" cannot switch errexit off inside the work); keep only
    # the status and PBR_VERSION.
    bootstrap_rc=0
    bash "${BASH_SOURCE[0]}" "$@" || bootstrap_rc=$?
    if [[ $bootstrap_rc -eq 0 ]]; then
        bootstrap_pbr_version
    fi
    unset -f bootstrap_say bootstrap_die bootstrap_apt_install \
        bootstrap_venv bootstrap_rabbit_answers bootstrap_packages \
        bootstrap_libvirt bootstrap_rabbitmq bootstrap_pbr_version \
        bootstrap_main
    unset BOOTSTRAP_REPO BOOTSTRAP_VENV BOOTSTRAP_TEST_URI
    return "$bootstrap_rc"
fi
