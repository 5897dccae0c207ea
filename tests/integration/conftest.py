"""Fixtures of the artifactfs integration tests.

Every test gets its own base directory below one session root in /tmp
(world-traversable, so an unprivileged reader can reach the mount). Mounts
made through the fixtures are always unmounted and their daemons stopped,
whether the test passed or not; a session finalizer lazily unmounts anything
still left below the session root.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from ganesha import rpcbind  # noqa: E402,F401 (a fixture, for the NFS tests)


@pytest.fixture(scope="session", autouse=True)
def kernel_fuse_io_uring():
    """The kernel's FUSE over io_uring on for the run (restored after), so
    every mount serves its requests through the rings (fuse.io-uring: auto;
    fs/uring_transport.hpp); test_io_uring.py covers /dev/fuse beside it.
    ARTIFACTFS_TEST_KERNEL_URING=keep leaves the setting as it is."""
    if os.environ.get("ARTIFACTFS_TEST_KERNEL_URING") == "keep":
        yield
        return
    with harness.kernel_fuse_uring("Y"):
        yield


@pytest.fixture(scope="session")
def session_root():
    root = Path(tempfile.mkdtemp(prefix="artifactfs-it-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        leftovers = harness.cleanup_everything_under(root)
        if leftovers:
            print("artifactfs integration tests left behind (cleaned up now): "
                  + "; ".join(leftovers), file=sys.stderr)
        if not harness.fuse_mounts_under(root):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def base(session_root, request):
    d = harness.new_base(session_root, request.node.name)
    try:
        yield d
    finally:
        harness.remove_base(d)


@pytest.fixture
def mount_factory(base):
    """make(name="m", **Mount kwargs) -> a started Mount below this test's base."""
    made: list[harness.Mount] = []

    def make(name: str = "m", start: bool = True, **kw) -> harness.Mount:
        d = base / name
        d.mkdir(exist_ok=True)
        m = harness.Mount(d, **kw)
        made.append(m)
        if start:
            m.start()
        return m

    try:
        yield make
    finally:
        errors = []
        for m in reversed(made):
            try:
                m.close()
            except Exception as e:  # keep cleaning up the others
                errors.append(f"{m.mnt}: {e!r}")
        for m in made:
            if harness.is_fuse_mounted(m.mnt):
                errors.append(f"{m.mnt} still mounted after cleanup")
        assert not errors, "cleanup problems: " + "; ".join(errors)


@pytest.fixture
def mnt(mount_factory) -> harness.Mount:
    """A default mount (layout.depth 1) with a quick flush interval."""
    return mount_factory("m", sets=["index.flush-interval=100ms"])


@pytest.fixture
def plain(base) -> Path:
    """A plain directory on the same file system as the store: the twin."""
    d = base / "plain"
    d.mkdir()
    return d


def pytest_report_header(config):
    b = harness.artifactfs_bin()
    return f"artifactfs binary: {b} ({'present' if os.access(b, os.X_OK) else 'MISSING'})"
