#!/usr/bin/env bash
# A real S3-compatible store on loopback that ignores conditional writes: single-node Garage
# (metadata in SQLite, data on disk under DIR, no fsync, gone on stop). Same output as
# scripts/s3-local.sh, so the same tests and benchmarks run against it:
#
#   scripts/garage-local.sh start [DIR]   install if needed, start, create bucket and key, and
#                                         print shell lines (S3_ENDPOINT=... AWS_...=...) to eval
#   scripts/garage-local.sh stop [DIR]    stop the server
#
# Installing is `cargo install garage --locked` (about 11 minutes on 2 cores), so CI uses Ceph
# (scripts/s3-local.sh) instead. Ports: S3 on $S3_PORT (3900), RPC 3901, admin 3903.
# Garage silently ignores If-Match/If-None-Match; regfs never relies on them.
set -euo pipefail

cmd=${1:-start}
dir=${2:-${TMPDIR:-/tmp}/regfs-garage}
port=${S3_PORT:-3900}
rpc_port=${GARAGE_RPC_PORT:-3901}
admin_port=${GARAGE_ADMIN_PORT:-3903}
bucket=registry

stop() {
  [[ -f $dir/garage.pid ]] || return 0
  local pid
  pid=$(cat "$dir/garage.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/garage.pid"
}

if [[ $cmd == stop ]]; then
  stop
  exit 0
fi
[[ $cmd == start ]] || { echo "usage: $0 start|stop [DIR]" >&2; exit 2; }

garage=$(command -v garage || true)
[[ -n $garage ]] || garage=${CARGO_HOME:-$HOME/.cargo}/bin/garage
if [[ ! -x $garage ]]; then
  echo "garage-local: installing garage (cargo install garage --locked, ~11 min on 2 cores)" >&2
  cargo install garage --locked >&2
fi

stop
rm -rf "$dir"
mkdir -p "$dir/meta" "$dir/data"
chmod 700 "$dir"
hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
cat > "$dir/garage.toml" <<EOC
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
metadata_fsync = false
data_fsync = false
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$(hex 32)"
EOC
chmod 600 "$dir/garage.toml"
g() { "$garage" -c "$dir/garage.toml" "$@"; }

RUST_LOG=${RUST_LOG:-garage=warn} nohup "$garage" -c "$dir/garage.toml" server \
  >"$dir/garage.log" 2>&1 &
echo $! > "$dir/garage.pid"
# Any later failure stops the server again instead of leaving it half set up.
trap 'rc=$?; if [[ $rc != 0 ]]; then tail -20 "$dir/garage.log" >&2; stop; fi' EXIT

for i in $(seq 100); do
  g status >/dev/null 2>&1 && break
  kill -0 "$(cat "$dir/garage.pid")" 2>/dev/null || { echo "garage exited early" >&2; exit 1; }
  [[ $i == 100 ]] && { echo "garage did not come up" >&2; exit 1; }
  sleep 0.2
done
node=$(g node id -q 2>/dev/null | cut -d@ -f1)
g layout assign -z dc1 -c 1G "$node" >/dev/null
g layout apply --version 1 >/dev/null
# The bucket can only be made once the layout is active.
for i in $(seq 50); do
  g bucket create "$bucket" >/dev/null 2>&1 && break
  [[ $i == 50 ]] && { g bucket create "$bucket" >&2; exit 1; }
  sleep 0.2
done
keyinfo=$(g key create regfs-key)
key=$(awk '/^Key ID:/ {print $3}' <<<"$keyinfo")
secret=$(awk '/^Secret key:/ {print $3}' <<<"$keyinfo")
[[ -n $key && -n $secret ]] || { echo "could not read the new key" >&2; exit 1; }
g bucket allow --read --write --owner "$bucket" --key regfs-key >/dev/null
cat <<EOV
export S3_ENDPOINT=http://127.0.0.1:$port
export S3_BUCKET=$bucket
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_REGION=garage
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_ALLOW_HTTP=true
EOV
