#!/usr/bin/env bash
# Crash soak: runs the kill -9 test (tests/crash.rs) for many kill/restart cycles and prints
# its figures: cycles survived, images checked, acknowledged images lost (must be 0).
#
#   scripts/crash-soak.sh [CYCLES]      default 50
#
# REGFS_CRASH_SEED picks the kill points and layer sizes (default: a fresh one per run,
# printed, so a failure can be replayed with the same seed).
set -euo pipefail

cd "$(dirname "$0")/.."
cycles=${1:-50}
case $cycles in
'' | *[!0-9]*)
    echo "usage: $0 [CYCLES]" >&2
    exit 2
    ;;
esac
seed=${REGFS_CRASH_SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}
echo "crash soak: $cycles cycles, REGFS_CRASH_SEED=$seed"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
status=0
REGFS_CRASH_CYCLES=$cycles REGFS_CRASH_SEED=$seed \
    cargo test --test integration -- crash:: --nocapture >"$log" 2>&1 ||
    status=$?
elapsed=$(($(date +%s) - start))

summary=$(grep -m1 'crash summary:' "$log" || true)
if [[ -z $summary ]]; then
    tail -50 "$log" >&2
    echo "crash soak: no summary (exit $status)" >&2
    exit 1
fi
field() { sed -n "s/.*[ {]$1[=:] *\([0-9a-fx.]*\).*/\1/p" <<<"$summary"; }
printf '%-28s %s\n' \
    "cycles survived" "$(field cycles)/$cycles" \
    "images checked" "$(field images)" \
    "acknowledged complete" "$(field acked)" \
    "complete, answer lost" "$(field complete_unacked)" \
    "left in progress by a kill" "$(field in_progress)" \
    "staged files left by kills" "$(field staged_left_by_kill)" \
    "retried after restart" "$(field retried)" \
    "acknowledged images lost" "$(field lost)" \
    "seconds" "$elapsed"
if [[ $status -ne 0 ]]; then
    grep -A20 'panicked' "$log" >&2 || tail -50 "$log" >&2
    echo "crash soak: FAILED (seed $seed)" >&2
    exit 1
fi
echo "crash soak: ok"
