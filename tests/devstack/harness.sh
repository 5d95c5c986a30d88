#!/bin/bash
# Run devstack/plugin.sh the way stack.sh, unstack.sh and clean.sh do: the
# helpers defined, devstack/settings sourced, then plugin.sh sourced once
# per step. Starting services and installing packages only record the call
# (one line per call, in the file $HN_CALLS), as devstack's own tests/ stub
# them.
#
# Usage: harness.sh MODE[:PHASE]...     e.g. stack:install stack:post-config
#   DEVSTACK_DIR   a devstack checkout: use its functions (default: the
#                  stand-ins of standins.sh)
# The devstack globals the plugin reads (NOVA_CONF, DEST, ...) come from the
# environment.
set -o errexit

HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_REPO=$(cd "$HARNESS_DIR/../.." && pwd)

if [[ -n ${DEVSTACK_DIR:-} ]]; then
    # shellcheck source=/dev/null
    source "$DEVSTACK_DIR/functions"
else
    # shellcheck source=standins.sh
    source "$HARNESS_DIR/standins.sh"
fi
echo "harness: helpers from ${DEVSTACK_DIR:-tests/devstack/standins.sh}"

# record WORD...: one line, each word quoted as the shell would read it.
function record {
    local line
    printf -v line '%q ' "$@"
    printf '%s\n' "${line% }" >> "$HN_CALLS"
}

function run_process {
    record run_process "$@"
}

function stop_process {
    record stop_process "$@"
}

function install_package {
    record install_package "$@"
}

function install_bindep {
    record install_bindep "$@"
}

function pip_install {
    record pip_install "$@"
}

# The test machines run as root, without sudo.
if ! command -v sudo > /dev/null; then
    function sudo {
        "$@"
    }
fi

# shellcheck source=../../devstack/settings
source "$HARNESS_REPO/devstack/settings"
for step in "$@"; do
    mode=${step%%:*}
    phase=""
    if [[ $step == *:* ]]; then
        phase=${step#*:}
    fi
    # shellcheck source=../../devstack/plugin.sh
    source "$HARNESS_REPO/devstack/plugin.sh" "$mode" "$phase"
done
