#!/usr/bin/env bash
# artifactfs at scale: a store of N small artifacts, its mount times, the
# daemon's memory, and evicting half of it against `rm -rf` of the same
# trees. Run by hand as root (drop_caches); never part of CI. See
# bench/README.md ("Scale").
#
#   bench/scale.sh [-n N] [--per-dir K] [--size BYTES] [--threads T]
#                  [--artifactfs BINARY] [--workdir DIR] [--out FILE]
#
# What it does, in order (every step is logged to stderr with a time):
#  1. Builds the store directly in WORKDIR/store/data, before any mount (fast):
#     layout.depth 2, N/K namespace directories aNNNNNN of K single-file
#     artifacts fNNN of BYTES bytes each (ccache's shape: a key per file),
#     with bench/loadgen.c's mktree (2 writer threads). Also builds, in
#     WORKDIR/rmtree1 and WORKDIR/rmtree2, two identical copies of the half
#     that will be evicted (N/2/K directories of K files), for rm -rf.
#  2. First mount (the index does not exist yet: the daemon walks the tree
#     and builds it); time until the mount answers; RSS then and 3 s later
#     (after the flush thread's first Index::release_memory). Unmount.
#  3. Clean mount (caches dropped first): time until the mount answers.
#     RSS of the daemon (RssAnon and RssFile from /proc/PID/status) right
#     after mounting and after `ls -f` of the mount root and of one
#     namespace directory.
#  3b. Ten more artifacts (a new namespace) written through the mount, then
#     kill -9 of the daemon before its next index flush; mount again
#     (clearing the dead mount): time until it answers, RSS, and how many
#     artifacts the recovery re-walked (from the daemon's stderr).
#  4. rm -rf of the first copy (sync and caches dropped first): the time of
#     the same deletions natively on the same disk, just before the eviction.
#  5. Eviction of half: sync, drop caches, then quota.max-size set in the
#     configuration file to (usage - N/2 artifacts' bytes on disk) with
#     low-watermark 1.0 and min-age 0s, and SIGHUP. Time from the signal until
#     stats.evictions has grown by N/2 and STORE/trash is empty (polled every
#     50 ms). RSS after it, and the trash deleter's and quota thread's CPU
#     time from /proc/PID/task/*/stat.
#  6. rm -rf of the second copy, just after the eviction. The machine may
#     be shared and the disk's speed drifts: the ratio is the eviction time
#     over the mean of the two rm -rf times, and all three are reported
#     with the load average before each.
#  7. Clean unmount, clean mount again (the index after the eviction), RSS,
#     and a check that the index totals equal du of STORE/data.
#  Results go to bench/results/<date>-scale.md (or --out) with the machine
#  description. PERF=1 also records `perf record -g` of the daemon during
#  the eviction (report in WORKDIR/logs/evict-perf.txt; use with
#  KEEP_WORKDIR=1). Every mount is unmounted, the daemon stopped by its pid and
#  WORKDIR removed on exit, also after an error or Ctrl-C (KEEP_WORKDIR=1
#  keeps it).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ORIG_ARGS="$*"

N=1000000
PER_DIR=1000
SIZE=100
THREADS=4
ARTIFACTFS=${ARTIFACTFS:-}
WORKDIR=""
OUT=""
CACHE=${BENCH_CACHE:-/tmp/artifactfs-bench-cache}

usage() { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case $1 in
    -n) N=$2; shift ;;
    --per-dir) PER_DIR=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --artifactfs) ARTIFACTFS=$2; shift ;;
    --workdir) WORKDIR=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "scale.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [[ $EUID -ne 0 ]]; then
  echo "scale.sh: run as root (needs /proc/sys/vm/drop_caches)" >&2
  exit 2
fi
if (( N % (2 * PER_DIR) != 0 )); then
  echo "scale.sh: N ($N) must be a multiple of 2 x --per-dir ($((2 * PER_DIR)))" >&2
  exit 2
fi
DIRS=$(( N / PER_DIR ))
HALF=$(( N / 2 ))

if [[ -z $ARTIFACTFS ]]; then
  for candidate in "$REPO/build-bench/cli/artifactfs" "$REPO/build/cli/artifactfs"; do
    [[ -x $candidate ]] && { ARTIFACTFS=$candidate; break; }
  done
fi
[[ -x ${ARTIFACTFS:-} ]] || { echo "scale.sh: no artifactfs binary; build it or pass --artifactfs" >&2; exit 2; }

mkdir -p "$CACHE"
WORKDIR=${WORKDIR:-$(mktemp -d /var/tmp/artifactfs-scale.XXXXXX)}
mkdir -p "$WORKDIR"
STORE=$WORKDIR/store
DATA=$STORE/data
MNT=$WORKDIR/mnt
RMTREE1=$WORKDIR/rmtree1
RMTREE2=$WORKDIR/rmtree2
CFG=$WORKDIR/scale.yaml
LOGDIR=$WORKDIR/logs
RAW=$WORKDIR/raw.txt
mkdir -p "$MNT" "$LOGDIR"
: > "$RAW"
DATE=$(date +%Y-%m-%d)
OUT=${OUT:-$HERE/results/$(date +%Y-%m-%d-%H%M)-$(hostname -s)-scale.md}
mkdir -p "$(dirname "$OUT")"

# ---- cleanup: unmounted, daemon stopped by pid, store removed ----------------------
DAEMON_PID=""
cleanup() {
  local rc=$?
  set +e
  if grep -q " $MNT fuse" /proc/mounts; then
    fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null
  fi
  if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$DAEMON_PID" 2>/dev/null && kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null
  fi
  if grep -q "$WORKDIR" /proc/mounts; then
    echo "scale.sh: WARNING: still mounted under $WORKDIR:" >&2
    grep "$WORKDIR" /proc/mounts >&2
  elif [[ -z ${KEEP_WORKDIR:-} ]]; then
    rm -rf "$WORKDIR"
  fi
  [[ -d $WORKDIR ]] && echo "scale.sh: scratch data and logs kept in $WORKDIR" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
raw() { echo "$*" >> "$RAW"; log "  $*"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l | awk '{printf "%.2f", $1}'; }
xattr() { getfattr --only-values -n "user.artifactfs.$1" "$MNT" 2>/dev/null || echo 0; }
# "RssAnon=N RssFile=N VmHWM=N" in KiB
rss() {
  awk '/^(RssAnon|RssFile|RssShmem|VmHWM|VmRSS):/ {printf "%s=%s ", substr($1, 1, length($1) - 1), $2}' \
    "/proc/$DAEMON_PID/status"
}
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<< "$2"; }

LOADGEN=$CACHE/loadgen
if [[ ! -x $LOADGEN || $HERE/loadgen.c -nt $LOADGEN ]]; then
  cc -O2 -Wall -pthread -o "$LOADGEN" "$HERE/loadgen.c"
fi

write_config() {  # write_config MAX_SIZE
  printf 'layout:\n  depth: 2\nindex:\n  flush-interval: 1s\nfuse:\n  threads: %s\nquota:\n  max-size: %s\n  min-free: "0"\n  low-watermark: 1.0\n  min-age: 0s\n  check-interval: 2s\n' \
    "$THREADS" "$1" > "$CFG"
}

# Starts the daemon in the foreground (background job), waits until the
# mount answers; sets DAEMON_PID and MOUNT_SECS (the seconds it took).
mount_store() {
  local logf=$1 t0
  t0=$(now)
  "$ARTIFACTFS" mount "$STORE" "$MNT" -f -c "$CFG" > "$logf" 2>&1 &
  DAEMON_PID=$!
  for _ in $(seq 36000); do
    # Only the daemon answers this attribute: neither the dead mount a
    # kill -9 leaves behind nor the bare directory in the moment between
    # its removal and the new mount does.
    if getfattr --only-values -n user.artifactfs.total.artifacts "$MNT" >/dev/null 2>&1; then
      MOUNT_SECS=$(since "$t0")
      return 0
    fi
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "scale.sh: the daemon exited; see $logf" >&2; cat "$logf" >&2; return 1; }
    sleep 0.05
  done
  echo "scale.sh: not mounted after 30 min; see $logf" >&2
  return 1
}

unmount_store() {
  fusermount3 -u "$MNT"
  wait "$DAEMON_PID" || { echo "scale.sh: the daemon exited with an error" >&2; return 1; }
  DAEMON_PID=""
}

thread_cpu() {  # "name=utime+stime seconds" for every thread of the daemon
  local hz t name
  hz=$(getconf CLK_TCK)
  for t in /proc/"$DAEMON_PID"/task/*; do
    name=$(tr ' ' '_' < "$t/comm")
    awk -v n="$name" -v hz="$hz" '{ sub(/^.*\) /, ""); printf "%s:%.2f ", n, ($12 + $13) / hz }' "$t/stat"
  done
}

# ---- 1. the store and the copy ---------------------------------------------------------
log "work directory $WORKDIR; $N artifacts ($DIRS directories of $PER_DIR files of $SIZE bytes); artifactfs $ARTIFACTFS"
mkdir -p "$DATA" "$RMTREE1" "$RMTREE2"
chmod 700 "$STORE"  # the daemon refuses a store other users can enter
t0=$(now)
line=$("$LOADGEN" mktree "$DATA" "$DIRS" "$PER_DIR" "$SIZE" -j 2)
raw "create_store $line"
line=$("$LOADGEN" mktree "$RMTREE1" "$(( DIRS / 2 ))" "$PER_DIR" "$SIZE" -j 2)
raw "create_rm_copy1 $line"
line=$("$LOADGEN" mktree "$RMTREE2" "$(( DIRS / 2 ))" "$PER_DIR" "$SIZE" -j 2)
raw "create_rm_copy2 $line"
sync
raw "created seconds=$(since "$t0") df_used_kib=$(df -k --output=used "$WORKDIR" | tail -1 | tr -d ' ')"

# ---- 2. first mount: the index is built from the tree -------------------------------------
write_config unlimited
drop_caches
mount_store "$LOGDIR/mount-1.log"
raw "first_mount seconds=$MOUNT_SECS $(rss)"
sleep 3
raw "first_mount_3s $(rss)"
unmount_store
raw "index_size_kib=$(du -k "$STORE/index/data.mdb" | cut -f1)"

# ---- 3. clean mount, ls ----------------------------------------------------------------------
drop_caches
mount_store "$LOGDIR/mount-2.log"
raw "clean_mount seconds=$MOUNT_SECS $(rss)"
t0=$(now)
entries=$(ls -f "$MNT" | wc -l)
raw "ls_root seconds=$(since "$t0") entries=$entries $(rss)"
t0=$(now)
entries=$(ls -f "$MNT/a000000" | wc -l)
raw "ls_namespace seconds=$(since "$t0") entries=$entries $(rss)"

# ---- 3b. kill -9, mount again --------------------------------------------------------------
# Ten new artifacts are written through the mount and the daemon is killed
# before its next index flush: the next mount finds the index not cleanly
# closed and re-walks only what changed since the last flush.
line=$("$LOADGEN" mktree "$MNT" 1 10 "$SIZE" -o "$DIRS")
kill -KILL "$DAEMON_PID"
{ wait "$DAEMON_PID"; } 2>/dev/null || true
DAEMON_PID=""
raw "killed $line"
drop_caches
mount_store "$LOGDIR/mount-after-kill.log"
raw "mount_after_kill seconds=$MOUNT_SECS $(rss)"
raw "recovery $(grep -m1 -o 're-walked [0-9]* artifacts' "$LOGDIR/mount-after-kill.log" | tr ' ' '_')"

usage=$(xattr total.disk_bytes)
artifacts=$(xattr total.artifacts)
one=$(( $(stat -c %b "$DATA/a000000/f000") * 512 ))
raw "before_eviction total.disk_bytes=$usage total.artifacts=$artifacts artifact_disk_bytes=$one"
if [[ $artifacts != $(( N + 10 )) ]]; then
  echo "scale.sh: the mount after kill -9 shows $artifacts artifacts, not $(( N + 10 )); see $LOGDIR/mount-after-kill.log" >&2
  exit 1
fi

# ---- 4. rm -rf of the first copy ---------------------------------------------------------------
rm_rf() {  # rm_rf TAG DIR
  local t0 load
  drop_caches
  load=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(now)
  rm -rf "$2"
  raw "$1 seconds=$(since "$t0") files=$HALF loadavg_before=$load"
}
rm_rf rm_rf_before "$RMTREE1"

# ---- 5. evict half -----------------------------------------------------------------------------
limit=$(( usage - HALF * one ))
sleep 1
drop_caches
evict_load=$(cut -d' ' -f1 /proc/loadavg)
e0=$(xattr stats.evictions)
c0=$(xattr stats.cleanup_seconds)
write_config "$limit"
log "evicting $HALF artifacts: max-size $limit, SIGHUP"
PERF_PID=""
if [[ -n ${PERF:-} ]]; then
  perf record -F 499 -g -p "$DAEMON_PID" -o "$LOGDIR/evict.perf.data" > "$LOGDIR/perf-record.log" 2>&1 &
  PERF_PID=$!
  sleep 1
fi
t0=$(now)
kill -HUP "$DAEMON_PID"
evicted_at=""
peak_anon=0
while :; do
  n=$(( $(xattr stats.evictions) - e0 ))
  a=$(awk '/^RssAnon:/ {print $2}' "/proc/$DAEMON_PID/status")
  (( a > peak_anon )) && peak_anon=$a
  if (( n >= HALF )); then
    [[ -z $evicted_at ]] && evicted_at=$(since "$t0")
    [[ -z $(find "$STORE/trash" -mindepth 1 -maxdepth 1 -print -quit) ]] && break
  fi
  if (( $(date +%s) - ${t0%.*} > 3600 )); then log "eviction not finished after 1 h: $n evicted"; break; fi
  sleep 0.05
done
evict_secs=$(since "$t0")
if [[ -n $PERF_PID ]]; then
  kill -INT "$PERF_PID"; wait "$PERF_PID" || true
  perf report -i "$LOGDIR/evict.perf.data" --no-children --sort comm,dso,sym --stdio -g none 2>/dev/null \
    | head -80 > "$LOGDIR/evict-perf.txt" || true
fi
raw "evict seconds=$evict_secs loadavg_before=$evict_load records_removed_seconds=$evicted_at evicted=$n cleanup_seconds_before=$c0 cleanup_seconds=$(xattr stats.cleanup_seconds) peak_RssAnon_while_evicting=$peak_anon"
raw "after_eviction $(rss)"
raw "thread_cpu $(thread_cpu)"
sleep 3
raw "after_eviction_3s $(rss)"
getfattr -d -m - "$MNT" > "$LOGDIR/after-eviction.xattrs" 2>/dev/null || true

# ---- 6. rm -rf of the second copy --------------------------------------------------------------------
rm_rf rm_rf_after "$RMTREE2"
rm_before=$(field seconds "$(grep '^rm_rf_before ' "$RAW")")
rm_after=$(field seconds "$(grep '^rm_rf_after ' "$RAW")")
rm_secs=$(echo "($rm_before + $rm_after) / 2" | bc -l | awk '{printf "%.2f", $1}')

# ---- 7. remount, check ------------------------------------------------------------------------------
unmount_store
drop_caches
mount_store "$LOGDIR/mount-3.log"
raw "clean_mount_after_eviction seconds=$MOUNT_SECS $(rss)"
tot=$(xattr total.disk_bytes)
du_data=$(du --block-size=1 -s "$DATA" | cut -f1)
artifacts_after=$(xattr total.artifacts)
raw "check total.disk_bytes=$tot du=$du_data total.artifacts=$artifacts_after expected_artifacts=$(( N + 10 - HALF )) files_in_data=$(find "$DATA" -type f | wc -l)"
unmount_store

# ---- report ----------------------------------------------------------------------------------------------
get() { grep "^$1 " "$RAW" | head -1; }
kib_mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
rss_cells() {  # RssAnon MiB | RssFile MiB
  local l; l=$(get "$1")
  echo "$(kib_mib "$(field RssAnon "$l")") | $(kib_mib "$(field RssFile "$l")")"
}
ratio=$(echo "$evict_secs / $rm_secs" | bc -l | awk '{printf "%.2f", $1}')
{
  echo "# artifactfs at scale, $DATE"
  echo
  echo "Produced by \`bench/scale.sh $ORIG_ARGS\` (see bench/README.md, \"Scale\")."
  echo
  echo "## Machine"
  echo
  echo "| | |"
  echo "|---|---|"
  "$HERE/lib/machine.sh" "$WORKDIR" "$ARTIFACTFS" | awk -F'\t' '{printf "| %s | %s |\n", $1, $2}'
  echo
  echo "## Store"
  echo
  echo "$N artifacts at layout.depth 2: $DIRS directories of $PER_DIR files of $SIZE bytes"
  echo "($one bytes on disk each), made directly in STORE/data before the first mount. fuse.threads=$THREADS."
  echo
  echo "| | seconds |"
  echo "|---|---|"
  echo "| first mount (index built from the tree) | $(field seconds "$(get first_mount)") |"
  echo "| clean mount | $(field seconds "$(get clean_mount)") |"
  echo "| mount after \`kill -9\` of the daemon, 10 artifacts written since the last flush | $(field seconds "$(get mount_after_kill)") |"
  echo "| clean mount after the eviction | $(field seconds "$(get clean_mount_after_eviction)") |"
  echo "| \`ls -f\` of the root ($DIRS entries) | $(field seconds "$(get ls_root)") |"
  echo
  echo "After \`kill -9\`: $(sed -n 's/^recovery //p' "$RAW" | tr '_' ' ') (from the daemon's stderr); the first"
  echo "mount, before any index existed, walked all $N."
  echo
  echo "Index size after the first mount: $(kib_mib "$(sed -n 's/^index_size_kib=//p' "$RAW")") MiB."
  echo
  echo "## Daemon memory"
  echo
  echo "| when | RssAnon (MiB) | RssFile (MiB) |"
  echo "|---|---|---|"
  echo "| after the first mount (index built) | $(rss_cells first_mount) |"
  echo "| 3 s later (after the first Index::release_memory) | $(rss_cells first_mount_3s) |"
  echo "| after a clean mount | $(rss_cells clean_mount) |"
  echo "| after \`ls -f\` of the root and of one namespace | $(rss_cells ls_namespace) |"
  echo "| after a mount after \`kill -9\` | $(rss_cells mount_after_kill) |"
  echo "| after evicting $HALF | $(rss_cells after_eviction) |"
  echo "| 3 s later | $(rss_cells after_eviction_3s) |"
  echo "| after a clean remount | $(rss_cells clean_mount_after_eviction) |"
  echo
  echo "Peak RssAnon while evicting: $(kib_mib "$peak_anon") MiB. RssFile is mostly LMDB's memory map"
  echo "(pages of data.mdb read or written): file-backed, shared with the page cache, reclaimable."
  echo
  echo "## Eviction of half against rm -rf"
  echo
  echo "| | seconds | per second |"
  echo "|---|---|---|"
  echo "| evict $HALF artifacts (SIGHUP until stats.evictions grew by $HALF and STORE/trash is empty) | $evict_secs | $(echo "$HALF / $evict_secs" | bc) |"
  echo "| of which until the last record was removed | $evicted_at | |"
  echo "| \`rm -rf\` of an identical copy ($((DIRS / 2)) directories of $PER_DIR files), same disk, just before | $rm_before | $(echo "$HALF / $rm_before" | bc) |"
  echo "| the same, second copy, just after | $rm_after | $(echo "$HALF / $rm_after" | bc) |"
  echo "| ratio: eviction / mean of the two rm -rf | ${ratio}x | |"
  echo
  echo "Load average (1 min) before each: rm -rf $(field loadavg_before "$(get rm_rf_before)"), eviction $(field loadavg_before "$(get evict)"), rm -rf $(field loadavg_before "$(get rm_rf_after)")."
  echo "All three start cold (sync; drop_caches). CPU time per daemon thread after the eviction"
  echo "(utime + stime, seconds, whole life of the daemon): \`$(sed -n 's/^thread_cpu //p' "$RAW" | head -1)\`."
  echo
  echo "Check after the remount: \`$(sed -n 's/^check //p' "$RAW")\`."
  echo
  echo "## Raw output"
  echo
  echo '```'
  cat "$RAW"
  echo '```'
} > "$OUT"
# The figures the README quotes, "key<TAB>value", beside the Markdown.
rss_mib() { kib_mib "$(( $(field RssAnon "$(get "$1")") + $(field RssFile "$(get "$1")") ))"; }
{
  printf 'artifacts\t%s\n' "$N"
  printf 'first_mount_s\t%s\n' "$(field seconds "$(get first_mount)")"
  printf 'clean_mount_s\t%s\n' "$(field seconds "$(get clean_mount)")"
  printf 'mount_after_kill_s\t%s\n' "$(field seconds "$(get mount_after_kill)")"
  printf 'rss_after_ls_mib\t%s\n' "$(rss_mib ls_namespace)"
  printf 'rss_anon_after_ls_mib\t%s\n' "$(kib_mib "$(field RssAnon "$(get ls_namespace)")")"
  printf 'rss_after_evict_mib\t%s\n' "$(rss_mib after_eviction_3s)"
  printf 'rss_anon_after_evict_mib\t%s\n' "$(kib_mib "$(field RssAnon "$(get after_eviction_3s)")")"
  printf 'evicted\t%s\n' "$HALF"
  printf 'evict_s\t%s\n' "$evict_secs"
  printf 'rm_rf_s\t%s\n' "$rm_secs"
  printf 'evict_over_rm_rf\t%s\n' "$ratio"
} > "${OUT%.md}.tsv"
log "results written to $OUT and ${OUT%.md}.tsv"
if [[ $tot != "$du_data" || $artifacts_after != $(( N + 10 - HALF )) ]]; then
  echo "scale.sh: the index disagrees with the data after the eviction: $(sed -n 's/^check //p' "$RAW")" >&2
  exit 1
fi
