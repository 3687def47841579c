#!/usr/bin/env bash
# Proves that the PyPI client `docker-registry-client` (api_version=1) works unchanged against
# `regfs serve`: pushes a few images with curl, then lets the client list repositories, tags and
# images and read image json and ancestry (scripts/pyclient_check.py).
#
# Usage: scripts/pyclient-check.sh
#   REGFS_BIN=path/to/regfs   use this binary instead of `cargo build` + target/debug/regfs
#   PYCLIENT_VENV=dir         venv to use (default: $XDG_CACHE_HOME/regfs/pyclient-venv)
#   PYTHON=python3            interpreter that creates the venv
# Last line of output: "N passed, N failed". Exit status 0 only if nothing failed.
set -euo pipefail

CLIENT_PKG="docker-registry-client"
CLIENT_VERSION="0.5.2"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="${PYCLIENT_VENV:-${XDG_CACHE_HOME:-${HOME:?set HOME or XDG_CACHE_HOME}/.cache}/regfs/pyclient-venv}"
python="${PYTHON:-python3}"

passed=0
failed=0
server_pid=""
work="$(mktemp -d "${TMPDIR:-/tmp}/regfs-pyclient.XXXXXX")"

summary() { echo "$passed passed, $failed failed"; }

cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "error: $*" >&2
    failed=$((failed + 1))
    summary
    exit 1
}

# --- Python client in a cached venv ------------------------------------------------------------
installed_version() {
    "$venv/bin/python" - "$CLIENT_PKG" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import docker_registry_client  # noqa: F401  (must import, not only be listed)
print(version(sys.argv[1]))
EOF
}

if [[ "$(installed_version || true)" != "$CLIENT_VERSION" ]]; then
    echo "setting up $CLIENT_PKG==$CLIENT_VERSION in $venv"
    if [[ -e "$venv" ]] && ! "$venv/bin/python" -c '' 2>/dev/null; then
        die "$venv is not a working venv; delete it and run again"
    fi
    if [[ ! -x "$venv/bin/python" ]]; then
        mkdir -p "$(dirname "$venv")"
        "$python" -m venv "$venv" || die "could not create a venv with $python (python3-venv missing?)"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "$CLIENT_PKG==$CLIENT_VERSION" || die "pip install $CLIENT_PKG==$CLIENT_VERSION failed"
    [[ "$(installed_version || true)" == "$CLIENT_VERSION" ]] || die "$CLIENT_PKG does not import after install"
fi

# --- the server ------------------------------------------------------------------------------
if [[ -n "${REGFS_BIN:-}" ]]; then
    bin="$REGFS_BIN"
else
    echo "building regfs (cargo build)"
    (cd "$root" && cargo build --quiet --bin regfs) || die "cargo build failed"
    bin="${CARGO_TARGET_DIR:-$root/target}/debug/regfs"
fi
[[ -x "$bin" ]] || die "no regfs binary at $bin"

admin_user="admin"
admin_pass="adminpw-$RANDOM$RANDOM"
user="alice1"
user_pass="secret1"

"$bin" serve --memory --listen 127.0.0.1:0 --admin-user "$admin_user" \
    --admin-password "$admin_pass" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!

url=""
for _ in $(seq 1 300); do
    if [[ -s "$work/server.out" ]] && url="$(head -n 1 "$work/server.out")" && [[ "$url" == http*://* ]]; then
        break
    fi
    url=""
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z "$url" ]]; then
    echo "--- server stdout"; cat "$work/server.out" || true
    echo "--- server stderr"; tail -n 20 "$work/server.err" || true
    die "regfs serve did not print its URL within 30 s"
fi
url="${url%%[[:space:]]*}"
url="${url%/}"
echo "regfs serving at $url"

# --- push with plain HTTP -----------------------------------------------------------------------
# call WANT_STATUS METHOD PATH [curl args...]: one counted step; prints the answer on a mismatch.
call() {
    local want="$1" method="$2" path="$3"
    shift 3
    local got
    got="$(curl -sS -o "$work/body" -w '%{http_code}' -X "$method" "$@" "$url$path" 2>"$work/curl.err")" || got="curl-error"
    if [[ "$got" == "$want" ]]; then
        passed=$((passed + 1))
        echo "ok   $method $path -> $got"
    else
        failed=$((failed + 1))
        echo "FAIL $method $path -> $got, want $want; body: $(head -c 500 "$work/body" 2>/dev/null) $(cat "$work/curl.err")"
    fi
}

json=(-H 'Content-Type: application/json')

# image_files NAME PARENT_ID: writes $work/NAME.json (exact bytes pushed) and $work/NAME.layer
# (a small tar.gz); sets $image_id.
image_files() {
    local name="$1" parent="$2"
    image_id="$(printf 'regfs pyclient check image %s' "$name" | sha256sum | cut -c1-64)"
    mkdir -p "$work/rootfs-$name/etc"
    printf '%s\n' "$name" >"$work/rootfs-$name/etc/$name.txt"
    tar -C "$work/rootfs-$name" -czf "$work/$name.layer" .
    local size
    size="$(wc -c <"$work/$name.layer" | tr -d ' ')"
    {
        printf '{"id":"%s"' "$image_id"
        [[ -n "$parent" ]] && printf ',"parent":"%s"' "$parent"
        printf ',"created":"2015-06-01T12:00:00.000000000Z","container_config":{"Cmd":["/bin/sh","-c","#(nop) ADD %s"]}' "$name"
        printf ',"docker_version":"1.9.1","architecture":"amd64","os":"linux","Size":%s}' "$size"
    } >"$work/$name.json"
}

# push_image NAME PARENT_ID AUTH...: json, layer, checksum.
push_image() {
    local name="$1" parent="$2"
    shift 2
    image_files "$name" "$parent"
    local sum
    sum="$({ cat "$work/$name.json"; printf '\n'; cat "$work/$name.layer"; } | sha256sum | cut -c1-64)"
    call 200 PUT "/v1/images/$image_id/json" "$@" "${json[@]}" --data-binary "@$work/$name.json"
    call 200 PUT "/v1/images/$image_id/layer" "$@" -H 'Content-Type: application/octet-stream' \
        --data-binary "@$work/$name.layer"
    call 200 PUT "/v1/images/$image_id/checksum" "$@" -H "X-Docker-Checksum-Payload: sha256:$sum"
}

admin=(-u "$admin_user:$admin_pass")
alice=(-u "$user:$user_pass")

call 201 POST /v1/users/ "${json[@]}" \
    --data-binary "{\"username\":\"$user\",\"password\":\"$user_pass\",\"email\":\"a@example.com\"}"

# User repository alice1/webapp: base (tag 1.0) <- child (tags latest, 2.0).
user_repo="$user/webapp"
call 200 PUT "/v1/repositories/$user_repo/" "${alice[@]}" "${json[@]}" --data-binary '[]'
push_image base "" "${alice[@]}"
base_id="$image_id"
push_image child "$base_id" "${alice[@]}"
child_id="$image_id"
call 200 PUT "/v1/repositories/$user_repo/tags/1.0" "${alice[@]}" "${json[@]}" --data-binary "\"$base_id\""
call 200 PUT "/v1/repositories/$user_repo/tags/latest" "${alice[@]}" "${json[@]}" --data-binary "\"$child_id\""
call 200 PUT "/v1/repositories/$user_repo/tags/2.0" "${alice[@]}" "${json[@]}" --data-binary "\"$child_id\""
call 204 PUT "/v1/repositories/$user_repo/images" "${alice[@]}" "${json[@]}" \
    --data-binary "[{\"id\":\"$base_id\"},{\"id\":\"$child_id\"}]"

# Library repository toolbox (pushed as the Docker client does: bare name, read back as library/).
lib_repo="toolbox"
call 200 PUT "/v1/repositories/$lib_repo/" "${admin[@]}" "${json[@]}" --data-binary '[]'
push_image tools "" "${admin[@]}"
tools_id="$image_id"
call 200 PUT "/v1/repositories/$lib_repo/tags/latest" "${admin[@]}" "${json[@]}" --data-binary "\"$tools_id\""
call 200 PUT "/v1/repositories/library/$lib_repo/tags/stable" "${admin[@]}" "${json[@]}" --data-binary "\"$tools_id\""
call 204 PUT "/v1/repositories/library/$lib_repo/images" "${admin[@]}" "${json[@]}" \
    --data-binary "[{\"id\":\"$tools_id\"}]"

cat >"$work/expect.json" <<EOF
{
  "user": "$user",
  "password": "$user_pass",
  "repos": {
    "$user_repo": {
      "tags": {"1.0": "$base_id", "latest": "$child_id", "2.0": "$child_id"},
      "images": ["$base_id", "$child_id"]
    },
    "library/$lib_repo": {
      "tags": {"latest": "$tools_id", "stable": "$tools_id"},
      "images": ["$tools_id"]
    }
  },
  "images": {
    "$base_id": {"json": "$work/base.json", "ancestry": ["$base_id"]},
    "$child_id": {"json": "$work/child.json", "ancestry": ["$child_id", "$base_id"]},
    "$tools_id": {"json": "$work/tools.json", "ancestry": ["$tools_id"]}
  }
}
EOF

# --- the Python client ------------------------------------------------------------------------
echo "running $CLIENT_PKG $CLIENT_VERSION (api_version=1) against $url"
"$venv/bin/python" "$here/pyclient_check.py" "$url" "$work/expect.json" "$work/counts" || true
if [[ -s "$work/counts" ]]; then
    read -r py_passed py_failed <"$work/counts"
    passed=$((passed + py_passed))
    failed=$((failed + py_failed))
else
    echo "FAIL pyclient_check.py stopped without reporting its counts"
    failed=$((failed + 1))
fi

if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "FAIL regfs serve exited during the check"
    failed=$((failed + 1))
fi
if [[ "$failed" -ne 0 ]]; then
    echo "--- last lines of the server's stderr"
    tail -n 20 "$work/server.err" || true
fi

summary
[[ "$failed" -eq 0 ]]
