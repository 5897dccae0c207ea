"""File handles that survive the daemon: what knfsd does with every client's
handle after artifactfs restarts.

A handle from name_to_handle_at on the mount carries the FUSE node id (the
backing inode number) and the backing inode's generation. After an unmount
and a new mount, open_by_handle_at must reach the same file (the daemon
resolves the node id from its persistent node table), a handle of a file
deleted meanwhile must give ESTALE, and a handle whose inode number now
belongs to another file must give ESTALE, never the other file. Both with
the daemon able to open by file handle and without CAP_DAC_READ_SEARCH
(then it walks the stored parent chain by name).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import time

import pytest

import harness

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
MAX_HANDLE_SZ = 128
AT_FDCWD = -100


class FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ)]


def name_to_handle(path) -> bytes:
    fh = FileHandle()
    fh.handle_bytes = MAX_HANDLE_SZ
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(AT_FDCWD, os.fsencode(str(path)), ctypes.byref(fh), ctypes.byref(mount_id), 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(path))
    return bytes(fh)


def open_by_handle(mount_dir, raw: bytes, flags=os.O_RDONLY) -> int:
    fh = FileHandle.from_buffer_copy(raw)
    mfd = os.open(mount_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = _libc.open_by_handle_at(mfd, ctypes.byref(fh), flags)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return fd
    finally:
        os.close(mfd)


def read_by_handle(mount_dir, raw: bytes) -> bytes:
    fd = open_by_handle(mount_dir, raw)
    try:
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def drop_caches():
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")


@pytest.mark.parametrize("reopen", ["by-handle", "through-parents"])
def test_handles_survive_a_restart(mount_factory, reopen):
    m = mount_factory("m", depth=2, sets=["index.flush-interval=100ms"], start=False)
    if reopen == "through-parents":
        m.wrap = ["setpriv", "--bounding-set=-dac_read_search", "--"]
    m.start()
    files = {}
    for ns in ("aa", "bb"):
        for key in ("k1", "k2"):
            d = m.mnt / ns / key / "sub"
            d.mkdir(parents=True)
            (d / "data").write_bytes(f"{ns}/{key}\n".encode() * 100)
            files[f"{ns}/{key}/sub/data"] = (d / "data").read_bytes()
    handles = {rel: name_to_handle(m.mnt / rel) for rel in files}
    dir_handles = {rel: name_to_handle(m.mnt / rel) for rel in ("aa", "aa/k1", "bb/k2/sub")}
    doomed = m.mnt / "bb/k2/sub/doomed"
    doomed.write_bytes(b"going away\n")
    doomed_handle = name_to_handle(doomed)
    victim = m.mnt / "aa/k2/victim"
    victim.write_bytes(b"the old file\n")
    victim_ino = os.stat(m.data / "aa/k2/victim").st_ino
    victim_handle = name_to_handle(victim)
    # A rename after the handle was taken: the table follows it.
    os.rename(m.mnt / "bb/k1", m.mnt / "bb/k1-renamed")
    files["bb/k1-renamed/sub/data"] = files.pop("bb/k1/sub/data")
    handles["bb/k1-renamed/sub/data"] = handles.pop("bb/k1/sub/data")
    assert read_by_handle(m.mnt, handles["bb/k1-renamed/sub/data"]) == files["bb/k1-renamed/sub/data"]

    m.remount()

    # The deleted file and a new file that took the victim's inode number.
    os.unlink(m.mnt / "bb/k2/sub/doomed")
    os.unlink(victim)
    reused = None
    for i in range(2000):
        p = m.mnt / "aa/k2" / f"new{i}"
        p.write_bytes(b"a different file\n")
        if os.stat(m.data / "aa/k2" / f"new{i}").st_ino == victim_ino:
            reused = p
            break
    drop_caches()

    for rel, raw in handles.items():
        assert read_by_handle(m.mnt, raw) == files[rel], rel
    for rel, raw in dir_handles.items():
        fd = open_by_handle(m.mnt, raw, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert sorted(os.listdir(fd)) == sorted(os.listdir(m.mnt / rel)), rel
        finally:
            os.close(fd)
    assert harness.outcome(read_by_handle, m.mnt, doomed_handle) == ("err", "ESTALE")
    if reused is None:
        pytest.skip("the backing filesystem did not reuse the inode number in 2000 tries")
    assert harness.outcome(read_by_handle, m.mnt, victim_handle) == ("err", "ESTALE")
    assert reused.read_bytes() == b"a different file\n"

    # Again after the kernel forgot everything, with the daemon running.
    m.remount()
    drop_caches()
    for rel, raw in handles.items():
        assert read_by_handle(m.mnt, raw) == files[rel], rel
    assert "reopened by file handle" in m.stderr_text() or reopen == "through-parents"


def node_places(m: harness.Mount) -> int:
    """Entries of the persistent node table, read with LMDB's own tool."""
    out = harness.check(["mdb_stat", "-s", "nodes", str(m.store / "index" / "nodes")])
    return int(re.search(r"Entries: (\d+)", out).group(1))


def test_node_table_forgets_evicted_inodes(mount_factory):
    """The node table holds the places of inodes that exist: those of evicted
    artifacts go when the trash deletes them, so it does not grow with the
    cache's history."""
    m = mount_factory(depth=1, sets=["index.flush-interval=100ms", "quota.max-size=200K", "quota.min-free=0",
                                     "quota.min-age=0s", "quota.low-watermark=1.0", "quota.check-interval=200ms"])
    for a in range(40):
        art = m.mnt / f"a{a:02d}"
        art.mkdir()
        for f in range(10):
            (art / f"f{f}").write_bytes(b"x" * 4000)
        for f in range(10):
            os.stat(art / f"f{f}")  # the kernel holds each: its place is recorded
        time.sleep(0.05)
    harness.wait_until(lambda: harness.xattr_int(m.mnt, "total.disk_bytes") <= 200 * 1024
                       and not os.listdir(m.store / "trash"), 60, what="the cleanup and the trash emptied")
    time.sleep(0.5)  # a few flushes of the node table
    existing = sum(len(dirs) + len(files) for _, dirs, files in os.walk(m.data))
    places = node_places(m)
    assert existing < 100
    # At most the entries that exist (and the root): not the 440 that were
    # looked up.
    assert places <= existing + 1, f"{places} places for {existing} entries in the data tree"
