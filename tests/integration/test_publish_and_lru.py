"""Atomic publish, access recording (last_access, access_count, st_atime of
the artifact root, `ls -lut` order), reads by other users, and what survives
a remount (inode numbers, contents, access facts)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import threading
import time

import pytest

import harness
from harness import check, wait_until

FLUSH = 0.1  # the mnt fixture runs with index.flush-interval=100ms
VISIBLE = FLUSH + 3.0  # "within about flush-interval + a moment", generously


def test_atomic_publish(mnt):
    """An artifact written under a temporary name at the artifact depth and
    renamed to its key is seen either not at all or whole."""
    nfiles = 40
    payload = {f"part{i:02}": hashlib.sha256(str(i).encode()).digest() * (i * 37 + 1)
               for i in range(nfiles)}
    keys = [f"key{i}" for i in range(8)]
    seen = {k: [] for k in keys}
    problems = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            for k in keys:
                p = mnt.mnt / k
                try:
                    names = sorted(os.listdir(p))
                except FileNotFoundError:
                    seen[k].append("absent")
                    continue
                if names != sorted(payload):
                    problems.append(f"{k}: partial listing {len(names)} of {nfiles}")
                    continue
                for n in names[:: 7]:
                    data = (p / n).read_bytes()
                    if data != payload[n]:
                        problems.append(f"{k}/{n}: partial content {len(data)} of {len(payload[n])}")
                seen[k].append("whole")

    t = threading.Thread(target=reader)
    t.start()
    try:
        for k in keys:
            tmp = mnt.mnt / f".tmp-{k}-{os.getpid()}"
            tmp.mkdir()
            for n, data in payload.items():
                with open(tmp / n, "wb") as f:
                    f.write(data[: len(data) // 2])
                    time.sleep(0.001)
                    f.write(data[len(data) // 2:])
            os.rename(tmp, mnt.mnt / k)
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(timeout=60)
    assert not problems, "reader saw partial artifacts:\n  " + "\n  ".join(problems[:20])
    assert all("whole" in seen[k] for k in keys)
    assert sorted(os.listdir(mnt.mnt)) == sorted(keys), "temporary names left behind"
    harness.assert_accounting(mnt, 1, expect_keys=keys)


def test_open_records_access(mnt):
    d = mnt.mnt / "art"
    d.mkdir()
    (d / "sub").mkdir()
    (d / "f").write_bytes(b"content")
    f0 = mnt.facts("art")
    time.sleep(0.01)
    t0 = time.time_ns()
    fd = os.open(d / "f", os.O_RDONLY)
    os.close(fd)
    t1 = time.time_ns()
    f1 = mnt.facts("art")
    assert f1["access_count"] == f0["access_count"] + 1, (f0, f1)
    assert t0 <= f1["last_access"] <= t1, (t0, f1["last_access"], t1)
    # three more opens, reads and writes alike
    (d / "f").read_bytes()
    with open(d / "f", "ab") as fh:
        fh.write(b"+")
    with open(d / "sub" / "new", "wb"):
        pass  # create counts as an open
    f2 = mnt.facts("art")
    assert f2["access_count"] == f1["access_count"] + 3, (f1, f2)
    assert f2["last_access"] > f1["last_access"]
    # opendir of a directory inside the artifact, and of the root itself
    os.listdir(d / "sub")
    f3 = mnt.facts("art")
    assert f3["access_count"] == f2["access_count"] + 1, (f2, f3)
    os.listdir(d)
    f4 = mnt.facts("art")
    assert f4["access_count"] == f3["access_count"] + 1, (f3, f4)
    assert f4["last_access"] >= f3["last_access"] > f2["last_access"]
    # stat, getxattr and a listing of the mount root are not uses of the artifact
    os.stat(d / "f")
    os.listdir(mnt.mnt)
    f5 = mnt.facts("art")
    assert f5["access_count"] == f4["access_count"] and f5["last_access"] == f4["last_access"]
    # the creation time does not move
    assert f0["created"] == f1["created"] == f5["created"]
    # opens are counted as hits
    assert harness.root_facts(mnt.mnt)["stats.hits"] >= 6


@pytest.fixture
def exact_atime(mount_factory) -> harness.Mount:
    """index.atime-precision 0: `stat` of an artifact root shows every
    flushed access (the default shows a new one once the shown one is a
    minute old; test_use_counting.py checks that)."""
    return mount_factory("m", sets=["index.flush-interval=100ms", "index.atime-precision=0"])


def test_stat_atime_of_root_is_last_access(exact_atime):
    mnt = exact_atime
    d = mnt.mnt / "art"
    d.mkdir()
    (d / "f").write_bytes(b"x")
    for _ in range(3):
        (d / "f").read_bytes()
        la = harness.xattr_time_ns(d, "last_access")
        wait_until(lambda: os.stat(d).st_atime_ns == la, VISIBLE,
                   what=f"st_atime of the artifact root to equal last_access {la}")
        time.sleep(0.05)
    # a file artifact (the root is a regular file)
    (mnt.mnt / "file-art").write_bytes(b"y")
    (mnt.mnt / "file-art").read_bytes()
    la = harness.xattr_time_ns(mnt.mnt / "file-art", "last_access")
    wait_until(lambda: os.stat(mnt.mnt / "file-art").st_atime_ns == la, VISIBLE,
               what="st_atime of a file artifact to equal last_access")


def test_ls_lut_order(exact_atime):
    mnt = exact_atime
    names = ["alpha", "bravo", "charlie", "delta", "echo"]
    for n in names:
        (mnt.mnt / n).mkdir()
        (mnt.mnt / n / "data").write_bytes(n.encode())
    time.sleep(FLUSH * 3)
    order = ["charlie", "alpha", "echo", "bravo", "delta"]  # oldest use first
    for n in order:
        (mnt.mnt / n / "data").read_bytes()
        time.sleep(0.03)
    want = list(reversed(order))  # ls -t: most recent first

    def listed():
        out = check(["ls", "-1ut", mnt.mnt]).split()
        return out if out == want else None

    try:
        wait_until(listed, VISIBLE, what="ls -lut order")
    except AssertionError:
        got = check(["ls", "-1ut", mnt.mnt]).split()
        raise AssertionError(f"`ls -1ut MNT` lists {got}, want {want}\n"
                             + check(["ls", "-lut", "--full-time", mnt.mnt]))
    # the long form agrees, and reusing the oldest moves it to the front
    (mnt.mnt / "charlie" / "data").read_bytes()
    wait_until(lambda: check(["ls", "-1ut", mnt.mnt]).split()[0] == "charlie", VISIBLE,
               what="charlie first after being read")
    lines = check(["ls", "-lut", mnt.mnt]).splitlines()[1:]
    assert [ln.split()[-1] for ln in lines] == ["charlie", "delta", "bravo", "echo", "alpha"]


def _as_nobody(argv):
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    return ["runuser", "-u", "nobody", "--", *argv]


def test_unprivileged_read_recorded(mnt):
    os.chmod(mnt.mnt, 0o755)  # shared with readers by the operator (a new mount root is 0700)
    d = mnt.mnt / "shared"
    d.mkdir()
    (d / "obj").write_bytes(b"readable by all\n")
    os.chmod(d / "obj", 0o644)
    f0 = mnt.facts("shared")
    r = subprocess.run(_as_nobody(["cat", str(d / "obj")]), capture_output=True, timeout=30)
    assert r.returncode == 0, f"nobody could not read through the mount: {r.stderr!r}"
    assert r.stdout == b"readable by all\n"
    f1 = mnt.facts("shared")
    assert f1["access_count"] == f0["access_count"] + 1
    assert f1["last_access"] > f0["last_access"]
    # permissions still apply to other users: no reading a private file, no
    # creating files in root's directory
    os.chmod(d / "obj", 0o600)
    r = subprocess.run(_as_nobody(["cat", str(d / "obj")]), capture_output=True, timeout=30)
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    r = subprocess.run(_as_nobody(["touch", str(d / "new")]), capture_output=True, timeout=30)
    assert r.returncode != 0 and not (mnt.data / "shared" / "new").exists()


def _inode_map(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = os.lstat(p).st_ino
    out["."] = os.lstat(root).st_ino
    return out


def test_inodes_and_contents_stable_across_remount(mnt, base):
    src = harness.make_realistic_tree(base / "src")
    check(["cp", "-a", src, mnt.mnt / "art"])
    (mnt.mnt / "file-art").write_bytes(os.urandom(70_000))
    inos = _inode_map(mnt.mnt)
    snap = harness.snapshot(mnt.mnt, mtimes=True)
    # the kernel must not be the one remembering: drop its caches too
    mnt.remount()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    assert _inode_map(mnt.mnt) == inos
    assert harness.snapshot(mnt.mnt, mtimes=True) == snap
    harness.assert_same_tree(src, mnt.mnt / "art", mtimes=True)


def test_inodes_stable_while_mounted(mnt):
    """A path keeps its st_ino when the kernel forgets and looks it up again,
    and across a rename."""
    (mnt.mnt / "art" / "d").mkdir(parents=True)
    (mnt.mnt / "art" / "d" / "f").write_bytes(b"f")
    before = _inode_map(mnt.mnt)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    assert _inode_map(mnt.mnt) == before
    ino = os.stat(mnt.mnt / "art" / "d" / "f").st_ino
    os.rename(mnt.mnt / "art" / "d" / "f", mnt.mnt / "art" / "g")
    assert os.stat(mnt.mnt / "art" / "g").st_ino == ino


def test_access_facts_survive_remount(mnt):
    (mnt.mnt / "a").mkdir()
    (mnt.mnt / "a" / "f").write_bytes(b"1")
    for _ in range(4):
        (mnt.mnt / "a" / "f").read_bytes()
    f0 = mnt.facts("a")
    hits0 = harness.root_facts(mnt.mnt)["stats.hits"]
    mnt.remount()
    f1 = mnt.facts("a")
    assert f1 == f0
    assert harness.root_facts(mnt.mnt)["stats.hits"] == hits0
    wait_until(lambda: os.stat(mnt.mnt / "a").st_atime_ns == f0["last_access"], VISIBLE,
               what="st_atime after remount equals the recorded last access")


def test_misses_and_hits_counted(mnt):
    s0 = harness.root_facts(mnt.mnt)
    for i in range(3):
        assert harness.outcome(os.stat, mnt.mnt / f"absent-{i}") == ("err", "ENOENT")
    s1 = harness.root_facts(mnt.mnt)
    assert s1["stats.misses"] == s0["stats.misses"] + 3, (s0, s1)
    (mnt.mnt / "k").mkdir()
    (mnt.mnt / "k" / "f").write_bytes(b"1")
    s2 = harness.root_facts(mnt.mnt)
    (mnt.mnt / "k" / "f").read_bytes()
    s3 = harness.root_facts(mnt.mnt)
    assert s3["stats.hits"] == s2["stats.hits"] + 1, (s2, s3)
    assert s3["stats.misses"] == s2["stats.misses"]
