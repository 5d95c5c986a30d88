#!/bin/bash
# The project's test command: bootstrap the machine, then run tox.
#
# Usage: tools/run-tests.sh [TOX_ARG...]
#   TOX_ENVS   the tox environments (default: pep8,py3,functional,docs,releasenotes,nova,masakari)
#   TOX_ARGs   are handed to tox as they are; put test selectors for the
#              test runner after "--" (every listed environment gets them).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Sourced rather than run, so that PBR_VERSION reaches tox when there is no
# git history; the profile is given explicitly so that our own arguments
# are not taken for bindep profiles.
# shellcheck source=bootstrap.sh
source "$REPO/tools/bootstrap.sh" test

cd "$REPO"
envs=${TOX_ENVS:-pep8,py3,functional,docs,releasenotes,nova,masakari}
exec "$REPO/.venv/bin/tox" -e "$envs" "$@"
