"""An artifactfs mount exported over NFS (v3 and v4) by nfs-ganesha (FSAL
VFS) and read with libnfs (`nfs-cat`, `nfs-cp`, `nfs-ls`), everything on
loopback.

Ganesha serves clients from the file handles of the FUSE mount
(name_to_handle_at / open_by_handle_at). Once the kernel has forgotten the
FUSE inodes (`echo 3 > /proc/sys/vm/drop_caches`), opening such a handle makes
the kernel ask the daemon to LOOKUP "." in the node id of the handle; a FUSE
file system that cannot resolve forgotten node ids answers ESTALE and the NFS
client gets NFS4ERR_STALE. The reads ganesha makes on behalf of its clients
are opens like any other and must be recorded on the artifact.

Ganesha runs in the foreground with its own configuration, log, pid file and
recovery directory below the test's directory, bound to 127.0.0.1 on free
ports, and is always stopped by the fixture before the FUSE mount is
unmounted. NFSv4 alone needs nothing else; with NFSv3 ganesha registers with
rpcbind, which the `rpcbind` fixture starts (and stops, by pid) unless one
is running; libnfs is given the NFS and MOUNT ports, so it never asks rpcbind.
"""

from __future__ import annotations

import ctypes
import random
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import harness
from ganesha import FSAL_VFS_PATHS, NFS_TIMEOUT, Ganesha
from harness import wait_until


def _require_environment():
    missing = [t for t in ("ganesha.nfsd", "nfs-cat", "nfs-ls") if not shutil.which(t)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (packages nfs-ganesha, "
                    "nfs-ganesha-vfs, libnfs-utils)")
    if not any(os.path.exists(p) for p in FSAL_VFS_PATHS):
        pytest.skip("FSAL VFS of nfs-ganesha not installed (package nfs-ganesha-vfs)")
    if os.geteuid() != 0:
        pytest.skip("ganesha's FSAL VFS needs root (open_by_handle_at needs CAP_DAC_READ_SEARCH)")
    if not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        pytest.skip("/proc/sys/vm/drop_caches is not writable")


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


@pytest.fixture
def nfs_mount(mount_factory):
    _require_environment()
    # atime-precision 0: the ls -lut check below wants each flushed access shown.
    return mount_factory("m", depth=2, sets=["index.flush-interval=100ms", "index.atime-precision=0"])


@pytest.fixture
def ganesha(nfs_mount, base):
    """Ganesha exporting the mount; torn down before the mount (fixture
    order), pass or fail."""
    g = Ganesha(base / "ganesha", nfs_mount.mnt)
    try:
        g.start()
        yield g
    finally:
        g.stop()
        assert not _ganesha_pids_for(g.conf), "ganesha.nfsd still running after stop"


def _ganesha_pids_for(conf: Path) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"ganesha.nfsd") and str(conf).encode() in cmd:
            out.append(int(p.name))
    return out


KEY = "ab/artifact-1"


def _make_artifact(m: harness.Mount) -> dict[str, bytes]:
    """One artifact at depth 2 with nested files; returns the files'
    contents by path relative to the mount."""
    rnd = harness._Rand(7)
    files = {
        f"{KEY}/obj.bin": rnd.bytes(300_000),  # several NFS READs
        f"{KEY}/sub/deeper/note.txt": b"hello over nfs\n" * 10,
        f"{KEY}/sub/empty": b"",
    }
    for rel, data in files.items():
        p = m.mnt / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


# --------------------------------------------------------------------------
# the kernel side of NFS export, without ganesha


class _FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * 128)]


_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100


def _name_to_handle(path) -> _FileHandle:
    fh = _FileHandle()
    fh.handle_bytes = 128
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(AT_FDCWD, os.fsencode(str(path)), ctypes.byref(fh),
                               ctypes.byref(mount_id), 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(path))
    return fh


def _open_by_handle(mount_fd: int, fh: _FileHandle, flags: int) -> int:
    fd = _libc.open_by_handle_at(mount_fd, ctypes.byref(fh), flags)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd



def test_file_handles_resolve_after_drop_caches(nfs_mount):
    """What ganesha's FSAL VFS does, by hand: name_to_handle_at on the FUSE
    mount, the kernel forgets the inodes, open_by_handle_at (the kernel then
    sends LOOKUP "." for the node id in the handle). Regular files,
    directories, the artifact root and the mount root must all resolve, and
    opening a file that way is recorded on its artifact."""
    m = nfs_mount
    files = _make_artifact(m)
    paths = ["", "ab", KEY, f"{KEY}/sub", f"{KEY}/sub/deeper", *files]
    handles = {rel: _name_to_handle(m.path(rel)) for rel in paths}
    mount_fd = os.open(m.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        before = m.facts(KEY)
        failures = []
        for rel in paths:
            # forget again before each one: resolving a directory handle
            # reads its parent with READDIRPLUS, which brings siblings back
            drop_caches()
            try:
                fd = _open_by_handle(mount_fd, handles[rel], os.O_RDONLY)
            except OSError as e:
                kind = "file" if rel in files else "directory"
                failures.append(f"{rel or '.'} ({kind}): open_by_handle_at failed: {e.strerror}")
                continue
            try:
                if rel in files:
                    got = b""
                    while chunk := os.read(fd, 1 << 20):
                        got += chunk
                    if got != files[rel]:
                        failures.append(f"{rel}: content read through the handle differs")
                else:
                    want = os.path.realpath(m.path(rel))
                    where = os.readlink(f"/proc/self/fd/{fd}")
                    if where != want:
                        failures.append(f"{rel or '.'}: handle resolved to {where}, want {want}")
            finally:
                os.close(fd)
        assert not failures, ("file handles of the FUSE mount do not resolve after "
                              "drop_caches:\n  " + "\n  ".join(failures))
        after = m.facts(KEY)
        assert after["access_count"] >= before["access_count"] + len(files), (before, after)
    finally:
        os.close(mount_fd)


# --------------------------------------------------------------------------
# through ganesha and libnfs


def test_nfs_read_is_recorded(nfs_mount, ganesha):
    m = nfs_mount
    files = _make_artifact(m)
    # the export root and the intermediate directory list as on the mount
    assert ganesha.ls("") == sorted(os.listdir(m.mnt))
    assert ganesha.ls("ab") == ["artifact-1"]
    # content read over NFS equals what was written; each read is recorded
    for rel, data in files.items():
        before = m.facts(KEY)
        t0 = time.time_ns()
        got = ganesha.cat(rel)
        t1 = time.time_ns()
        assert got == data, f"{rel}: NFS read {len(got)} bytes differing from the {len(data)} written"
        after = m.facts(KEY)
        assert after["access_count"] > before["access_count"], (
            f"{rel}: reading over NFS did not count as an access: {before} -> {after}")
        assert t0 <= after["last_access"] <= t1, (t0, after["last_access"], t1)
    # counted as hits at the root too
    assert m.totals()["stats.hits"] >= len(files)


def test_nfs_read_after_drop_caches(nfs_mount, ganesha):
    """The kernel forgets every FUSE inode; ganesha's handles now make it
    LOOKUP "." by node id. Reads must still work (no NFS4ERR_STALE) and still
    be recorded."""
    m = nfs_mount
    files = _make_artifact(m)
    for rel, data in files.items():
        assert ganesha.cat(rel) == data  # ganesha now holds handles for all of them
    for round_ in range(2):
        drop_caches()
        before = m.facts(KEY)
        t0 = time.time_ns()
        for rel, data in files.items():
            got = ganesha.cat(rel)
            assert got == data, f"after drop_caches (round {round_}): {rel} read back differently"
        t1 = time.time_ns()
        after = m.facts(KEY)
        assert after["access_count"] >= before["access_count"] + len(files), (
            f"reads over NFS after drop_caches not recorded (round {round_}): {before} -> {after}")
        assert t0 <= after["last_access"] <= t1, (t0, after["last_access"], t1)
    harness.assert_accounting(m, depth=2, expect_keys=[KEY])


def test_nfs_listing_after_drop_caches(nfs_mount, ganesha):
    m = nfs_mount
    _make_artifact(m)
    # ganesha learns the handles of every directory
    assert ganesha.ls(f"{KEY}/sub/deeper") == ["note.txt"]
    assert ganesha.ls(f"{KEY}/sub") == ["deeper", "empty"]
    # listings at every level after the kernel forgot the inodes: first the
    # directories that hold only directories, then those holding files
    drop_caches()
    assert ganesha.ls("") == sorted(os.listdir(m.mnt))
    assert ganesha.ls("ab") == ["artifact-1"]
    drop_caches()
    assert ganesha.ls(f"{KEY}/sub/deeper") == ["note.txt"]
    drop_caches()
    assert ganesha.ls(f"{KEY}/sub") == ["deeper", "empty"]
    assert ganesha.ls(KEY) == ["obj.bin", "sub"]
    # a file created through the FUSE mount while the kernel had forgotten
    # the directory shows up over NFS (ganesha revalidates through the handle)
    drop_caches()
    (m.mnt / KEY / "sub" / "deeper" / "late.txt").write_bytes(b"late\n")
    drop_caches()
    assert ganesha.ls(f"{KEY}/sub/deeper") == ["late.txt", "note.txt"]
    # listing a directory inside the artifact is a use of it
    before = m.facts(KEY)
    drop_caches()
    assert ganesha.ls(f"{KEY}/sub") == ["deeper", "empty"]
    after = m.facts(KEY)
    assert after["access_count"] > before["access_count"], (before, after)


def test_nfs_reads_order_artifacts_by_last_use(nfs_mount, ganesha):
    """A read over NFS moves an artifact ahead of one read locally earlier,
    also when the kernel has forgotten both."""
    m = nfs_mount
    for k in ("aa/old", "aa/new"):
        (m.mnt / k).mkdir(parents=True)
        (m.mnt / k / "f").write_bytes(k.encode())
    assert ganesha.ls("aa") == ["new", "old"]
    (m.mnt / "aa/new/f").read_bytes()
    time.sleep(0.01)
    (m.mnt / "aa/old/f").read_bytes()  # locally, "old" is now the most recent
    assert m.facts("aa/old")["last_access"] > m.facts("aa/new")["last_access"]
    drop_caches()
    assert ganesha.cat("aa/new/f") == b"aa/new"
    old, new = m.facts("aa/old"), m.facts("aa/new")
    assert new["last_access"] > old["last_access"], (old, new)
    # the mount's st_atime of artifact roots follows (ls -lut order)
    wait_until(lambda: os.stat(m.mnt / "aa/new").st_atime_ns == m.facts("aa/new")["last_access"],
               3.0, what="st_atime of the artifact read over NFS to equal its last_access")
    out = harness.check(["ls", "-1ut", m.mnt / "aa"]).split()
    assert out == ["new", "old"], out


# --------------------------------------------------------------------------
# NFSv3 and NFSv4 together (rpcbind: conftest.py), parallel copies during
# eviction, a read-only export

# Ganesha keeps the files its NFSv3 clients read open (its descriptor cache)
# until its reaper closes them, and an open file keeps its artifact from
# being evicted. These settings make the reaper run every second and close
# whatever is idle; the README's farm guide recommends them.
CLOSE_IDLE_FILES = """\
MDCACHE {
    FD_LWMark_Percent = 0;
    FD_HWMark_Percent = 10;
    LRU_Run_Interval = 1;
}
"""


def _ganesha_v3_v4(base: Path, m: harness.Mount, access: str = "RW"):
    g = Ganesha(base / "ganesha", m.mnt, protocols=(3, 4), access=access, extra=CLOSE_IDLE_FILES)
    g.start()
    return g


FARM_KEYS_DIR = "ab"
KiB = 1024


def _farm_content(key: str) -> bytes:
    """What artifact `key` holds, whoever wrote it: any copy can be checked."""
    rnd = random.Random(key)
    return rnd.randbytes(rnd.randint(40, 200) * KiB)


def _write_quota_config(path: Path, max_size: str) -> None:
    path.write_text("layout:\n  depth: 2\nindex:\n  flush-interval: 100ms\n"
                    f"quota:\n  max-size: {max_size}\n  min-free: 0\n  low-watermark: 0.5\n  min-age: 0s\n"
                    "  check-interval: 100ms\n")


def test_parallel_nfs_copies_during_eviction(mount_factory, base, rpcbind):
    """Four libnfs clients (two NFSv3, two NFSv4) copy artifacts with nfs-cp
    while a local writer keeps publishing new ones and the quota keeps
    evicting the least recently used. Every copy is complete and equal to
    what was written, or fails before any byte came because the artifact was
    gone (NOENT, or STALE for a handle the client had looked up before):
    eviction shows to clients as absence, never as a short or corrupt file."""
    _require_environment()
    cfg = base / "artifactfs.yaml"
    _write_quota_config(cfg, "unlimited")
    m = mount_factory("m", config=cfg)
    (m.mnt / FARM_KEYS_DIR).mkdir()
    counter = [0]

    def publish_one() -> None:
        key = f"k{counter[0]:05}"
        counter[0] += 1
        tmp = m.mnt / FARM_KEYS_DIR / f".tmp-{key}"
        tmp.write_bytes(_farm_content(key))
        os.rename(tmp, m.mnt / FARM_KEYS_DIR / key)

    for _ in range(40):
        publish_one()
    usage = m.totals()["total.disk_bytes"]
    # About half of what is there now fits: the writer's every new artifact
    # pushes the cache over and the quota evicts.
    _write_quota_config(cfg, str(usage // 2))
    os.kill(m.pid, signal.SIGHUP)

    g = _ganesha_v3_v4(base, m)
    stop = threading.Event()
    outcome: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    lock = threading.Lock()
    out_dir = base / "copies"
    out_dir.mkdir()

    def reader(name: str, version: int) -> None:
        rnd = random.Random(name)
        counts = {"complete": 0, "absent": 0}
        n = 0
        while not stop.is_set():
            names = [x for x in os.listdir(m.data / FARM_KEYS_DIR) if not x.startswith(".")]
            if not names:
                continue
            key = rnd.choice(names)
            dest = out_dir / f"{name}-{n}"
            n += 1
            r = subprocess.run(["nfs-cp", g.url(f"{FARM_KEYS_DIR}/{key}", version), str(dest)],
                               capture_output=True, timeout=NFS_TIMEOUT)
            err = r.stderr.decode(errors="replace").strip()
            if r.returncode == 0:
                got = dest.read_bytes()
                if got != _farm_content(key):
                    with lock:
                        problems.append(f"{name}: {key}: copied {len(got)} bytes that differ from the "
                                        f"{len(_farm_content(key))} written")
                else:
                    counts["complete"] += 1
            else:
                # Clean only if nothing was copied and the artifact is gone
                # indeed (keys are never published again). libnfs says
                # NOENT, STALE, or that the file it opened cannot be stat'ed.
                copied = dest.stat().st_size if dest.exists() else 0
                if copied or (m.data / FARM_KEYS_DIR / key).exists():
                    with lock:
                        problems.append(f"{name}: {key}: nfs-cp exited {r.returncode} after {copied} bytes "
                                        f"(artifact still there: {(m.data / FARM_KEYS_DIR / key).exists()}): {err}")
                else:
                    counts["absent"] += 1
            dest.unlink(missing_ok=True)
        with lock:
            outcome[name] = counts

    threads = [threading.Thread(target=reader, args=(f"v{v}-{i}", v)) for v in (3, 4) for i in range(2)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not problems:
            publish_one()
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=NFS_TIMEOUT + 10)
        g.stop()
    assert not problems, "copies over NFS that were not whole:\n  " + "\n  ".join(problems[:20])
    for name, counts in outcome.items():
        assert counts["complete"] > 0, f"{name} never copied an artifact: {outcome}"
    evictions = m.totals()["stats.evictions"]
    assert evictions > 0, "the quota evicted nothing"
    print(f"{counter[0]} artifacts published, {evictions} evicted; copies: {outcome}")
    # ganesha is gone: the quota catches up, then the index equals the tree
    wait_until(lambda: m.totals()["total.disk_bytes"] <= usage // 2, 30.0, what="usage under the limit")
    last = [m.totals()["stats.evictions"], time.monotonic()]

    def settled():
        n = m.totals()["stats.evictions"]
        if n != last[0]:
            last[:] = [n, time.monotonic()]
        return time.monotonic() - last[1] > 1.0 and not os.listdir(m.store / "trash")
    wait_until(settled, 30.0, 0.1, what="the cleanup to end")
    # No further cleanup (one retried when a protection ends could start
    # while the tree is measured): lift the quota, then let a walk in
    # progress finish.
    reloads = m.stderr_text().count("configuration reloaded")
    _write_quota_config(cfg, "unlimited")
    os.kill(m.pid, signal.SIGHUP)
    wait_until(lambda: m.stderr_text().count("configuration reloaded") > reloads, 30.0, what="the reload")
    last[:] = [m.totals()["stats.evictions"], time.monotonic()]
    wait_until(settled, 30.0, 0.1, what="the cleanup to end")
    harness.assert_accounting(m, depth=2)


@pytest.mark.parametrize("version", [3, 4])
def test_readonly_export_records_reads(mount_factory, base, rpcbind, version):
    """An export with Access_Type = RO: its clients cannot change the cache,
    and their reads still count as uses of the artifacts."""
    _require_environment()
    m = mount_factory("m", depth=2, sets=["index.flush-interval=100ms"])
    files = _make_artifact(m)
    g = _ganesha_v3_v4(base, m, access="RO")
    try:
        for rel, data in files.items():
            before = m.facts(KEY)
            t0 = time.time_ns()
            assert g.cat(rel, version) == data
            after = m.facts(KEY)
            assert after["access_count"] > before["access_count"], (rel, before, after)
            assert t0 <= after["last_access"] <= time.time_ns(), (t0, after)
        # after the kernel forgot the inodes too
        drop_caches()
        before = m.facts(KEY)
        assert g.cat(f"{KEY}/obj.bin", version) == files[f"{KEY}/obj.bin"]
        assert m.facts(KEY)["access_count"] > before["access_count"]
        # and no client can write or remove through it
        snapshot = harness.snapshot(m.data)
        src = base / "local.txt"
        src.write_bytes(b"not allowed\n")
        r = subprocess.run(["nfs-cp", str(src), g.url(f"{KEY}/new.txt", version)], capture_output=True,
                           timeout=NFS_TIMEOUT)
        assert r.returncode != 0 and b"ROFS" in r.stderr, r.stderr
        assert harness.snapshot(m.data) == snapshot, "a read-only export changed the cache"
    finally:
        g.stop()
