"""Every kind of use moves an artifact to the most recently used end: an
open, setting the times (touch, utimensat without an open), reads and
readdirs through handles held open for longer than a flush interval, and
repeated reads of one file over NFSv3 and NFSv4 through nfs-ganesha with its
default settings (ganesha keeps the FUSE file open between client reads).
And what `stat` shows: with index.atime-precision 0 `ls -lut` follows every
flush; with the default, opens cost no GETATTR (counted by the daemon,
stats.getattr_requests)."""

from __future__ import annotations

import os
import shutil
import time

import pytest

import harness
from ganesha import FSAL_VFS_PATHS, Ganesha
from harness import check, wait_until

KiB = 1024
SETTLE = 20.0


def last_access(m: harness.Mount, key: str) -> int:
    return m.facts(key)["last_access"]


def getattrs(m: harness.Mount) -> int:
    return int(os.getxattr(str(m.mnt), harness.XATTR_PREFIX + "stats.getattr_requests"))


def make_artifacts(m: harness.Mount, keys, size: int = 16 * KiB) -> dict[str, bytes]:
    data = {}
    for k in keys:
        (m.mnt / k).mkdir()
        data[k] = os.urandom(size)
        (m.mnt / k / "f").write_bytes(data[k])
    return data


def advanced_by(m: harness.Mount, key: str, since_ns: int, timeout: float) -> int:
    """Waits until the artifact's last access is a use made at or after
    `since_ns` (wall clock); returns how long that took."""
    start = time.monotonic()
    wait_until(lambda: last_access(m, key) >= since_ns, timeout, 0.05,
               what=f"the last access of {key} to reach {since_ns}")
    return time.monotonic() - start


# --------------------------------------------------------------------------
# touch


def test_touch_moves_only_that_artifact(mount_factory):
    """touch(1) of a file, and utimensat by name without any open (as Bazel's
    disk cache marks a hit), each move that file's artifact, and only it, to
    the most recently used end."""
    m = mount_factory("m", sets=["index.flush-interval=100ms"])
    make_artifacts(m, ["a", "b", "c"])
    for k in ("a", "b", "c"):
        (m.mnt / k / "f").read_bytes()
        time.sleep(0.05)
    time.sleep(0.3)
    before = {k: last_access(m, k) for k in "abc"}
    assert before["a"] < before["b"] < before["c"]

    t = time.time_ns()
    check(["touch", m.mnt / "a" / "f"])
    advanced_by(m, "a", t, SETTLE)
    after = {k: last_access(m, k) for k in "abc"}
    assert after["a"] > after["c"], after
    assert (after["b"], after["c"]) == (before["b"], before["c"]), (before, after)

    t = time.time_ns()
    os.utime(m.mnt / "b" / "f", (1_000_000_000, 1_000_000_000))  # utimensat by name, old times: still a use
    advanced_by(m, "b", t, SETTLE)
    last = {k: last_access(m, k) for k in "abc"}
    assert last["b"] > last["a"] > last["c"], last
    assert (last["a"], last["c"]) == (after["a"], after["c"])
    assert os.stat(m.mnt / "b" / "f").st_mtime == 1_000_000_000


# --------------------------------------------------------------------------
# handles held open


def test_reads_and_readdirs_through_long_held_handles_count(mount_factory):
    """A file and a directory held open (as an NFS server or a daemon holds
    them): each read or listing through them, a few flush intervals apart,
    is a use, even when the kernel had the data cached."""
    flush = 0.2
    m = mount_factory("m", sets=[f"index.flush-interval={int(flush * 1000)}ms"])
    data = make_artifacts(m, ["f", "d", "other"])
    (m.mnt / "d" / "sub").mkdir()
    fd = os.open(m.mnt / "f" / "f", os.O_RDONLY)
    dfd = os.open(m.mnt / "d" / "sub", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert os.pread(fd, len(data["f"]) + 1, 0) == data["f"]  # cached from here on
        other = last_access(m, "other")
        for i in range(3):
            time.sleep(3 * flush)
            t = time.time_ns()
            assert os.pread(fd, len(data["f"]) + 1, 0) == data["f"]
            took = advanced_by(m, "f", t, SETTLE)
            print(f"read {i + 1} through the held file: last access advanced after {took:.2f} s")
            t = time.time_ns()
            assert os.listdir(dfd) == []
            took = advanced_by(m, "d", t, SETTLE)
            print(f"listing {i + 1} through the held directory: last access advanced after {took:.2f} s")
        assert last_access(m, "other") == other
    finally:
        os.close(fd)
        os.close(dfd)


# --------------------------------------------------------------------------
# what stat shows, and what it costs


def test_ls_lut_follows_each_flush_with_atime_precision_zero(mount_factory):
    m = mount_factory("m", sets=["index.flush-interval=200ms", "index.atime-precision=0"])
    make_artifacts(m, ["x", "y", "z"])
    time.sleep(0.5)
    for k in ("z", "x", "y"):
        (m.mnt / k / "f").read_bytes()
        time.sleep(0.05)

    def order():
        return check(["ls", "-ut", m.mnt]).split()

    # Within a flush interval or so (polled: the machine may be slow).
    wait_until(lambda: order() == ["y", "x", "z"], SETTLE, 0.05, what="ls -lut to show y, x, z")


def test_default_atime_precision_opens_cost_no_getattr(mount_factory):
    """With the default index.atime-precision (60 s) a loop of opens over
    many artifacts, across several flushes, makes the kernel send no GETATTR
    at all (two round trips per open: OPEN and RELEASE); with 0, the
    invalidations after each flush cost GETATTRs, which proves the count
    could see them. `ls -lut` then shows the old access time (the index has
    the new one)."""
    keys = [f"k{i:03}" for i in range(100)]

    def one_round(m: harness.Mount) -> None:
        for k in keys:
            # open, read, close and nothing else (Python's open() would also
            # fstat, which costs a GETATTR of the file after a read made its
            # kernel-side atime stale: not what is measured).
            fd = os.open(m.mnt / k / "f", os.O_RDONLY)
            try:
                os.read(fd, 8 * KiB)
            finally:
                os.close(fd)

    def loop(m: harness.Mount) -> int:
        # A warm-up round first: the first read of a file written through
        # the mount fetches its attributes once (its mtime changed).
        one_round(m)
        time.sleep(0.5)
        before = getattrs(m)
        for _ in range(3):
            one_round(m)
            time.sleep(0.5)  # flushes, and the invalidations they may send
        return getattrs(m) - before

    m = mount_factory("m", sets=["index.flush-interval=100ms"])
    make_artifacts(m, keys, 4 * KiB)
    for k in keys:
        os.stat(m.mnt / k)
    shown = os.stat(m.mnt / keys[0]).st_atime_ns
    default_cost = loop(m)
    assert last_access(m, keys[0]) > shown
    assert os.stat(m.mnt / keys[0]).st_atime_ns == shown, "stat showed a new access time within the precision"
    m.close()

    m0 = mount_factory("m0", sets=["index.flush-interval=100ms", "index.atime-precision=0"])
    make_artifacts(m0, keys, 4 * KiB)
    for k in keys:
        os.stat(m0.mnt / k)
    zero_cost = loop(m0)
    print(f"GETATTR requests for {3 * len(keys)} opens: {default_cost} with the default precision, "
          f"{zero_cost} with 0")
    assert default_cost == 0
    assert zero_cost >= len(keys), zero_cost


# --------------------------------------------------------------------------
# NFSv3 and NFSv4 through nfs-ganesha with its default settings

@pytest.fixture
def ganesha(rpcbind, mount_factory, base):
    missing = [t for t in ("ganesha.nfsd", "nfs-cat") if not shutil.which(t)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (nfs-ganesha, nfs-ganesha-vfs, libnfs-utils)")
    if not any(os.path.exists(p) for p in FSAL_VFS_PATHS):
        pytest.skip("FSAL VFS of nfs-ganesha not installed (package nfs-ganesha-vfs)")
    m = mount_factory("m")  # every setting at its default: a flush interval of 1 s
    # ganesha's own caching settings, untuned: what a default export does.
    g = Ganesha(base / "ganesha", m.mnt, protocols=(3, 4), revalidate=False)
    try:
        yield m, g
    finally:
        g.stop()  # before the mount fixture unmounts


@pytest.mark.parametrize("version", [3, 4])
def test_repeated_nfs_reads_each_count(ganesha, version):
    """Three reads of one file a few seconds apart, each by a new nfs-cat:
    each advances the artifact's last access to a time after it started,
    within two flush intervals (polled with a margin for a loaded machine;
    the delay is printed)."""
    m, g = ganesha
    flush = 1.0
    data = make_artifacts(m, ["a", "b"], 64 * KiB)
    g.start()
    untouched = last_access(m, "b")
    delays = []
    for i in range(3):
        if i:
            time.sleep(3)
        t = time.time_ns()
        assert g.cat("a/f", version) == data["a"]
        delays.append(advanced_by(m, "a", t, 2 * flush + SETTLE))
    print(f"NFSv{version}: each read reached the index after {', '.join(f'{d:.2f} s' for d in delays)}")
    assert last_access(m, "b") == untouched
