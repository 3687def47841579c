#!/usr/bin/env bash
# A real S3-compatible store on loopback for tests and benchmarks: single-node Ceph RGW from
# Debian packages (one in-memory OSD, no authentication between daemons, data gone on stop).
#
#   scripts/s3-local.sh start [DIR]   install if needed, start, create the bucket, and print
#                                     shell lines (S3_ENDPOINT=... AWS_...=...) to eval
#   scripts/s3-local.sh stop [DIR]    stop the daemons
#
# Ceph honours conditional writes; regfs does not rely on them either way.
set -euo pipefail

cmd=${1:-start}
dir=${2:-${TMPDIR:-/tmp}/regfs-ceph}
port=${S3_PORT:-8000}
key=AKREGFSTEST
secret=SKREGFSTESTSECRET
bucket=registry

stop() {
  for pidfile in "$dir"/run/*.pid; do
    [[ -f $pidfile ]] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  for _ in $(seq 50); do
    pgrep -f "$dir/ceph.conf" >/dev/null || break
    sleep 0.1
  done
  pkill -9 -f "$dir/ceph.conf" 2>/dev/null || true
}

if [[ $cmd == stop ]]; then
  stop
  exit 0
fi
[[ $cmd == start ]] || { echo "usage: $0 start|stop [DIR]" >&2; exit 2; }

if ! command -v radosgw >/dev/null || ! command -v ceph-mon >/dev/null; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "s3-local: installing Ceph (radosgw, ceph-mon, ceph-osd)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    radosgw ceph-mon ceph-osd uuid-runtime curl >/dev/null
fi

stop
rm -rf "$dir"
mkdir -p "$dir"/{mon,osd0,run,log,rgw}
fsid=$(uuidgen)
cat > "$dir/ceph.conf" <<EOC
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public_network = 127.0.0.0/8
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
mon_max_pg_per_osd = 1000
osd_pool_default_pg_autoscale_mode = off
run_dir = $dir/run
admin_socket = $dir/run/\$name.asok
log_file = $dir/log/\$name.log
pid_file = $dir/run/\$name.pid
keyring = $dir/keyring
osd_objectstore = memstore
memstore_device_bytes = ${S3_MEMSTORE_BYTES:-6442450944}
[mon.a]
mon_data = $dir/mon
[osd.0]
osd_data = $dir/osd0
[client.rgw.a]
rgw_frontends = beast endpoint=127.0.0.1:$port
rgw_data = $dir/rgw
ms_mon_client_mode = crc
rgw_init_timeout = 60
EOC
conf=(-c "$dir/ceph.conf")
ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --fsid "$fsid" --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' "$dir/monmap" >/dev/null
ceph-mon "${conf[@]}" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring"
ceph-mon "${conf[@]}" -i a
osd_uuid=$(uuidgen)
timeout 60 ceph "${conf[@]}" osd new "$osd_uuid" >/dev/null
ceph-osd "${conf[@]}" -i 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1
ceph-osd "${conf[@]}" -i 0 2>/dev/null
for _ in $(seq 60); do
  ceph "${conf[@]}" osd stat 2>/dev/null | grep -q '1 up' && break
  sleep 1
done
radosgw "${conf[@]}" -n client.rgw.a
for _ in $(seq 60); do
  curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 1
done
radosgw-admin "${conf[@]}" user create --uid=regfs --display-name=regfs \
  --access-key="$key" --secret="$secret" >/dev/null
# S3 wants the payload hash signed too: that of an empty body.
curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "$key:$secret" \
  -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
  -X PUT "http://127.0.0.1:$port/$bucket" >/dev/null
cat <<EOV
export S3_ENDPOINT=http://127.0.0.1:$port
export S3_BUCKET=$bucket
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_ALLOW_HTTP=true
EOV
