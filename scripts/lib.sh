# shellcheck shell=bash
# Helpers shared by the benchmark and load scripts (bench.sh, bench-s3.sh, load.sh), which
# source this file. The script sets LOG_TAG (the name its log lines start with) and ROOT
# before sourcing it, and BIN before calling build; die calls the script's on_die, if it
# has one, before exiting.

# ---------------------------------------------------------------- messages

log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; }

# die from a command substitution also takes the main script down (which traps USR1)
die() {
  log "ERROR: $*"
  if declare -F on_die >/dev/null; then on_die; fi
  [[ $BASHPID == "$$" ]] || kill -USR1 "$$" 2>/dev/null
  exit 1
}

# ---------------------------------------------------------------- processes and mounts

# running, and not a zombie waiting to be reaped
alive() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z ]]
}

# whether DIR is a mount point now (mountinfo escapes space, tab, newline, backslash)
is_mounted() {
  local m=$1
  m=${m//\\/\\134} m=${m// /\\040} m=${m//$'\t'/\\011} m=${m//$'\n'/\\012}
  M=$m awk '$5 == ENVIRON["M"] { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# ---------------------------------------------------------------- numbers

# median of the numbers given as arguments
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{ if (NR==0) {print 0; exit}
  if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }

# float helpers
fdiv() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b==0) print 0; else printf "%.6f\n", a/b }'; }
fmt_mibs() { awk -v x="$1" 'BEGIN{ printf "%.0f MiB/s", x/1048576 }'; }
mibs_list() { local v; for v in "$@"; do printf '%s  ' "$(fmt_mibs "$v")"; done; }

# seconds from one $EPOCHREALTIME to another (read inline: no fork around what is timed)
elapsed_s() { local a=${1/[.,]/} b=${2/[.,]/}; fdiv "$((10#$b - 10#$a))" 1000000; }

new_id() { head -c 64 /dev/urandom | sha256sum | cut -c1-64; }

# ---------------------------------------------------------------- results

declare -a RESULTS=()
MISSES=0

# result word for OK: 1 PASS, 0 MISS, - info (no target)
result_word() { case $1 in 1) echo PASS ;; -) echo info ;; *) echo MISS ;; esac; }

# record NAME REGFS_TEXT BASELINE_TEXT RATIO_OR_VALUE TARGET_TEXT OK(1/0/-)
record() {
  RESULTS+=("$1|$2|$3|$4|$5|$6")
  [[ $6 == 1 || $6 == - ]] || MISSES=$((MISSES + 1))
  if [[ -n ${BENCH_TSV:-} ]]; then
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$1" "$2" "$3" "$4" "$5" \
      "$(result_word "$6")" >>"$BENCH_TSV"
  fi
}

# finish START: the last lines of a run begun at SECONDS=START; a missed target fails the
# run only with BENCH_STRICT=1
finish() {
  log "done in $((SECONDS - $1)) s"
  if ((MISSES > 0)); then
    log "$MISSES target(s) missed"
    [[ ${BENCH_STRICT:-0} == 1 ]] && exit 1
  fi
  exit 0
}

# ---------------------------------------------------------------- setup

# install_missing PKG...: apt-get install PKGs (none: nothing to do), as root or through
# sudo; a failed install is tried again after apt-get update, as a fresh machine's package
# lists are often stale or empty
install_missing() {
  (($# == 0)) && return 0
  local sudo=""
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "missing $* and not root; install them first"
    sudo=sudo
  fi
  log "installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; then
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  fi
}

cargo_build() {
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
}

# build: cargo_build, unless BENCH_SKIP_BUILD=1 asks to run the binary already at BIN
build() {
  if [[ ${BENCH_SKIP_BUILD:-0} == 1 ]]; then
    log "skipping build (BENCH_SKIP_BUILD=1)"
  else
    cargo_build
  fi
  [[ -x $BIN ]] || die "no binary at $BIN"
}
