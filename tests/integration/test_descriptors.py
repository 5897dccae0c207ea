"""Descriptors bounded by configuration, not by the cache.

The daemon keeps at most `fuse.max-open-nodes` backing descriptors of inodes
(never more than half its descriptor limit), whatever the kernel caches.
These tests run the daemon under a hard limit of 4,096 descriptors (prlimit),
make the kernel cache far more inodes than that, and check that nothing
fails with EMFILE, that the daemon's descriptor count stays under the bound,
and that accounting and eviction stay exact.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

import harness

LIMIT = 4096                 # the daemon's RLIMIT_NOFILE
CACHE = LIMIT // 2           # fuse.max-open-nodes is capped to half of it
SLACK = 64                   # libfuse, the index, the store lock, logging
ARTIFACTS = 20_000
FILES_PER_ARTIFACT = 10


class DescriptorWatch:
    """Samples the daemon's open descriptors (/proc/PID/fd) in a thread."""

    def __init__(self, pid: int):
        self.pid = pid
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.most = max(self.most, len(os.listdir(f"/proc/{self.pid}/fd")))
            except FileNotFoundError:
                return
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def write_quota(path: Path, max_size: int) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_text("quota:\n"
                   f"  max-size: {max_size}\n"
                   "  min-free: 0\n"
                   "  low-watermark: 0.9\n"
                   "  min-age: 0s\n"
                   "  check-interval: 1s\n")
    os.replace(tmp, path)


def assert_totals_and_sample(m: harness.Mount, keys: list[str], sample: int = 200) -> None:
    """Root totals equal du of the data tree; a random sample of artifacts
    equals du one by one (all of them would take minutes)."""
    totals = harness.root_facts(m.mnt)
    want = {"total.disk_bytes": harness.du_disk(m.data), "total.apparent_bytes": harness.du_apparent(m.data),
            "total.files": harness.count_files(m.data), "total.artifacts": len(keys)}
    assert {k: totals[k] for k in want} == want
    for key in random.Random(7).sample(keys, min(sample, len(keys))):
        facts = harness.artifact_facts(m.mnt / key)
        expected = harness.expected_usage(m.data / key)
        assert {k: facts[k] for k in expected} == expected, key


def test_many_inodes_under_a_low_descriptor_limit(mount_factory, base):
    cfg = base / "quota.yaml"
    write_quota(cfg, 1 << 40)
    m = mount_factory("m", config=cfg, sets=["index.flush-interval=200ms"], start=False)
    m.wrap = ["prlimit", f"--nofile={LIMIT}:{LIMIT}", "--"]
    m.start()
    assert f"keeping at most {CACHE} inode descriptors" in m.stderr_text()

    payload = b"x" * 100
    keys = [f"a{i:05d}" for i in range(ARTIFACTS)]
    with DescriptorWatch(m.pid) as watch:
        # Create everything through the mount; the kernel caches every inode
        # (200,000 files, 20,000 directories), far more than the daemon may
        # keep descriptors for.
        for key in keys:
            d = m.mnt / key
            os.mkdir(d)
            for j in range(FILES_PER_ARTIFACT):
                fd = os.open(d / f"f{j}", os.O_CREAT | os.O_WRONLY, 0o644)
                os.write(fd, payload)
                os.close(fd)
        # find and read every file: lookups, getattr and opens of cached
        # inodes whose descriptors were closed long ago.
        seen = 0
        for dirpath, _dirs, files in os.walk(m.mnt):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as f:
                    assert f.read() == payload
                seen += 1
        assert seen == ARTIFACTS * FILES_PER_ARTIFACT
        assert_totals_and_sample(m, keys)

        # Evict about half by quota: the artifacts least recently read go.
        usage = harness.root_facts(m.mnt)["total.disk_bytes"]
        write_quota(cfg, usage // 2)
        os.kill(m.pid, signal.SIGHUP)
        harness.wait_until(lambda: harness.root_facts(m.mnt)["total.disk_bytes"] <= usage // 2, 120, 0.5,
                           what="usage to drop under half")
        harness.wait_until(lambda: not os.listdir(m.store / "trash"), 120, 0.2, what="the trash to be emptied")
    left = sorted(os.listdir(m.data))
    assert ARTIFACTS // 4 < len(left) < ARTIFACTS // 2 + 1, len(left)
    # The survivors still read back whole, through inodes the kernel cached.
    for key in left[:500]:
        for j in range(FILES_PER_ARTIFACT):
            assert (m.mnt / key / f"f{j}").read_bytes() == payload
    assert_totals_and_sample(m, left)

    log = m.stderr_text()
    assert "Too many open files" not in log and "out of file descriptors" not in log, log[-2000:]
    assert watch.most <= CACHE + SLACK, f"the daemon held {watch.most} descriptors (cache {CACHE})"


@pytest.mark.parametrize("reopen", ["by-handle", "through-parents"])
def test_hard_links_renames_and_eviction_without_descriptors(mount_factory, base, reopen):
    """A cache of 64 descriptors: hard links across artifacts, renames of
    directories with open files, and eviction of artifacts whose inodes have
    no descriptor keep content and accounting exact."""
    cfg = base / "quota.yaml"
    write_quota(cfg, 1 << 40)
    m = mount_factory("m", config=cfg, sets=["index.flush-interval=100ms", "fuse.max-open-nodes=64"], start=False)
    if reopen == "through-parents":
        m.wrap = ["setpriv", "--bounding-set=-dac_read_search", "--"]
    m.start()
    assert ("by file handle" in m.stderr_text()) == (reopen == "by-handle")

    for i in range(300):  # far more inodes than descriptors
        d = m.mnt / f"k{i:03d}" / "sub"
        d.mkdir(parents=True)
        (d / "data").write_bytes(f"artifact {i}\n".encode() * 50)
    # Hard links across artifacts, made after the sources' descriptors were
    # closed by the cache.
    for i in range(0, 100, 10):
        os.link(m.mnt / f"k{i:03d}" / "sub" / "data", m.mnt / f"k{i + 1:03d}" / f"link-from-{i}")
    # A directory renamed to another artifact while a file in it is open.
    f = open(m.mnt / "k200" / "sub" / "data", "rb")
    try:
        os.rename(m.mnt / "k200" / "sub", m.mnt / "k201" / "moved")
        assert f.read().startswith(b"artifact 200\n")
        assert (m.mnt / "k201" / "moved" / "data").read_bytes() == b"artifact 200\n" * 50
    finally:
        f.close()
    os.rename(m.mnt / "k202", m.mnt / "k202-renamed")
    assert (m.mnt / "k202-renamed" / "sub" / "data").read_bytes() == b"artifact 202\n" * 50
    keys = sorted(os.listdir(m.data))
    harness.assert_accounting(m, expect_keys=keys)

    # Evict artifacts whose inodes hold no descriptor: read the last ones so
    # that the first ones are the least recently used.
    time.sleep(0.3)
    for key in keys[150:]:
        for p in (m.mnt / key).rglob("*"):
            if p.is_file():
                p.read_bytes()
    time.sleep(0.5)
    usage = harness.root_facts(m.mnt)["total.disk_bytes"]
    write_quota(cfg, usage * 6 // 10)
    os.kill(m.pid, signal.SIGHUP)
    harness.wait_until(lambda: harness.root_facts(m.mnt)["total.disk_bytes"] <= usage * 6 // 10, 60, 0.2,
                       what="eviction")
    harness.wait_until(lambda: not os.listdir(m.store / "trash"), 60, 0.1, what="the trash to be emptied")
    left = sorted(os.listdir(m.data))
    assert "k299" in left and "k000" not in left
    harness.assert_accounting(m, expect_keys=left)
    for i in range(0, 100, 10):  # a link whose other name was evicted keeps its content
        key = f"k{i + 1:03d}"
        if key in left:
            assert (m.mnt / key / f"link-from-{i}").read_bytes() == f"artifact {i}\n".encode() * 50
    # The mount still works after all of it.
    (m.mnt / "after").mkdir()
    (m.mnt / "after" / "x").write_bytes(b"ok")
    assert (m.mnt / "after" / "x").read_bytes() == b"ok"
