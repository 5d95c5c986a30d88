#!/bin/bash
# Run the service end to end on local defaults: libvirt's test driver in the
# local libvirtd is the hypervisor, the local RabbitMQ the broker.
#
# Starts "hypervisor-events watch" and "hypervisor-notifier", drives a demo
# domain through start, suspend, resume, shutdown, start and destroy, and
# shows each event as the watcher receives it. Exits non-zero unless the
# watcher saw every expected transition, in order, and the notifier then
# stopped cleanly. Cleans up after itself, also when interrupted.
#
# Usage: tools/demo.sh
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$REPO/.venv
URI=test+unix:///default
TIMEOUT=30
TIMEOUT_US=$((TIMEOUT * 1000000))
# Between two actions, so that a human can follow; events shown meanwhile.
PAUSE_US=500000
# The longest one "read" waits: a signal is handled when it returns.
SLICE_US=500000
# What the demo does, and the transition the watcher must show for each.
ACTIONS=(start suspend resume shutdown start destroy)
EXPECTED=(started paused resumed stopped started stopped)

id=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
host=demo-$id
domain=demo-$id
uuid=$(cat /proc/sys/kernel/random/uuid)
tmp=""
watch_fd=""
watch_pid=""
notifier_pid=""
defined=""
reading=""
signalled=""
# What the watcher's output showed so far (see show_line): ready is 1 once
# it is subscribed, seen counts event lines, matched the expected ones.
declare -A count=([ready]=0 [seen]=0 [matched]=0)

say() {
    printf 'demo: %s\n' "$*"
}

die() {
    printf 'demo: ERROR: %s\n' "$*" >&2
    exit 1
}

# bootstrap is sourced for PBR_VERSION; pip is quick when all is installed.
prepare() {
    # shellcheck source=bootstrap.sh
    source "$REPO/tools/bootstrap.sh" test
    "$VENV/bin/pip" install -q -e "${REPO}[libvirt]"
}

write_config() {
    tmp=$(mktemp -d -t hypervisor-demo.XXXXXX)
    cat >"$tmp/demo.conf" <<EOF
[DEFAULT]
host = $host
backend = libvirt

[libvirt]
connection_uri = $URI
# The test driver's domains carry no nova metadata: report them anyway.
report_foreign = true

[publisher]
transport_url = rabbit://guest:guest@127.0.0.1:5672/
exchange = hypervisor-demo

[outbox]
path = $tmp/outbox.sqlite

[health]
port = 0
EOF
    cat >"$tmp/domain.xml" <<EOF
<domain type='test'>
  <name>$domain</name>
  <uuid>$uuid</uuid>
  <memory>8192</memory>
  <os><type>hvm</type></os>
</domain>
EOF
}

# The watcher's stdout and stderr come through one pipe that this script
# reads as lines arrive, so it waits on the watcher instead of polling a
# file. A coprocess, unlike a process substitution, can be waited for.
# Python block-buffers a piped stdout: hence PYTHONUNBUFFERED.
start_watcher() {
    say "starting hypervisor-events watch (log: $tmp/watch.log)"
    coproc EVENTS {
        PYTHONUNBUFFERED=1 exec "$VENV/bin/hypervisor-events" watch \
            --config-file "$tmp/demo.conf" 2>&1
    }
    watch_pid=$EVENTS_PID
    # Our own copy: bash closes the coprocess's descriptors when it exits.
    exec {watch_fd}<&"${EVENTS[0]}"
}

start_notifier() {
    say "starting hypervisor-notifier (log: $tmp/notifier.log)"
    "$VENV/bin/hypervisor-notifier" --config-file "$tmp/demo.conf" \
        >"$tmp/notifier.log" 2>&1 &
    notifier_pid=$!
}

# Event lines carry "power_state="; everything else the watcher says is
# its log. An event line about our domain (known by its UUID: its name is
# also the host's) counts when it shows the next expected transition.
show_line() {
    local line=$1 next=${EXPECTED[count[matched]]:-}
    printf '%s\n' "$line" >>"$tmp/watch.log"
    if [[ $line != *" power_state="* ]]; then
        if [[ $line == *"subscribed to"* ]]; then
            count[ready]=1
        fi
        return 0
    fi
    printf 'event: %s\n' "$line"
    count[seen]=$((count[seen] + 1))
    if [[ -n $next && $line == *"$uuid"* && $line == *" $next "* ]]; then
        count[matched]=$((count[matched] + 1))
    fi
}

# Reads the watcher's lines as they arrive until count[$1] reaches $2, or
# until $3 microseconds have passed (then returns 1).
pump() {
    local key=$1 want=$2 deadline left wait_s line rc
    deadline=$((${EPOCHREALTIME/[.,]/} + $3))
    while [[ ${count[$key]} -lt $want ]]; do
        left=$((deadline - ${EPOCHREALTIME/[.,]/}))
        if [[ $left -le 0 ]]; then
            return 1
        fi
        if [[ $left -gt $SLICE_US ]]; then
            left=$SLICE_US
        fi
        printf -v wait_s '0.%06d' "$left"
        rc=0
        reading=1
        IFS= read -r -t "$wait_s" -u "$watch_fd" line || rc=$?
        reading=""
        if [[ -n $signalled ]]; then
            exit "$signalled"
        elif [[ $rc -eq 0 ]]; then
            show_line "$line"
        elif [[ $rc -le 128 ]]; then
            die "hypervisor-events watch exited (see $tmp/watch.log)"
        fi
    done
}

# Sends SIGTERM to child $1 and waits for whichever comes first: its exit
# or a $TIMEOUT s timer (then SIGKILL). Sets stop_status to its exit
# status, 124 on timeout. ("wait -n -p" needs bash 5.1; Debian 12 has 5.2.)
stop_child() {
    local pid=$1 timer done_pid=""
    stop_status=0
    kill -TERM "$pid" 2>/dev/null || true
    sleep "$TIMEOUT" &
    timer=$!
    wait -n -p done_pid "$pid" "$timer" || stop_status=$?
    # Believe an exit only once the process is really gone.
    if [[ $done_pid == "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
        kill "$timer" 2>/dev/null || true
    else
        wait "$timer" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
        stop_status=124
    fi
    wait "$pid" "$timer" 2>/dev/null || true
}

drive_domain() {
    local action
    virsh -q -c "$URI" define "$tmp/domain.xml" >/dev/null
    defined=1
    for action in "${ACTIONS[@]}"; do
        say "virsh $action $domain"
        virsh -q -c "$URI" "$action" "$domain" >/dev/null
        pump seen "$((count[seen] + 1000))" "$PAUSE_US" || true
    done
}

demo() {
    prepare
    write_config
    start_watcher
    # Only a bound watcher sees the notifier's start-up resync.
    pump ready 1 "$TIMEOUT_US" ||
        die "hypervisor-events watch not subscribed within $TIMEOUT s"
    start_notifier
    # The first event is the resync snapshot of the test driver's own
    # domain "test": proof that hypervisor, notifier and broker all work.
    say "waiting for the notifier's start-up resync"
    pump seen 1 "$TIMEOUT_US" ||
        die "no event within $TIMEOUT s (see $tmp/notifier.log)"
    drive_domain
    if ! pump matched "${#EXPECTED[@]}" "$TIMEOUT_US"; then
        die "the watcher showed ${count[matched]} of the ${#EXPECTED[@]}" \
            "transitions ${EXPECTED[*]} within $TIMEOUT s"
    fi
    say "all ${#EXPECTED[@]} events arrived; stopping the notifier"
    stop_child "$notifier_pid"
    notifier_pid=""
    if [[ $stop_status -ne 0 ]]; then
        die "hypervisor-notifier exited with status $stop_status" \
            "(see $tmp/notifier.log)"
    fi
    say "done: the notifier drained and exited cleanly"
}

show_logs() {
    local log
    for log in "$tmp/notifier.log" "$tmp/watch.log"; do
        if [[ -s $log ]]; then
            printf -- '--- last lines of %s\n' "$log" >&2
            tail -n 20 "$log" >&2
        fi
    done
    say "logs kept in $tmp" >&2
}

# Deletes queue $1 if it exists; says so if it might be left behind.
delete_queue() {
    local out
    if ! out=$(rabbitmqctl -q delete_queue "$1" 2>&1) &&
        [[ $out != *"not found"* ]]; then
        say "could not delete the queue $1: delete it by hand" >&2
    fi
}

# The notifier declared the durable queue hypervisor_events.<host> on the
# exchange hypervisor-demo: delete the queue, or it keeps collecting this
# host's events. rabbitmqctl (3.10) cannot delete an exchange, and there is
# no rabbitmqadmin without the management plugin: the empty exchange stays,
# and the next demo reuses it.
cleanup() {
    local status=$?
    set +e
    if [[ -n $notifier_pid ]]; then
        stop_child "$notifier_pid"
    fi
    if [[ -n $watch_pid ]]; then
        stop_child "$watch_pid"
    fi
    if [[ -n $watch_fd ]]; then
        exec {watch_fd}<&-
    fi
    # The test driver forgets its domains when its last client goes, so
    # the domain may be gone already.
    if [[ -n $defined ]]; then
        virsh -q -c "$URI" destroy "$domain" &>/dev/null
        virsh -q -c "$URI" undefine "$domain" &>/dev/null
    fi
    if [[ -n $tmp ]]; then
        delete_queue "hypervisor_events.$host"
        if [[ $status -eq 0 ]]; then
            rm -rf "$tmp"
        else
            show_logs
        fi
    fi
    exit "$status"
}

# Exiting from a trap while "read -t" waits leaves its timer armed, and
# bash 5.2 then crashes (SIGSEGV) when it fires during the cleanup: during
# a read, note the signal and let pump exit once read returns.
on_signal() {
    if [[ -n $reading ]]; then
        signalled=$1
    else
        exit "$1"
    fi
}

trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
demo
