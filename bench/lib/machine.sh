#!/usr/bin/env bash
# Describes the machine a benchmark ran on, as "key<TAB>value" lines, for
# every results file (figures are only comparable within one machine).
#   bench/lib/machine.sh WORKDIR [ARTIFACTFS_BINARY]
set -euo pipefail

workdir=$1
binary=${2:-}
repo=$(cd "$(dirname "$0")/../.." && pwd)

kv() { printf '%s\t%s\n' "$1" "$2"; }
pkg() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"; }

kv host "$(hostname -s)"
kv date "$(date '+%F %T %Z')"
kv nproc "$(nproc)"
kv "niceness of the run" "$(nice)"
kv CPU "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
kv memory "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
kv kernel "$(uname -r)"
kv OS "$(. /etc/os-release; echo "$PRETTY_NAME")"
kv "backing filesystem" "$(findmnt -n -o FSTYPE,SOURCE,OPTIONS --target "$workdir" | head -1 | tr -s ' ')"
kv "load average" "$(cut -d' ' -f1-3 /proc/loadavg) (other work competes for the CPUs and the disk)"
kv libfuse "$(pkg-config --modversion fuse3 2>/dev/null || echo '?') (libfuse3-3 $(pkg libfuse3-3))"
kv "kernel FUSE over io_uring (fuse enable_uring)" "$(cat /sys/module/fuse/parameters/enable_uring 2>/dev/null || echo 'not in this kernel')"
kv "bindfs, mergerfs, ccache" "$(pkg bindfs), $(pkg mergerfs), $(pkg ccache)"
if [[ -n $binary ]]; then
  build_type=$(grep -m1 '^CMAKE_BUILD_TYPE' "$(dirname "$(dirname "$binary")")/CMakeCache.txt" 2>/dev/null | cut -d= -f2)
  dirty=$(git -C "$repo" diff --quiet HEAD -- . ':!bench' 2>/dev/null || echo ' + uncommitted changes outside bench/')
  # The binary's own commit is unknown: the work tree's is the best evidence,
  # with the build time to compare against the git log.
  kv artifactfs "${build_type:-unknown} build $binary, built $(date -r "$binary" '+%F %T'); work tree at report time: commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$dirty"
fi
