#!/usr/bin/env bash
# artifactfs benchmarks: the one command behind every performance figure in
# the README. Compares artifactfs with the native directory (the physical
# limit), a minimal in-memory FUSE file system (the floor for any file system
# that sees every open) and other FUSE pass-through file systems, in
# interleaved rounds; writes a Markdown table, a PNG chart and the raw
# figures under bench/results/, and regenerates the README's "Performance"
# section from them. Run by hand as root (drop_caches, FUSE mounts with
# allow_other); `--smoke` is the test suite's check that it still works.
# See bench/README.md.
#
#   bench/run.sh [--smoke] [--rounds N] [--targets LIST] [--workloads LIST]
#                [--scale [N]] [--only-scale] [--readme FILE | --no-readme]
#                [--out-dir DIR] [--artifactfs BINARY] [--baseline BINARY]
#                [--workdir DIR]
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ORIG_ARGS="$*"

ALL_TARGETS="native floor-t1 floor-t4 artifactfs-t1 artifactfs-t4 artifactfs-t4-norecord artifactfs-t4-devfuse passthrough_hp-single passthrough_hp bindfs mergerfs"
ALL_WORKLOADS="files tree ccache eviction profile"
TARGETS=$ALL_TARGETS
WORKLOADS=$ALL_WORKLOADS
SMOKE=0
ROUNDS=""
SCALE_N=""
README_FILE=""
NO_README=0
OUT_DIR=$HERE/results
ARTIFACTFS=${ARTIFACTFS:-}
BASELINE=""
WORKDIR=""
CACHE=${BENCH_CACHE:-/tmp/artifactfs-bench-cache}

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  cat <<EOF

  --smoke            tiny sizes, one round, the 1M-artifact step with 2000: checks that every
                     part still runs (seconds to a few minutes); figures mean nothing
  --rounds N         interleaved rounds (default 5; eviction at most 3)
  --targets LIST     subset of: $ALL_TARGETS
  --workloads LIST   subset of: $ALL_WORKLOADS
  --scale [N]        also the scale step with N artifacts (default 1000000: about 20 minutes
                     and 12 GB of disk on 2 cores): bench/scale.sh
  --only-scale [N]   only the scale step
  --readme FILE      regenerate the Performance section of FILE (default: README.md after a
                     complete run, that is all targets and workloads and not --smoke)
  --no-readme        leave the README alone
  --out-dir DIR      where results go (default bench/results)
  --artifactfs BIN   daemon binary (default: build-bench/cli/artifactfs, else build/cli/artifactfs)
  --baseline BIN     also measure BIN (an earlier build of artifactfs) as target baseline-t4, in
                     the same rounds: the A/B check that a change did not slow the hot path
  --workdir DIR      scratch directory (default: a new directory under /var/tmp; it must be on
                     the disk to be measured)

The run turns the kernel's FUSE over io_uring on (/sys/module/fuse/parameters/enable_uring,
restored at the end), so artifactfs's default (fuse.io-uring: auto) serves requests on per-CPU
rings; target artifactfs-t4-devfuse is the same daemon through /dev/fuse. The peers' libfuse
3.14 does not speak io_uring and is unaffected.
EOF
}

number_follows() { [[ ${1:-} =~ ^[0-9]+$ ]]; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --smoke) SMOKE=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --targets) TARGETS=${2//,/ }; shift ;;
    --workloads) WORKLOADS=${2//,/ }; shift ;;
    --scale) SCALE_N=1000000; if number_follows "${2:-}"; then SCALE_N=$2; shift; fi ;;
    --only-scale) SCALE_N=1000000; WORKLOADS=""; if number_follows "${2:-}"; then SCALE_N=$2; shift; fi ;;
    --readme) README_FILE=$2; shift ;;
    --no-readme) NO_README=1 ;;
    --out-dir) OUT_DIR=$2; shift ;;
    --artifactfs) ARTIFACTFS=$2; shift ;;
    --baseline) BASELINE=$2; shift ;;
    --workdir) WORKDIR=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [[ -n $BASELINE ]]; then
  [[ -x $BASELINE ]] || { echo "run.sh: --baseline $BASELINE is not an executable artifactfs binary" >&2; exit 2; }
  BASELINE=$(realpath "$BASELINE")
  TARGETS+=" baseline-t4"
fi
for t in $TARGETS; do
  # Beside the list: artifactfs with any number of threads (artifactfs-tN).
  [[ " $ALL_TARGETS baseline-t4 " == *" $t "* || $t =~ ^artifactfs-t[1-9][0-9]*$ ]] || { echo "run.sh: unknown target $t; choose from: $ALL_TARGETS" >&2; exit 2; }
done
for w in $WORKLOADS; do
  [[ " $ALL_WORKLOADS " == *" $w "* ]] || { echo "run.sh: unknown workload $w; choose from: $ALL_WORKLOADS" >&2; exit 2; }
done
if [[ -n $ROUNDS ]] && ! [[ $ROUNDS =~ ^[1-9][0-9]*$ ]]; then
  echo "run.sh: --rounds needs a positive number, not '$ROUNDS'" >&2; exit 2
fi
if [[ $EUID -ne 0 ]]; then
  echo "run.sh: run as root (needs /proc/sys/vm/drop_caches and FUSE mounts with allow_other)" >&2
  exit 2
fi
missing=()
for tool in cc g++ pkg-config fusermount3 python3 gnuplot getfattr bc tar ccache make cmake strace perf; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ " $TARGETS " == *" bindfs "* ]] && ! command -v bindfs >/dev/null && missing+=(bindfs)
[[ " $TARGETS " == *" mergerfs "* ]] && ! command -v mergerfs >/dev/null && missing+=(mergerfs)
if (( ${#missing[@]} )); then
  echo "run.sh: not installed: ${missing[*]} (sudo .ci/install-deps --test installs them)" >&2
  exit 2
fi

COMPLETE=0
[[ $SMOKE == 0 && " ${TARGETS% baseline-t4} " == " $ALL_TARGETS " && " $WORKLOADS " == " $ALL_WORKLOADS " ]] && COMPLETE=1
if [[ -z $README_FILE && $NO_README == 0 && $COMPLETE == 1 ]]; then README_FILE=$REPO/README.md; fi
# A smoke run regenerates a copy of the README beside its results: the
# generation is checked, the real README is left alone.
SMOKE_README=0
if [[ -z $README_FILE && $NO_README == 0 && $SMOKE == 1 ]]; then README_FILE=$OUT_DIR/README.md; SMOKE_README=1; fi
[[ $NO_README == 1 ]] && README_FILE=""

# ---- sizes ---------------------------------------------------------------------
SMALL_DIRS=100; SMALL_PER_DIR=20; SMALL_SIZE=4096   # 2000 files of 4 KiB
WIDE_ENTRIES=10000                                    # readdir of 10,000 entries
BIG_FILES=4; BIG_MIB=256
WARM_PASSES=5
MIXED_SECONDS=2
EVICT_ARTIFACTS=10000; EVICT_FILES=10; EVICT_SIZE=4096
: "${ROUNDS:=5}"
if [[ $SMOKE == 1 ]]; then
  SMALL_DIRS=4; SMALL_PER_DIR=5; WIDE_ENTRIES=100; BIG_MIB=4; WARM_PASSES=1; MIXED_SECONDS=0.3
  EVICT_ARTIFACTS=50; EVICT_FILES=2
  ROUNDS=1
  [[ -n $SCALE_N ]] && SCALE_N=2000
fi
EVICT_ROUNDS=$(( ROUNDS < 3 ? ROUNDS : 3 ))

if [[ -z $ARTIFACTFS ]]; then
  for candidate in "$REPO/build-bench/cli/artifactfs" "$REPO/build/cli/artifactfs"; do
    [[ -x $candidate ]] && { ARTIFACTFS=$candidate; break; }
  done
fi
[[ -x ${ARTIFACTFS:-} ]] || { echo "run.sh: no artifactfs binary; build it (see bench/README.md) or pass --artifactfs" >&2; exit 2; }
ARTIFACTFS=$(realpath "$ARTIFACTFS")

mkdir -p "$CACHE" "$OUT_DIR"
OUT_DIR=$(realpath "$OUT_DIR")
WORKDIR=${WORKDIR:-$(mktemp -d /var/tmp/artifactfs-bench.XXXXXX)}
mkdir -p "$WORKDIR"
WORKDIR=$(realpath "$WORKDIR")
STORE=$WORKDIR/store      # artifactfs's store; its data/ is every target's data set
DATA=$STORE/data
MNT=$WORKDIR/mnt
LOGDIR=$WORKDIR/logs
TSV=$WORKDIR/results.tsv   # every figure: "m ROUND TARGET MEASURE VALUE", "meta KEY VALUE", ...
LOADGEN_LOG=$LOGDIR/loadgen.txt
mkdir -p "$MNT" "$LOGDIR"
mkdir -p "$STORE"; chmod 700 "$STORE"  # the daemon refuses a store other users can enter
: > "$TSV"; : > "$LOADGEN_LOG"
STAMP=$(date +%Y-%m-%d-%H%M)
NAME=$STAMP-$(hostname -s)
[[ $SMOKE == 1 ]] && NAME+=-smoke

# ---- cleanup: every mount unmounted, every process stopped by its pid --------------
DAEMON_PID=""
MOUNTED=""
stop_daemon() {
  [[ -n $MOUNTED ]] && grep -q " $MOUNTED fuse" /proc/mounts && { fusermount3 -u "$MOUNTED" 2>/dev/null || fusermount3 -uz "$MOUNTED"; }
  if [[ -n $DAEMON_PID ]]; then
    for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$DAEMON_PID" 2>/dev/null && kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  DAEMON_PID=""
  MOUNTED=""
}
cleanup() {
  local rc=$?
  set +e
  stop_daemon
  if grep -q "$WORKDIR" /proc/mounts; then
    echo "run.sh: still mounted under $WORKDIR:" >&2
    grep "$WORKDIR" /proc/mounts >&2
    rc=1
  elif [[ $rc -eq 0 && -z ${KEEP_WORKDIR:-} ]]; then
    rm -rf "$WORKDIR"
  fi
  [[ -d $WORKDIR ]] && echo "run.sh: scratch data and logs kept in $WORKDIR" >&2
  [[ -n $URING_BEFORE ]] && echo "$URING_BEFORE" > "$ENABLE_URING"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The kernel's FUSE over io_uring, on for the run (see --help).
ENABLE_URING=/sys/module/fuse/parameters/enable_uring
URING_BEFORE=""
if [[ -w $ENABLE_URING ]]; then
  URING_BEFORE=$(cat "$ENABLE_URING")
  echo Y > "$ENABLE_URING"
fi

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l | awk '{printf "%.4f", $1}'; }
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<< "$2"; }
record() { printf 'm\t%s\t%s\t%s\t%s\n' "$@" >> "$TSV"; }   # record ROUND TARGET MEASURE VALUE
note() { printf 'note\t%s\t%s\n' "$1" "$2" >> "$TSV"; }
profile_row() { printf 'p\t%s\t%s\t%s\t%s\n' "$@" >> "$TSV"; }  # TARGET OPERATION KEY VALUE
has_target() { [[ " $TARGETS " == *" $1 "* ]]; }
has_workload() { [[ " $WORKLOADS " == *" $1 "* ]]; }

# ---- tools, built outside the repository -------------------------------------------
LOADGEN=$CACHE/loadgen
FLOORFS=$CACHE/floorfs
build_tools() {
  if [[ ! -x $LOADGEN || $HERE/loadgen.c -nt $LOADGEN ]]; then
    cc -O2 -Wall -pthread -o "$LOADGEN" "$HERE/loadgen.c"
  fi
  if [[ ! -x $FLOORFS || $HERE/floorfs.c -nt $FLOORFS ]]; then
    # shellcheck disable=SC2046
    cc -O2 -Wall -o "$FLOORFS" "$HERE/floorfs.c" $(pkg-config --cflags --libs fuse3)
  fi
}

# The orig tarball of a Debian source package, downloaded once with a
# private sources list, lists and archive directory (the system's apt state
# is untouched). Prints its path.
debian_source() {
  local package=$1 d=$CACHE/debian-src
  mkdir -p "$d/lists/partial" "$d/archives/partial" "$d/src"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
    > "$d/sources.list"
  local apt_opts=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/nonexistent
                  -o "Dir::State::Lists=$d/lists" -o "Dir::Cache::Archives=$d/archives"
                  -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Sandbox::User=root)
  local version=${2:-}
  if ! ls "$d/src/${package}_"*.orig.tar.* >/dev/null 2>&1; then
    log "downloading the Debian source package $package${version:+ $version}"
    apt-get "${apt_opts[@]}" update >/dev/null
    (cd "$d/src" && apt-get "${apt_opts[@]}" source --download-only "$package${version:+=$version}" >/dev/null)
  fi
  ls "$d/src/${package}_"*.orig.tar.* | grep -v '\.asc$' | head -1
}

# libfuse's example/passthrough_hp.cc of the installed libfuse3.
PTHP=$CACHE/passthrough_hp
build_passthrough_hp() {
  [[ -x $PTHP ]] && return 0
  local tarball src=$CACHE/fuse3-build
  tarball=$(debian_source fuse3 "$(dpkg-query -W -f='${Version}' libfuse3-dev)")
  rm -rf "$src"; mkdir -p "$src"
  tar -C "$src" -xf "$tarball"
  log "building passthrough_hp"
  # shellcheck disable=SC2046
  g++ -O2 -std=c++17 -o "$PTHP" "$src"/fuse-3.*/example/passthrough_hp.cc $(pkg-config --cflags --libs fuse3) -pthread
}

# ---- mounting --------------------------------------------------------------------------
# start_daemon MOUNTPOINT LOGFILE COMMAND...: runs a FUSE daemon in the
# foreground as a background job and waits until the mount answers.
start_daemon() {
  local mnt=$1 logf=$2; shift 2
  "$@" > "$logf" 2>&1 &
  DAEMON_PID=$!
  MOUNTED=$mnt
  for _ in $(seq 1200); do
    grep -q " $mnt fuse" /proc/mounts && stat -f "$mnt" >/dev/null 2>&1 && return 0
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "run.sh: $1 exited; its output ($logf):" >&2; cat "$logf" >&2; return 1; }
    sleep 0.05
  done
  echo "run.sh: $mnt not mounted after 60 s; see $logf" >&2
  return 1
}

# The artifactfs command of a target name: artifactfs-tN[-norecord|-devfuse]
# or baseline-tN (the --baseline binary, same settings).
# -devfuse: requests through /dev/fuse, not the kernel's io_uring rings.
# -norecord: layout.depth 3, deeper than any file of the data set, so no
# file belongs to an artifact: opens take the same path but record no use
# and hold no artifact (the cost of LRU is the difference).
artifactfs_command() {
  local t=$1 threads depth=1 binary=$ARTIFACTFS transport=auto
  [[ $t == baseline-* ]] && binary=$BASELINE
  threads=${t#*-t}; threads=${threads%%-*}
  [[ $t == *-norecord ]] && depth=3
  [[ $t == *-devfuse ]] && transport=off
  echo "$binary" mount "$STORE" "$MNT" -f --set "fuse.threads=$threads" --set "layout.depth=$depth" --set quota.min-age=0s \
    --set "fuse.io-uring=$transport"
}

# Mounts TARGET over $DATA at $MNT and sets ROOT, the directory to measure.
mount_target() {
  local t=$1 logf=$LOGDIR/$1.log
  ROOT=$MNT
  case $t in
    native) ROOT=$DATA ;;
    floor-t*) start_daemon "$MNT" "$logf" "$FLOORFS" "$DATA" "$MNT" --threads "${t#floor-t}" ;;
    # shellcheck disable=SC2046
    artifactfs-t*|baseline-t*) start_daemon "$MNT" "$logf" $(artifactfs_command "$t") ;;
    passthrough_hp-single) start_daemon "$MNT" "$logf" "$PTHP" --foreground --single "$DATA" "$MNT" ;;
    passthrough_hp) start_daemon "$MNT" "$logf" "$PTHP" --foreground "$DATA" "$MNT" ;;
    bindfs) start_daemon "$MNT" "$logf" bindfs -f "$DATA" "$MNT" ;;
    mergerfs) start_daemon "$MNT" "$logf" mergerfs -f -o cache.files=full "$DATA" "$MNT" ;;
  esac
}

target_command() {  # for the report
  case $1 in
    native) echo "(the data directory itself)" ;;
    floor-t*) echo "floorfs STORE/data MNT --threads ${1#floor-t}" ;;
    artifactfs-t*) artifactfs_command "$1" | sed "s|$ARTIFACTFS|artifactfs|; s|$STORE|STORE|; s|$MNT|MNT|" ;;
    baseline-t*) artifactfs_command "$1" | sed "s|$STORE|STORE|; s|$MNT|MNT|" ;;
    passthrough_hp-single) echo "passthrough_hp --foreground --single STORE/data MNT" ;;
    passthrough_hp) echo "passthrough_hp --foreground STORE/data MNT" ;;
    bindfs) echo "bindfs -f STORE/data MNT" ;;
    mergerfs) echo "mergerfs -f -o cache.files=full STORE/data MNT" ;;
  esac
}

# ---- data set ------------------------------------------------------------------------
prepare_data() {
  log "data set in $DATA"
  mkdir -p "$DATA"
  "$LOADGEN" mktree "$DATA" "$SMALL_DIRS" "$SMALL_PER_DIR" "$SMALL_SIZE" > /dev/null
  (cd "$DATA" && find . -path './a*' -type f | sed 's|^\./||' | sort) > "$WORKDIR/small.list"
  mkdir -p "$DATA/wide"
  (cd "$DATA/wide" && seq -f 'e%06g' 1 "$WIDE_ENTRIES" | xargs touch)
  mkdir -p "$DATA/big"
  for i in $(seq 1 "$BIG_FILES"); do head -c "$((BIG_MIB << 20))" /dev/urandom > "$DATA/big/f$i"; done
  sync
}

# ---- workload: files (small files, metadata, big files) ----------------------------------
# lg ROUND TARGET MEASURE KEY LOADGEN-ARGS...: one loadgen run, its KEY recorded.
# A failed measurement is recorded ("fail" row, shown in the report) and the
# run goes on: one peer's failure must not lose the other figures. The run
# exits non-zero at the end if artifactfs failed, or anything in --smoke.
FAILED_PEERS=0
FAILED_ARTIFACTFS=0
lg() {
  local round=$1 target=$2 measure=$3 key=$4 line; shift 4
  if ! line=$("$LOADGEN" "$@" 2> "$LOGDIR/loadgen-error.txt"); then
    local why
    why=$(tr '\n\t' '  ' < "$LOGDIR/loadgen-error.txt")
    log "  FAILED: $measure on $target: loadgen $*: $why"
    printf 'fail\t%s\t%s\t%s\t%s\n' "$round" "$target" "$measure" "$why" >> "$TSV"
    if [[ $target == artifactfs-* || $target == baseline-* ]]; then FAILED_ARTIFACTFS=$(( FAILED_ARTIFACTFS + 1 )); else FAILED_PEERS=$(( FAILED_PEERS + 1 )); fi
    LAST_LINE=""
    return 0
  fi
  echo "$round $target $measure $line" >> "$LOADGEN_LOG"
  record "$round" "$target" "$measure" "$(field "$key" "$line")"
  LAST_LINE=$line
}

files_round() {
  local r=$1 t=$2 list=$WORKDIR/small.list
  mount_target "$t"
  local b1=$ROOT/big/f1 b2=$ROOT/big/f2
  # Cold: the kernel's page, dentry and inode caches dropped before each
  # measurement (daemons keep their own state), so every name is looked up
  # through the daemon again and data comes from the disk.
  drop_caches; lg "$r" "$t" open_cold files_per_s openread "$ROOT" "$list"
  drop_caches; lg "$r" "$t" stat_cold stats_per_s stat "$ROOT" "$list"
  drop_caches; lg "$r" "$t" seq_cold mib_per_s seqread "$b1" "$b2"
  drop_caches; lg "$r" "$t" readdir_cold entries_per_s readdir "$ROOT/wide"
  # Warm: after one unmeasured pass (two for the big files).
  "$LOADGEN" openread "$ROOT" "$list" > /dev/null
  lg "$r" "$t" open_warm files_per_s openread "$ROOT" "$list" -n "$WARM_PASSES"
  lg "$r" "$t" open_warm_j4 files_per_s openread "$ROOT" "$list" -n "$WARM_PASSES" -j 4
  # The kernel marks a file's atime stale after every READ the daemon served
  # (not on a read-only mount such as the floor's), so the first stat of each
  # file after the passes above asks the daemon: the unmeasured pass takes it.
  "$LOADGEN" stat "$ROOT" "$list" > /dev/null
  lg "$r" "$t" stat_warm stats_per_s stat "$ROOT" "$list" -n "$WARM_PASSES"
  "$LOADGEN" seqread "$b1" "$b2" > /dev/null; "$LOADGEN" seqread "$b1" "$b2" > /dev/null
  lg "$r" "$t" seq_warm mib_per_s seqread "$b1" "$b2"
  "$LOADGEN" readdir "$ROOT/wide" -l > /dev/null
  lg "$r" "$t" readdir_warm entries_per_s readdir "$ROOT/wide" -n "$(( WARM_PASSES * 4 ))"
  lg "$r" "$t" readdir_l_warm entries_per_s readdir "$ROOT/wide" -n "$WARM_PASSES" -l
  # Small-file opens while two other clients read big files from the disk
  # (their page cache dropped every 8 MiB). The floor serves big files from
  # memory, so it has no slow clients to show.
  if [[ $t != floor-* ]]; then
    lg "$r" "$t" mixed2 fg_files_per_s mixed "$ROOT" "$list" -d "$MIXED_SECONDS" \
      -s "$ROOT/big/f3" -S "$DATA/big/f3" -s "$ROOT/big/f4" -S "$DATA/big/f4"
    record "$r" "$t" mixed2_p99_us "$(field fg_p99_us "$LAST_LINE")"
  fi
  stop_daemon
}

# ---- workload: tree (tarball extraction onto the target, cp -a out of it) ------------------
TREE_TARGETS=""
prepare_tree() {
  local tarball
  if [[ $SMOKE == 1 ]]; then
    TREE_SOURCE="artifactfs's own sources (git archive HEAD)"
    git -C "$REPO" archive --format=tar -o "$WORKDIR/source.tar" HEAD
  else
    tarball=$(debian_source git)
    TREE_SOURCE="$(basename "$tarball") (Debian's source of git)"
    xz -dc "$tarball" > "$WORKDIR/source.tar"
  fi
  note tree_source "$TREE_SOURCE"
  note tree_files "$(tar -tf "$WORKDIR/source.tar" | grep -vc '/$')"
  note tree_mib "$(( $(stat -c %s "$WORKDIR/source.tar") >> 20 ))"
  cat "$WORKDIR/source.tar" > /dev/null  # in the page cache: the archive is not what is measured
  for t in native artifactfs-t4 passthrough_hp bindfs mergerfs; do
    if has_target "$t"; then TREE_TARGETS+=" $t"; fi
  done
}

tree_round() {
  local r=$1 t=$2 t0 dir copy=$WORKDIR/copy
  mount_target "$t"
  dir=$ROOT/tree-r$r
  mkdir "$dir"
  t0=$(now)
  # -m: modification times are not restored (passthrough_hp of libfuse 3.14
  # answers EOPNOTSUPP to setting them); the same for every target.
  tar -C "$dir" -xmf "$WORKDIR/source.tar"
  record "$r" "$t" tar_extract_s "$(since "$t0")"
  t0=$(now)
  sync
  record "$r" "$t" tar_sync_s "$(since "$t0")"
  drop_caches
  t0=$(now)
  cp -a "$dir" "$copy"
  record "$r" "$t" cp_out_s "$(since "$t0")"
  rm -rf "$dir" "$copy"
  stop_daemon
}

# ---- workload: ccache rebuild, CCACHE_DIR on the mount against the native directory ------
CC_STORE=$WORKDIR/ccache-store
CC_NATIVE=$WORKDIR/ccache-native
CC_MNT=$WORKDIR/ccache-mnt
CC_SRC=$WORKDIR/ccache-src
CC_BUILD=$WORKDIR/ccache-build
ccache_env() { env CCACHE_DIR="$1" CCACHE_MAXSIZE=0 CCACHE_NOHASHDIR=1 "${@:2}"; }

# A small C project (smoke) or artifactfs's own sources at the measured
# commit (a real C++ project: CMake, spdlog, yaml-cpp, LMDB).
prepare_ccache_project() {
  rm -rf "$CC_SRC" "$CC_BUILD"; mkdir -p "$CC_SRC" "$CC_BUILD"
  if [[ $SMOKE == 1 ]]; then
    CC_PROJECT="a generated C project of 4 files (make -j2)"
    printf 'int shared(int x);\n' > "$CC_SRC/shared.h"
    for i in 1 2 3 4; do printf '#include "shared.h"\nint f%d(int x) { return shared(x) * %d; }\n' "$i" "$i" > "$CC_SRC/f$i.c"; done
    printf 'OBJ = f1.o f2.o f3.o f4.o\nlib.a: $(OBJ)\n\tar rcs $@ $(OBJ)\n%%.o: %%.c shared.h\n\t$(CC) -O2 -c $< -o $@\nclean:\n\trm -f *.o lib.a\n' > "$CC_SRC/Makefile"
    CC_BUILD_CMD=(make -s -C "$CC_SRC" -j2 CC="ccache cc")
    CC_CLEAN_CMD=(make -s -C "$CC_SRC" clean)
  else
    CC_PROJECT="artifactfs's own sources at commit $(git -C "$REPO" rev-parse --short HEAD) (CMake Release, -DBUILD_TESTING=OFF, -j2)"
    git -C "$REPO" archive HEAD | tar -C "$CC_SRC" -xf -
    cmake -S "$CC_SRC" -B "$CC_BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
      -DCMAKE_CXX_COMPILER_LAUNCHER=ccache > "$LOGDIR/ccache-cmake.log"
    CC_BUILD_CMD=(cmake --build "$CC_BUILD" -j2)
    CC_CLEAN_CMD=(cmake --build "$CC_BUILD" --target clean)
  fi
  note ccache_project "$CC_PROJECT"
}

ccache_config() {
  cat > "$WORKDIR/ccache.yaml" <<'EOF'
layout:
  depth: 3
  keep: [stats, "*.lock", "*.alive", CACHEDIR.TAG, tmp, "*.tmp*", ccache.conf]
quota:
  min-age: 0s
EOF
}

mount_ccache_target() {  # sets CC_DIR
  case $1 in
    native) CC_DIR=$CC_NATIVE ;;
    artifactfs-t4) start_daemon "$CC_MNT" "$LOGDIR/ccache-artifactfs.log" \
                     "$ARTIFACTFS" mount "$CC_STORE" "$CC_MNT" -f -c "$WORKDIR/ccache.yaml"
                   CC_DIR=$CC_MNT ;;
  esac
}

prepare_ccache() {
  prepare_ccache_project
  ccache_config
  mkdir -p "$CC_NATIVE" "$CC_STORE" "$CC_MNT"; chmod 700 "$CC_STORE"
  log "ccache: filling the cache with one build of $CC_PROJECT"
  local t0
  t0=$(now)
  ccache_env "$CC_NATIVE" "${CC_BUILD_CMD[@]}" > "$LOGDIR/ccache-fill.log" 2>&1
  note ccache_fill_build_s "$(since "$t0")"
  # The same cache onto the mount: both sides then hold identical results.
  mount_ccache_target artifactfs-t4
  cp -a "$CC_NATIVE/." "$CC_MNT/"
  stop_daemon
}

ccache_round() {
  local r=$1 t=$2 t0 stats hits misses
  "${CC_CLEAN_CMD[@]}" > /dev/null
  mount_ccache_target "$t"
  ccache_env "$CC_DIR" ccache -z > /dev/null
  drop_caches
  t0=$(now)
  ccache_env "$CC_DIR" "${CC_BUILD_CMD[@]}" > "$LOGDIR/ccache-$t-$r.log" 2>&1
  record "$r" "$t" ccache_rebuild_s "$(since "$t0")"
  stats=$(ccache_env "$CC_DIR" ccache --print-stats)
  hits=$(awk -F'\t' '$1 == "direct_cache_hit" || $1 == "preprocessed_cache_hit" {n += $2} END {print n + 0}' <<< "$stats")
  misses=$(awk -F'\t' '$1 == "cache_miss" {print $2 + 0}' <<< "$stats")
  record "$r" "$t" ccache_hits "$hits"
  if (( misses != 0 || hits == 0 )); then
    echo "run.sh: the ccache rebuild on $t was not all hits ($hits hits, $misses misses); see $LOGDIR" >&2
    return 1
  fi
  stop_daemon
}

# ---- workload: eviction against rm -rf ------------------------------------------------------
xattr() { getfattr --only-values -n "user.artifactfs.$2" "$1" 2>/dev/null || echo 0; }

eviction_round() {
  local r=$1 es=$WORKDIR/evict-store em=$WORKDIR/evict-mnt cfg=$WORKDIR/evict.yaml tree=$WORKDIR/rmtree
  local line t0 n e0 secs
  rm -rf "$es"; mkdir -p "$es" "$em"; chmod 700 "$es"
  printf 'layout:\n  depth: 1\nquota:\n  max-size: unlimited\n  min-age: 0s\n  check-interval: 1s\n' > "$cfg"
  start_daemon "$em" "$LOGDIR/evict-$r.log" "$ARTIFACTFS" mount "$es" "$em" -f -c "$cfg"
  line=$("$LOADGEN" mktree "$em" "$EVICT_ARTIFACTS" "$EVICT_FILES" "$EVICT_SIZE" -j 2)
  record "$r" artifactfs-t4 evict_create_files_per_s "$(field files_per_s "$line")"
  sleep 2  # an index flush, and the 2-second write grace of new artifacts
  drop_caches
  e0=$(xattr "$em" stats.evictions)
  sed -i 's/max-size: unlimited/max-size: 4K/' "$cfg"  # far below one artifact: everything goes
  t0=$(now)
  kill -HUP "$DAEMON_PID"
  while :; do
    n=$(( $(xattr "$em" stats.evictions) - e0 ))
    (( n >= EVICT_ARTIFACTS )) && [[ -z $(ls -A "$es/trash") ]] && break
    if (( $(date +%s) - ${t0%.*} > 900 )); then
      echo "run.sh: eviction not finished after 900 s: $n of $EVICT_ARTIFACTS evicted" >&2; return 1
    fi
    sleep 0.02
  done
  secs=$(since "$t0")
  record "$r" artifactfs-t4 delete_trees_s "$secs"
  stop_daemon
  rm -rf "$es"
  # The same trees in a plain directory on the same disk, deleted cold with rm -rf.
  rm -rf "$tree"; mkdir -p "$tree"
  line=$("$LOADGEN" mktree "$tree" "$EVICT_ARTIFACTS" "$EVICT_FILES" "$EVICT_SIZE" -j 2)
  record "$r" native evict_create_files_per_s "$(field files_per_s "$line")"
  drop_caches
  t0=$(now)
  rm -rf "$tree"
  record "$r" native delete_trees_s "$(since "$t0")"
}

# ---- workload: profile (what each request costs, per operation) -----------------------------
# For each target and operation (opens and stats of the small files, warm
# and cold; sequential reads, per MiB; the tarball extraction, per file),
# per operation: the FUSE requests the kernel sent, by opcode (the
# fuse:fuse_request_send tracepoint, filtered to this mount's connection);
# the daemon's CPU time and context switches (perf stat -p); and its system
# calls (strace -c -f -p).
profile_prepare() {  # profile_prepare OPERATION COMMAND...: the state the operation is measured in
  local op=$1; shift
  case $op in
    open_warm|stat_warm|seq_warm) "$@" > /dev/null; "$@" > /dev/null ;;
    open_cold|stat_cold|seq_cold) drop_caches ;;
    tar_extract) rm -rf "$ROOT/tree-p"; mkdir "$ROOT/tree-p"; sync ;;
  esac
}

profile_op() {  # profile_op TARGET OPERATION COUNT COMMAND...
  local t=$1 op=$2 count=$3 f=$LOGDIR/profile-$1-$2 spid; shift 3
  profile_prepare "$op" "$@"
  perf stat -x, -e task-clock,context-switches -p "$DAEMON_PID" -o "$f.perf" -- "$@" > /dev/null 2>&1
  awk -F, -v n="$count" '$3 == "task-clock" {printf "daemon_cpu_us_per_op %.1f\n", $1 * 1000 / n}
                         $3 == "context-switches" {printf "daemon_context_switches_per_op %.2f\n", $1 / n}' "$f.perf" |
    while read -r k v; do profile_row "$t" "$op" "$k" "$v"; done
  profile_prepare "$op" "$@"
  local conn
  conn=$(( $(stat -c %Hd "$ROOT") << 20 | $(stat -c %Ld "$ROOT") ))  # the kernel's dev_t of the connection
  perf record -q -e fuse:fuse_request_send --filter "connection == $conn" -a -o "$f.requests" -- "$@" > /dev/null 2>&1
  # (no request at all is a result too: warm stats and reads may send none)
  perf script -i "$f.requests" -F trace 2> /dev/null | { grep -o 'FUSE_[A-Z_0-9]*' || true; } | sort | uniq -c |
    awk -v n="$count" '{total += $1; printf "requests_per_op:%s %.2f\n", substr($2, 6), $1 / n}
                       END {printf "requests_per_op:all %.2f\n", total / n}' |
    while read -r k v; do profile_row "$t" "$op" "$k" "$v"; done
  profile_prepare "$op" "$@"
  strace -c -f -q -o "$f.strace" -p "$DAEMON_PID" &
  spid=$!
  sleep 1  # strace attaches to every thread
  "$@" > /dev/null
  kill -INT "$spid"; wait "$spid" 2>/dev/null || true
  # "% time seconds usecs/call calls [errors] syscall" rows: calls is the 4th field
  awk -v n="$count" '$NF != "total" && $NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ {printf "syscalls_per_op:%s %.2f\n", $NF, $4 / n}' "$f.strace" |
    sort -t' ' -k2 -gr | head -6 | while read -r k v; do profile_row "$t" "$op" "$k" "$v"; done
}

profile_target() {
  local t=$1 list=$WORKDIR/small.list files
  files=$(wc -l < "$list")
  mount_target "$t"
  profile_op "$t" open_warm "$files" "$LOADGEN" openread "$ROOT" "$list"
  profile_op "$t" open_cold "$files" "$LOADGEN" openread "$ROOT" "$list"
  profile_op "$t" stat_warm "$files" "$LOADGEN" stat "$ROOT" "$list"
  profile_op "$t" stat_cold "$files" "$LOADGEN" stat "$ROOT" "$list"
  # per MiB read
  profile_op "$t" seq_warm "$(( 2 * BIG_MIB ))" "$LOADGEN" seqread "$ROOT/big/f1" "$ROOT/big/f2"
  profile_op "$t" seq_cold "$(( 2 * BIG_MIB ))" "$LOADGEN" seqread "$ROOT/big/f1" "$ROOT/big/f2"
  if [[ $t != floor-* ]]; then
    profile_op "$t" tar_extract "$(note_value tree_files)" tar -C "$ROOT/tree-p" -xmf "$WORKDIR/source.tar"
    rm -rf "$ROOT/tree-p"
  fi
  stop_daemon
}
note_value() { awk -F'\t' -v k="$1" '$1 == "note" && $2 == k {print $3}' "$TSV"; }

# ---- main ---------------------------------------------------------------------------------------
log "work directory $WORKDIR; artifactfs $ARTIFACTFS; $ROUNDS round(s); targets: $TARGETS; workloads: ${WORKLOADS:-none}"
build_tools
if [[ -n $WORKLOADS ]]; then
  "$HERE/lib/machine.sh" "$WORKDIR" "$ARTIFACTFS" | sed 's/^/meta\t/' >> "$TSV"
  printf 'meta\tcommand\tbench/run.sh %s\n' "$ORIG_ARGS" >> "$TSV"
  if [[ -n $BASELINE ]]; then
    printf 'meta\tbaseline build\t%s, built %s\n' "$BASELINE" "$(date -u -r "$BASELINE" '+%F %T UTC')" >> "$TSV"
  fi
  printf 'meta\trounds\t%s\nmeta\tcomplete\t%s\nmeta\tsmoke\t%s\n' "$ROUNDS" "$COMPLETE" "$SMOKE" >> "$TSV"
  note data_set "$((SMALL_DIRS * SMALL_PER_DIR)) files of $SMALL_SIZE bytes in $SMALL_DIRS directories, one directory of $WIDE_ENTRIES empty files, $BIG_FILES files of $BIG_MIB MiB"
  note wide_entries "$WIDE_ENTRIES"
  note warm_passes "$WARM_PASSES"
  note mixed_seconds "$MIXED_SECONDS"
  note evict "$EVICT_ARTIFACTS artifacts of $EVICT_FILES files of $EVICT_SIZE bytes"
  for t in $TARGETS; do printf 'cmd\t%s\t%s\n' "$t" "$(target_command "$t")" >> "$TSV"; done
  [[ " $TARGETS " == *" passthrough_hp"* ]] && build_passthrough_hp
  prepare_data
fi
has_workload tree && prepare_tree
has_workload profile && ! has_workload tree && prepare_tree
has_workload ccache && has_target native && has_target artifactfs-t4 && prepare_ccache

for r in $(seq 1 "$ROUNDS"); do
  [[ -z $WORKLOADS ]] && break
  log "round $r of $ROUNDS (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  printf 'load\t%s\t%s\n' "$r" "$(cut -d' ' -f1 /proc/loadavg)" >> "$TSV"
  if has_workload files; then
    for t in $TARGETS; do log "  files: $t"; files_round "$r" "$t"; done
  fi
  if has_workload tree; then
    for t in $TREE_TARGETS; do log "  tree: $t"; tree_round "$r" "$t"; done
  fi
  if has_workload ccache && has_target native && has_target artifactfs-t4; then
    for t in native artifactfs-t4; do log "  ccache: $t"; ccache_round "$r" "$t"; done
  fi
  if has_workload eviction && (( r <= EVICT_ROUNDS )); then
    log "  eviction: $EVICT_ARTIFACTS artifacts against rm -rf"
    eviction_round "$r"
  fi
done

if has_workload profile; then
  for t in floor-t1 artifactfs-t4 artifactfs-t4-norecord artifactfs-t1 passthrough_hp; do
    has_target "$t" && { log "profile: $t"; profile_target "$t"; }
  done
fi

RESULTS=()
if [[ -n $WORKLOADS ]]; then
  printf 'meta\tload average at the end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$TSV"
  cp "$TSV" "$OUT_DIR/$NAME.tsv"
  python3 "$HERE/report.py" "$OUT_DIR/$NAME.tsv"
  RESULTS+=("$OUT_DIR/$NAME.md" "$OUT_DIR/$NAME.png")
fi
if (( FAILED_ARTIFACTFS > 0 || (SMOKE == 1 && FAILED_PEERS > 0) )); then
  echo "run.sh: $FAILED_ARTIFACTFS measurement(s) of artifactfs and $FAILED_PEERS of other targets failed (see the report)" >&2
  exit 1
fi
if [[ -n $SCALE_N ]]; then
  scale_args=(-n "$SCALE_N" --artifactfs "$ARTIFACTFS" --workdir "$WORKDIR/scale" --out "$OUT_DIR/$NAME-scale.md")
  [[ $SMOKE == 1 ]] && scale_args+=(--per-dir 100)
  log "scale: $SCALE_N artifacts (bench/scale.sh)"
  "$HERE/scale.sh" "${scale_args[@]}"
  RESULTS+=("$OUT_DIR/$NAME-scale.md")
fi
if [[ -n $WORKLOADS && ( $COMPLETE == 1 || $SMOKE == 1 ) && " $TARGETS " == " $ALL_TARGETS " && " $WORKLOADS " == " $ALL_WORKLOADS " ]]; then
  # Every goal needs figures from every part: a missing one is a broken part.
  if grep -q "| not measured |" "$OUT_DIR/$NAME.md"; then
    echo "run.sh: some goals were not measured (a workload or target produced no figures):" >&2
    grep "| not measured |" "$OUT_DIR/$NAME.md" >&2
    exit 1
  fi
  [[ -s $OUT_DIR/$NAME.png ]] || { echo "run.sh: no chart was drawn" >&2; exit 1; }
fi
if [[ -n $README_FILE ]]; then
  [[ $SMOKE_README == 1 ]] && cp "$REPO/README.md" "$README_FILE"
  python3 "$HERE/readme.py" --results "$OUT_DIR" $([[ $SMOKE == 1 ]] && echo --accept-smoke) "$README_FILE"
  RESULTS+=("$README_FILE")
fi
log "written: ${RESULTS[*]}"
