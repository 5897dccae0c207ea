"""FUSE over io_uring (fs/uring_transport.hpp).

Requests reach the daemon through per-CPU rings when the kernel's fuse
module has enable_uring on and `fuse.io-uring` is auto (the default) or on,
and through /dev/fuse otherwise. The same workload must give the same tree
on both transports; the rings must really carry the requests (the ring
thread of the caller's CPU serves them); `on` without kernel support must
refuse to mount with the fix.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from harness import ENABLE_URING

pytestmark = pytest.mark.skipif(not ENABLE_URING.exists(), reason="the kernel has no FUSE over io_uring (Linux 6.14+)")


@contextlib.contextmanager
def kernel_uring(value: str):
    """The fuse module's enable_uring set to `value` for a block (root only)."""
    with harness.kernel_fuse_uring(value) as done:
        if not done:
            pytest.skip("needs root to set " + str(ENABLE_URING))
        yield


def thread_switches(pid: int) -> dict[str, int]:
    """Context switches per thread name (summed over threads of one name)."""
    out: dict[str, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except FileNotFoundError:
            continue
        n = sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line)
        out[name] = out.get(name, 0) + n
    return out


def opens_on_cpu0(path: Path, count: int) -> None:
    """`count` open+read+close of `path` from a process pinned to CPU 0."""
    code = ("import os, sys\n"
            "os.sched_setaffinity(0, {0})\n"
            f"for _ in range({count}):\n"
            f"    fd = os.open({str(path)!r}, os.O_RDONLY); os.read(fd, 4096); os.close(fd)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def workload(root: Path, source: Path) -> None:
    """Publishing, reading, renaming and deleting: writes on the ring's
    workers, opens and stats on the ring threads."""
    subprocess.run(["cp", "-a", str(source), str(root / "tree")], check=True, timeout=120)
    (root / "big").mkdir()
    data = random.Random(7).randbytes(3 << 20)  # many WRITEs and READs; the same on both sides
    (root / "big" / "blob").write_bytes(data)
    assert (root / "big" / "blob").read_bytes() == data
    os.rename(root / "big" / "blob", root / "big" / "blob2")
    os.truncate(root / "big" / "blob2", 1000)
    assert (root / "big" / "blob2").read_bytes() == data[:1000]
    os.setxattr(root / "big" / "blob2", "user.k", b"v")
    assert os.getxattr(root / "big" / "blob2", "user.k") == b"v"
    os.unlink(root / "tree" / "secret")
    subprocess.run(["touch", "-a", "-d", "2001-01-01", str(root / "tree" / "readonly")], check=True)


@pytest.mark.parametrize("mode", ["on", "off"])
def test_the_same_workload_gives_the_same_tree_on_both_transports(mount_factory, base, plain, mode):
    source = harness.make_realistic_tree(base / "source")
    with kernel_uring("Y"):
        m = mount_factory("m", sets=[f"fuse.io-uring={mode}", "index.flush-interval=100ms"])
        workload(m.mnt, source)
        workload(plain, source)
        harness.assert_same_tree(m.mnt, plain)
        names = thread_switches(m.pid)
        rings = sorted(n for n in names if n.startswith("afs-ring-") and n != "afs-ring-work")
        if mode == "on":
            assert rings == [f"afs-ring-{i}" for i in range(len(rings))] and rings, names
            assert "io_uring: in use" in m.stderr_text()
        else:
            assert not rings, f"fuse.io-uring=off, yet ring threads run: {names}"
        m.stop()
        m.start()  # the index and the tree survive a restart on either transport
        harness.assert_same_tree(m.mnt, plain)
        harness.assert_accounting(m)


def test_the_ring_of_the_callers_cpu_serves_its_opens(mount_factory):
    with kernel_uring("Y"):
        m = mount_factory("m")
        f = m.mnt / "art" / "file"
        f.parent.mkdir()
        f.write_bytes(b"x" * 4096)
        opens_on_cpu0(f, 50)  # warm: lookups done, pages cached
        before = thread_switches(m.pid)
        opens_on_cpu0(f, 2000)
        after = thread_switches(m.pid)
        delta = {n: after.get(n, 0) - before.get(n, 0) for n in after}
        ring0 = delta.get("afs-ring-0", 0)
        others = sum(v for n, v in delta.items() if n != "afs-ring-0")
        # Each open and release wakes CPU 0's ring thread (unless it was
        # still busy with the previous one); nothing else should stir.
        assert ring0 >= 1000, f"CPU 0's ring thread barely ran for 2000 opens: {delta}"
        assert others < ring0 / 4, f"other threads served the opens of CPU 0: {delta}"


def test_on_without_kernel_support_refuses_to_mount_and_says_how_to_enable(mount_factory):
    with kernel_uring("N"):
        m = mount_factory("m", start=False, sets=["fuse.io-uring=on"])
        with pytest.raises(harness.DaemonFailed) as failed:
            m.start()
        text = str(failed.value)
        assert "exited with 1" in text
        assert "fuse.io-uring is on" in text and "echo Y > " + str(ENABLE_URING) in text, text
        assert "fuse.io-uring: auto" in text, text
        assert not harness.is_fuse_mounted(m.mnt)
        # auto: /dev/fuse serves, no rings.
        m.sets = ["fuse.io-uring=auto"]
        m.start()
        (m.mnt / "a").mkdir()
        (m.mnt / "a" / "f").write_bytes(b"hello")
        assert (m.mnt / "a" / "f").read_bytes() == b"hello"
        assert not [n for n in thread_switches(m.pid) if n.startswith("afs-ring")]
