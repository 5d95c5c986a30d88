#!/bin/bash
# Run the service end to end on local defaults and watch its events reach a
# subscriber: bootstrap this machine (tools/bootstrap.sh: the Debian
# packages, .venv, libvirtd and RabbitMQ), install the package into .venv,
# then run tools/demo.py.
#
# Usage: tools/demo.sh
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Sourced for PBR_VERSION; the profile is explicit (see tools/run-tests.sh).
# shellcheck source=bootstrap.sh
source "$REPO/tools/bootstrap.sh" test
"$REPO/.venv/bin/pip" install -q -e "${REPO}[libvirt]"
exec "$REPO/.venv/bin/python" "$REPO/tools/demo.py"
