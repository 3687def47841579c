#!/usr/bin/env bash
# Memory of the mount daemon over a large tree: `find` over a registry of MEM_ENTRIES tags
# (one repository), twice, through `regfs mount --registry URL`, and the daemon's resident
# size after each pass and its peak (VmHWM), against the budget: --cache-size + 64 MiB.
#
# Usage:
#   scripts/mem-check.sh
#   MEM_ENTRIES=20000 scripts/mem-check.sh     # a quick check
#
# Knobs (environment):
#   MEM_ENTRIES   tags in the repository                      (100000)
#   MEM_CACHE     --cache-size of the mount, bytes            (67108864)
#   MEM_BIN       regfs binary (default: cargo build --release, then target/release/regfs)
#   MEM_TMPDIR    scratch directory (default target/mem-check-tmp)
#
# The registry is seeded fast: one image and one tag pushed over HTTP to `regfs serve` on
# local storage, then the stored tag copied MEM_ENTRIES-1 times in the storage directory
# while the server is stopped (one object per tag, see the README's storage layout). Needs
# curl, python3 and FUSE (/dev/fuse; fusermount3 unless root). Exit status 1 when a figure is over the budget.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=mem-check
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

ENTRIES=${MEM_ENTRIES:-100000}
CACHE=${MEM_CACHE:-67108864}
BIN=${MEM_BIN:-$ROOT/target/release/regfs}
TMP=${MEM_TMPDIR:-$ROOT/target/mem-check-tmp}
PW=mem-check-admin-pw

SERVER_PID=
MOUNT_PID=
cleanup() {
  if [[ -n $MOUNT_PID ]] && alive "$MOUNT_PID"; then kill -TERM "$MOUNT_PID" 2>/dev/null || true; fi
  if [[ -n $MOUNT_PID ]]; then wait "$MOUNT_PID" 2>/dev/null || true; fi
  if is_mounted "$TMP/mnt" 2>/dev/null; then
    fusermount3 -u -z "$TMP/mnt" 2>/dev/null || umount -l "$TMP/mnt" 2>/dev/null || true
  fi
  if [[ -n $SERVER_PID ]] && alive "$SERVER_PID"; then kill -TERM "$SERVER_PID" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

if [[ -z ${MEM_BIN:-} ]]; then
  log "building (cargo build --release)"
  (cd "$ROOT" && cargo build --release --quiet)
fi
[[ -x $BIN ]] || die "no binary at $BIN"
for tool in curl python3; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done

rm -rf "$TMP"
mkdir -p "$TMP/storage" "$TMP/mnt"

# Starts `regfs serve` on the storage (on PORT when given), setting SERVER_PID and URL.
start_server() {
  local listen=${1:-127.0.0.1:0}
  rm -f "$TMP/serve.out"
  "$BIN" serve --storage "$TMP/storage" --listen "$listen" --admin-user admin \
    --admin-password "$PW" >"$TMP/serve.out" 2>"$TMP/serve.log" &
  SERVER_PID=$!
  local deadline=$((SECONDS + 30))
  until [[ $(head -1 "$TMP/serve.out" 2>/dev/null) == http* ]]; do
    alive "$SERVER_PID" || die "the server exited: $(cat "$TMP/serve.log")"
    ((SECONDS < deadline)) || die "the server printed no URL"
    sleep 0.05
  done
  URL=$(head -1 "$TMP/serve.out")
}

stop_server() {
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=
}

put() { # PATH BODY-FILE [HEADER]
  local args=(-fsS -u "admin:$PW" -X PUT --data-binary "@$2" "$URL$1")
  [[ -n ${3:-} ]] && args+=(-H "$3")
  curl "${args[@]}" >/dev/null
}

start_server
log "seeding $ENTRIES tags at $URL"
id=$(new_id)
printf '{"id":"%s","created":"2014-10-01T00:00:00Z"}' "$id" >"$TMP/json"
head -c 4096 /dev/urandom >"$TMP/layer"
checksum=sha256:$( (cat "$TMP/json"; printf '\n'; cat "$TMP/layer") | sha256sum | cut -c1-64)
printf '[]' >"$TMP/empty"
printf '"%s"' "$id" >"$TMP/tag"
put "/v1/images/$id/json" "$TMP/json" "Content-Type: application/json"
put "/v1/images/$id/layer" "$TMP/layer"
put "/v1/images/$id/checksum" "$TMP/empty" "X-Docker-Checksum-Payload: $checksum"
put "/v1/repositories/library/big/" "$TMP/empty" "Content-Type: application/json"
put "/v1/repositories/library/big/tags/t0" "$TMP/tag" "Content-Type: application/json"
addr=${URL#http://}
stop_server
python3 - "$TMP/storage/repositories/library/big/tags" "$ENTRIES" <<'EOF'
import os, shutil, sys
tags, n = sys.argv[1], int(sys.argv[2])
record = open(os.path.join(tags, "t0"), "rb").read()
for i in range(1, n):
    with open(os.path.join(tags, f"t{i}"), "wb") as f:
        f.write(record)
EOF
start_server "$addr"

"$BIN" mount "$TMP/mnt" --registry "$URL" --cache-size "$CACHE" --timeout 120 --ttl 600 \
  >"$TMP/mount.out" 2>"$TMP/mount.log" &
MOUNT_PID=$!
deadline=$((SECONDS + 30))
until is_mounted "$TMP/mnt"; do
  alive "$MOUNT_PID" || die "the mount exited: $(cat "$TMP/mount.log")"
  ((SECONDS < deadline)) || die "not mounted after 30 s"
  sleep 0.05
done

kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
budget_kib=$(((CACHE + 64 * 1048576) / 1024))
log "mounted; daemon RSS $(kib "$MOUNT_PID" VmRSS) KiB idle"
status=0
for pass in 1 2; do
  start=$EPOCHREALTIME
  found=$(find "$TMP/mnt" | wc -l)
  took=$(elapsed_s "$start" "$EPOCHREALTIME")
  rss=$(kib "$MOUNT_PID" VmRSS)
  hwm=$(kib "$MOUNT_PID" VmHWM)
  verdict=PASS
  ((hwm <= budget_kib)) || { verdict=MISS; status=1; }
  printf 'find pass %d: %d paths in %.1f s; daemon VmRSS %d KiB, VmHWM %d KiB; budget %d KiB: %s\n' \
    "$pass" "$found" "$took" "$rss" "$hwm" "$budget_kib" "$verdict"
  ((found > ENTRIES)) || die "find saw $found paths, fewer than the $ENTRIES tags"
done
exit "$status"
