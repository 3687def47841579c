#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, unit and integration tests (FUSE included
# where /dev/fuse exists, and S3 against a local Ceph RGW), and the docker-registry-client check.
# REGFS_SKIP_S3=1 leaves out the S3 tests (they install and start Ceph, which needs apt).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
features=()
[[ -e /dev/fuse ]] && features+=(fuse-tests)
if [[ ${REGFS_SKIP_S3:-0} != 1 ]]; then
  s3_dir=$(mktemp -d)
  trap 'scripts/s3-local.sh stop "$s3_dir" >/dev/null 2>&1; rm -rf "$s3_dir"' EXIT
  # A failed start must fail the run, not leave the S3 tests without a store.
  s3_env=$(scripts/s3-local.sh start "$s3_dir") || {
    echo "test: could not start the local S3 store (scripts/s3-local.sh)" >&2
    exit 1
  }
  eval "$s3_env"
  features+=(s3-tests)
fi
joined=$(IFS=,; echo "${features[*]}")
cargo test --locked ${joined:+--features "$joined"}
scripts/pyclient-check.sh
