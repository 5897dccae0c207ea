"""Crash recovery proportional to what changed.

A store of 100,000 artifacts is made directly in STORE/data and indexed by a
first mount (a new index: a full walk), then unmounted cleanly. The store is
on a tmpfs of its own: making and deleting 200,000 inodes on the test VM's
disk takes minutes, and recovery does not depend on the backing filesystem. A second mount
changes about ten artifacts and some kept entries through the mount (new
files, deletions, a new artifact, a published one, a removed one, a renamed
one) and is killed with SIGKILL while writers are in the middle of writing
into a few more. The next mount must re-walk only those artifacts (its
stderr says how many, and that the whole tree was not walked) and the index
must equal du again, per artifact and in the totals.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import harness

N = 100_000
KEEP = ["stats", "tmp*"]

# Appends to one file until the daemon dies under it.
APPENDER = r"""
import os, sys, time
chunk = os.urandom(65536)
try:
    with open(sys.argv[1], "ab", buffering=0) as f:
        while True:
            f.write(chunk)
            time.sleep(0.002)
except OSError:
    pass
"""

# Creates (and now and then deletes) files in one artifact until the daemon dies.
CREATOR = r"""
import os, sys
d = sys.argv[1]
i = 0
try:
    while True:
        with open(os.path.join(d, f"n{i}"), "wb") as f:
            f.write(os.urandom(5000 + i % 9000))
        if i % 3 == 2:
            os.unlink(os.path.join(d, f"n{i - 1}"))
        i += 1
except OSError:
    pass
"""


def key(i: int) -> str:
    return f"k{i:06d}"


def build_store(m: harness.Mount) -> None:
    """N artifacts of one small file each, made directly in STORE/data (as
    the daemon would find a store it never indexed), and some kept entries."""
    m.data.mkdir(mode=0o700)
    data = str(m.data)
    payload = b"x" * 100
    for i in range(N):
        d = f"{data}/{key(i)}"
        os.mkdir(d)
        fd = os.open(d + "/f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
    (m.data / "stats").write_text("0 0 0\n")
    (m.data / "tmp").mkdir()
    (m.data / "tmp" / "lock").write_text("1\n")


def du_per_artifact(data: Path, apparent: bool) -> dict[str, int]:
    """One du run over the whole tree, one line per top-level entry. du counts
    a hard-linked inode once per run: right here, no artifact shares one."""
    argv = ["du", "-b" if apparent else "--block-size=1", "--max-depth=1", str(data)]
    out = harness.check(argv, timeout=300)
    sizes = {}
    for line in out.splitlines():
        size, path = line.split("\t", 1)
        if path != str(data):
            sizes[os.path.basename(path)] = int(size)
    return sizes


def files_per_artifact(data: Path) -> dict[str, int]:
    out = harness.check(["find", str(data), "-mindepth", "1", "-not", "-type", "d", "-printf", "%P %i\n"],
                        timeout=300)
    inodes: dict[str, set] = {}
    for line in out.splitlines():
        rel, ino = line.rsplit(" ", 1)
        inodes.setdefault(rel.split("/", 1)[0], set()).add(ino)
    return {k: len(v) for k, v in inodes.items()}


def assert_every_artifact(m: harness.Mount, keys: list[str]) -> None:
    """The xattrs of every artifact equal du/find of its tree."""
    disk = du_per_artifact(m.data, apparent=False)
    apparent = du_per_artifact(m.data, apparent=True)
    files = files_per_artifact(m.data)

    def facts(k):
        p = str(m.mnt / k)
        return tuple(int(os.getxattr(p, harness.XATTR_PREFIX + n)) for n in ("disk_bytes", "apparent_bytes", "files"))

    with ThreadPoolExecutor(8) as pool:  # the daemon answers in parallel
        got_all = list(pool.map(facts, keys, chunksize=512))
    problems = []
    for k, got in zip(keys, got_all):
        want = (disk[k], apparent[k], files.get(k, 0))
        if got != want:
            problems.append(f"{k}: xattrs {got} != du/find {want}")
    assert not problems, f"{len(problems)} artifacts differ from du:\n  " + "\n  ".join(problems[:20])


def test_kill9_rewalks_only_what_changed(mount_factory):
    m = mount_factory("m", start=False, depth=1, keep=KEEP,
                      sets=["index.flush-interval=2s", "quota.min-free=0"])
    m.store.mkdir(mode=0o700)
    harness.check(["mount", "-t", "tmpfs", "-o", "mode=0700,size=4g,nr_inodes=1m", "artifactfs-test", m.store])
    try:
        run(m)
    finally:
        m.close()
        harness.run(["umount", "-l", m.store])


def run(m: harness.Mount) -> None:
    t = time.monotonic()
    build_store(m)
    print(f"\nmade {N} artifacts in STORE/data in {time.monotonic() - t:.1f} s")

    t = time.monotonic()
    m.start(timeout=600)  # a new index: walks the whole tree once
    print(f"first mount (full walk of a new index) in {time.monotonic() - t:.1f} s")
    assert "new index" in m.stderr_text()
    assert m.totals()["total.artifacts"] == N
    assert m.unmount() == 0

    m.start()
    assert "reconcil" not in m.stderr_text() and "recovered" not in m.stderr_text()  # clean: no walk at all
    mnt = m.mnt
    # Changes that are over and flushed (their marks cleared) before the kill.
    (mnt / key(1) / "new").write_bytes(os.urandom(200_000))
    (mnt / key(2) / "f").unlink()
    (mnt / "tmp" / "x").write_bytes(os.urandom(9000))
    time.sleep(2.5)  # one flush interval and more

    # Writes in progress at the kill.
    writers = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(mnt / key(5) / "f")]),
        subprocess.Popen([sys.executable, "-c", APPENDER, str(mnt / key(6) / "big")]),
        subprocess.Popen([sys.executable, "-c", CREATOR, str(mnt / key(7))]),
    ]
    try:
        harness.wait_until(lambda: (m.data / key(6) / "big").exists()
                           and (m.data / key(6) / "big").stat().st_size > 2 << 20
                           and (m.data / key(7) / "n5").exists(),
                           timeout=60, what="writers in the middle of writing")
        # Changes that are over just before the kill, most likely not yet
        # flushed: artifacts made, published, removed and renamed, kept
        # entries changed.
        (mnt / "new-artifact").mkdir()
        (mnt / "new-artifact" / "a").write_bytes(os.urandom(70_000))
        (mnt / "new-artifact" / "b").write_bytes(b"")
        (mnt / ".tmp-publish").mkdir()
        (mnt / ".tmp-publish" / "out").write_bytes(os.urandom(30_000))
        os.rename(mnt / ".tmp-publish", mnt / "published")
        shutil.rmtree(mnt / key(3))
        os.rename(mnt / key(4), mnt / (key(4) + "-moved"))
        with open(mnt / "stats", "a") as f:
            f.write("1 2 3\n" * 2000)
        (mnt / "tmp2").mkdir()
        (mnt / "tmp2" / "y").write_bytes(os.urandom(3000))
        (mnt / key(9) / "late").write_bytes(os.urandom(50_000))
        m.kill9()
    finally:
        for w in writers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()

    t = time.monotonic()
    m.start()  # over the dead mount
    remount = time.monotonic() - t
    err = m.stderr_text()
    print(f"remount after kill -9 in {remount:.2f} s")
    line = re.search(r"recovered the index from what changed.*", err)
    assert line, f"no partial recovery; stderr:\n{err}"
    print(line.group(0))
    assert "reconciling" not in err, f"the whole tree was walked:\n{err}"
    walked = int(re.search(r"re-walked (\d+) artifacts", line.group(0)).group(1))
    # k5 k6 k7 k9 new-artifact published k4-moved (unless a flush came before
    # the kill): a handful, not 100,000.
    assert 3 <= walked <= 20, line.group(0)

    changed = [key(i) for i in (1, 2, 5, 6, 7, 9)] + ["new-artifact", "published", key(4) + "-moved", key(8), key(10)]
    keys = harness.artifact_keys(m.data, 1, KEEP)
    assert len(keys) == N - 1 + 2
    assert key(3) not in keys
    t = time.monotonic()
    harness.assert_accounting(m, depth=1, keep=KEEP, check_keys=changed)
    assert_every_artifact(m, keys)
    print(f"accounting of {len(keys)} artifacts checked against du in {time.monotonic() - t:.1f} s")

    # The mount keeps working, and a clean unmount and mount need no walk.
    (mnt / key(11) / "after").write_bytes(os.urandom(12345))
    harness.assert_accounting(m, depth=1, keep=KEEP, check_keys=[key(11)])
    m.remount()
    assert "reconcil" not in m.stderr_text() and "recovered" not in m.stderr_text()
    harness.assert_accounting(m, depth=1, keep=KEEP, check_keys=[key(11), "new-artifact"])


def test_kill9_falls_back_to_the_full_walk_when_it_must(mount_factory):
    """--rebuild-index and a layout change walk everything after a crash too;
    so does a crash while an inode linked into two artifacts was changing."""
    m = mount_factory("m", depth=1, sets=["index.flush-interval=100ms"])
    for a in ("a", "b", "c"):
        (m.mnt / a).mkdir()
        (m.mnt / a / "f").write_bytes(os.urandom(20_000))
    os.link(m.mnt / "a" / "f", m.mnt / "b" / "shared")
    time.sleep(0.3)

    # A write to the shared inode through a's name: b's usage changes too.
    f = open(m.mnt / "a" / "f", "ab")
    f.write(os.urandom(100_000))
    f.flush()
    m.kill9()
    try:
        f.close()
    except OSError:
        pass  # the daemon is gone
    m.start()
    err = m.stderr_text()
    assert "reconciling index with data tree (the last shutdown was not clean; inode" in err, err
    harness.assert_accounting(m, depth=1)

    (m.mnt / "c" / "g").write_bytes(os.urandom(5000))
    m.kill9()
    m.start(["--rebuild-index"])
    assert "reconciling index with data tree (--rebuild-index)" in m.stderr_text()
    harness.assert_accounting(m, depth=1)

    (m.mnt / "c" / "h").write_bytes(os.urandom(5000))
    m.kill9()
    m.depth = 2  # a, b, c become namespaces; their entries artifacts
    m.start()
    assert "reconciling index with data tree (the layout changed)" in m.stderr_text()
    harness.assert_accounting(m, depth=2)

    # And the partial recovery works again after those walks.
    (m.mnt / "c" / "k").mkdir()
    (m.mnt / "c" / "k" / "x").write_bytes(os.urandom(5000))
    m.kill9()
    m.start()
    assert "recovered the index from what changed" in m.stderr_text(), m.stderr_text()
    harness.assert_accounting(m, depth=2)
