#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, unit and integration tests (FUSE included
# where /dev/fuse exists), and the docker-registry-client check.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
features=()
[[ -e /dev/fuse ]] && features=(--features fuse-tests)
cargo test --locked "${features[@]}"
scripts/pyclient-check.sh
