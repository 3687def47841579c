#!/usr/bin/env bash
# S3 benchmarks for regfs: layer transfers through `regfs serve --storage s3://...` against the
# same transfers straight to the object store, on loopback, in one run.
#
# Usage:
#   scripts/bench-s3.sh              # or: scripts/bench.sh s3
#
# Figures (median of BENCH_REPS runs; runs take turns, regfs and baseline alternately first):
#   layer PUT       curl -T of the layer + PUT checksum to regfs (the json is PUT untimed,
#                   the checksum computed untimed) vs `aws s3 cp FILE s3://...` (multipart,
#                   awscli's defaults)                                          >= 0.8x
#   layer GET       curl of the layer from regfs vs curl of a presigned URL of the same
#                   object (one stream, the fair baseline)                      >= 0.8x
#                   and vs `aws s3 cp s3://... -` (shown for scale)
#   redirect GET    curl -L of the layer from a second regfs with --redirect-layers on the
#                   same prefix vs curl of a presigned URL                       >= 0.95x
# Each layer read back through regfs (streamed and redirected) is compared byte for byte once.
#
# Knobs (environment):
#   BENCH_S3          ceph (default): start scripts/s3-local.sh; garage: scripts/garage-local.sh;
#                     env: use the store the environment already names (S3_ENDPOINT, S3_BUCKET,
#                     AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION)
#   BENCH_LAYER_MIB   size of the layer in MiB                              (1024)
#   BENCH_REPS        repetitions of each transfer (median)                 (5)
#   BENCH_CEPH_CONF   with BENCH_S3=env on a Ceph RGW: its ceph.conf, so deleted layers are
#                     reclaimed between runs (see reclaim below)
#   BENCH_S3_ARGS     extra `regfs serve` arguments, e.g. "--s3-part-size 16777216"
#   BENCH_TMPDIR      where the scratch dir goes (one layer file; the store's own data
#                     goes in it too; default: target/bench-tmp under the repo root)
#   BENCH_SKIP_BUILD  set to 1 to use the existing release binary
#   BENCH_BIN         regfs binary to run (default target/release/regfs)
#   BENCH_STRICT      set to 1 to exit 1 when any target is missed
#   BENCH_TSV         if set, append results as tab-separated lines to this file
#
# Needs: curl, awscli (`pip install awscli` or apt's awscli; installed with apt when missing),
# and what the chosen store's script needs. Ceph keeps objects in memory: budget about
# 3 x BENCH_LAYER_MIB of RAM for it (S3_MEMSTORE_BYTES sizes it).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BENCH_BIN:-$ROOT/target/release/regfs}
STORE=${BENCH_S3:-ceph}
LAYER_MIB=${BENCH_LAYER_MIB:-1024}
REPS=${BENCH_REPS:-5}
read -r -a EXTRA_ARGS <<<"${BENCH_S3_ARGS:-}"

ADMIN_USER=admin
ADMIN_PASS="bench-$RANDOM$RANDOM"
PREFIX="bench-$RANDOM$RANDOM"
# awscli >= 1.36 adds CRC checksums by default, which older S3-compatible stores refuse.
export AWS_REQUEST_CHECKSUM_CALCULATION=when_required
export AWS_RESPONSE_CHECKSUM_VALIDATION=when_required

# shellcheck disable=SC2034 # read by log in lib.sh
LOG_TAG=bench-s3
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------- cleanup

WORK=""
STORE_DIR=""
declare -a PIDS=()
cleanup() {
  local rc=$? pid
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  case $STORE in
    ceph) [[ -n $STORE_DIR ]] && "$ROOT/scripts/s3-local.sh" stop "$STORE_DIR" >/dev/null 2>&1 ;;
    garage) [[ -n $STORE_DIR ]] && "$ROOT/scripts/garage-local.sh" stop "$STORE_DIR" >/dev/null 2>&1 ;;
    env) [[ -n ${S3_BUCKET:-} ]] && s3 rm --recursive --quiet "s3://$S3_BUCKET/$PREFIX/" >/dev/null 2>&1 && reclaim ;;
  esac
  [[ -n $WORK && -d $WORK ]] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 1' USR1

# ---------------------------------------------------------------- results

record_ratio() { # name regfs_bps baseline_bps target baseline_label
  local ratio ok target
  ratio=$(fdiv "$2" "$3")
  if [[ $4 == - ]]; then
    ok=- target=""
  else
    ok=$(awk -v r="$ratio" -v t="$4" 'BEGIN{ print (r >= t) ? 1 : 0 }')
    target=$(awk -v t="$4" 'BEGIN{ printf ">= %.2fx", t }')
  fi
  record "$1" "$(fmt_mibs "$2")" "$5 $(fmt_mibs "$3")" \
    "$(awk -v r="$ratio" 'BEGIN{ printf "%.2fx", r }')" "$target" "$ok"
}
print_results() {
  local line n a b r t ok
  echo
  echo "== $1 =="
  printf '%-24s %-12s %-30s %-7s %-10s %s\n' metric regfs baseline ratio target result
  for line in "${RESULTS[@]}"; do
    IFS='|' read -r n a b r t ok <<<"$line"
    printf '%-24s %-12s %-30s %-7s %-10s %s\n' "$n" "$a" "$b" "$r" "$t" "$(result_word "$ok")"
  done
  echo
}

# ---------------------------------------------------------------- setup

need_tools() {
  local -a pkgs=()
  command -v curl >/dev/null || pkgs+=(curl)
  command -v aws >/dev/null || pkgs+=(awscli)
  ((${#pkgs[@]} == 0)) && return 0
  local sudo=""
  [[ $(id -u) == 0 ]] || sudo=sudo
  log "installing ${pkgs[*]} with apt-get"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${pkgs[@]}" >/dev/null || die "could not install ${pkgs[*]}"
}

start_store() {
  local env
  case $STORE in
    ceph)
      STORE_DIR="$WORK/ceph"
      log "starting Ceph RGW (scripts/s3-local.sh)"
      # three layers at most live in the store at once, plus room for multipart parts
      env=$(S3_MEMSTORE_BYTES=${S3_MEMSTORE_BYTES:-$(((4 * LAYER_MIB + 1024) * 1048576))} \
        "$ROOT/scripts/s3-local.sh" start "$STORE_DIR") || die "Ceph did not start"
      ;;
    garage)
      STORE_DIR="$WORK/garage"
      log "starting Garage (scripts/garage-local.sh)"
      env=$("$ROOT/scripts/garage-local.sh" start "$STORE_DIR") || die "Garage did not start"
      ;;
    env) env="" ;;
    *) die "BENCH_S3 must be ceph, garage or env" ;;
  esac
  eval "$env"
  [[ -n ${S3_ENDPOINT:-} && -n ${S3_BUCKET:-} ]] || die "S3_ENDPOINT and S3_BUCKET are not set"
  # SigV4 and path-style for awscli too (Garage refuses SigV2), in the store's region.
  export AWS_CONFIG_FILE="$WORK/aws-config"
  printf '[default]\nregion = %s\ns3 =\n  signature_version = s3v4\n  addressing_style = path\n' \
    "${AWS_REGION:-us-east-1}" >"$AWS_CONFIG_FILE"
  log "store $STORE at $S3_ENDPOINT, bucket $S3_BUCKET, prefix $PREFIX"
}

# RGW frees a deleted object's data only in its garbage collection, hours later by default;
# with the in-memory OSD the store fills up within a run unless it is collected now.
reclaim() {
  local conf=${BENCH_CEPH_CONF:-}
  [[ $STORE == ceph ]] && conf="$STORE_DIR/ceph.conf"
  [[ -n $conf ]] || return 0
  timeout 120 radosgw-admin -c "$conf" gc process --include-all >/dev/null 2>&1 ||
    log "WARNING: RGW garbage collection failed; the store may fill up"
}

s3() { aws --endpoint-url "$S3_ENDPOINT" --only-show-errors s3 "$@"; }
presign() { aws --endpoint-url "$S3_ENDPOINT" s3 presign "s3://$S3_BUCKET/$1" --expires-in 3600; }

# start_regfs VAR [args...]: a server on the bench prefix; its URL goes to VAR
start_regfs() {
  local var=$1 out="$WORK/regfs-$1.out" pid url=""
  shift
  RUST_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --storage "s3://$S3_BUCKET/$PREFIX" \
    --s3-endpoint "$S3_ENDPOINT" --admin-user "$ADMIN_USER" --admin-password "$ADMIN_PASS" \
    "${EXTRA_ARGS[@]}" "$@" >"$out" 2>"$WORK/regfs-$var.err" &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 200); do
    url=$(head -n1 "$out" 2>/dev/null || true)
    [[ $url == http://* ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  [[ $url == http://* ]] || { tail -5 "$WORK/regfs-$var.err" >&2; die "regfs did not start"; }
  log "regfs ($var) at $url ${*:-}"
  printf -v "$var" '%s' "$url"
}

# ---------------------------------------------------------------- transfers

# call URL METHOD [curl args]: must answer 200
call() {
  local url=$1 method=$2 code
  shift 2
  code=$(curl -sS -o "$WORK/resp" -w '%{http_code}' -u "$ADMIN_USER:$ADMIN_PASS" \
    -X "$method" "$@" "$url") || die "$method $url: curl failed"
  [[ $code == 200 ]] || die "$method $url: HTTP $code: $(head -c 300 "$WORK/resp")"
}

# regfs_put ID -> prints bytes/s of PUT layer + PUT checksum
regfs_put() {
  local id=$1 sum t0 t1
  call "$REGFS/v1/images/$id/json" PUT -H 'Content-Type: application/json' \
    --data-binary "{\"id\":\"$id\"}"
  sum=$({ printf '{"id":"%s"}\n' "$id"; cat "$LAYER"; } | sha256sum | cut -c1-64)
  t0=$EPOCHREALTIME
  call "$REGFS/v1/images/$id/layer" PUT -T "$LAYER"
  call "$REGFS/v1/images/$id/checksum" PUT -H "X-Docker-Checksum-Payload: sha256:$sum" \
    -H 'Content-Length: 0'
  t1=$EPOCHREALTIME
  fdiv "$LAYER_BYTES" "$(elapsed_s "$t0" "$t1")"
}

# direct_put KEY -> prints bytes/s of `aws s3 cp` to the store
direct_put() {
  local t0 t1
  t0=$EPOCHREALTIME
  s3 cp --no-progress "$LAYER" "s3://$S3_BUCKET/$1" || die "aws s3 cp to $1 failed"
  t1=$EPOCHREALTIME
  fdiv "$LAYER_BYTES" "$(elapsed_s "$t0" "$t1")"
}

# curl_get URL [curl args] -> prints bytes/s (200 and the whole layer, or die)
curl_get() {
  local url=$1 out code size t
  shift
  out=$(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "$@" "$url") ||
    die "GET $url: curl failed"
  read -r code size t <<<"$out"
  [[ $code == 200 && $size == "$LAYER_BYTES" ]] ||
    die "GET $url: HTTP $code, $size bytes (want 200, $LAYER_BYTES)"
  fdiv "$size" "$t"
}

# aws_get KEY -> prints bytes/s of `aws s3 cp s3://... -`
aws_get() {
  local t0 t1 size
  t0=$EPOCHREALTIME
  size=$(s3 cp "s3://$S3_BUCKET/$1" - | wc -c) || die "aws s3 cp from $1 failed"
  t1=$EPOCHREALTIME
  [[ $size == "$LAYER_BYTES" ]] || die "aws s3 cp from $1: $size bytes (want $LAYER_BYTES)"
  fdiv "$size" "$(elapsed_s "$t0" "$t1")"
}

# ---------------------------------------------------------------- main

main() {
  [[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }
  need_tools
  build
  local base=${BENCH_TMPDIR:-$ROOT/target/bench-tmp}
  mkdir -p "$base"
  WORK=$(mktemp -d "$base/bench-s3.XXXXXX")
  start_store

  LAYER="$WORK/layer.bin"
  LAYER_BYTES=$((LAYER_MIB * 1048576))
  log "writing a $LAYER_MIB MiB layer"
  head -c "$LAYER_BYTES" /dev/urandom >"$LAYER"

  REGFS="" REDIRECT=""
  start_regfs REGFS
  start_regfs REDIRECT --redirect-layers
  local start=$SECONDS i id keep="" key
  local -a put_regfs=() put_direct=() get_regfs=() get_presigned=() get_aws=() get_redirect=()

  log "layer PUT x $REPS"
  for ((i = 0; i < REPS; i++)); do
    id=$(new_id) key="$PREFIX/direct/$i"
    if ((i % 2)); then
      put_direct+=("$(direct_put "$key")")
      put_regfs+=("$(regfs_put "$id")")
    else
      put_regfs+=("$(regfs_put "$id")")
      put_direct+=("$(direct_put "$key")")
    fi
    s3 rm "s3://$S3_BUCKET/$key"
    # keep the first image for the GETs; drop the rest to bound the store's memory
    if [[ -z $keep ]]; then keep=$id; else s3 rm --recursive "s3://$S3_BUCKET/$PREFIX/images/$id/"; fi
    reclaim
    log "  PUT $((i + 1)): regfs $(fmt_mibs "${put_regfs[i]}"), aws s3 cp $(fmt_mibs "${put_direct[i]}")"
  done

  local layer_url="$REGFS/v1/images/$keep/layer" presigned
  log "checking the layer read back (streamed and redirected)"
  curl -sS "$layer_url" | cmp -s - "$LAYER" || die "layer GET through regfs differs"
  curl -sSL "$REDIRECT/v1/images/$keep/layer" | cmp -s - "$LAYER" ||
    die "redirected layer GET differs"
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$REDIRECT/v1/images/$keep/layer") == 302 ]] ||
    die "--redirect-layers did not answer 302"

  log "layer GET x $REPS"
  for ((i = 0; i < REPS; i++)); do
    # a fresh URL per run, as a client following the redirect gets
    presigned=$(presign "$PREFIX/images/$keep/layer")
    if ((i % 2)); then
      get_presigned+=("$(curl_get "$presigned")")
      get_regfs+=("$(curl_get "$layer_url")")
      get_redirect+=("$(curl_get "$REDIRECT/v1/images/$keep/layer" -L)")
      get_aws+=("$(aws_get "$PREFIX/images/$keep/layer")")
    else
      get_regfs+=("$(curl_get "$layer_url")")
      get_presigned+=("$(curl_get "$presigned")")
      get_aws+=("$(aws_get "$PREFIX/images/$keep/layer")")
      get_redirect+=("$(curl_get "$REDIRECT/v1/images/$keep/layer" -L)")
    fi
    log "  GET $((i + 1)): regfs $(fmt_mibs "${get_regfs[i]}"), presigned $(fmt_mibs "${get_presigned[i]}"), aws $(fmt_mibs "${get_aws[i]}"), redirect $(fmt_mibs "${get_redirect[i]}")"
  done

  log "PUT regfs: $(mibs_list "${put_regfs[@]}")"
  log "PUT aws:   $(mibs_list "${put_direct[@]}")"
  log "GET regfs: $(mibs_list "${get_regfs[@]}")"
  log "GET presigned curl: $(mibs_list "${get_presigned[@]}")"
  log "GET aws:   $(mibs_list "${get_aws[@]}")"
  log "GET redirect: $(mibs_list "${get_redirect[@]}")"
  local m_put_r m_put_d m_get_r m_get_p m_get_a m_get_x
  m_put_r=$(median "${put_regfs[@]}") m_put_d=$(median "${put_direct[@]}")
  m_get_r=$(median "${get_regfs[@]}") m_get_p=$(median "${get_presigned[@]}")
  m_get_a=$(median "${get_aws[@]}") m_get_x=$(median "${get_redirect[@]}")
  record_ratio "layer PUT ${LAYER_MIB} MiB" "$m_put_r" "$m_put_d" 0.8 "aws s3 cp"
  record_ratio "layer GET ${LAYER_MIB} MiB" "$m_get_r" "$m_get_p" 0.8 "curl presigned"
  record_ratio "layer GET vs aws" "$m_get_r" "$m_get_a" - "aws s3 cp -"
  record_ratio "redirect GET ${LAYER_MIB} MiB" "$m_get_x" "$m_get_p" 0.95 "curl presigned"
  print_results "s3: regfs on $STORE against direct transfers; loopback, $(nproc) cores, median of $REPS"
  finish "$start"
}

main "$@"
