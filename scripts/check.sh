#!/usr/bin/env bash
# The gate before every commit: formatting, lints, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --all-targets --all-features -- -D warnings
exec scripts/test.sh
