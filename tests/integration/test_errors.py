"""Failures users meet: a store already mounted, bad mountpoints and store
paths, bad configuration, a corrupt index, a daemon killed with SIGKILL."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

import harness
from harness import artifactfs_bin, assert_accounting, check, is_fuse_mounted


def run_expecting_failure(argv, mountpoint, timeout=10.0):
    """Runs a command that must exit by itself, quickly; never leaves a mount
    behind. Returns (returncode, stderr, seconds)."""
    t0 = time.monotonic()
    p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        harness.lazy_unmount(mountpoint)
        raise AssertionError(f"{' '.join(map(str, argv))} did not exit within {timeout}s\n{err}")
    finally:
        if is_fuse_mounted(mountpoint):
            harness.lazy_unmount(mountpoint)
            raise AssertionError(f"{mountpoint} got mounted by {' '.join(map(str, argv))}")
    return p.returncode, out + err, time.monotonic() - t0


def test_second_mount_of_same_store_fails(mount_factory, base):
    m = mount_factory(depth=1)
    (m.mnt / "art").mkdir()
    lock = (m.store / "lock").read_text().split()
    assert lock[0] == str(m.pid) and lock[1] == str(m.mnt), f"STORE/lock holds {lock}"
    other = base / "other-mnt"
    other.mkdir()
    rc, text, secs = run_expecting_failure(
        [artifactfs_bin(), "mount", m.store, other, "-f"], other)
    assert rc != 0
    assert secs < 5, f"second mount took {secs:.1f}s to fail"
    assert str(m.pid) in text, f"message does not name the pid {m.pid}: {text!r}"
    assert str(m.mnt) in text, f"message does not name the mountpoint {m.mnt}: {text!r}"
    # the first mount is unharmed
    assert m.running and is_fuse_mounted(m.mnt)
    assert os.listdir(m.mnt) == ["art"]
    assert (m.store / "lock").read_text().split()[0] == str(m.pid)


def test_artifactfs_unmount(mount_factory):
    m = mount_factory(depth=1)
    (m.mnt / "art").mkdir()
    check([artifactfs_bin(), "unmount", m.mnt], timeout=20)
    m.proc.wait(timeout=10)
    assert m.proc.returncode == 0, m.stderr_text()
    assert not is_fuse_mounted(m.mnt)
    m._reaped(m.proc.returncode)
    m.proc = None
    # the store is free again
    m.start()
    assert os.listdir(m.mnt) == ["art"]


def test_mountpoint_is_a_regular_file(base):
    store = base / "store"
    mp = base / "not-a-dir"
    mp.write_text("x")
    rc, text, _ = run_expecting_failure([artifactfs_bin(), "mount", store, mp, "-f"], mp)
    assert rc != 0
    assert str(mp) in text, f"message does not name the mountpoint: {text!r}"
    assert re.search(r"director", text, re.I), f"message does not say it is not a directory: {text!r}"
    assert "terminate called" not in text and "Segmentation" not in text
    assert mp.read_text() == "x"


def test_missing_mountpoint(base):
    store = base / "store"
    mp = base / "missing"
    rc, text, _ = run_expecting_failure([artifactfs_bin(), "mount", store, mp, "-f"], mp)
    assert rc != 0
    assert str(mp) in text, text
    assert not mp.exists()


def test_store_below_a_regular_file(base):
    f = base / "plainfile"
    f.write_text("x")
    store = f / "store"
    mp = base / "mnt"
    mp.mkdir()
    rc, text, _ = run_expecting_failure([artifactfs_bin(), "mount", store, mp, "-f"], mp)
    assert rc != 0
    assert str(f) in text, f"message does not name the store path: {text!r}"
    assert "terminate called" not in text
    assert f.read_text() == "x"


BAD_CONFIG = """\
layout:
  depth: 0
index:
  flush-interval: banana
fuse:
  threads: 2
"""


def test_bad_config_file(base):
    cfg = base / "bad.yaml"
    cfg.write_text(BAD_CONFIG)
    store, mp = base / "store", base / "mnt"
    mp.mkdir()
    rc, text, _ = run_expecting_failure(
        [artifactfs_bin(), "mount", store, mp, "-f", "-c", cfg], mp)
    assert rc == 2, f"exit {rc}: {text}"
    assert re.search(rf"{re.escape(str(cfg))}:2: layout\.depth: ", text), text
    assert re.search(rf"{re.escape(str(cfg))}:4: index\.flush-interval: ", text), text
    assert not is_fuse_mounted(mp)
    # `artifactfs config` reports the same problems
    r = harness.run([artifactfs_bin(), "config", "-c", cfg])
    assert r.returncode == 2
    assert re.search(rf"{re.escape(str(cfg))}:2: layout\.depth: ", r.stderr + r.stdout)
    assert re.search(rf"{re.escape(str(cfg))}:4: index\.flush-interval: ", r.stderr + r.stdout)


def test_config_command(base):
    cfg = base / "good.yaml"
    cfg.write_text("layout:\n  depth: 3\n  keep: [stats, '*.lock']\nfuse:\n  threads: 2\n")
    out = check([artifactfs_bin(), "config", "-c", cfg, "--set", "index.flush-interval=250ms"])
    assert re.search(r"depth:\s*3", out), out
    assert re.search(r"threads:\s*2", out), out
    assert "stats" in out and "*.lock" in out
    assert re.search(r"flush-interval:\s*(250\s*ms|0\.25\s*s)", out), out
    # the printed configuration is accepted as a configuration file
    again = base / "again.yaml"
    again.write_text(out)
    assert check([artifactfs_bin(), "config", "-c", again]) == out
    r = harness.run([artifactfs_bin(), "config", "--set", "layout.depth=zero"])
    assert r.returncode == 2 and "layout.depth" in r.stderr + r.stdout


def test_corrupt_index(mount_factory, base):
    m = mount_factory(depth=1)
    src = harness.make_realistic_tree(base / "src")
    check(["cp", "-a", src, m.mnt / "art"])
    (m.mnt / "second").write_bytes(os.urandom(40_000))
    snap = harness.snapshot(m.mnt, mtimes=True)
    assert m.unmount() == 0
    mdb = m.store / "index" / "data.mdb"
    assert mdb.exists(), f"no {mdb}: {os.listdir(m.store / 'index')}"
    with open(mdb, "r+b") as f:
        f.write(os.urandom(64 * 1024))
    rc, text, _ = run_expecting_failure(m.argv(), m.mnt)
    assert rc != 0
    assert "--rebuild-index" in text, f"refusal does not mention --rebuild-index: {text!r}"
    assert harness.snapshot(m.data, mtimes=True) == snap, "refused mount changed the data tree"
    m.start(["--rebuild-index"])
    assert harness.snapshot(m.mnt, mtimes=True) == snap, "data lost or changed by --rebuild-index"
    assert_accounting(m, 1, expect_keys=["art", "second"])
    # the rebuilt index is a good index
    m.remount()
    assert_accounting(m, 1, expect_keys=["art", "second"])


def test_kill9_then_mount_again(mount_factory, base):
    m = mount_factory(depth=1, sets=["index.flush-interval=10s"])  # nothing flushed in time
    src = harness.make_realistic_tree(base / "src")
    check(["cp", "-a", src, m.mnt / "art"])
    (m.mnt / "art2").mkdir()
    for i in range(10):
        (m.mnt / "art2" / f"f{i}").write_bytes(os.urandom(i * 5000))
    os.rename(m.mnt / "art" / "share", m.mnt / "art2" / "share")
    os.link(m.mnt / "art" / "bin" / "tool", m.mnt / "art2" / "tool")
    (m.mnt / "gone").mkdir()
    (m.mnt / "gone" / "x").write_bytes(b"x" * 10000)
    check(["rm", "-r", m.mnt / "gone"])
    snap = harness.snapshot(m.data, mtimes=True)
    old_pid = m.pid
    m.kill9()
    # (listdir and statvfs always ask the daemon; stat of the root may be
    # answered from the kernel's attribute cache)
    for probe in (os.listdir, os.statvfs):
        with pytest.raises(OSError) as ei:
            probe(m.mnt)
        assert ei.value.errno == errno.ENOTCONN
    assert len(harness.fuse_mounts_at(m.mnt)) == 1, "the dead mount should still be there"
    assert (m.store / "lock").read_text().split()[0] == str(old_pid)
    # mount again over the dead mount: the daemon clears it and reconciles
    m.start()
    assert len(harness.fuse_mounts_at(m.mnt)) == 1, \
        f"expected exactly one mount at {m.mnt}, found {harness.fuse_mounts_at(m.mnt)}"
    assert harness.snapshot(m.mnt, mtimes=True) == snap
    assert_accounting(m, 1, expect_keys=["art", "art2"])
    assert re.search(r"reconcil|rebuil|scan|walk", m.stderr_text(), re.I), \
        f"no reconciliation progress on stderr:\n{m.stderr_text()}"
    assert (m.store / "lock").read_text().split()[0] == str(m.pid)
    # and everything keeps working
    (m.mnt / "art3").mkdir()
    (m.mnt / "art3" / "f").write_bytes(b"after")
    assert_accounting(m, 1, expect_keys=["art", "art2", "art3"])
    m.remount()
    assert_accounting(m, 1, expect_keys=["art", "art2", "art3"])


def test_kill9_with_cached_root_attributes(mount_factory):
    """The kernel still holds the root's attributes when the daemon dies
    (stat of the dead mount's root then succeeds from the cache); mounting
    again must still clear the dead mount instead of stacking on it."""
    m = mount_factory(depth=1)
    (m.mnt / "art").mkdir()
    (m.mnt / "art" / "f").write_bytes(b"f")
    os.stat(m.mnt)
    m.kill9()
    with pytest.raises(OSError) as ei:
        os.listdir(m.mnt)
    assert ei.value.errno == errno.ENOTCONN
    m.start()
    assert len(harness.fuse_mounts_at(m.mnt)) == 1, \
        f"new mount stacked on the dead one: {harness.fuse_mounts_at(m.mnt)}\n{m.stderr_text()}"
    assert os.listdir(m.mnt) == ["art"]
    assert m.unmount() == 0
    assert not harness.fuse_mounts_at(m.mnt), "a dead mount is left behind after unmounting"
