"""Per-artifact and total accounting against du/find of the data tree.

After a mixed workload, for EVERY artifact the xattrs user.artifactfs.
disk_bytes / apparent_bytes / files equal `du --block-size=1 -s`, `du -sb`
and the count of non-directory inodes of STORE/data/KEY (each artifact
measured by its own du run, since du counts a hard-linked inode once per
invocation), and the root totals equal du of STORE/data."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from harness import assert_accounting, check, outcome


def workload(m: harness.Mount, P, src: Path, tarball: Path) -> list[str]:
    """Runs the mixed workload; P(name) is an artifact's path below the mount
    root. Returns the artifact keys that must exist afterwards."""
    M = m.mnt
    for name in ("a1", "a2", "a3", "a4", "a5"):
        (M / P(name)).parent.mkdir(parents=True, exist_ok=True)
    # cp -a and tar x
    check(["cp", "-a", src, M / P("a1")])
    (M / P("a2")).mkdir()
    check(["tar", "--xattrs", "--xattrs-include=user.*", "-C", M / P("a2"), "-xpf", tarball])
    check(["cp", "-a", src / "lib", M / P("a3")])
    (M / P("a4")).mkdir()
    for i in range(20):
        (M / P("a4") / f"f{i}").write_bytes(os.urandom(1000 * i))
    (M / P("a5")).write_bytes(b"a single file is an artifact too\n" * 300)
    a1, a2, a3, a4 = (M / P(n) for n in ("a1", "a2", "a3", "a4"))

    # overwrite files with different sizes (bigger, smaller, empty)
    (a1 / "lib" / "pkg" / "mod02.py").write_bytes(os.urandom(70_000))
    (a1 / "lib" / "pkg" / "sub" / "big.bin").write_bytes(b"small now")
    (a2 / "share" / "doc" / "README").write_bytes(b"")  # has hard links in a2
    with open(a2 / "lib" / "pkg" / "mod03.py", "r+b") as f:  # overwrite in place, growing
        f.seek(0)
        f.write(os.urandom(50_000))
    # truncate up (sparse) and down
    os.truncate(a1 / "lib" / "pkg" / "mod04.py", 10 << 20)
    os.truncate(a1 / "lib" / "libx.so.1.2", 1000)
    with open(a2 / "lib" / "pkg" / "mod05.py", "r+b") as f:
        f.truncate(0)
    # fallocate
    fd = os.open(a2 / "prealloc", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.posix_fallocate(fd, 0, 2 << 20)
        os.posix_fallocate(fd, 8 << 20, 1 << 20)  # a second extent past a hole
    finally:
        os.close(fd)
    # rename within an artifact (file and directory)
    os.rename(a1 / "lib" / "pkg" / "mod01.py", a1 / "mod01-moved.py")
    os.rename(a1 / "lib" / "pkg" / "sub", a1 / "sub-moved")
    # rename of a subdirectory from one artifact to another; a1/share holds
    # names of inodes that a1/bin also names, so they become cross-artifact
    os.rename(a1 / "share", a2 / "share-from-a1")
    # rename of a file across artifacts
    os.rename(a2 / "lib" / "pkg" / "sub" / "big.bin", a1 / "big-from-a2.bin")
    os.rename(a4 / "f19", a3 / "f19-from-a4")
    # replace a file by rename (the replaced file had a hard link)
    (a1 / "bin" / "tool.new").write_bytes(b"#!/bin/sh\necho new tool\n" * 100)
    os.rename(a1 / "bin" / "tool.new", a1 / "bin" / "tool")
    # replace a file in one artifact by a file from another
    os.rename(a4 / "f18", a1 / "lib" / "pkg" / "mod06.py")
    # hard links within and across artifacts
    os.link(a4 / "f10", a4 / "f10.link")
    os.link(a4 / "f11", a3 / "f11.cross")
    os.link(a4 / "f12", a3 / "f12.cross")
    os.link(a4 / "f12", a1 / "f12.cross")
    # unlink of one link (within, across, and the original name)
    os.unlink(a4 / "f10")
    os.unlink(a3 / "f11.cross")
    os.unlink(a4 / "f12")
    # a new artifact that gets removed again with rm -r, holding a cross link
    (M / P("gone")).mkdir()
    check(["cp", "-a", src / "bin", M / P("gone") / "bin"])
    os.link(a4 / "f13", M / P("gone") / "f13.cross")
    check(["rm", "-r", M / P("gone")])
    # rename an artifact (whole directory at the artifact depth)
    os.rename(M / P("a2"), M / P("a2r"))
    # a file artifact moved into another artifact, and a file moved out of an
    # artifact to become an artifact of its own
    (M / P("lonely")).write_bytes(b"l" * 12345)
    os.rename(M / P("lonely"), a1 / "was-an-artifact")
    os.rename(a4 / "f9", M / P("promoted"))
    # a symlink artifact
    os.symlink("a5", M / P("alias"))
    return ["a1", "a2r", "a3", "a4", "a5", "promoted", "alias"]


@pytest.fixture
def src(base):
    return harness.make_realistic_tree(base / "src")


@pytest.fixture
def tarball(base, src):
    t = base / "src.tar"
    check(["tar", "--xattrs", "--xattrs-include=user.*", "-C", src, "-cf", t, "."])
    return t


def test_accounting_depth1(mount_factory, src, tarball):
    m = mount_factory(depth=1)
    keys = workload(m, lambda n: n, src, tarball)
    before = assert_accounting(m, 1, expect_keys=keys)
    m.remount()
    after = assert_accounting(m, 1, expect_keys=keys)
    assert sorted(before) == sorted(after) == sorted(k for k in keys if k != "alias")
    for k in before:
        assert after[k]["created"] == before[k]["created"], k
        assert after[k]["access_count"] == before[k]["access_count"], k
        assert after[k]["last_access"] == before[k]["last_access"], k


def test_accounting_depth3(mount_factory, src, tarball):
    m = mount_factory(depth=3)
    P = {"a1": "ns1/x/a1", "a2": "ns1/x/a2", "a2r": "ns1/x/a2r", "a3": "ns1/y/a3",
         "a4": "ns2/x/a4", "a5": "ns2/y/a5", "gone": "ns2/y/gone", "lonely": "ns2/x/lonely",
         "promoted": "ns1/y/promoted", "alias": "ns2/y/alias"}
    workload(m, P.__getitem__, src, tarball)
    # entries above the artifact depth belong to no artifact but count in totals
    (m.mnt / "top-stray").write_bytes(b"s" * 9000)
    (m.mnt / "ns2" / "stray-at-2").write_bytes(b"t" * 100)
    assert_accounting(m, 3)
    # a namespace rename moves every artifact below it
    os.rename(m.mnt / "ns1" / "x", m.mnt / "ns1" / "renamed")
    os.rename(m.mnt / "ns2", m.mnt / "ns3")
    keys = ["ns1/renamed/a1", "ns1/renamed/a2r", "ns1/y/a3", "ns3/x/a4", "ns3/y/a5",
            "ns1/y/promoted", "ns3/y/alias"]
    before = assert_accounting(m, 3, expect_keys=keys)
    for old in ("ns1/x/a1", "ns2/x/a4"):
        assert harness.outcome(os.getxattr, m.mnt / old, "user.artifactfs.disk_bytes")[1] == "ENOENT"
    m.remount()
    after = assert_accounting(m, 3, expect_keys=keys)
    for k in before:
        assert after[k]["created"] == before[k]["created"], k


def test_exact_while_writing(mnt):
    """Accounting is exact while a file is still open and being written,
    with no flush in between."""
    d = mnt.mnt / "w"
    d.mkdir()
    with open(d / "growing", "wb") as f:
        for i in range(5):
            f.write(os.urandom(300_000))
            f.flush()
            assert_accounting(mnt, 1)
        f.truncate(10)
        assert_accounting(mnt, 1)
    with open(d / "growing", "ab") as f:
        f.write(b"x" * 5000)
    assert_accounting(mnt, 1)


def test_new_artifact_facts(mnt):
    import time
    t0 = time.time_ns()
    (mnt.mnt / "k").mkdir()
    t1 = time.time_ns()
    f = mnt.facts("k")
    assert f["files"] == 0 and f["pinned"] == 0
    assert f["disk_bytes"] == harness.du_disk(mnt.data / "k")
    assert f["apparent_bytes"] == harness.du_apparent(mnt.data / "k")
    # creation within the call (1 s slack for clock granularity)
    assert t0 - 1_000_000_000 <= f["created"] <= t1 + 1_000_000_000
    assert f["last_access"] >= f["created"]
    assert harness.root_facts(mnt.mnt)["total.artifacts"] == 1


def test_keep_globs(mount_factory):
    m = mount_factory(depth=1, keep=["tmp", "CACHEDIR.*"])
    (m.mnt / "tmp").mkdir()
    (m.mnt / "tmp" / "scratch").write_bytes(b"x" * 40000)
    (m.mnt / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    (m.mnt / "real").mkdir()
    (m.mnt / "real" / "f").write_bytes(b"y" * 5000)
    assert_accounting(m, 1, keep=["tmp", "CACHEDIR.*"], expect_keys=["real"])
    for kept in ("tmp", "CACHEDIR.TAG"):
        r = outcome(os.getxattr, m.mnt / kept, "user.artifactfs.disk_bytes")
        assert r == ("err", "ENODATA"), f"{kept} must not be an artifact: {r}"
    # moving a kept directory's content into an artifact moves its usage
    os.rename(m.mnt / "tmp" / "scratch", m.mnt / "real" / "scratch")
    assert_accounting(m, 1, keep=["tmp", "CACHEDIR.*"], expect_keys=["real"])


def test_getfattr_tool_shows_facts(mnt):
    (mnt.mnt / "art").mkdir()
    (mnt.mnt / "art" / "f").write_bytes(b"z" * 10000)
    root = harness.getfattr_dump(mnt.mnt)
    for name in harness.TOTAL_FACTS + harness.STAT_FACTS:
        full = harness.XATTR_PREFIX + name
        assert full in root, f"getfattr -d -m - MNT does not list {full}: {sorted(root)}"
        assert int(root[full]) == harness.xattr_int(mnt.mnt, name)
    assert int(root["user.artifactfs.total.disk_bytes"]) == harness.du_disk(mnt.data)
    # On an artifact the facts are read by name (the daemon lists them only on
    # the mount root, so that cp/rsync/tar preserving xattrs do not copy them).
    art = {}
    for name in harness.INT_FACTS + harness.TIME_FACTS:
        full = harness.XATTR_PREFIX + name
        r = harness.run(["getfattr", "--absolute-names", "--only-values", "-n", full,
                         mnt.mnt / "art"])
        assert r.returncode == 0, f"getfattr -n {full} MNT/art: {r.stderr}"
        art[full] = r.stdout
    assert int(art["user.artifactfs.disk_bytes"]) == harness.du_disk(mnt.data / "art")
    assert int(art["user.artifactfs.files"]) == 1
    assert harness.parse_time_ns(art["user.artifactfs.created"].encode()) == \
        harness.xattr_time_ns(mnt.mnt / "art", "created")
    # the facts are read-only: a user cannot overwrite them
    r = outcome(os.setxattr, mnt.mnt / "art", "user.artifactfs.disk_bytes", b"1")
    assert r[0] == "err", "setting user.artifactfs.disk_bytes must fail"
    assert harness.xattr_int(mnt.mnt / "art", "disk_bytes") == harness.du_disk(mnt.data / "art")


def test_clean_remount_reads_index_without_walking(mount_factory):
    """A clean remount takes the numbers from the index: a change made to
    STORE/data behind the daemon's back while unmounted is not seen (so no
    walk happened), and --rebuild-index then brings the numbers back to du."""
    m = mount_factory(depth=1)
    (m.mnt / "art").mkdir()
    (m.mnt / "art" / "f").write_bytes(os.urandom(100_000))
    before = assert_accounting(m, 1)["art"]
    assert m.unmount() == 0
    (m.data / "art" / "behind-the-back").write_bytes(os.urandom(500_000))
    m.start()
    f = m.facts("art")
    assert (f["disk_bytes"], f["apparent_bytes"], f["files"]) == \
        (before["disk_bytes"], before["apparent_bytes"], before["files"]), \
        "clean remount re-measured the data tree instead of using the index"
    assert m.unmount() == 0
    m.start(["--rebuild-index"])
    assert_accounting(m, 1, expect_keys=["art"])


@pytest.mark.parametrize("threads", [1, 4])
def test_concurrent_writers(mount_factory, threads):
    """Several processes writing, renaming and unlinking at once (including
    between the same artifacts) leave exact accounting behind."""
    m = mount_factory(depth=1, sets=[f"fuse.threads={threads}"])
    script = r"""
import os, sys
root, me, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
mine = os.path.join(root, f"w{me}")
os.mkdir(mine)
os.mkdir(os.path.join(mine, "d"))
for i in range(n):
    p = os.path.join(mine, "d", f"f{i}")
    with open(p, "wb") as f:
        f.write(os.urandom((i * 997) % 20000))
    if i % 3 == 0:
        os.truncate(p, (i * 131) % 30000)
    if i % 5 == 0:
        os.rename(p, os.path.join(mine, f"r{i}"))
    if i % 7 == 0 and i:
        other = os.path.join(root, f"w{(int(me) + 1) % 4}", "d")
        try:
            os.link(os.path.join(mine, "d", f"f{i-1}"), os.path.join(other, f"x{me}-{i}"))
        except FileNotFoundError:
            pass
    if i % 11 == 0 and i:
        try:
            os.unlink(os.path.join(mine, "d", f"f{i-2}"))
        except FileNotFoundError:
            pass
"""
    procs = [subprocess.Popen([sys.executable, "-c", script, str(m.mnt), str(w), "150"],
                              stderr=subprocess.PIPE, text=True) for w in range(4)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    assert_accounting(m, 1, expect_keys=[f"w{i}" for i in range(4)])
    m.remount()
    assert_accounting(m, 1, expect_keys=[f"w{i}" for i in range(4)])


@pytest.mark.parametrize("depth", [1, 3])
def test_changes_after_remount(mount_factory, depth):
    """After a clean remount, further changes are charged from the right
    starting point: new artifacts, new entries inside existing artifacts and
    namespaces, removals."""
    P = (lambda n: n) if depth == 1 else (lambda n: f"ns/x/{n}")
    m = mount_factory(depth=depth)
    (m.mnt / P("old")).mkdir(parents=True)
    (m.mnt / P("old") / "d").mkdir()
    (m.mnt / P("old") / "d" / "f").write_bytes(os.urandom(20_000))
    (m.mnt / P("other")).mkdir()
    assert_accounting(m, depth)
    m.remount()
    steps = [
        ("mkdir new artifact", lambda: (m.mnt / P("new")).mkdir()),
        ("mkdir in artifact root", lambda: (m.mnt / P("old") / "d2").mkdir()),
        ("create in artifact subdir", lambda: (m.mnt / P("old") / "d" / "g").write_bytes(b"g" * 9000)),
        ("create in empty artifact", lambda: (m.mnt / P("other") / "h").write_bytes(b"h")),
        ("unlink", lambda: os.unlink(m.mnt / P("old") / "d" / "f")),
        ("rmdir artifact", lambda: os.rmdir(m.mnt / P("new"))),
    ]
    for what, step in steps:
        step()
        try:
            assert_accounting(m, depth)
        except AssertionError as e:
            raise AssertionError(f"after remount, step '{what}':\n{e}") from None


def test_large_move_between_artifacts_walks_outside_the_namespace_lock(mount_factory):
    """A directory of 20,000 entries moved between artifacts is walked before
    the rename takes the namespace lock; names changing inside it meanwhile
    make the rename walk again under the lock. Either way the accounting
    ends exact."""
    m = mount_factory(depth=1, start=False, sets=["log.level=debug", "fuse.threads=4"])
    big = m.data / "a" / "big"
    for d in range(20):
        sub = big / f"d{d}"
        sub.mkdir(parents=True)
        for f in range(1000):
            (sub / f"f{f}").write_bytes(b"x" * (f % 7))
    (m.data / "b").mkdir()
    (m.data / "c").mkdir()
    m.store.chmod(0o700)
    m.start()
    assert_accounting(m, 1, expect_keys=["a", "b", "c"])

    os.rename(m.mnt / "a" / "big", m.mnt / "b" / "big")
    assert "rename: walked 20021 entries before taking the namespace lock" in m.stderr_text(), m.stderr_text()[-2000:]
    assert_accounting(m, 1, expect_keys=["a", "b", "c"])

    # Names change inside the subtree while it is walked: the walk before the
    # lock may be void; the accounting may not be wrong.
    script = r"""
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    for top in ("b", "c"):
        try:
            with open(os.path.join(d, top, "big", "d3", f"new{i}"), "wb") as f:
                f.write(b"y" * 5000)
            break
        except FileNotFoundError:
            continue
"""
    writer = subprocess.Popen([sys.executable, "-c", script, str(m.mnt), "400"], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3):
            os.rename(m.mnt / "b" / "big", m.mnt / "c" / "big")
            os.rename(m.mnt / "c" / "big", m.mnt / "b" / "big")
    finally:
        err = writer.communicate(timeout=300)[1]
    assert writer.returncode == 0, err
    log = m.stderr_text()
    print("walks before the lock:", log.count("before taking the namespace lock"),
          "walked again under it:", log.count("walking it again under the namespace lock"))
    assert_accounting(m, 1, expect_keys=["a", "b", "c"])
    m.remount()
    assert_accounting(m, 1, expect_keys=["a", "b", "c"])
