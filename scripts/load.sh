#!/usr/bin/env bash
# Load test for regfs: a mixed workload at many concurrent connections against
# `regfs serve`, then parallel readers over a `regfs mount` of it.
#
# Usage:
#   scripts/load.sh
#   LOAD_DURATION=5 scripts/load.sh       # a quick check
#
# Phases, each LOAD_DURATION seconds at LOAD_CONNS connections (wrk, on 127.0.0.1):
#   small    GETs mixed: image json, ancestry, tags, one tag, _ping
#   layer    GETs of the 4 MiB layer
#   push     pushes of fresh images: PUT json, PUT layer (16 KiB), PUT checksum,
#            with Basic auth, one connection per wrk thread so the three requests
#            of an image go in order (a Lua state machine; the payload checksums
#            are computed beforehand, as wrk's Lua has no SHA-256)
#   mixed    all three at once: half the connections small GETs, a quarter
#            layer GETs, a quarter pushes
#   mount    `regfs mount --registry URL` of the server, LOAD_READERS `cat`
#            loops over the layers (2, 3, 4 and 64 MiB) and 4 `ls -l` /
#            `cat tags/<tag>` loops, each bounded by LOAD_DURATION and a count
#
# Output: one table: phase, requests/s, p50 and p99 latency, errors (non-2xx
# responses and socket errors; for wrk's GET phases a "non-2xx" is a status of
# 400 or more), requests done, peak VmRSS of the server (and of the mount
# daemon in the mount phase), sampled from /proc every 0.2 s; then VmHWM of
# both. Images pushed by the push phases are counted too.
#
# Knobs (environment):
#   LOAD_DURATION  seconds per phase                                (20)
#   LOAD_CONNS     connections per wrk phase                        (256)
#   LOAD_THREADS   wrk threads of the GET phases                    (2)
#   LOAD_READERS   parallel `cat` loops over the mount              (16)
#   LOAD_BIN       regfs binary (also BENCH_BIN; default: cargo build
#                  --release, then target/release/regfs)
#   LOAD_TMPDIR    where the scratch dir goes (default target/load-tmp; the
#                  server's storage grows by ~20 KiB per push)
#
# Needs wrk, curl, python3 (for the checksums) and fuse3; installed with
# apt-get when missing (root or sudo). Everything runs on 127.0.0.1; every
# process started is stopped and the mount and scratch dir removed on exit.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${LOAD_DURATION:-20}
CONNS=${LOAD_CONNS:-256}
THREADS=${LOAD_THREADS:-2}
READERS=${LOAD_READERS:-16}
BIN=${LOAD_BIN:-${BENCH_BIN:-}}
for v in DURATION CONNS THREADS READERS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "load: LOAD_$v must be a positive integer" >&2; exit 2; }
done
((CONNS >= 8)) || { echo "load: LOAD_CONNS must be at least 8" >&2; exit 2; }

USER_NAME=loader
USER_PASS="load-$RANDOM$RANDOM"
ADMIN_PASS="admin-$RANDOM$RANDOM"
REPO=loader/app
# Upper bound on iterations of any loop that runs for a duration.
MAX_ITER=1000000

# shellcheck disable=SC2034 # read by log in lib.sh
LOG_TAG=load
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# alive, and a child of this script (a reaped pid may have been reused by then)
ours() {
  alive "$1" && [[ $(awk '{print $4}' "/proc/$1/stat" 2>/dev/null) == "$$" ]]
}

# ---------------------------------------------------------------- cleanup

WORK=""
MNT=""
declare -a PIDS=()

cleanup() {
  local rc=$? pid
  set +e
  # Unmount first: a daemon stopped under a busy mount would leave readers hanging.
  if [[ -n $MNT ]] && is_mounted "$MNT"; then
    fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null
  fi
  for pid in "${PIDS[@]}"; do ours "$pid" && kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 100); do ours "$pid" || break; sleep 0.1; done
    ours "$pid" && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [[ -n $MNT ]] && is_mounted "$MNT"; then
    fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null ||
      log "WARNING: could not unmount $MNT"
  fi
  # --one-file-system: never descend into a mount that could not be detached.
  [[ -n $WORK && -d $WORK ]] && rm -rf --one-file-system "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 1' USR1

track() { PIDS+=("$1"); }

# ---------------------------------------------------------------- setup

need_tools() {
  local -a pkgs=()
  command -v wrk >/dev/null || pkgs+=(wrk)
  command -v curl >/dev/null || pkgs+=(curl)
  command -v python3 >/dev/null || pkgs+=(python3)
  command -v fusermount3 >/dev/null || pkgs+=(fuse3)
  install_missing "${pkgs[@]}"
}

# a binary named by LOAD_BIN or BENCH_BIN is run as it is, without building
build_unless_given() {
  if [[ -z $BIN ]]; then
    cargo_build
    BIN=$ROOT/target/release/regfs
  fi
  [[ -x $BIN ]] || die "no binary at $BIN"
}

make_workdir() {
  local base=${LOAD_TMPDIR:-$ROOT/target/load-tmp}
  mkdir -p "$base"
  WORK=$(mktemp -d "$base/load.XXXXXX")
  mkdir -p "$WORK/storage" "$WORK/files" "$WORK/out"
  log "scratch dir $WORK"
}

URL=""
SERVER_PID=""
start_server() {
  # Request logging off: at these rates it would be most of the work.
  RUST_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --storage "$WORK/storage" \
    --admin-user admin --admin-password "$ADMIN_PASS" \
    >"$WORK/server.out" 2>"$WORK/server.err" &
  SERVER_PID=$!
  track "$SERVER_PID"
  for _ in $(seq 200); do
    URL=$(head -n1 "$WORK/server.out" 2>/dev/null || true)
    [[ $URL == http://127.0.0.1:* ]] && { log "regfs serve at $URL (pid $SERVER_PID)"; return 0; }
    alive "$SERVER_PID" || break
    sleep 0.05
  done
  tail -20 "$WORK/server.err" >&2 || true
  die "regfs serve did not print its URL"
}

# ---------------------------------------------------------------- RSS sampling

# Logs "time_us kib" lines of PID's VmRSS to FILE every 0.2 s while PID lives
# (bounded by MAX_ITER samples).
sample_rss() { # pid file
  local pid=$1 file=$2
  (
    for ((i = 0; i < MAX_ITER; i++)); do
      [[ -r /proc/$pid/status ]] || break
      while read -r k v _; do
        if [[ $k == VmRSS: ]]; then
          echo "${EPOCHREALTIME/[.,]/} $v"
          break
        fi
      done <"/proc/$pid/status" 2>/dev/null || break
      sleep 0.2
    done >>"$file"
  ) &
  track $!
}

now_us() { echo "${EPOCHREALTIME/[.,]/}"; }

# peak_mib FILE FROM_US TO_US: highest sample in the window, MiB
peak_mib() {
  awk -v a="$2" -v b="$3" '$1 >= a && $1 <= b && $2 > m { m = $2 }
    END { printf "%.0f", m / 1024 }' "$1" 2>/dev/null || echo 0
}

hwm_mib() { # pid
  awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"
}

# ---------------------------------------------------------------- seeding

AUTH_HEADER=""

# put PATH BODY [curl args]: an authenticated PUT that must get a 2xx; BODY is
# what curl's --data-binary takes (@FILE, or the data itself)
put() {
  local path=$1 body=$2 code
  shift 2
  code=$(curl -sS -o "$WORK/put.resp" -w '%{http_code}' -X PUT -u "$USER_NAME:$USER_PASS" \
    --data-binary "$body" "$@" "$URL$path") || die "PUT $path: curl failed"
  [[ $code == 2?? ]] || die "PUT $path: HTTP $code: $(head -c 300 "$WORK/put.resp")"
}

declare -A IDS=()
declare -a LAYERS=()

# seed_image NAME LAYER_BYTES [PARENT_NAME]
seed_image() {
  local name=$1 bytes=$2 parent=${3:-} id json layer sum
  id=$(printf 'load-%s-%s' "$USER_PASS" "$name" | sha256sum | cut -c1-64)
  IDS[$name]=$id
  json=$WORK/files/$name.json
  layer=$WORK/files/$name.layer
  if [[ -n $parent ]]; then
    printf '{"id":"%s","parent":"%s","created":"2014-10-01T00:00:00Z"}' "$id" "${IDS[$parent]}" >"$json"
  else
    printf '{"id":"%s","created":"2014-10-01T00:00:00Z"}' "$id" >"$json"
  fi
  head -c "$bytes" /dev/urandom >"$layer"
  sum=$({ cat "$json"; printf '\n'; cat "$layer"; } | sha256sum | cut -c1-64)
  put "/v1/images/$id/json" "@$json" -H 'Content-Type: application/json'
  put "/v1/images/$id/layer" "@$layer"
  put "/v1/images/$id/checksum" "" -H "X-Docker-Checksum-Payload: sha256:$sum"
  LAYERS+=("$name")
}

seed() {
  local code list="" n
  code=$(curl -sS -o "$WORK/put.resp" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary "{\"username\":\"$USER_NAME\",\"password\":\"$USER_PASS\",\"email\":\"$USER_NAME@example.com\"}" \
    "$URL/v1/users/") || die "register: curl failed"
  [[ $code == 201 ]] || die "register: HTTP $code: $(cat "$WORK/put.resp")"
  put "/v1/repositories/$REPO/" '[]' -H 'Content-Type: application/json'
  seed_image base $((2 * 1048576))
  seed_image v1 $((3 * 1048576)) base
  seed_image four $((4 * 1048576)) v1
  seed_image big $((64 * 1048576)) base
  for n in base v1 four big; do
    put "/v1/repositories/$REPO/tags/$n" "\"${IDS[$n]}\"" -H 'Content-Type: application/json'
    list+="${list:+,}{\"id\":\"${IDS[$n]}\"}"
  done
  put "/v1/repositories/$REPO/tags/latest" "\"${IDS[four]}\"" -H 'Content-Type: application/json'
  put "/v1/repositories/$REPO/images" "[$list]" -H 'Content-Type: application/json'
  AUTH_HEADER="Basic $(printf '%s:%s' "$USER_NAME" "$USER_PASS" | base64 -w0)"
  # The small-GET mix.
  {
    for n in base v1 four big; do
      echo "/v1/images/${IDS[$n]}/json"
      echo "/v1/images/${IDS[$n]}/ancestry"
    done
    echo "/v1/repositories/$REPO/tags"
    echo "/v1/repositories/$REPO/tags"
    echo "/v1/repositories/$REPO/tags/latest"
    echo "/v1/_ping"
    echo "/v1/_ping"
  } >"$WORK/files/small.paths"
  head -c 16384 /dev/urandom >"$WORK/files/push.layer"
  log "seeded $REPO: 4 images (2, 3, 4 and 64 MiB layers), 5 tags"
}

# push_pool NAME COUNT: COUNT fresh "id sha256:checksum" lines for the push script
push_pool() {
  python3 - "$WORK/files/push.layer" "$1" "$2" "$USER_PASS" >"$WORK/files/$1.pool" <<'EOF'
import hashlib, sys
layer = open(sys.argv[1], "rb").read()
name, count, nonce = sys.argv[2], int(sys.argv[3]), sys.argv[4]
out = []
for i in range(count):
    image_id = hashlib.sha256(f"push-{nonce}-{name}-{i}".encode()).hexdigest()
    json = ('{"id":"%s","created":"2014-10-01T00:00:00Z"}' % image_id).encode()
    out.append("%s sha256:%s\n" % (image_id, hashlib.sha256(json + b"\n" + layer).hexdigest()))
sys.stdout.write("".join(out))
EOF
}

# ---------------------------------------------------------------- wrk scripts

write_scripts() {
  # Shared by every script: one RESULT line from the summary.
  local report='
function report(summary, latency, bad, extra)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format("RESULT %d %.1f %.3f %.3f %d %s\n", summary.requests,
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    bad + e.connect + e.read + e.write + e.timeout, extra))
end'
  { echo "$report"; cat <<'EOF'; } >"$WORK/small.lua"
local paths = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  i = math.random(#paths)
end
function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
function done(summary, latency, requests)
  report(summary, latency, summary.errors.status, "-")
end
EOF
  { echo "$report"; cat <<'EOF'; } >"$WORK/layer.lua"
function done(summary, latency, requests)
  report(summary, latency, summary.errors.status, "-")
end
EOF
  # One connection per thread: response() runs before the thread's next request(), so
  # json, layer and checksum of an image go in order. A non-2xx gives the image up.
  { echo "$report"; cat <<'EOF'; } >"$WORK/push.lua"
local threads = {}
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
local ids, sums = {}, {}
local n, step, layer, auth = 1, 0, "", ""
pushed, bad, exhausted = 0, 0, 0
function init(args)
  local tid, nthreads = wrk.thread:get("tid"), tonumber(args[2])
  local k = 0
  for line in io.lines(args[1]) do
    if k % nthreads == tid then
      local id, sum = line:match("^(%x+) (%S+)$")
      ids[#ids + 1], sums[#sums + 1] = id, sum
    end
    k = k + 1
  end
  local f = assert(io.open(args[3], "rb"))
  layer = f:read("*a")
  f:close()
  auth = args[4]
end
function request()
  local id = ids[n]
  if id == nil then
    return wrk.format("GET", "/v1/_ping")
  end
  local h = { ["Authorization"] = auth }
  if step == 0 then
    h["Content-Type"] = "application/json"
    return wrk.format("PUT", "/v1/images/" .. id .. "/json", h,
      '{"id":"' .. id .. '","created":"2014-10-01T00:00:00Z"}')
  elseif step == 1 then
    return wrk.format("PUT", "/v1/images/" .. id .. "/layer", h, layer)
  end
  h["X-Docker-Checksum-Payload"] = sums[n]
  return wrk.format("PUT", "/v1/images/" .. id .. "/checksum", h, "")
end
function response(status, headers, body)
  if ids[n] == nil then
    exhausted = 1
    wrk.thread:stop()
    return
  end
  if status >= 200 and status < 300 then
    step = step + 1
    if step == 3 then
      step, n, pushed = 0, n + 1, pushed + 1
    end
  else
    step, n, bad = 0, n + 1, bad + 1
  end
end
function done(summary, latency, requests)
  local p, b, x = 0, 0, 0
  for _, t in ipairs(threads) do
    p, b, x = p + t:get("pushed"), b + t:get("bad"), x + t:get("exhausted")
  end
  report(summary, latency, b, string.format("%d %d", p, x))
end
EOF
}

# ---------------------------------------------------------------- phases

declare -a ROWS=()

# row PHASE RPS P50_MS P99_MS ERRORS REQUESTS RSS NOTE
row() { ROWS+=("$(printf '%-18s %10s %9s %9s %8s %10s %14s  %s' "$@")"); }

# wrk_run NAME CONNS THREADS SCRIPT PATH [ARGS...]: runs wrk in the background,
# output in $WORK/out/NAME; sets WRK_PID
WRK_PID=""
wrk_run() {
  local name=$1 conns=$2 threads=$3 script=$4 path=$5
  shift 5
  wrk -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 10s -s "$WORK/$script" \
    "$URL$path" -- "$@" >"$WORK/out/$name" 2>&1 &
  WRK_PID=$!
  track "$WRK_PID"
}

# wrk_row PHASE NAME RSS: one table row from a wrk run's RESULT line
wrk_row() {
  local phase=$1 name=$2 rss=$3 line req rps p50 p99 err pushed exhausted note=""
  line=$(grep -m1 '^RESULT ' "$WORK/out/$name") || {
    cat "$WORK/out/$name" >&2
    die "wrk $name printed no result"
  }
  read -r _ req rps p50 p99 err pushed exhausted <<<"$line"
  if [[ $pushed != - ]]; then
    note="$pushed images pushed ($(awk -v p="$pushed" -v d="$DURATION" 'BEGIN { printf "%.0f", p / d }')/s)"
    [[ $exhausted == 0 ]] || note+=", id pool used up"
  fi
  row "$phase" "$rps" "$p50" "$p99" "$err" "$req" "$rss" "$note"
}

pool_size() { # conns -> fresh ids for one push phase (generous: a thread that runs out idles)
  local n=$(($1 * DURATION * 8))
  ((n < 4096)) && n=4096
  echo "$n"
}

phase_wrk() { # phase: small | layer | push
  local t0 t1
  case $1 in
  small) wrk_run small "$CONNS" "$THREADS" small.lua /v1/_ping "$WORK/files/small.paths" ;;
  layer) wrk_run layer "$CONNS" "$THREADS" layer.lua "/v1/images/${IDS[four]}/layer" ;;
  push)
    push_pool push "$(pool_size "$CONNS")"
    wrk_run push "$CONNS" "$CONNS" push.lua /v1/_ping "$WORK/files/push.pool" "$CONNS" \
      "$WORK/files/push.layer" "$AUTH_HEADER"
    ;;
  esac
  log "phase $1: ${DURATION}s at $CONNS connections"
  t0=$(now_us)
  wait "$WRK_PID" || die "wrk ($1) failed: $(tail -5 "$WORK/out/$1")"
  t1=$(now_us)
  wrk_row "$1" "$1" "$(peak_mib "$WORK/server.rss" "$t0" "$t1") MiB"
}

phase_mixed() {
  local small=$((CONNS / 2)) layer=$((CONNS / 4)) push=$((CONNS - CONNS / 2 - CONNS / 4))
  local t0 t1 p1 p2 p3 rss
  push_pool mixed "$(pool_size "$push")"
  log "phase mixed: ${DURATION}s, $small small GET + $layer layer GET + $push push connections"
  wrk_run mixed-small "$small" 1 small.lua /v1/_ping "$WORK/files/small.paths"
  p1=$WRK_PID
  wrk_run mixed-layer "$layer" 1 layer.lua "/v1/images/${IDS[four]}/layer"
  p2=$WRK_PID
  wrk_run mixed-push "$push" "$push" push.lua /v1/_ping "$WORK/files/mixed.pool" "$push" \
    "$WORK/files/push.layer" "$AUTH_HEADER"
  p3=$WRK_PID
  t0=$(now_us)
  wait "$p1" || die "wrk (mixed small) failed"
  wait "$p2" || die "wrk (mixed layer) failed"
  wait "$p3" || die "wrk (mixed push) failed"
  t1=$(now_us)
  rss="$(peak_mib "$WORK/server.rss" "$t0" "$t1") MiB"
  wrk_row "mixed: small" mixed-small "$rss"
  wrk_row "mixed: layer" mixed-layer "$rss"
  wrk_row "mixed: push" mixed-push "$rss"
}

# reader_loop KIND INDEX DEADLINE_US: runs until the deadline (or MAX_ITER), one line
# per operation: "ok MICROSECONDS" or "err"
reader_loop() {
  local kind=$1 idx=$2 deadline=$3 i t0 f ok
  local -a files=()
  for f in "${LAYERS[@]}"; do files+=("$MNT/images/${IDS[$f]}/layer"); done
  for ((i = 0; i < MAX_ITER; i++)); do
    t0=${EPOCHREALTIME/[.,]/}
    ((t0 < deadline)) || break
    ok=1
    case $kind in
    cat) cat "${files[$(((idx + i) % ${#files[@]}))]}" >/dev/null || ok=0 ;;
    ls) ls -l "$MNT/repositories/$REPO/tags" "$MNT/images" >/dev/null || ok=0 ;;
    tag) cat "$MNT/repositories/$REPO/tags/latest" >/dev/null || ok=0 ;;
    esac 2>>"$WORK/out/readers.err"
    if ((ok)); then echo "ok $((${EPOCHREALTIME/[.,]/} - t0))"; else echo err; fi
  done
}

phase_mount() {
  local pid t0 t1 deadline i rss
  MNT=$WORK/mnt
  mkdir -p "$MNT"
  RUST_LOG=warn "$BIN" mount "$MNT" --registry "$URL" >"$WORK/mount.out" 2>"$WORK/mount.err" &
  pid=$!
  track "$pid"
  for i in $(seq 200); do
    is_mounted "$MNT" && break
    alive "$pid" || die "regfs mount exited: $(tail -5 "$WORK/mount.err")"
    sleep 0.05
  done
  is_mounted "$MNT" || die "regfs mount did not mount within 10 s"
  sample_rss "$pid" "$WORK/mount.rss"
  [[ $(cat "$MNT/repositories/$REPO/tags/latest") == "${IDS[four]}" ]] ||
    die "the mount does not show the seeded tag"
  log "phase mount: ${DURATION}s, $READERS cat loops + 4 ls/cat-tag loops over $MNT (pid $pid)"
  t0=$(now_us)
  deadline=$((t0 + DURATION * 1000000))
  local -a loops=()
  for ((i = 0; i < READERS; i++)); do
    reader_loop cat "$i" "$deadline" >"$WORK/out/cat.$i" &
    loops+=($!)
  done
  for i in 0 1; do
    reader_loop ls "$i" "$deadline" >"$WORK/out/ls.$i" &
    loops+=($!)
    reader_loop tag "$i" "$deadline" >"$WORK/out/tag.$i" &
    loops+=($!)
  done
  for i in "${loops[@]}"; do wait "$i" || true; done
  t1=$(now_us)
  rss="$(peak_mib "$WORK/server.rss" "$t0" "$t1")+$(peak_mib "$WORK/mount.rss" "$t0" "$t1") MiB"
  local bytes=0 n
  for n in "${LAYERS[@]}"; do bytes=$((bytes + $(stat -c %s "$WORK/files/$n.layer"))); done
  mount_row "mount: cat layer" "$rss" "$WORK"/out/cat.* \
    "avg layer $((bytes / ${#LAYERS[@]} / 1048576)) MiB; RSS server+daemon"
  mount_row "mount: ls/tags" "$rss" "$WORK"/out/ls.* "$WORK"/out/tag.*
  MOUNT_HWM=$(hwm_mib "$pid")
  fusermount3 -u "$MNT" || die "fusermount3 -u $MNT failed"
  for i in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && die "regfs mount still running 10 s after fusermount3 -u"
  wait "$pid" || log "regfs mount exited with $?"
}

# mount_row PHASE RSS FILE... [NOTE]: one table row from reader_loop outputs
mount_row() {
  local phase=$1 rss=$2 note="" a n e p50=0 p99=0
  shift 2
  local -a files=()
  for a in "$@"; do
    if [[ -f $a ]]; then files+=("$a"); else note=$a; fi
  done
  awk '$1 == "ok" { print $2 }' "${files[@]}" | sort -n >"$WORK/out/lat"
  n=$(wc -l <"$WORK/out/lat")
  e=$(cat "${files[@]}" | grep -c '^err' || true)
  if ((n > 0)); then
    p50=$(sed -n "$(((n - 1) * 50 / 100 + 1))p" "$WORK/out/lat")
    p99=$(sed -n "$(((n - 1) * 99 / 100 + 1))p" "$WORK/out/lat")
  fi
  row "$phase" "$(awk -v n="$n" -v d="$DURATION" 'BEGIN { printf "%.1f", n / d }')" \
    "$(awk -v x="$p50" 'BEGIN { printf "%.3f", x / 1000 }')" \
    "$(awk -v x="$p99" 'BEGIN { printf "%.3f", x / 1000 }')" "$e" "$((n + e))" "$rss" "$note"
}

# ---------------------------------------------------------------- main

MOUNT_HWM="?"
need_tools
build_unless_given
make_workdir
start_server
sample_rss "$SERVER_PID" "$WORK/server.rss"
seed
write_scripts
for p in small layer push; do phase_wrk "$p"; done
phase_mixed
phase_mount

echo
echo "== regfs load: ${DURATION}s per phase, $CONNS connections, $READERS mount readers =="
printf '%-18s %10s %9s %9s %8s %10s %14s  %s\n' phase "req/s" "p50 ms" "p99 ms" errors requests "peak RSS" ""
for r in "${ROWS[@]}"; do echo "$r"; done
echo "server VmHWM $(hwm_mib "$SERVER_PID") MiB, mount daemon VmHWM $MOUNT_HWM MiB"
echo
