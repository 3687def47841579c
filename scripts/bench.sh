#!/usr/bin/env bash
# Benchmarks for regfs.
#
# Usage:
#   scripts/bench.sh                 # run every section
#   scripts/bench.sh server          # run only the named section(s)
#   BENCH_SECTIONS="server" scripts/bench.sh
#   scripts/bench.sh --list          # list sections
#
# Sections:
#   server   HTTP server against nginx (static files) and dd, on loopback:
#            1 GiB layer GET, concurrent layer GETs, small GETs per second,
#            1 GiB layer PUT, and peak server RSS over idle.
#   mount    `regfs mount --registry` of a separate `regfs serve --storage`, on
#            loopback; each figure against a baseline from the same run:
#            1 GiB layer `cat`, cold, vs curl of the layer URL (>= 0.9x), also
#            through the embedded default (`regfs mount --storage` of the same
#            storage, whose layer opens pass through to the stored files);
#            4 `cat`s of 4 layers at once vs 4 curls (>= 0.9x aggregate);
#            cached re-read vs a local file in the page cache (>= 0.9x), also
#            with --cache-dir (a layer read whole is opened by FUSE passthrough); the
#            first byte on a fresh mount, what `head -c 1` does timed inside the
#            reading process, vs curl's time_starttransfer, which also leaves out
#            its process start-up (<= 1.5x + 1 ms; the whole `head -c 1` is
#            shown); `ls -l` of 1,000 tags on a fresh mount vs the tags API call's
#            time_total (<= 2x); the daemon's VmHWM during the
#            4 readers (<= --cache-size + 64 MiB).
#            "Cold" = a fresh mount (empty kernel and daemon caches), then
#            `sync; echo 3 > /proc/sys/vm/drop_caches`, then the image's files in
#            the server's storage dir are read back in (and the binaries the
#            run uses), so regfs and curl start from the same server-side state:
#            the layer in the server's page cache, nothing cached on the client.
#            The layers are separate images with the same bytes.
#   mount-write  pushes through `regfs mount --registry --user --password` of a
#            separate `regfs serve --storage`, on loopback; each figure against
#            curl straight to the server in the same run, runs taking turns:
#            `cp` of a 1 GiB layer into images/<id>/ after the json was written
#            (the close returns once the registry accepted layer and checksum)
#            vs curl PUT layer + PUT checksum (>= 0.8x); the layer first
#            (spooled by the daemon), then the json, timed from the start of the
#            cp to the end of the json write, vs the same curl (>= 0.5x); 1,000
#            tags by a shell loop of `echo ID > tags/tN` vs a loop of one curl
#            per tag (<= 2x; one keep-alive curl for all of them is shown too);
#            the daemon's VmHWM during the json-first cp over its idle RSS
#            (<= 64 MiB). Each run pushes fresh image ids; the curl baseline's
#            PUT json and the checksum computation are untimed (as the mount's
#            mkdir and json write are), its PUT checksum is timed (the mount's
#            close includes it). The daemon spools to the scratch dir (TMPDIR).
#            Pushed images are verified through the API (complete, size; the
#            first of each kind byte for byte) and then deleted from the
#            server's storage dir to bound the disk use.
#   mount-outage  `regfs mount --registry --timeout 2` whose server is then
#            stopped: a 4 MiB layer read before, read again (<= 50 ms), and a
#            lookup of an unknown image, which fails within the timeout
#            (<= 3 s). The tests assert only the behaviour (served from cache,
#            EIO); these are the times.
#
# Knobs (environment):
#   BENCH_LAYER_MIB   size of the big layer in MiB                 (1024)
#   BENCH_CONC        concurrent GETs in the concurrency test      (64)
#   BENCH_CONC_MIB    size of the layer used for that test, MiB    (64)
#   BENCH_REPS        repetitions of each throughput test (median) (5)
#   BENCH_DURATION    seconds per small-GET load run               (8)
#   BENCH_WRK_CONNS   connections for the small-GET load runs      (64)
#   BENCH_WRK_THREADS wrk threads                                  (2)
#   BENCH_MOUNT_READERS  layers read at once by the parallel test   (4)
#   BENCH_MOUNT_CACHE_MIB  --cache-size of the mount, MiB            (256)
#   BENCH_MOUNT_FAST_REPS  repetitions of the first-byte and ls tests (9)
#   BENCH_MOUNT_TAGS  tags pushed for the ls test, and written by the
#                     mount-write tag test                         (1000)
#   BENCH_MOUNT_WRITE_REPS  runs of each 1 GiB push in mount-write (median) (5)
#   BENCH_MOUNT_TAG_REPS    runs of the tag loops in mount-write (median)   (3)
#   BENCH_TMPDIR      where the scratch dir goes (needs ~9 GiB of disk for
#                     server, (1 + BENCH_MOUNT_READERS) layers for mount,
#                     3 layers for mount-write: the source, the daemon's
#                     spool and the server's copy;
#                     default: target/bench-tmp under the repo root)
#   BENCH_SKIP_BUILD  set to 1 to use the existing release binary
#   BENCH_BIN         regfs binary to run (default target/release/regfs)
#   BENCH_STRICT      set to 1 to exit 1 when any target is missed
#   BENCH_ACCESS_LOG  1: both servers write access logs (regfs at its default
#                     log level, nginx to a file). Default 0: neither does
#                     (regfs runs with RUST_LOG=warn, nginx with access_log off)
#   BENCH_TSV         if set, append results as tab-separated lines to this file
#   BENCH_PUT_BASELINE  auto|fsync|nofsync: the dd run the layer PUT is held
#                     against. auto (default) looks at how much of the upload
#                     is still dirty in the page cache when the PUT returns:
#                     if regfs fsyncs, dd conv=fsync; if not, plain dd.
#
# Output: progress on stderr; per section a table on stdout with each figure,
# its baseline, the ratio, the target and PASS/MISS (or "info" for a figure
# shown for scale, with no target).
#
# Adding a section: write a function section_NAME that ends with
# print_results, and add NAME to ALL_SECTIONS (a "-" in NAME is "_" in the
# function's name).
#
# Needs: curl, nginx, wrk, and for mount and mount-write /dev/fuse and
# fusermount3 (fuse3);
# installed through apt-get when missing and running as root or with sudo.
# Dropping the page cache needs root or password-less sudo (without it the
# mount section says so and runs with the page cache kept).
# Everything runs on 127.0.0.1; nginx runs with a private config and prefix
# in the scratch dir, not the system one.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BENCH_BIN:-$ROOT/target/release/regfs}

ALL_SECTIONS=(server mount mount-write mount-outage)

LAYER_MIB=${BENCH_LAYER_MIB:-1024}
CONC=${BENCH_CONC:-64}
CONC_MIB=${BENCH_CONC_MIB:-64}
REPS=${BENCH_REPS:-5}
DURATION=${BENCH_DURATION:-8}
WRK_CONNS=${BENCH_WRK_CONNS:-64}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
ACCESS_LOG=${BENCH_ACCESS_LOG:-0}
MOUNT_READERS=${BENCH_MOUNT_READERS:-4}
MOUNT_CACHE_MIB=${BENCH_MOUNT_CACHE_MIB:-256}
MOUNT_FAST_REPS=${BENCH_MOUNT_FAST_REPS:-9}
MOUNT_TAGS=${BENCH_MOUNT_TAGS:-1000}
MOUNT_WRITE_REPS=${BENCH_MOUNT_WRITE_REPS:-5}
MOUNT_TAG_REPS=${BENCH_MOUNT_TAG_REPS:-3}
NEED_FUSE=0

ADMIN_USER="admin"
ADMIN_PASS="bench-$RANDOM$RANDOM"
REPO=library/bench

# shellcheck disable=SC2034 # read by log in lib.sh
LOG_TAG=bench
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------- helpers

# a daemon that has died explains a failure better than the error that followed
on_die() {
  gone "${SERVER_PID:-}" regfs server.err
  gone "${MOUNT_PID:-}" "regfs mount" mount.err
}

# for die: say so when PID (named NAME, stderr in $WORK/ERRFILE) is no longer running
gone() { # pid name errfile
  local st=""
  [[ -n $1 ]] && ! alive "$1" || return 0
  # only the main shell can reap it and learn how it ended
  if [[ $BASHPID == "$$" ]]; then
    wait "$1" 2>/dev/null && st=" (exit status 0: regfs exits 0 only after SIGINT or SIGTERM)" ||
      st=" (exit status $?)"
  fi
  log "$2 (pid $1) is no longer running$st; the end of its stderr:"
  tail -n 20 "$WORK/$3" >&2 2>/dev/null || true
}

now_ns() { date +%s%N; }

fmt_rps() { awk -v x="$1" 'BEGIN{ printf "%.0f req/s", x }'; }
fmt_ms() { awk -v x="$1" 'BEGIN{ printf "%.2f ms", x * 1000 }'; }

# ---------------------------------------------------------------- cleanup

WORK=""
WORK_BASE_CREATED=""
declare -a CLEANUP_PIDS=()
declare -a CLEANUP_MOUNTS=()

cleanup() {
  local rc=$? pid m
  set +e
  # unmount first: a daemon stopped under a busy mount would leave readers hanging
  for m in "${CLEANUP_MOUNTS[@]}"; do
    is_mounted "$m" && fusermount3 -u "$m" 2>/dev/null
  done
  for pid in "${CLEANUP_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
    fi
  done
  for pid in "${CLEANUP_PIDS[@]}"; do
    # give each process up to 10 s, then KILL it
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for m in "${CLEANUP_MOUNTS[@]}"; do
    if is_mounted "$m"; then
      fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null ||
        log "WARNING: could not unmount $m"
    fi
  done
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    # --one-file-system: never descend into a mount that could not be detached
    rm -rf --one-file-system "$WORK"
    [[ -n $WORK_BASE_CREATED ]] && rmdir "$WORK_BASE_CREATED" 2>/dev/null
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 1' USR1

track_pid() { CLEANUP_PIDS+=("$1"); }

untrack_pid() {
  local -a keep=()
  local p
  for p in "${CLEANUP_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  CLEANUP_PIDS=("${keep[@]}")
}

# stop one tracked process now (TERM, wait)
stop_pid() {
  local pid=$1
  untrack_pid "$pid"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- results

# record a ratio against a ">= target" goal
record_ratio() { # name regfs_val baseline_val target fmtfn baseline_label
  local name=$1 a=$2 b=$3 target=$4 fmt=$5 blabel=$6 ratio ok
  ratio=$(fdiv "$a" "$b")
  ok=$(awk -v r="$ratio" -v t="$target" 'BEGIN{ print (r >= t) ? 1 : 0 }')
  record "$name" "$($fmt "$a")" "$blabel $($fmt "$b")" \
    "$(awk -v r="$ratio" 'BEGIN{ printf "%.2fx", r }')" \
    "$(awk -v t="$target" 'BEGIN{ printf ">= %.2fx", t }')" "$ok"
}

print_results() {
  local title=$1 line
  echo
  echo "== $title =="
  printf '%-34s %-14s %-34s %-7s %-10s %s\n' metric regfs baseline ratio target result
  printf '%-34s %-14s %-34s %-7s %-10s %s\n' \
    ---------------------------------- -------------- ---------------------------------- ------- ---------- ------
  for line in "${RESULTS[@]}"; do
    IFS='|' read -r n a b r t ok <<<"$line"
    printf '%-34s %-14s %-34s %-7s %-10s %s\n' "$n" "$a" "$b" "$r" "$t" "$(result_word "$ok")"
  done
  echo
  RESULTS=()
}

# ---------------------------------------------------------------- setup

need_tools() {
  local -a pkgs=()
  command -v curl >/dev/null || pkgs+=(curl)
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx-light)
  command -v wrk >/dev/null || pkgs+=(wrk)
  command -v cmp >/dev/null || pkgs+=(diffutils)
  [[ $NEED_FUSE == 1 ]] && ! command -v fusermount3 >/dev/null && pkgs+=(fuse3)
  install_missing "${pkgs[@]}"
}

NGINX=""
find_nginx() {
  NGINX=$(command -v nginx || true)
  [[ -n $NGINX ]] || NGINX=/usr/sbin/nginx
  [[ -x $NGINX ]] || die "nginx not found"
}

make_workdir() {
  local base=${BENCH_TMPDIR:-$ROOT/target/bench-tmp}
  [[ -d $base ]] || WORK_BASE_CREATED=$base
  mkdir -p "$base"
  WORK=$(mktemp -d "$base/bench.XXXXXX")
  # nginx workers run as an unprivileged user when started as root
  chmod 755 "$WORK"
  log "scratch dir $WORK"
}

# percent of all CPU time that was busy over one second
cpu_busy_pct() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  sleep 1
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN{ split(a, x, " "); split(b, y, " ");
    busy = y[1] - x[1]; idle = y[2] - x[2];
    printf "%.0f\n", (busy + idle) ? 100 * busy / (busy + idle) : 0 }'
}

# warn when something else is using the machine: the figures would be noise
check_quiet() {
  local busy
  busy=$(cpu_busy_pct)
  if ((busy > 20)); then
    log "WARNING: the CPUs were ${busy}% busy before the run started; figures will be noisy"
  else
    log "CPUs ${busy}% busy before the run"
  fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

NGINX_URL=""    # stock static-file config: sendfile on, tcp_nopush on
NGINX_URL_RW="" # sendfile off, 2 x 1 MiB output buffers (plain read+write)
NGINX_PID=""
# start_nginx DOCROOT: serve DOCROOT statically on two free loopback ports,
# one per config. Which of the two is faster for big files depends on the
# machine, so the big-file tests hold regfs against the better one.
start_nginx() {
  local docroot=$1 prefix="$WORK/nginx" port attempt user="" access="access_log off;"
  mkdir -p "$prefix/logs" "$prefix/tmp"
  [[ $ACCESS_LOG == 1 ]] && access="access_log $prefix/logs/access.log;"
  # as root, keep the workers as root too so they can read the scratch dir
  [[ $(id -u) == 0 ]] && user="user root;"
  for attempt in 1 2 3 4 5 6 7 8; do
    port=$((20000 + RANDOM % 40000))
    port_in_use "$port" && continue
    port_in_use "$((port + 1))" && continue
    cat >"$prefix/nginx.conf" <<EOF
$user
worker_processes auto;
daemon off;
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log warn;
events { worker_connections 4096; }
http {
    $access
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 65;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;
    types { application/json json; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$port;
        sendfile on;
        tcp_nopush on;
        root $docroot;
        location / { }
    }
    server {
        listen 127.0.0.1:$((port + 1));
        sendfile off;
        output_buffers 2 1m;
        root $docroot;
        location / { }
    }
}
EOF
    "$NGINX" -p "$prefix" -e "$prefix/logs/error.log" -c "$prefix/nginx.conf" \
      >"$prefix/logs/stdout.log" 2>&1 &
    NGINX_PID=$!
    track_pid "$NGINX_PID"
    for _ in $(seq 50); do
      if curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null &&
        curl -s -o /dev/null "http://127.0.0.1:$((port + 1))/" 2>/dev/null; then
        NGINX_URL="http://127.0.0.1:$port"
        NGINX_URL_RW="http://127.0.0.1:$((port + 1))"
        log "nginx $(nginx_version) at $NGINX_URL (sendfile) and $NGINX_URL_RW (read+write), pid $NGINX_PID"
        return 0
      fi
      kill -0 "$NGINX_PID" 2>/dev/null || break
      sleep 0.1
    done
    stop_pid "$NGINX_PID"
    log "nginx did not come up on port $port (attempt $attempt): $(tail -2 "$prefix/logs/error.log" 2>/dev/null)"
  done
  die "could not start nginx"
}

nginx_version() { "$NGINX" -v 2>&1 | sed 's/.*\///'; }

SERVER_URL=""
SERVER_PID=""
start_server() { # storage dir
  local storage=$1 out="$WORK/server.out"
  local -a envs=()
  mkdir -p "$storage"
  [[ $ACCESS_LOG == 1 ]] || envs=(RUST_LOG=warn)
  env "${envs[@]}" "$BIN" serve --listen 127.0.0.1:0 --storage "$storage" \
    --admin-user "$ADMIN_USER" --admin-password "$ADMIN_PASS" \
    >"$out" 2>"$WORK/server.err" &
  SERVER_PID=$!
  track_pid "$SERVER_PID"
  for _ in $(seq 200); do
    SERVER_URL=$(head -n1 "$out" 2>/dev/null || true)
    if [[ $SERVER_URL == http://* ]]; then
      log "regfs at $SERVER_URL (pid $SERVER_PID)"
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  tail -20 "$WORK/server.err" >&2 || true
  die "regfs did not print its URL"
}

rss_kib() { # pid field(VmRSS|VmHWM)
  local k v _
  while read -r k v _; do
    if [[ $k == "$2:" ]]; then echo "$v"; return 0; fi
  done <"/proc/$1/status"
  echo 0
}

RSS_SAMPLER_PID=""
RSS_LOG=""
# log VmRSS (KiB) of PID every 50 ms to FILE, as "time S kib" lines
start_rss_sampler() { # pid file
  local pid=$1
  RSS_LOG=$2
  : >"$RSS_LOG"
  (
    while [[ -r /proc/$pid/status ]]; do
      while read -r k val _; do
        if [[ $k == VmRSS: ]]; then
          printf '%s S %s\n' "$EPOCHREALTIME" "$val"
          break
        fi
      done <"/proc/$pid/status" 2>/dev/null || break
      sleep 0.05
    done >>"$RSS_LOG"
  ) &
  RSS_SAMPLER_PID=$!
  track_pid "$RSS_SAMPLER_PID"
}

# mark the start of a phase in the RSS log (a name without spaces)
rss_phase() { [[ -z $RSS_LOG ]] || printf '%s P %s\n' "$EPOCHREALTIME" "$1" >>"$RSS_LOG"; }

# print "phase peak_kib" for each phase, in order
rss_phase_peaks() {
  sort -g -k1,1 "$RSS_LOG" | awk '
    $2 == "P" { ph = $3; if (!(ph in peak)) { order[++n] = ph; peak[ph] = 0 } next }
    $2 == "S" { if (ph == "") { ph = "start"; order[++n] = ph; peak[ph] = 0 }
                if ($3 + 0 > peak[ph]) peak[ph] = $3 + 0 }
    END { for (i = 1; i <= n; i++) print order[i], peak[order[i]] }'
}

# ---------------------------------------------------------------- regfs API

# api METHOD PATH [curl args...]: authenticated call, must return 200
api() {
  local method=$1 path=$2 code
  shift 2
  code=$(curl -sS -o "$WORK/api.resp" -w '%{http_code}' -u "$ADMIN_USER:$ADMIN_PASS" \
    -X "$method" "$@" "$SERVER_URL$path") || die "$method $path: curl failed"
  if [[ $code != 200 ]]; then
    die "$method $path: HTTP $code: $(head -c 400 "$WORK/api.resp")"
  fi
}

create_repo() {
  api PUT "/v1/repositories/$REPO/" -H 'Content-Type: application/json' --data-binary '[]'
}

put_image_json() { # id
  api PUT "/v1/images/$1/json" -H 'Content-Type: application/json' \
    --data-binary "{\"id\":\"$1\"}"
}

# put_layer ID FILE -> prints "bytes seconds"
put_layer() {
  local id=$1 file=$2 out code size t
  out=$(curl -sS -o "$WORK/api.resp" -w '%{http_code} %{size_upload} %{time_total}' \
    -u "$ADMIN_USER:$ADMIN_PASS" -T "$file" "$SERVER_URL/v1/images/$id/layer") ||
    die "PUT layer $id: curl failed"
  read -r code size t <<<"$out"
  [[ $code == 200 ]] || die "PUT layer $id: HTTP $code: $(head -c 400 "$WORK/api.resp")"
  echo "$size $t"
}

put_checksum() { # id file
  local id=$1 file=$2 sum
  sum=$({ printf '{"id":"%s"}\n' "$id"; cat "$file"; } | sha256sum | cut -c1-64)
  api PUT "/v1/images/$id/checksum" -H "X-Docker-Checksum-Payload: sha256:$sum" \
    -H 'Content-Length: 0'
}

put_tag() { # tag id
  api PUT "/v1/repositories/$REPO/tags/$1" -H 'Content-Type: application/json' \
    --data-binary "\"$2\""
}

push_image() { # id file tag
  put_image_json "$1"
  put_layer "$1" "$2" >/dev/null
  put_checksum "$1" "$2"
  put_tag "$3" "$1"
}

# ---------------------------------------------------------------- measurements

# get_once URL EXPECTED_BYTES -> prints bytes/s
get_once() {
  local url=$1 want=$2 out code size t
  out=$(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "$url") ||
    die "GET $url: curl failed"
  read -r code size t <<<"$out"
  [[ $code == 200 && $size == "$want" ]] || die "GET $url: HTTP $code, $size bytes (want 200, $want)"
  fdiv "$size" "$t"
}

# get_concurrent URL N EXPECTED_BYTES -> prints aggregate bytes/s
get_concurrent() {
  local url=$1 n=$2 want=$3 i
  local -a urls=()
  for ((i = 0; i < n; i++)); do urls+=("$url"); done
  get_parallel "$want" "${urls[@]}"
}

# get_parallel EXPECTED_BYTES URL...: one curl per URL, all at once -> prints aggregate bytes/s
get_parallel() {
  local want=$1 dir t0 t1 i code size bad=0 first="" n
  shift
  local -a pids=() urls=("$@")
  n=${#urls[@]}
  dir=$(mktemp -d "$WORK/conc.XXXXXX")
  t0=$(now_ns)
  for ((i = 0; i < n; i++)); do
    curl -sS -o /dev/null -w '%{http_code} %{size_download}\n' "${urls[i]}" >"$dir/$i" 2>&1 &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || true; done
  t1=$(now_ns)
  for ((i = 0; i < n; i++)); do
    code="" size=""
    read -r code size <"$dir/$i" || true
    if [[ $code != 200 || $size != "$want" ]]; then
      ((bad == 0)) && first=$(tr '\n' ' ' <"$dir/$i")
      bad=$((bad + 1))
    fi
  done
  rm -rf "$dir"
  ((bad == 0)) || die "concurrent GET ${urls[0]} (first of $n): $bad of $n transfers failed or were short; first: $first"
  fdiv "$((n * want))" "$(fdiv "$((t1 - t0))" 1000000000)"
}

# load_rps URL -> prints "requests/s failed_requests" (wrk, fixed duration)
load_rps() {
  local url=$1 out rps errs
  out=$(wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" "$url" 2>&1) || die "wrk $url failed: $out"
  rps=$(awk '/^Requests\/sec:/{print $2}' <<<"$out")
  [[ -n $rps ]] || die "could not parse wrk output: $out"
  # "Non-2xx or 3xx responses: N" and "Socket errors: connect A, read B, write C, timeout D"
  errs=$(awk '/Non-2xx or 3xx responses:/{s+=$NF}
    /Socket errors:/{gsub(/,/,""); s+=$4+$6+$8+$10} END{print s+0}' <<<"$out")
  if ((errs > 0)); then
    log "wrk $url: $errs failed requests:"
    grep -E 'Non-2xx|Socket errors' <<<"$out" >&2
  fi
  echo "$rps $errs"
}

dirty_kib() { awk '/^(Dirty|Writeback):/{s+=$2} END{print s+0}' /proc/meminfo; }

# dd_write SRC DST FSYNC(1/0) -> prints bytes/s
dd_write() {
  local src=$1 dst=$2 fsync=$3 t0 t1 size
  local -a flags=()
  [[ $fsync == 1 ]] && flags=(conv=fsync)
  size=$(stat -c %s "$src")
  t0=$(now_ns)
  dd if="$src" of="$dst" bs=1M "${flags[@]}" status=none
  t1=$(now_ns)
  rm -f "$dst"
  fdiv "$size" "$(fdiv "$((t1 - t0))" 1000000000)"
}

# ---------------------------------------------------------------- section: server

# the better of the two nginx medians; sets NG_BEST and NG_NOTE
pick_nginx() { # median_sendfile median_readwrite
  NG_NOTE="sendfile $(fmt_mibs "$1"), read+write $(fmt_mibs "$2")"
  if awk -v a="$1" -v b="$2" 'BEGIN{ exit !(a >= b) }'; then NG_BEST=$1; else NG_BEST=$2; fi
}

section_server() {
  local data="$WORK/www" storage="$WORK/storage" big small big_bytes small_bytes
  local big_id small_id idle_kib peak_kib hwm_kib i
  local -a a b c
  mkdir -p "$data" "$storage"
  chmod 755 "$data"

  big="$data/big.layer"
  small="$data/conc.layer"
  log "generating ${LAYER_MIB} MiB test layer"
  head -c "$((LAYER_MIB * 1048576))" /dev/urandom >"$big"
  head -c "$((CONC_MIB * 1048576))" "$big" >"$small"
  big_bytes=$(stat -c %s "$big")
  small_bytes=$(stat -c %s "$small")
  chmod 644 "$big" "$small"

  start_nginx "$data"
  start_server "$storage"

  sleep 1
  idle_kib=$(rss_kib "$SERVER_PID" VmRSS)
  log "regfs idle RSS $((idle_kib / 1024)) MiB"
  start_rss_sampler "$SERVER_PID" "$WORK/rss.log"

  rss_phase push
  log "pushing test images (${LAYER_MIB} MiB and ${CONC_MIB} MiB layers)"
  big_id=$(new_id)
  small_id=$(new_id)
  create_repo
  push_image "$big_id" "$big" latest
  push_image "$small_id" "$small" conc

  # the small-GET baselines serve exactly the bytes regfs returns
  curl -fsS -o "$data/image.json" "$SERVER_URL/v1/images/$big_id/json" || die "GET image json failed"
  curl -fsS -o "$data/tags.json" "$SERVER_URL/v1/repositories/$REPO/tags" || die "GET tags failed"
  chmod 644 "$data/image.json" "$data/tags.json"
  log "image json is $(stat -c %s "$data/image.json") bytes, tags $(stat -c %s "$data/tags.json") bytes"

  rss_phase check
  log "checking the layer round trip and a Range request"
  curl -fsS "$SERVER_URL/v1/images/$big_id/layer" | cmp -s - "$big" ||
    die "GET layer returned different bytes than were pushed"
  local range_code
  range_code=$(curl -sS -o "$WORK/range.out" -w '%{http_code}' -H 'Range: bytes=1000-1999' \
    "$SERVER_URL/v1/images/$big_id/layer")
  if [[ $range_code != 206 ]] || ! cmp -s "$WORK/range.out" <(tail -c +1001 "$big" | head -c 1000); then
    log "WARNING: Range request answered HTTP $range_code or wrong bytes"
  fi

  # 1. one big GET at a time; the three servers take turns so noise hits all alike
  rss_phase get-big
  log "${LAYER_MIB} MiB GET x $REPS"
  get_once "$NGINX_URL/big.layer" "$big_bytes" >/dev/null # warm up
  a=() b=() c=()
  for ((i = 0; i < REPS; i++)); do
    a+=("$(get_once "$SERVER_URL/v1/images/$big_id/layer" "$big_bytes")")
    b+=("$(get_once "$NGINX_URL/big.layer" "$big_bytes")")
    c+=("$(get_once "$NGINX_URL_RW/big.layer" "$big_bytes")")
  done
  log "  regfs:            $(mibs_list "${a[@]}")"
  log "  nginx sendfile:   $(mibs_list "${b[@]}")"
  log "  nginx read+write: $(mibs_list "${c[@]}")"
  pick_nginx "$(median "${b[@]}")" "$(median "${c[@]}")"
  log "  baseline is the better nginx median ($NG_NOTE)"
  record_ratio "${LAYER_MIB} MiB layer GET (median/$REPS)" \
    "$(median "${a[@]}")" "$NG_BEST" 0.9 fmt_mibs nginx

  # 2. concurrent GETs
  rss_phase get-concurrent
  log "$CONC concurrent GETs of a ${CONC_MIB} MiB layer x $REPS"
  a=() b=() c=()
  for ((i = 0; i < REPS; i++)); do
    a+=("$(get_concurrent "$SERVER_URL/v1/images/$small_id/layer" "$CONC" "$small_bytes")")
    b+=("$(get_concurrent "$NGINX_URL/conc.layer" "$CONC" "$small_bytes")")
    c+=("$(get_concurrent "$NGINX_URL_RW/conc.layer" "$CONC" "$small_bytes")")
  done
  log "  regfs:            $(mibs_list "${a[@]}")"
  log "  nginx sendfile:   $(mibs_list "${b[@]}")"
  log "  nginx read+write: $(mibs_list "${c[@]}")"
  pick_nginx "$(median "${b[@]}")" "$(median "${c[@]}")"
  log "  baseline is the better nginx median ($NG_NOTE)"
  record_ratio "${CONC}x ${CONC_MIB} MiB GET, aggregate" \
    "$(median "${a[@]}")" "$NG_BEST" 0.9 fmt_mibs nginx

  # 3. small GETs per second
  local r n what ra rb ea eb
  for what in json tags; do
    if [[ $what == json ]]; then
      r="$SERVER_URL/v1/images/$big_id/json"
      n="$NGINX_URL/image.json"
    else
      r="$SERVER_URL/v1/repositories/$REPO/tags"
      n="$NGINX_URL/tags.json"
    fi
    rss_phase "small-$what"
    log "small GETs ($what): wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION}s, regfs then nginx"
    read -r ra ea <<<"$(load_rps "$r")"
    read -r rb eb <<<"$(load_rps "$n")"
    log "  regfs $(fmt_rps "$ra") ($ea failed), nginx $(fmt_rps "$rb") ($eb failed)"
    if ((ea > 0)); then
      # failed requests make the rate meaningless: show it, as a miss
      record "GET $what, ${WRK_CONNS} conns" "$(fmt_rps "$ra")" "nginx $(fmt_rps "$rb")" \
        "$ea failed" ">= 0.50x" 0
    else
      record_ratio "GET $what, ${WRK_CONNS} conns" "$ra" "$rb" 0.5 fmt_rps nginx
    fi
  done

  # 4. big layer PUT against dd into the storage directory, taking turns
  rss_phase put-big
  log "${LAYER_MIB} MiB layer PUT, dd conv=fsync and dd, each x $REPS"
  local id res sz t dirty max_dirty=0
  local -a dsync=() dnosync=()
  a=()
  for ((i = 0; i < REPS; i++)); do
    id=$(new_id)
    put_image_json "$id"
    sync
    dirty=$(dirty_kib)
    res=$(put_layer "$id" "$big")
    dirty=$(($(dirty_kib) - dirty))
    ((dirty > max_dirty)) && max_dirty=$dirty
    read -r sz t <<<"$res"
    [[ $sz == "$big_bytes" ]] || die "PUT layer uploaded $sz bytes, want $big_bytes"
    a+=("$(fdiv "$sz" "$t")")
    sync
    dsync+=("$(dd_write "$big" "$storage/dd-bench.tmp" 1)")
    sync
    dnosync+=("$(dd_write "$big" "$storage/dd-bench.tmp" 0)")
    sync
  done
  log "  regfs:            $(mibs_list "${a[@]}")"
  log "  dd conv=fsync:    $(mibs_list "${dsync[@]}")"
  log "  dd, no fsync:     $(mibs_list "${dnosync[@]}")"
  # If most of the upload was still dirty in the page cache right after the
  # PUT returned, regfs did not fsync and is held against a plain dd;
  # otherwise against dd conv=fsync.
  local baseline label mode=${BENCH_PUT_BASELINE:-auto}
  if [[ $mode == auto ]]; then
    if ((max_dirty * 1024 > big_bytes / 2)); then mode=nofsync; else mode=fsync; fi
    log "  at most $((max_dirty / 1024)) MiB more was dirty in the page cache right after a PUT returned"
  fi
  if [[ $mode == nofsync ]]; then
    baseline=$(median "${dnosync[@]}")
    label="dd"
    log "  baseline is dd without fsync (regfs does not sync the layer before answering)"
  else
    baseline=$(median "${dsync[@]}")
    label="dd+fsync"
    log "  baseline is dd conv=fsync (regfs syncs the layer before answering)"
  fi
  record_ratio "${LAYER_MIB} MiB layer PUT (median/$REPS)" \
    "$(median "${a[@]}")" "$baseline" 0.5 fmt_mibs "$label"

  # 5. memory
  rss_phase end
  sleep 0.2
  stop_pid "$RSS_SAMPLER_PID"
  local ph pk peak_phase=""
  peak_kib=0
  log "regfs peak RSS by phase (idle $((idle_kib / 1024)) MiB):"
  while read -r ph pk; do
    [[ $ph == end ]] && continue
    log "  $(printf '%-16s' "$ph") $((pk / 1024)) MiB"
    if ((pk > peak_kib)); then peak_kib=$pk; peak_phase=$ph; fi
  done < <(rss_phase_peaks)
  hwm_kib=$(rss_kib "$SERVER_PID" VmHWM)
  log "  $(printf '%-16s' VmHWM) $((hwm_kib / 1024)) MiB"
  if ((hwm_kib > peak_kib)); then peak_kib=$hwm_kib; peak_phase="VmHWM"; fi
  record "peak RSS over idle" "+$(((peak_kib - idle_kib) / 1024)) MiB" \
    "idle $((idle_kib / 1024)), peak $((peak_kib / 1024)) MiB ($peak_phase)" "-" "<= 64 MiB" \
    "$( ((peak_kib - idle_kib <= 64 * 1024)) && echo 1 || echo 0)"

  stop_pid "$SERVER_PID"
  stop_pid "$NGINX_PID"
  print_results "server: regfs against nginx $(nginx_version) and dd; loopback, $(nproc) cores, access logs $([[ $ACCESS_LOG == 1 ]] && echo on || echo off)"
}

# ---------------------------------------------------------------- section: mount

MOUNT_PID=""
MOUNT_DIR=""
MOUNT_STORAGE=""

MOUNT_ENV=() # extra VAR=value for the daemon's environment (a section may set it local)

# start_mount DIR [ARG...]: a fresh `regfs mount` of the running server at DIR,
# with ARGs added to its command line, in the background; returns once DIR shows
# up in /proc/self/mountinfo
start_mount() {
  local dir=$1 i
  shift
  local -a envs=("${MOUNT_ENV[@]}") registry=(--registry "$SERVER_URL")
  [[ $ACCESS_LOG == 1 ]] || envs+=(RUST_LOG=warn)
  is_mounted "$dir" && die "$dir is already mounted"
  if [[ ${1:-} == --embedded ]]; then
    # the mount's own registry, over the storage the server uses (read only here)
    shift
    registry=(--storage "$MOUNT_STORAGE" --listen 127.0.0.1:0
      --admin-user "$ADMIN_USER" --admin-password "$ADMIN_PASS")
  fi
  env "${envs[@]}" "$BIN" mount "$dir" "${registry[@]}" \
    --cache-size "$((MOUNT_CACHE_MIB * 1048576))" "$@" >"$WORK/mount.out" 2>>"$WORK/mount.err" &
  MOUNT_PID=$!
  MOUNT_DIR=$dir
  track_pid "$MOUNT_PID"
  [[ " ${CLEANUP_MOUNTS[*]} " == *" $dir "* ]] || CLEANUP_MOUNTS+=("$dir")
  for ((i = 0; i < 1000; i++)); do
    is_mounted "$dir" && return 0
    alive "$MOUNT_PID" || break
    sleep 0.01
  done
  die "regfs mount did not mount $dir"
}

# stop_mount: fusermount3 -u, then wait for the daemon to exit by itself
stop_mount() {
  local pid=$MOUNT_PID dir=$MOUNT_DIR rc=0 i
  [[ -n $pid ]] || return 0
  alive "$pid" || die "regfs mount (pid $pid) died while mounted"
  fusermount3 -u "$dir" 2>>"$WORK/mount.err" || log "WARNING: fusermount3 -u $dir failed"
  for ((i = 0; i < 500; i++)); do alive "$pid" || break; sleep 0.01; done
  MOUNT_PID=""
  if alive "$pid"; then
    log "WARNING: regfs mount (pid $pid) still running 5 s after the unmount; stopping it"
    stop_pid "$pid"
  else
    untrack_pid "$pid"
    wait "$pid" 2>/dev/null || rc=$?
    ((rc == 0)) || log "WARNING: regfs mount exited with status $rc after fusermount3 -u"
  fi
  if is_mounted "$dir"; then
    log "WARNING: $dir still mounted after the daemon exited; detaching it"
    fusermount3 -u -z "$dir" 2>/dev/null || umount -l "$dir" 2>/dev/null || true
  fi
}

# mount_err_summary: the daemon's most frequent stderr lines over the section, as the file
# goes with the scratch dir and at RUST_LOG=warn any line in it is worth a look
mount_err_summary() {
  local n
  n=$(grep -c . "$WORK/mount.err" || true)
  if ((n > 0)); then
    log "regfs mount wrote $n lines to stderr over the section (RUST_LOG=warn), by count:"
    # without colours and timestamps
    sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^[0-9TZ:.-]* *//' "$WORK/mount.err" | sort | uniq -c |
      sort -rn | head -n 5 >&2
  fi
}

DROP_CACHES="" # "yes" once dropping the page cache worked, "no" when it cannot
drop_caches() {
  sync
  [[ $DROP_CACHES == no ]] && return 0
  if { [[ $(id -u) == 0 ]] && echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null ||
    { command -v sudo >/dev/null && sudo -n sh -c 'echo 3 > /proc/sys/vm/drop_caches'; } 2>/dev/null; then
    DROP_CACHES=yes
  else
    log "WARNING: cannot drop the page cache (needs root or sudo -n); cold runs are cold in the daemon and the mount only"
    DROP_CACHES=no
  fi
}

# cold ID...: drop the page cache, then read back the files of these images in
# the server's storage dir, and the programs the timed commands run, so that the
# mount and curl start from the same state: the server's copy in memory, nothing
# cached on the client side
cold() {
  local id
  drop_caches
  for id; do cat "$MOUNT_STORAGE/images/$id/"* >/dev/null; done
  cat "$BIN" >/dev/null
  head -c 0 /dev/null
  ls -l /dev/null >/dev/null
  curl -s -o /dev/null file:///dev/null || true
}

# first_byte FILE: open FILE, read one byte and close it, timed inside the reading process
# (python3; without it, the whole `head -c 1`); sets CMD_S
FIRST_BYTE_WARNED=0
first_byte() {
  if ! command -v python3 >/dev/null; then
    if [[ $FIRST_BYTE_WARNED == 0 ]]; then
      log "  no python3: the judged first byte is the whole head -c 1, start-up included"
      FIRST_BYTE_WARNED=1
    fi
    time_cmd head -c 1 "$1"
    return
  fi
  CMD_S=$(python3 -c 'import os, sys, time
t = time.perf_counter()
fd = os.open(sys.argv[1], os.O_RDONLY)
os.read(fd, 1)
os.close(fd)
print(f"{time.perf_counter() - t:.6f}")' "$1") || die "first byte of $1 failed"
}

# time_cmd CMD...: run CMD with stdout to /dev/null; sets CMD_S to its wall time
CMD_S=""
time_cmd() {
  local t0 t1
  t0=$EPOCHREALTIME
  "$@" >/dev/null || die "$* failed"
  t1=$EPOCHREALTIME
  CMD_S=$(elapsed_s "$t0" "$t1")
}

# par_cat FILE...: one cat per file, all at once; sets CMD_S to the wall time
par_cat() {
  local f pid t0 t1 bad=0
  local -a pids=()
  t0=$EPOCHREALTIME
  for f; do
    cat "$f" >/dev/null &
    pids+=($!)
    track_pid "$!"
  done
  for pid in "${pids[@]}"; do wait "$pid" || bad=$((bad + 1)); done
  t1=$EPOCHREALTIME
  for pid in "${pids[@]}"; do untrack_pid "$pid"; done
  ((bad == 0)) || die "$bad of $# parallel cats failed"
  CMD_S=$(elapsed_s "$t0" "$t1")
}

# curl_timing URL VAR -> prints curl's -w variable VAR (seconds) for one GET, which must be 200
curl_timing() {
  local url=$1 var=$2 out code t
  out=$(curl -sS -o /dev/null -w "%{http_code} %{$var}" "$url") || die "GET $url: curl failed"
  read -r code t <<<"$out"
  [[ $code == 200 ]] || die "GET $url: HTTP $code"
  echo "$t"
}

# push_tags REPO N ID: N tags t00000.. on REPO, all for image ID, from one curl
# process (8 keep-alive transfers at a time)
push_tags() {
  local REPO=$1 n=$2 id=$3 i ok cfg="$WORK/tags.curl" # REPO: read by create_repo
  create_repo
  for ((i = 0; i < n; i++)); do
    printf 'url = "%s/v1/repositories/%s/tags/t%05d"\noutput = "/dev/null"\n' "$SERVER_URL" "$REPO" "$i"
  done >"$cfg"
  ok=$(curl -sS --no-progress-meter -u "$ADMIN_USER:$ADMIN_PASS" -X PUT \
    -H 'Content-Type: application/json' --data-binary "\"$id\"" -w '%{http_code}\n' \
    --parallel --parallel-max 8 --config "$cfg" | grep -c '^200$') || true
  ((ok == n)) || die "only $ok of $n tag PUTs answered 200"
}

# record a figure against a "<= FACTOR x baseline + SLACK" goal (lower is better)
record_max() { # name regfs_val baseline_val factor slack fmtfn baseline_label target_text
  local val=$2 base=$3 ok
  ok=$(awk -v a="$val" -v b="$base" -v f="$4" -v s="$5" 'BEGIN{ print (a <= f * b + s) ? 1 : 0 }')
  record "$1" "$($6 "$val")" "$7 $($6 "$base")" \
    "$(awk -v r="$(fdiv "$val" "$base")" 'BEGIN{ printf "%.2fx", r }')" "$8" "$ok"
}

ms_list() { local v; for v in "$@"; do printf '%s  ' "$(fmt_ms "$v")"; done; }

# reread_pair MOUNTED LOCAL BYTES: reads both once, then REPS timed cats of each in turn,
# appending their rates to the caller's arrays a (mounted) and b (local)
reread_pair() {
  local i
  cat "$1" >/dev/null
  cat "$2" >/dev/null
  for ((i = 0; i < REPS; i++)); do
    time_cmd cat "$1"
    a+=("$(fdiv "$3" "$CMD_S")")
    time_cmd cat "$2"
    b+=("$(fdiv "$3" "$CMD_S")")
  done
}

section_mount() {
  local data="$WORK/mount-data" storage="$WORK/mount-storage" mnt src bytes total
  local tag_repo=library/tagbench tags_dir tags_url i k n hwm h idle
  local -a ids=() urls=() files=() a=() b=() c=() hwms=()
  [[ -c /dev/fuse ]] || die "/dev/fuse is missing: the mount section needs FUSE"
  command -v fusermount3 >/dev/null || die "fusermount3 not found (package fuse3)"
  mkdir -p "$data" "$WORK/mnt"
  mnt=$(cd "$WORK/mnt" && pwd -P)
  MOUNT_STORAGE=$storage
  : >"$WORK/mount.err"

  src="$data/layer"
  log "generating ${LAYER_MIB} MiB test layer"
  head -c "$((LAYER_MIB * 1048576))" /dev/urandom >"$src"
  bytes=$(stat -c %s "$src")
  total=$((MOUNT_READERS * bytes))

  start_server "$storage"
  log "pushing $MOUNT_READERS images with ${LAYER_MIB} MiB layers, and $MOUNT_TAGS tags on $tag_repo"
  create_repo
  for ((k = 0; k < MOUNT_READERS; k++)); do
    ids+=("$(new_id)")
    push_image "${ids[k]}" "$src" "layer$k"
    urls+=("$SERVER_URL/v1/images/${ids[k]}/layer")
    files+=("$mnt/images/${ids[k]}/layer")
    # the storage layout is in src/storage/keys.rs
    [[ -f $storage/images/${ids[k]}/layer ]] ||
      die "no $storage/images/${ids[k]}/layer: has the storage layout changed?"
  done
  push_tags "$tag_repo" "$MOUNT_TAGS" "${ids[0]}"
  tags_dir="$mnt/repositories/$tag_repo/tags"
  tags_url="$SERVER_URL/v1/repositories/$tag_repo/tags"

  log "checking a layer and the tags through the mount"
  start_mount "$mnt"
  idle=$(rss_kib "$MOUNT_PID" VmRSS)
  cmp -s "${files[0]}" "$src" || die "the layer read through the mount differs from the one pushed"
  n=$(find "$tags_dir" -mindepth 1 -maxdepth 1 -printf '.' | wc -c)
  ((n == MOUNT_TAGS)) || die "the mount lists $n tags in $tags_dir, want $MOUNT_TAGS"
  log "  regfs mount RSS $((idle / 1024)) MiB at start, $(($(rss_kib "$MOUNT_PID" VmHWM) / 1024)) MiB peak after the check"
  stop_mount

  # 1. one sequential reader, cold, against curl
  log "1: ${LAYER_MIB} MiB cat through a fresh mount, then curl, both cold, x $REPS"
  a=() b=() hwm=0
  for ((i = 0; i < REPS; i++)); do
    start_mount "$mnt"
    cold "${ids[0]}"
    time_cmd cat "${files[0]}"
    a+=("$(fdiv "$bytes" "$CMD_S")")
    h=$(rss_kib "$MOUNT_PID" VmHWM)
    ((h > hwm)) && hwm=$h
    stop_mount
    cold "${ids[0]}"
    b+=("$(get_once "${urls[0]}" "$bytes")")
  done
  log "  mount: $(mibs_list "${a[@]}")"
  log "  curl:  $(mibs_list "${b[@]}")"
  log "  daemon peak RSS $((hwm / 1024)) MiB"
  record_ratio "${LAYER_MIB} MiB cat, cold (median/$REPS)" \
    "$(median "${a[@]}")" "$(median "${b[@]}")" 0.9 fmt_mibs curl

  # 1b. the same through the embedded default (`regfs mount DIR --storage`), whose layer opens
  # hand the kernel the stored file where it allows passthrough
  log "1b: ${LAYER_MIB} MiB cat through a fresh embedded mount of the same storage, then curl, both cold, x $REPS"
  a=() b=()
  for ((i = 0; i < REPS; i++)); do
    start_mount "$mnt" --embedded
    cold "${ids[0]}"
    time_cmd cat "${files[0]}"
    a+=("$(fdiv "$bytes" "$CMD_S")")
    stop_mount
    cold "${ids[0]}"
    b+=("$(get_once "${urls[0]}" "$bytes")")
  done
  start_mount "$mnt" --embedded
  cmp -s "${files[0]}" "$src" || die "the layer read through the embedded mount differs from the one pushed"
  stop_mount
  log "  embedded mount: $(mibs_list "${a[@]}")"
  log "  curl:           $(mibs_list "${b[@]}")"
  record_ratio "${LAYER_MIB} MiB cat, cold, embedded" \
    "$(median "${a[@]}")" "$(median "${b[@]}")" 0.9 fmt_mibs curl

  # 2. parallel readers of different layers, and 6. the daemon's peak RSS meanwhile
  log "2: $MOUNT_READERS cats of $MOUNT_READERS ${LAYER_MIB} MiB layers at once, then $MOUNT_READERS curls, both cold, x $REPS"
  a=() b=() hwms=()
  for ((i = 0; i < REPS; i++)); do
    start_mount "$mnt"
    cold "${ids[@]}"
    par_cat "${files[@]}"
    a+=("$(fdiv "$total" "$CMD_S")")
    hwms+=("$(rss_kib "$MOUNT_PID" VmHWM)")
    stop_mount
    cold "${ids[@]}"
    b+=("$(get_parallel "$bytes" "${urls[@]}")")
  done
  log "  mount: $(mibs_list "${a[@]}")"
  log "  curl:  $(mibs_list "${b[@]}")"
  log "  daemon VmHWM per run: $(for h in "${hwms[@]}"; do printf '%s MiB  ' "$((h / 1024))"; done)"
  record_ratio "${MOUNT_READERS}x ${LAYER_MIB} MiB cat at once, aggr." \
    "$(median "${a[@]}")" "$(median "${b[@]}")" 0.9 fmt_mibs "${MOUNT_READERS} curls"
  hwm=$(printf '%s\n' "${hwms[@]}" | sort -n | tail -n 1)

  # 3. re-read with the layer in the kernel's page cache, against a local file. The local
  # file is a cp of the source: a file written in large writes (as cp and the disk cache
  # write) reads back faster from the page cache than one written by head, so it is the
  # harder baseline.
  local copy="$data/layer.copy" cache_dir="$WORK/mount-cache"
  cp "$src" "$copy"
  log "3: ${LAYER_MIB} MiB re-read from the page cache, through the mount and of a local file, x $REPS"
  a=() b=()
  start_mount "$mnt"
  reread_pair "${files[0]}" "$copy" "$bytes"
  stop_mount
  log "  mount:      $(mibs_list "${a[@]}")"
  log "  local file: $(mibs_list "${b[@]}")"
  record_ratio "${LAYER_MIB} MiB cached re-read (median/$REPS)" \
    "$(median "${a[@]}")" "$(median "${b[@]}")" 0.9 fmt_mibs "local file"

  # 3b. the same with --cache-dir: a layer read whole is kept as one file on disk, and a
  # mount opens it by FUSE passthrough where the kernel allows, so reads bypass the daemon
  log "3b: ${LAYER_MIB} MiB re-read with --cache-dir (passthrough), and of a local file, x $REPS"
  a=() b=()
  rm -rf "$cache_dir"
  start_mount "$mnt" --cache-dir "$cache_dir" --cache-dir-size "$((4 * bytes))"
  cat "${files[0]}" >/dev/null
  for ((k = 0; k < 300; k++)); do
    find "$cache_dir" -path "*/${ids[0]}/layer" -size "${bytes}c" 2>/dev/null | grep -q . && break
    sleep 0.1
  done
  stop_mount
  start_mount "$mnt" --cache-dir "$cache_dir" --cache-dir-size "$((4 * bytes))"
  reread_pair "${files[0]}" "$copy" "$bytes"
  cmp -s "${files[0]}" "$src" || die "the layer read back from --cache-dir differs from the one pushed"
  stop_mount
  rm -rf "$cache_dir" "$copy"
  log "  mount:      $(mibs_list "${a[@]}")"
  log "  local file: $(mibs_list "${b[@]}")"
  record_ratio "${LAYER_MIB} MiB cached re-read, --cache-dir" \
    "$(median "${a[@]}")" "$(median "${b[@]}")" 0.9 fmt_mibs "local file"

  # 4. time to first byte, on a fresh mount each time: what `head -c 1` does (open, read one
  # byte, close) timed inside the reading process, against curl's time_starttransfer, which
  # likewise leaves out the start-up of its process. The whole `head -c 1` command is timed
  # too and shown, with what starting `head` costs here.
  log "4: first byte of a cold layer on a fresh mount (in-process, and the whole head -c 1), then curl time_starttransfer, x $MOUNT_FAST_REPS"
  a=() b=() c=()
  for ((i = 0; i < MOUNT_FAST_REPS; i++)); do
    start_mount "$mnt"
    cold "${ids[0]}"
    first_byte "${files[0]}"
    a+=("$CMD_S")
    stop_mount
    start_mount "$mnt"
    cold "${ids[0]}"
    time_cmd head -c 1 "${files[0]}"
    c+=("$CMD_S")
    stop_mount
    cold "${ids[0]}"
    b+=("$(curl_timing "${urls[0]}" time_starttransfer)")
  done
  log "  mount:           $(ms_list "${a[@]}")"
  log "  mount, head -c 1: $(ms_list "${c[@]}") (median $(fmt_ms "$(median "${c[@]}")"))"
  log "  curl:            $(ms_list "${b[@]}")"
  c=()
  for ((i = 0; i < 5; i++)); do time_cmd head -c 1 "$src"; c+=("$CMD_S"); done
  log "  (for scale: head -c 1 of a local file takes $(fmt_ms "$(median "${c[@]}")") here)"
  record_max "first byte, cold (median/$MOUNT_FAST_REPS)" \
    "$(median "${a[@]}")" "$(median "${b[@]}")" 1.5 0.001 fmt_ms curl "<=1.5x+1ms"

  # 5. ls -l of a big tags dir on a fresh mount, against the tags API call; the
  # server has answered that call once before, so its own caches are warm for both
  log "5: ls -l of $MOUNT_TAGS tags on a fresh mount (and again after the 1 s TTL), then curl, x $MOUNT_FAST_REPS"
  curl_timing "$tags_url" time_total >/dev/null
  a=() b=() c=()
  for ((i = 0; i < MOUNT_FAST_REPS; i++)); do
    start_mount "$mnt"
    time_cmd ls -l "$tags_dir"
    a+=("$CMD_S")
    sleep 1.1
    time_cmd ls -l "$tags_dir"
    c+=("$CMD_S")
    stop_mount
    b+=("$(curl_timing "$tags_url" time_total)")
  done
  log "  mount, fresh:     $(ms_list "${a[@]}")"
  log "  mount, after TTL: $(ms_list "${c[@]}") (median $(fmt_ms "$(median "${c[@]}")"))"
  log "  curl:             $(ms_list "${b[@]}")"
  mkdir "$data/tags"
  (cd "$data/tags" && for ((i = 0; i < MOUNT_TAGS; i++)); do printf '%s\n' "${ids[0]}" >"t$i"; done)
  c=()
  for ((i = 0; i < 5; i++)); do time_cmd ls -l "$data/tags"; c+=("$CMD_S"); done
  log "  (for scale: ls -l of a local dir of $MOUNT_TAGS files takes $(fmt_ms "$(median "${c[@]}")") here)"
  record_max "ls -l $MOUNT_TAGS tags, cold (median/$MOUNT_FAST_REPS)" \
    "$(median "${a[@]}")" "$(median "${b[@]}")" 2 0 fmt_ms "curl tags API" "<= 2.00x"

  # 6. from test 2
  record "daemon peak RSS, ${MOUNT_READERS} readers" "$((hwm / 1024)) MiB" \
    "--cache-size $MOUNT_CACHE_MIB MiB" "-" "<= $((MOUNT_CACHE_MIB + 64)) MiB" \
    "$( ((hwm <= (MOUNT_CACHE_MIB + 64) * 1024)) && echo 1 || echo 0)"

  mount_err_summary
  stop_pid "$SERVER_PID"
  rm -rf "$data" "$storage"
  print_results "mount: regfs mount (--cache-size $MOUNT_CACHE_MIB MiB) against curl and local reads; loopback, $(nproc) cores, page cache $([[ $DROP_CACHES == yes ]] && echo dropped || echo kept) for cold runs"
}

# ---------------------------------------------------------------- section: mount-write

fmt_s() { awk -v x="$1" 'BEGIN{ printf "%.2f s", x }'; }
s_list() { local v; for v in "$@"; do printf '%s  ' "$(fmt_s "$v")"; done; }

# image_complete ID BYTES: the server serves image ID (json answers 200) with a
# layer of BYTES bytes (X-Docker-Size); prints what is wrong, if anything
image_complete() {
  local code size
  code=$(curl -sS -o /dev/null -D "$WORK/mw.hdr" -w '%{http_code}' \
    "$SERVER_URL/v1/images/$1/json") || { echo "GET json: curl failed"; return 1; }
  [[ $code == 200 ]] || { echo "GET json: HTTP $code"; return 1; }
  size=$(awk 'tolower($1) == "x-docker-size:" { sub(/\r$/, "", $2); print $2 }' "$WORK/mw.hdr")
  [[ $size == "$2" ]] || { echo "X-Docker-Size $size, want $2"; return 1; }
}

# check_pushed ID BYTES HOW: dies unless image ID is complete with BYTES of layer
check_pushed() {
  local why
  why=$(image_complete "$1" "$2") ||
    die "image $1 pushed $3 is not complete on the server ($why); mount stderr: $(tail -n 3 "$WORK/mount.err" | tr '\n' ' ')"
}

# check_layer_bytes ID FILE: GET /v1/images/ID/layer returns FILE's bytes
check_layer_bytes() {
  curl -fsS "$SERVER_URL/v1/images/$1/layer" | cmp -s - "$2" ||
    die "GET /v1/images/$1/layer differs from the file pushed"
}

# drop_image STORAGE ID: delete a verified image from the server's storage dir
# (images are immutable through the API; the server keeps no index of them)
drop_image() {
  [[ -d $1/images/$2 ]] || die "no $1/images/$2: has the storage layout changed?"
  rm -rf "${1:?}/images/$2"
}

# count_tags REPO: tags the API lists for REPO
count_tags() {
  curl -fsS "$SERVER_URL/v1/repositories/$1/tags" | grep -o '"[^"]*" *:' | wc -l
}

# reset_hwm PID: set VmHWM back to the current RSS (0 when that worked)
reset_hwm() { { echo 5 >"/proc/$1/clear_refs"; } 2>/dev/null; }

section_mount_write() {
  local data="$WORK/mw-data" storage="$WORK/mw-storage" spool="$WORK/mw-spool"
  local mnt src small bytes id json sum sz t t0 t1 tm i r n sfx ok dir
  local idle hwm over max_over=0 max_idle=0 max_hwm=0 hwm_how tag_id
  local -a creds=(--user "$ADMIN_USER" --password "$ADMIN_PASS")
  local -a base=() first=() last=() last_cp=() last_json=() last_hwm=()
  local -a tm_mount=() tm_loop=() tm_ka=()
  # the daemon spools a layer written before its json to an unnamed file in TMPDIR
  local -a MOUNT_ENV=("TMPDIR=$spool")
  [[ -c /dev/fuse ]] || die "/dev/fuse is missing: the mount-write section needs FUSE"
  command -v fusermount3 >/dev/null || die "fusermount3 not found (package fuse3)"
  mkdir -p "$data" "$spool" "$WORK/mnt"
  mnt=$(cd "$WORK/mnt" && pwd -P)
  MOUNT_STORAGE=$storage
  : >"$WORK/mount.err"

  src="$data/layer.bin"
  log "generating ${LAYER_MIB} MiB test layer"
  head -c "$((LAYER_MIB * 1048576))" /dev/urandom >"$src"
  bytes=$(stat -c %s "$src")
  start_server "$storage"

  # 1, 2 and 4: per run, curl, then a fresh mount doing json-first, then json-last
  log "1, 2, 4: ${LAYER_MIB} MiB pushes: curl PUT layer + checksum, then cp json-first and cp layer-first through a fresh mount, x $MOUNT_WRITE_REPS"
  hwm_how="reset before each cp (clear_refs)"
  for ((r = 0; r < MOUNT_WRITE_REPS; r++)); do
    # baseline: PUT json and the checksum computation untimed; PUT layer, PUT checksum timed
    id=$(new_id)
    json="{\"id\":\"$id\"}"
    sum=$({ printf '%s\n' "$json"; cat "$src"; } | sha256sum | cut -c1-64)
    put_image_json "$id"
    sync
    t0=$EPOCHREALTIME
    put_layer "$id" "$src" >"$WORK/mw.put"
    api PUT "/v1/images/$id/checksum" -H "X-Docker-Checksum-Payload: sha256:$sum" \
      -H 'Content-Length: 0'
    t1=$EPOCHREALTIME
    read -r sz t <"$WORK/mw.put"
    [[ $sz == "$bytes" ]] || die "curl PUT layer uploaded $sz bytes, want $bytes"
    base+=("$(fdiv "$bytes" "$(elapsed_s "$t0" "$t1")")")
    check_pushed "$id" "$bytes" "with curl"
    drop_image "$storage" "$id"

    # json first: mkdir, json (untimed), then the timed cp, whose close completes the push
    start_mount "$mnt" "${creds[@]}"
    [[ -d $mnt/images ]] || die "no images/ in the mount"
    sleep 0.3
    idle=$(rss_kib "$MOUNT_PID" VmRSS)
    id=$(new_id)
    json="{\"id\":\"$id\"}"
    mkdir "$mnt/images/$id" || die "mkdir images/$id through the mount failed"
    printf '%s' "$json" >"$mnt/images/$id/json" || die "writing images/$id/json failed"
    sync
    reset_hwm "$MOUNT_PID" || hwm_how="since the mount started (clear_refs not permitted)"
    time_cmd cp "$src" "$mnt/images/$id/layer"
    first+=("$(fdiv "$bytes" "$CMD_S")")
    hwm=$(rss_kib "$MOUNT_PID" VmHWM)
    over=$((hwm - idle))
    if ((over > max_over)); then max_over=$over; max_idle=$idle; max_hwm=$hwm; fi
    check_pushed "$id" "$bytes" "json first"
    ((r == 0)) && check_layer_bytes "$id" "$src"
    drop_image "$storage" "$id"

    # layer first (spooled), then the json, whose close completes the push; timed
    # from the start of the cp to the end of the json write. A shell ignores
    # errors from close, so the push is checked through the API afterwards.
    id=$(new_id)
    json="{\"id\":\"$id\"}"
    mkdir "$mnt/images/$id" || die "mkdir images/$id through the mount failed"
    sync
    reset_hwm "$MOUNT_PID" || true
    t0=$EPOCHREALTIME
    cp "$src" "$mnt/images/$id/layer" || die "cp of the layer (json last) failed"
    tm=$EPOCHREALTIME
    printf '%s' "$json" >"$mnt/images/$id/json" || die "writing images/$id/json (json last) failed"
    t1=$EPOCHREALTIME
    last+=("$(fdiv "$bytes" "$(elapsed_s "$t0" "$t1")")")
    last_cp+=("$(elapsed_s "$t0" "$tm")")
    last_json+=("$(elapsed_s "$tm" "$t1")")
    last_hwm+=("$(($(rss_kib "$MOUNT_PID" VmHWM) / 1024))")
    stop_mount
    check_pushed "$id" "$bytes" "json last"
    ((r == 0)) && check_layer_bytes "$id" "$src"
    drop_image "$storage" "$id"
    log "  run $((r + 1)): curl $(fmt_mibs "${base[r]}"), json first $(fmt_mibs "${first[r]}"), json last $(fmt_mibs "${last[r]}"); daemon +$((over / 1024)) MiB"
  done
  log "  curl PUT+checksum: $(mibs_list "${base[@]}")"
  log "  cp, json first:    $(mibs_list "${first[@]}")"
  log "  cp, json last:     $(mibs_list "${last[@]}")"
  log "    of which the cp (spooling): $(s_list "${last_cp[@]}")"
  log "    and the json write (upload): $(s_list "${last_json[@]}")"
  log "  daemon VmHWM during json-last runs: $(printf '%s MiB  ' "${last_hwm[@]}")"
  log "  daemon VmHWM $hwm_how; idle RSS measured on each fresh mount"
  record_ratio "cp ${LAYER_MIB} MiB, json first (median/$MOUNT_WRITE_REPS)" \
    "$(median "${first[@]}")" "$(median "${base[@]}")" 0.8 fmt_mibs "curl PUT+checksum"
  record_ratio "cp ${LAYER_MIB} MiB, json last (median/$MOUNT_WRITE_REPS)" \
    "$(median "${last[@]}")" "$(median "${base[@]}")" 0.5 fmt_mibs "curl PUT+checksum"

  # 3. tags: a shell loop through the mount, a loop of curls, one keep-alive curl
  log "3: $MOUNT_TAGS tags by a shell loop through the mount, a curl per tag, one keep-alive curl, x $MOUNT_TAG_REPS"
  small="$data/small.layer"
  head -c 4096 /dev/urandom >"$small"
  tag_id=$(new_id)
  put_image_json "$tag_id"
  put_layer "$tag_id" "$small" >/dev/null
  put_checksum "$tag_id" "$small"
  for ((r = 0; r < MOUNT_TAG_REPS; r++)); do
    sfx=""
    ((r == 0)) || sfx="-$r"
    # through the mount; mkdir -p (untimed) creates the repository
    start_mount "$mnt" "${creds[@]}"
    mkdir -p "$mnt/repositories/library/tagbench$sfx" || die "mkdir -p of a repository failed"
    dir="$mnt/repositories/library/tagbench$sfx/tags"
    n=0
    t0=$EPOCHREALTIME
    for i in $(seq "$MOUNT_TAGS"); do echo "$tag_id" >"$dir/t$i" || n=$((n + 1)); done 2>>"$WORK/mw-tags.err"
    t1=$EPOCHREALTIME
    tm_mount+=("$(elapsed_s "$t0" "$t1")")
    stop_mount
    ((n == 0)) || die "$n of $MOUNT_TAGS tag writes through the mount failed: $(head -n 2 "$WORK/mw-tags.err")"

    # one curl process per tag (the repository created first, untimed)
    api PUT "/v1/repositories/library/tagbench2$sfx/" -H 'Content-Type: application/json' --data-binary '[]'
    t0=$EPOCHREALTIME
    for i in $(seq "$MOUNT_TAGS"); do
      curl -s -o /dev/null -w '%{http_code}\n' -u "$ADMIN_USER:$ADMIN_PASS" -X PUT -d "\"$tag_id\"" \
        "$SERVER_URL/v1/repositories/library/tagbench2$sfx/tags/t$i"
    done >"$WORK/mw.codes"
    t1=$EPOCHREALTIME
    tm_loop+=("$(elapsed_s "$t0" "$t1")")
    ok=$(grep -c '^200$' "$WORK/mw.codes") || true
    ((ok == MOUNT_TAGS)) || die "only $ok of $MOUNT_TAGS curl tag PUTs answered 200"

    # one curl process, one keep-alive connection, the same PUTs one after another
    api PUT "/v1/repositories/library/tagbench3$sfx/" -H 'Content-Type: application/json' --data-binary '[]'
    for i in $(seq "$MOUNT_TAGS"); do
      printf 'url = "%s/v1/repositories/library/tagbench3%s/tags/t%s"\noutput = "/dev/null"\n' \
        "$SERVER_URL" "$sfx" "$i"
    done >"$WORK/mw-tags.curl"
    t0=$EPOCHREALTIME
    curl -s -w '%{http_code}\n' -u "$ADMIN_USER:$ADMIN_PASS" -X PUT -d "\"$tag_id\"" \
      --config "$WORK/mw-tags.curl" >"$WORK/mw.codes" || true
    t1=$EPOCHREALTIME
    tm_ka+=("$(elapsed_s "$t0" "$t1")")
    ok=$(grep -c '^200$' "$WORK/mw.codes") || true
    ((ok == MOUNT_TAGS)) || die "only $ok of $MOUNT_TAGS keep-alive curl tag PUTs answered 200"

    for n in "tagbench$sfx" "tagbench2$sfx" "tagbench3$sfx"; do
      i=$(count_tags "library/$n") || die "GET tags of library/$n failed"
      ((i == MOUNT_TAGS)) || die "library/$n has $i tags, want $MOUNT_TAGS"
    done
  done
  log "  shell loop, mount:   $(s_list "${tm_mount[@]}")"
  log "  curl per tag:        $(s_list "${tm_loop[@]}")"
  log "  one keep-alive curl: $(s_list "${tm_ka[@]}")"
  log "  the API lists $MOUNT_TAGS tags in each of the $((3 * MOUNT_TAG_REPS)) repositories"
  record_max "$MOUNT_TAGS tags, shell loop (median/$MOUNT_TAG_REPS)" \
    "$(median "${tm_mount[@]}")" "$(median "${tm_loop[@]}")" 2 0 fmt_s "curl per tag" "<= 2.00x"
  # for scale, no target
  t=$(median "${tm_mount[@]}")
  tm=$(median "${tm_ka[@]}")
  record "$MOUNT_TAGS tags, vs one keep-alive curl" "$(fmt_s "$t")" "1 curl --config $(fmt_s "$tm")" \
    "$(awk -v r="$(fdiv "$t" "$tm")" 'BEGIN{ printf "%.2fx", r }')" "-" -

  # 4. from the json-first runs
  record "daemon peak RSS over idle, cp" "+$((max_over / 1024)) MiB" \
    "idle $((max_idle / 1024)), VmHWM $((max_hwm / 1024)) MiB" "-" "<= 64 MiB" \
    "$( ((max_over <= 64 * 1024)) && echo 1 || echo 0)"

  mount_err_summary
  stop_pid "$SERVER_PID"
  rm -rf "$data" "$storage" "$spool"
  print_results "mount-write: regfs mount pushes against curl to the server; loopback, $(nproc) cores"
}

# ---------------------------------------------------------------- section: mount-outage

# The times that the tests only assert as behaviour (tests/fs.rs, the outage test): with the
# registry gone, a layer read before is read again from the mount's caches, and a path never
# looked at fails within --timeout (a refused connection is retried with backoff until the next
# retry would pass the timeout, so this is under it).
section_mount_outage() {
  local storage="$WORK/outage-storage" src="$WORK/outage-layer" mnt id timeout=2 t0 t1 i
  local reps=$MOUNT_FAST_REPS cached_s failed_s
  local -a cached=() failed=()
  [[ -c /dev/fuse ]] || die "/dev/fuse is missing: the mount-outage section needs FUSE"
  command -v fusermount3 >/dev/null || die "fusermount3 not found (package fuse3)"
  mkdir -p "$WORK/outage-mnt"
  mnt=$(cd "$WORK/outage-mnt" && pwd -P)
  MOUNT_STORAGE=$storage
  : >"$WORK/mount.err"
  head -c 4194304 /dev/urandom >"$src"
  start_server "$storage"
  create_repo
  id=$(new_id)
  push_image "$id" "$src" outage
  start_mount "$mnt" --timeout "$timeout"
  cmp -s "$mnt/images/$id/layer" "$src" || die "the layer read through the mount differs"
  stop_pid "$SERVER_PID"
  SERVER_PID=""
  log "registry stopped; $reps cached reads and $reps lookups of unknown images"
  for ((i = 0; i < reps; i++)); do
    time_cmd cat "$mnt/images/$id/layer"
    cached+=("$CMD_S")
    t0=$EPOCHREALTIME
    ! stat "$mnt/images/$(new_id)" >/dev/null 2>&1 || die "an unknown image was found"
    t1=$EPOCHREALTIME
    failed+=("$(elapsed_s "$t0" "$t1")")
  done
  log "  cached re-reads: $(ms_list "${cached[@]}")"
  log "  failed lookups:  $(ms_list "${failed[@]}")"
  stop_mount
  rm -rf "$storage" "$src"
  cached_s=$(median "${cached[@]}")
  failed_s=$(median "${failed[@]}")
  record "4 MiB cached re-read (median/$reps)" "$(fmt_ms "$cached_s")" "-" "-" "<= 50 ms" \
    "$(awk -v a="$cached_s" 'BEGIN{ print (a <= 0.05) ? 1 : 0 }')"
  record "unknown image, EIO (median/$reps)" "$(fmt_ms "$failed_s")" "--timeout ${timeout} s" "-" \
    "<= $((timeout + 1)) s" \
    "$(awk -v a="$failed_s" -v t="$timeout" 'BEGIN{ print (a <= t + 1) ? 1 : 0 }')"
  print_results "mount-outage: regfs mount --timeout ${timeout} s with its registry stopped"
}

# ---------------------------------------------------------------- main

main() {
  local -a sections=()
  if (($# > 0)); then
    case $1 in
      -h | --help) sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
      --list) printf '%s\n' "${ALL_SECTIONS[@]}"; exit 0 ;;
      # S3 storage against direct transfers: its own script and store (see its header)
      s3) exec "$ROOT/scripts/bench-s3.sh" ;;
    esac
    sections=("$@")
  elif [[ -n ${BENCH_SECTIONS:-} ]]; then
    read -r -a sections <<<"${BENCH_SECTIONS//,/ }"
  else
    sections=("${ALL_SECTIONS[@]}")
  fi
  local s known
  for s in "${sections[@]}"; do
    known=0
    for k in "${ALL_SECTIONS[@]}"; do [[ $s == "$k" ]] && known=1; done
    ((known)) || die "unknown section '$s' (known: ${ALL_SECTIONS[*]})"
    [[ $s == mount* ]] && NEED_FUSE=1
  done

  need_tools
  find_nginx
  build
  make_workdir

  local start=$SECONDS
  for s in "${sections[@]}"; do
    log "section $s"
    check_quiet
    "section_${s//-/_}"
  done
  finish "$start"
}

main "$@"
