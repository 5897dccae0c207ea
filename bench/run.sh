#!/usr/bin/env bash
# artifactfs benchmark suite: artifactfs against the native directory and
# other FUSE pass-through file systems on one prepared data set, plus an
# eviction benchmark. Run by hand as root (drop_caches, FUSE mounts);
# never part of CI. See bench/README.md.
#
#   bench/run.sh [--quick] [--targets LIST] [--no-eviction] [--only-eviction]
#                [--reps N] [--out FILE] [--artifactfs BINARY] [--workdir DIR]
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ORIG_ARGS="$*"
REPO=$(cd "$HERE/.." && pwd)

QUICK=0
REPS=""
TARGETS="native artifactfs-t1 artifactfs-t2 artifactfs-t4 passthrough_hp-single passthrough_hp bindfs mergerfs"
DO_MAIN=1
DO_EVICTION=1
OUT=""
ARTIFACTFS=${ARTIFACTFS:-}
WORKDIR=""
CACHE=${BENCH_CACHE:-/tmp/artifactfs-bench-cache}

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  cat <<EOF

  --quick            smaller data set (big files 64 MiB, 2000 eviction artifacts), 1 repetition
  --targets LIST     space- or comma-separated subset of: $TARGETS
  --no-eviction      skip the eviction benchmark
  --only-eviction    run only the eviction benchmark
  --reps N           repetitions per measurement (default 3, --quick 1); the median is reported
  --out FILE         results file (default bench/results/<date>-<hostname>.md)
  --artifactfs BIN   daemon binary (default: build-bench/cli/artifactfs, else build/cli/artifactfs)
  --workdir DIR      scratch directory for the data set (default: a new directory under /var/tmp;
                     it must be on the disk you want to measure)
EOF
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1 ;;
    --targets) TARGETS=${2//,/ }; shift ;;
    --no-eviction) DO_EVICTION=0 ;;
    --only-eviction) DO_MAIN=0 ;;
    --reps) REPS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --artifactfs) ARTIFACTFS=$2; shift ;;
    --workdir) WORKDIR=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [[ $EUID -ne 0 ]]; then
  echo "run.sh: run as root (needs /proc/sys/vm/drop_caches and FUSE mounts with allow_other)" >&2
  exit 2
fi

# ---- sizes ---------------------------------------------------------------------
SMALL_DIRS=100          # artifact directories of small files
SMALL_PER_DIR=20        # 2000 files of 4 KiB
SMALL_SIZE=4096
WIDE_ENTRIES=10000      # one directory with this many entries, for readdir
BIG_FILES=4
BIG_MIB=256
EVICT_ARTIFACTS=10000
EVICT_FILES=10
EVICT_SIZE=4096
MIXED_SECONDS=3
if [[ $QUICK == 1 ]]; then
  BIG_MIB=64
  EVICT_ARTIFACTS=2000
  MIXED_SECONDS=2
  : "${REPS:=1}"
fi
: "${REPS:=3}"
EVICT_REPS=$(( QUICK ? 1 : 3 ))

if [[ -z $ARTIFACTFS ]]; then
  for candidate in "$REPO/build-bench/cli/artifactfs" "$REPO/build/cli/artifactfs"; do
    [[ -x $candidate ]] && { ARTIFACTFS=$candidate; break; }
  done
fi
[[ -x ${ARTIFACTFS:-} ]] || { echo "run.sh: no artifactfs binary; build it or pass --artifactfs" >&2; exit 2; }

mkdir -p "$CACHE"
WORKDIR=${WORKDIR:-$(mktemp -d /var/tmp/artifactfs-bench.XXXXXX)}
mkdir -p "$WORKDIR"
STORE=$WORKDIR/store
DATA=$STORE/data
MNT=$WORKDIR/mnt
LOGDIR=$WORKDIR/logs
RAW=$WORKDIR/raw.txt
mkdir -p "$MNT" "$LOGDIR"
: > "$RAW"
DATE=$(date +%Y-%m-%d)
OUT=${OUT:-$HERE/results/$DATE-$(hostname -s).md}
mkdir -p "$(dirname "$OUT")"

# ---- cleanup: every mount unmounted, every process stopped ----------------------
DAEMON_PID=""
MOUNTED=""
cleanup() {
  local rc=$?
  set +e
  if [[ -n $MOUNTED ]] && grep -q " $MOUNTED " /proc/mounts; then
    fusermount3 -u "$MOUNTED" 2>/dev/null || fusermount3 -uz "$MOUNTED" 2>/dev/null
  fi
  if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$DAEMON_PID" 2>/dev/null && kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null
  fi
  if grep -q "$WORKDIR" /proc/mounts; then
    echo "run.sh: WARNING: still mounted under $WORKDIR:" >&2
    grep "$WORKDIR" /proc/mounts >&2
  fi
  if [[ $rc -eq 0 && -z ${KEEP_WORKDIR:-} ]]; then
    rm -rf "$WORKDIR"
  else
    echo "run.sh: scratch data and logs kept in $WORKDIR" >&2
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# ---- tools ------------------------------------------------------------------------
LOADGEN=$CACHE/loadgen
if [[ ! -x $LOADGEN || $HERE/loadgen.c -nt $LOADGEN ]]; then
  cc -O2 -Wall -pthread -o "$LOADGEN" "$HERE/loadgen.c"
fi

# libfuse 3.14's example/passthrough_hp.cc, from the Debian source package,
# built outside the repository.
PTHP=$CACHE/passthrough_hp
build_passthrough_hp() {
  [[ -x $PTHP ]] && return 0
  local d=$CACHE/fuse3-src version
  version=$(dpkg-query -W -f='${Version}' libfuse3-dev)
  mkdir -p "$d/lists/partial" "$d/archives/partial" "$d/src"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
    > "$d/sources.list"
  local apt_opts=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/nonexistent
                  -o "Dir::State::Lists=$d/lists" -o "Dir::Cache::Archives=$d/archives"
                  -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
  if ! ls "$d"/src/fuse3_*.orig.tar.xz >/dev/null 2>&1; then
    log "downloading the fuse3 $version source package"
    apt-get "${apt_opts[@]}" update >/dev/null
    (cd "$d/src" && apt-get "${apt_opts[@]}" source --download-only "fuse3=$version" >/dev/null)
  fi
  (cd "$d/src" && rm -rf fuse-3.* && tar xf fuse3_*.orig.tar.xz)
  local ex
  ex=$(echo "$d"/src/fuse-3.*/example)
  log "building passthrough_hp"
  g++ -O2 -std=c++17 -o "$PTHP" "$ex/passthrough_hp.cc" $(pkg-config --cflags --libs fuse3) -pthread
}

# ---- data set ------------------------------------------------------------------------
prepare_data() {
  log "preparing the data set in $DATA"
  mkdir -p "$DATA"
  "$LOADGEN" mktree "$DATA" "$SMALL_DIRS" "$SMALL_PER_DIR" "$SMALL_SIZE" > /dev/null
  (cd "$DATA" && find . -path './a*' -type f | sed 's|^\./||' | sort) > "$WORKDIR/small.list"
  mkdir -p "$DATA/wide"
  (cd "$DATA/wide" && seq -f 'e%06g' 1 "$WIDE_ENTRIES" | xargs touch)
  mkdir -p "$DATA/big"
  for i in $(seq 1 "$BIG_FILES"); do
    head -c "$((BIG_MIB << 20))" /dev/urandom > "$DATA/big/f$i"
  done
  sync
}

# ---- mounting -------------------------------------------------------------------------
wait_mounted() {
  for _ in $(seq 200); do
    grep -q " $1 fuse" /proc/mounts && return 0
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "run.sh: the daemon exited; see $2" >&2; cat "$2" >&2; return 1; }
    sleep 0.05
  done
  echo "run.sh: $1 not mounted after 10 s; see $2" >&2
  return 1
}

# Mounts TARGET over $DATA at $MNT; sets ROOT to the directory to measure.
mount_target() {
  local target=$1 logf=$LOGDIR/$1.log
  ROOT=$MNT
  case $target in
    native) ROOT=$DATA; return 0 ;;
    artifactfs-t*)
      "$ARTIFACTFS" mount "$STORE" "$MNT" -f --set "fuse.threads=${target#artifactfs-t}" \
        --set layout.depth=1 --set quota.min-age=0s > "$logf" 2>&1 &
      ;;
    passthrough_hp-single) "$PTHP" --foreground --single "$DATA" "$MNT" > "$logf" 2>&1 & ;;
    passthrough_hp) "$PTHP" --foreground "$DATA" "$MNT" > "$logf" 2>&1 & ;;
    bindfs) bindfs -f "$DATA" "$MNT" > "$logf" 2>&1 & ;;
    mergerfs) mergerfs -f -o cache.files=full "$DATA" "$MNT" > "$logf" 2>&1 & ;;
    *) echo "run.sh: unknown target $target" >&2; return 1 ;;
  esac
  DAEMON_PID=$!
  MOUNTED=$MNT
  wait_mounted "$MNT" "$logf"
}

unmount_target() {
  [[ -z $MOUNTED ]] && return 0
  fusermount3 -u "$MOUNTED"
  wait "$DAEMON_PID" || true
  DAEMON_PID=""
  MOUNTED=""
}

# ---- measuring --------------------------------------------------------------------------
# field KEY LINE: the value of KEY=VALUE in LINE
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<< "$2"; }
median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print v[(NR+1)/2]; else printf "%.6g\n", (v[NR/2]+v[NR/2+1])/2}'; }

declare -A RESULT
# measure TARGET NAME KEY COLD(0/1) PRIME_COMMAND -- LOADGEN ARGS...
# Runs the load generator REPS times and stores the median of KEY.
# COLD=1 drops the page, dentry and inode caches before each run; COLD=0
# runs PRIME_COMMAND (a loadgen argument list, or "-") once first.
measure() {
  local target=$1 name=$2 key=$3 cold=$4; shift 4
  local values=() line
  for _ in $(seq "$REPS"); do
    [[ $cold == 1 ]] && drop_caches
    line=$("$LOADGEN" "$@")
    echo "$target $name $line" >> "$RAW"
    values+=("$(field "$key" "$line")")
  done
  RESULT[$target,$name]=$(printf '%s\n' "${values[@]}" | median)
  log "  $name: ${RESULT[$target,$name]} ($key, median of $REPS)"
}

BIGS=()
run_target() {
  local t=$1
  log "target $t (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "$t loadavg_before=$(cut -d' ' -f1 /proc/loadavg)" >> "$RAW"
  mount_target "$t"
  local list=$WORKDIR/small.list
  BIGS=()
  for i in $(seq 1 "$BIG_FILES"); do BIGS+=("$ROOT/big/f$i"); done
  # Cold: caches dropped before each run (the daemon's own state is kept;
  # the kernel forgets every FUSE dentry and inode, so lookups go to it).
  measure "$t" open_cold files_per_s 1 openread "$ROOT" "$list"
  measure "$t" stat_cold stats_per_s 1 stat "$ROOT" "$list"
  measure "$t" seq_cold mib_per_s 1 seqread "${BIGS[@]:0:2}"
  measure "$t" readdir_cold listings_per_s 1 readdir "$ROOT/wide"
  # Warm: one pass first (two for the big files), then the measured passes.
  "$LOADGEN" openread "$ROOT" "$list" > /dev/null
  measure "$t" open_warm files_per_s 0 openread "$ROOT" "$list" -n 5
  measure "$t" open_warm_j2 files_per_s 0 openread "$ROOT" "$list" -n 5 -j 2
  measure "$t" open_warm_j4 files_per_s 0 openread "$ROOT" "$list" -n 5 -j 4
  measure "$t" stat_warm stats_per_s 0 stat "$ROOT" "$list" -n 5
  "$LOADGEN" seqread "${BIGS[@]:0:2}" > /dev/null
  "$LOADGEN" seqread "${BIGS[@]:0:2}" > /dev/null
  measure "$t" seq_warm mib_per_s 0 seqread "${BIGS[@]:0:2}"
  "$LOADGEN" readdir "$ROOT/wide" -l > /dev/null
  measure "$t" readdir_warm listings_per_s 0 readdir "$ROOT/wide" -n 20
  measure "$t" readdir_l_warm listings_per_s 0 readdir "$ROOT/wide" -n 5 -l
  # Warm small-file opens alone, then while one and two other clients read
  # big files from the disk (their page cache dropped every 8 MiB).
  measure "$t" mixed0 fg_files_per_s 0 mixed "$ROOT" "$list" -d "$MIXED_SECONDS"
  local slow1=(-s "$ROOT/big/f3" -S "$DATA/big/f3") slow2=(-s "$ROOT/big/f4" -S "$DATA/big/f4")
  measure "$t" mixed1 fg_files_per_s 0 mixed "$ROOT" "$list" -d "$MIXED_SECONDS" "${slow1[@]}"
  RESULT[$t,mixed1_p99]=$(grep "^$t mixed1 " "$RAW" | while read -r l; do field fg_p99_us "$l"; done | median)
  RESULT[$t,mixed1_bg]=$(grep "^$t mixed1 " "$RAW" | while read -r l; do field bg_mib_per_s "$l"; done | median)
  RESULT[$t,mixed0_p99]=$(grep "^$t mixed0 " "$RAW" | while read -r l; do field fg_p99_us "$l"; done | median)
  measure "$t" mixed2 fg_files_per_s 0 mixed "$ROOT" "$list" -d "$MIXED_SECONDS" "${slow1[@]}" "${slow2[@]}"
  RESULT[$t,mixed2_p99]=$(grep "^$t mixed2 " "$RAW" | while read -r l; do field fg_p99_us "$l"; done | median)
  if [[ $t == artifactfs-* ]]; then
    getfattr -d -m - "$MNT" > "$LOGDIR/$t.xattrs" 2>/dev/null || true
  fi
  unmount_target
}

# ---- eviction benchmark --------------------------------------------------------------------
xattr() { getfattr --only-values -n "user.artifactfs.$2" "$1" 2>/dev/null || echo 0; }

declare -a EVICT_SECONDS EVICT_COUNTS RM_SECONDS CREATE_RATES NATIVE_CREATE_RATES
EVICT_COMMANDS=""
run_eviction_once() {
  local run=$1 es=$WORKDIR/evict-store em=$WORKDIR/evict-mnt cfg=$WORKDIR/evict.yaml logf=$LOGDIR/evict-$1.log
  rm -rf "$es"; mkdir -p "$es" "$em"
  printf 'layout:\n  depth: 1\nquota:\n  max-size: unlimited\n  min-age: 0s\n  check-interval: 1s\n' > "$cfg"
  "$ARTIFACTFS" mount "$es" "$em" -f -c "$cfg" --set fuse.threads=2 > "$logf" 2>&1 &
  DAEMON_PID=$!
  MOUNTED=$em
  wait_mounted "$em" "$logf"
  # The daemon holds an O_PATH descriptor for every inode the kernel knows
  # and closes it on FORGET; with RLIMIT_NOFILE at 20000 (no raising it in
  # a container) creating 110,000 inodes in one go fails with EMFILE. So:
  # batches of 1000 artifacts, the kernel's dentries and inodes dropped in
  # between (echo 2), which makes it forget them.
  local line b batch=1000 seconds=0 files=0
  for (( b = 0; b < EVICT_ARTIFACTS; b += batch )); do
    line=$("$LOADGEN" mktree "$em" "$(( EVICT_ARTIFACTS - b < batch ? EVICT_ARTIFACTS - b : batch ))" \
           "$EVICT_FILES" "$EVICT_SIZE" -j 2 -o "$b")
    seconds=$(echo "$seconds + $(field seconds "$line")" | bc -l)
    files=$(( files + $(field files "$line") ))
    echo 2 > /proc/sys/vm/drop_caches
  done
  echo "artifactfs evict_create files=$files seconds=$seconds daemon_fds_after=$(ls "/proc/$DAEMON_PID/fd" | wc -l) nofile=$(ulimit -n)" >> "$RAW"
  CREATE_RATES+=("$(echo "$files / $seconds" | bc)")
  sleep 2  # one index flush interval and then some
  drop_caches  # both sides start cold: eviction here, rm -rf below
  local e0 disk0
  e0=$(xattr "$em" stats.evictions)
  disk0=$(xattr "$em" total.disk_bytes)
  # Everything must go: a limit far below one artifact.
  sed -i 's/max-size: unlimited/max-size: 4K/' "$cfg"
  local t0 t1 n trash_left
  t0=$(date +%s.%N)
  kill -HUP "$DAEMON_PID"
  while :; do
    n=$(( $(xattr "$em" stats.evictions) - e0 ))
    if (( n >= EVICT_ARTIFACTS )) && [[ -z $(ls -A "$es/trash") ]]; then break; fi
    if (( $(date +%s) - ${t0%.*} > 900 )); then
      log "  eviction not finished after 900 s: $n evicted"; break
    fi
    sleep 0.02
  done
  t1=$(date +%s.%N)
  local secs
  secs=$(echo "$t1 - $t0" | bc -l)
  echo "artifactfs evict seconds=$secs evicted=$n disk_bytes_before=$disk0 cleanup_seconds=$(xattr "$em" stats.cleanup_seconds) left_in_data=$(ls "$es/data" | wc -l)" >> "$RAW"
  getfattr -d -m - "$em" > "$LOGDIR/evict-$run.xattrs" 2>/dev/null || true
  EVICT_SECONDS+=("$secs")
  EVICT_COUNTS+=("$n")
  unmount_target
  rm -rf "$es"
}

run_eviction() {
  log "eviction: $EVICT_ARTIFACTS artifacts of $EVICT_FILES files of $EVICT_SIZE bytes, $EVICT_REPS run(s)"
  for r in $(seq "$EVICT_REPS"); do
    run_eviction_once "$r"
    log "  artifactfs run $r: ${EVICT_SECONDS[-1]} s for ${EVICT_COUNTS[-1]} evictions (created at ${CREATE_RATES[-1]} files/s)"
  done
  # The same trees in the native directory, same disk, deleted with rm -rf.
  local tree=$WORKDIR/rmtree
  local line
  rm -rf "$tree"; mkdir -p "$tree"
  line=$("$LOADGEN" mktree "$tree" "$EVICT_ARTIFACTS" "$EVICT_FILES" "$EVICT_SIZE" -j 2)
  echo "native evict_create $line" >> "$RAW"
  NATIVE_CREATE_RATES+=("$(field files_per_s "$line")")
  rm -rf "$tree"
  EVICT_COMMANDS="hyperfine --runs $EVICT_REPS --prepare 'mkdir -p $tree && loadgen mktree $tree $EVICT_ARTIFACTS $EVICT_FILES $EVICT_SIZE -j 2 && sync && echo 3 > /proc/sys/vm/drop_caches' 'rm -rf $tree'"
  hyperfine --style none --runs "$EVICT_REPS" \
    --prepare "mkdir -p $tree && $LOADGEN mktree $tree $EVICT_ARTIFACTS $EVICT_FILES $EVICT_SIZE -j 2 >/dev/null && sync && echo 3 > /proc/sys/vm/drop_caches" \
    --export-csv "$WORKDIR/rm.csv" "rm -rf $tree" > "$LOGDIR/hyperfine-rm.log" 2>&1
  # command,mean,stddev,median,user,system,min,max
  RM_SECONDS=("$(awk -F, 'NR==2 {print $4}' "$WORKDIR/rm.csv")")
  echo "native rm_rf median_seconds=${RM_SECONDS[0]}" >> "$RAW"
  log "  rm -rf: ${RM_SECONDS[0]} s (median of $EVICT_REPS)"
}

# ---- report ---------------------------------------------------------------------------------
machine_section() {
  local fs_type
  fs_type=$(findmnt -n -o FSTYPE,SOURCE,OPTIONS --target "$WORKDIR" | head -1)
  cat <<EOF
## Machine

| | |
|---|---|
| nproc | $(nproc) |
| CPU | $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') |
| memory | $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) |
| kernel | $(uname -r) |
| load average at the end | $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine competes with the benchmark; see loadavg_before in the raw output) |
| OS | $(. /etc/os-release; echo "$PRETTY_NAME") |
| backing filesystem | $fs_type ($WORKDIR) |
| libfuse | $(pkg-config --modversion fuse3) (libfuse3-3 $(dpkg-query -W -f='${Version}' libfuse3-3)) |
| bindfs / mergerfs | $(dpkg-query -W -f='${Version}' bindfs) / $(dpkg-query -W -f='${Version}' mergerfs) |
| artifactfs | $ARTIFACTFS (built $(date -r "$ARTIFACTFS" '+%F %T')); repository at report time: commit $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- . ':!bench' || echo ' + uncommitted changes in the work tree'), $(grep -m1 CMAKE_BUILD_TYPE "$(dirname "$(dirname "$ARTIFACTFS")")/CMakeCache.txt" 2>/dev/null | cut -d= -f2) build |

EOF
}

row() {  # row TARGET KEY...
  local t=$1; shift
  local out="| $t"
  for k in "$@"; do out+=" | ${RESULT[$t,$k]:--}"; done
  echo "$out |"
}

write_report() {
  {
    echo "# artifactfs benchmark results, $DATE, $(hostname -s)"
    echo
    echo "Produced by \`bench/run.sh $ORIG_ARGS\` (niceness $(nice)). Figures are medians of $REPS runs unless stated; see"
    echo "bench/README.md for what each column measures."
    echo
    machine_section
    if [[ $DO_MAIN == 1 ]]; then
      cat <<EOF
## Data set

$((SMALL_DIRS * SMALL_PER_DIR)) files of $SMALL_SIZE bytes in $SMALL_DIRS directories (a000000..), one
directory of $WIDE_ENTRIES empty files (wide/), $BIG_FILES files of $BIG_MIB MiB (big/), in $DATA.

## Small files, metadata, large files

Cold: \`sync; echo 3 > /proc/sys/vm/drop_caches\` before each run (kernel page, dentry and inode
caches; the FUSE daemons keep their own state). Warm: after one unmeasured pass.

| target | open+read+close cold (files/s) | warm, 1 client | warm, 2 clients | warm, 4 clients | stat cold (stats/s) | stat warm | seq read cold (MiB/s) | seq read warm | readdir $WIDE_ENTRIES cold (listings/s) | readdir warm | readdir + stat warm |
|---|---|---|---|---|---|---|---|---|---|---|---|
EOF
      for t in $TARGETS; do
        row "$t" open_cold open_warm open_warm_j2 open_warm_j4 stat_cold stat_warm seq_cold seq_warm readdir_cold readdir_warm readdir_l_warm
      done
      cat <<EOF

## Small-file opens while other clients read big files from the disk

Warm open+read+close of the small files by one client for $MIXED_SECONDS s; meanwhile 0, 1 or 2
other clients read a big file in 1 MiB blocks with its page cache dropped every 8 MiB (so each
of their reads waits for the disk).

| target | alone (files/s) | p99 alone (µs) | 1 slow client (files/s) | p99 (µs) | slow client's MiB/s | 2 slow clients (files/s) | p99 (µs) |
|---|---|---|---|---|---|---|---|
EOF
      for t in $TARGETS; do
        row "$t" mixed0 mixed0_p99 mixed1 mixed1_p99 mixed1_bg mixed2 mixed2_p99
      done
      echo
    fi
    if [[ $DO_EVICTION == 1 ]]; then
      local em rm ratio cm nm
      em=$(printf '%s\n' "${EVICT_SECONDS[@]}" | median)
      rm=${RM_SECONDS[0]}
      ratio=$(echo "scale=1; $em / $rm" | bc -l)
      cm=$(printf '%s\n' "${CREATE_RATES[@]}" | median)
      nm=$(printf '%s\n' "${NATIVE_CREATE_RATES[@]}" | median)
      cat <<EOF
## Eviction

$EVICT_ARTIFACTS artifacts of $EVICT_FILES files of $EVICT_SIZE bytes, written through an artifactfs
mount (fuse.threads=2, quota unlimited, min-age 0s) in batches of 1000 artifacts with
\`echo 2 > /proc/sys/vm/drop_caches\` in between (see the note on EMFILE below), then \`sync\` and
\`echo 3 > /proc/sys/vm/drop_caches\`, then quota.max-size set to 4K in the configuration file and SIGHUP: time from the signal until stats.evictions has grown by
$EVICT_ARTIFACTS and STORE/trash is empty (polled every 20 ms). Against: \`rm -rf\` of the same
trees in a directory on the same disk (created, synced and caches dropped before each run): both cold.

| | seconds | runs |
|---|---|---|
| artifactfs eviction (median) | $em | ${EVICT_SECONDS[*]} (evicted: ${EVICT_COUNTS[*]}) |
| rm -rf, native (median) | $rm | $EVICT_REPS |
| ratio | ${ratio}x | |

Creating the trees: $cm files/s through artifactfs (batches), $nm files/s native in one go (2 writer threads).

EMFILE: artifactfs keeps an O_PATH descriptor open for every inode the kernel holds a reference
to, and closes it only on FORGET. With RLIMIT_NOFILE at $(ulimit -n) (soft and hard; root cannot
raise it in this container), writing the trees in one go failed with "Too many open files" after
about 18,000 files; hence the batches with the kernel's inode cache dropped between them.

EOF
    fi
    cat <<EOF
## Commands

\`\`\`
EOF
    echo "loadgen: cc -O2 -Wall -pthread -o loadgen bench/loadgen.c"
    [[ $DO_MAIN == 1 ]] && for t in $TARGETS; do
      case $t in
        native) ;;
        artifactfs-t*) echo "$t: artifactfs mount STORE MNT -f --set fuse.threads=${t#artifactfs-t} --set layout.depth=1 --set quota.min-age=0s" ;;
        passthrough_hp-single) echo "$t: passthrough_hp --foreground --single STORE/data MNT" ;;
        passthrough_hp) echo "$t: passthrough_hp --foreground STORE/data MNT" ;;
        bindfs) echo "$t: bindfs -f STORE/data MNT" ;;
        mergerfs) echo "$t: mergerfs -f -o cache.files=full STORE/data MNT" ;;
      esac
    done
    if [[ $DO_MAIN == 1 ]]; then
      cat <<EOF
open_cold:    drop_caches; loadgen openread ROOT small.list
stat_cold:    drop_caches; loadgen stat ROOT small.list
seq_cold:     drop_caches; loadgen seqread ROOT/big/f1 ROOT/big/f2        (1 MiB reads)
readdir_cold: drop_caches; loadgen readdir ROOT/wide
open_warm:    loadgen openread ROOT small.list -n 5 [-j 2|-j 4]
stat_warm:    loadgen stat ROOT small.list -n 5
seq_warm:     loadgen seqread ROOT/big/f1 ROOT/big/f2
readdir_warm: loadgen readdir ROOT/wide -n 20 [-l: -n 5 -l]
mixed:        loadgen mixed ROOT small.list -d $MIXED_SECONDS [-s ROOT/big/f3 -S STORE/data/big/f3 [-s ROOT/big/f4 -S STORE/data/big/f4]]
EOF
    fi
    if [[ $DO_EVICTION == 1 ]]; then
      cat <<EOF
eviction:     artifactfs mount ESTORE EMNT -f -c evict.yaml --set fuse.threads=2
              for B in 0 1000 ...: loadgen mktree EMNT 1000 $EVICT_FILES $EVICT_SIZE -j 2 -o B; echo 2 > /proc/sys/vm/drop_caches
              sleep 2; sync; echo 3 > /proc/sys/vm/drop_caches
              sed -i 's/max-size: unlimited/max-size: 4K/' evict.yaml; kill -HUP PID
              poll getfattr -n user.artifactfs.stats.evictions EMNT and ls -A ESTORE/trash
rm -rf:       $EVICT_COMMANDS
EOF
    fi
    echo '```'
    echo
    echo "## Raw output"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
  } > "$OUT"
  log "results written to $OUT"
}

# ---- main ---------------------------------------------------------------------------------------
log "work directory $WORKDIR, artifactfs $ARTIFACTFS, reps $REPS"
if [[ $DO_MAIN == 1 ]]; then
  [[ " $TARGETS " == *" passthrough_hp"* ]] && build_passthrough_hp
  prepare_data
  for t in $TARGETS; do run_target "$t"; done
fi
[[ $DO_EVICTION == 1 ]] && run_eviction
write_report
grep fuse /proc/mounts | grep "$WORKDIR" && { echo "run.sh: mounts left behind" >&2; exit 1; }
exit 0
