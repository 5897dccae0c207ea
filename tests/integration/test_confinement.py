"""The daemon confines itself once mounted (mount.confine; README "Confinement").

Run as root, after its FUSE mount is made in the host's namespace, the daemon
moves into a private mount namespace: everything read-only but the store,
/tmp, /var/tmp, /home, /root and /run/user empty. The host keeps seeing the
mount; a SIGTERM stop unmounts it (through the unmounter left in the host's
namespace), an unmount from outside ends the daemon, and a kill -9 leaves a
dead mount that the next mount clears. The store here lies outside /tmp so
that /tmp is hidden too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

import harness


@pytest.fixture
def outside_tmp():
    """A directory for the store outside every directory the daemon hides."""
    d = Path(tempfile.mkdtemp(prefix="artifactfs-confine-", dir="/var/lib"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def in_daemon(m: harness.Mount, script: str) -> subprocess.CompletedProcess:
    """Runs a shell script in the daemon's mount namespace."""
    return subprocess.run(["nsenter", "-t", str(m.pid), "-m", "sh", "-c", script], capture_output=True, text=True,
                          timeout=30)


def unmounter_of(m: harness.Mount) -> int:
    r = subprocess.run(["pgrep", "-P", str(m.pid), "-x", "afs-unmounter"], capture_output=True, text=True)
    pids = [int(p) for p in r.stdout.split()]
    assert len(pids) == 1, f"expected one afs-unmounter child of {m.pid}, found {pids}"
    return pids[0]


def exited(pid: int) -> bool:
    """Gone, or a zombie (its parent was killed and init has not reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_confined_daemon_sees_a_read_only_system_and_no_tmp(mount_factory, outside_tmp, base):
    cfg = outside_tmp / "cache.yaml"
    cfg.write_text("quota:\n  max-size: 1G\n")
    m = mount_factory("m", store=outside_tmp / "store", config=cfg)
    log = m.stderr_text()
    assert "confined: a private mount namespace, read-only but for" in log, log
    assert "hidden: /tmp, /var/tmp" in log, log
    assert os.readlink(f"/proc/{m.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")

    # The cache works as ever, seen from the host.
    (m.mnt / "k1").mkdir()
    (m.mnt / "k1" / "f").write_bytes(b"payload")
    assert (m.mnt / "k1" / "f").read_bytes() == b"payload"
    assert (m.data / "k1" / "f").read_bytes() == b"payload"

    marker = base / "host-only"
    marker.write_text("x")
    r = in_daemon(m, f"""
        ls -A /tmp | wc -l
        test -e {marker} && echo marker-visible
        touch /etc/artifactfs-confine-probe 2>&1 && echo etc-writable
        touch /var/lib/artifactfs-confine-probe 2>&1 && echo var-lib-writable
        touch {m.store}/probe && echo store-writable && rm {m.store}/probe
        cat {cfg}
    """)
    lines = r.stdout.splitlines()
    assert lines[0] == "0", r.stdout  # /tmp is an empty tmpfs in there
    assert "marker-visible" not in lines
    assert "etc-writable" not in lines and "Read-only file system" in r.stdout, r.stdout
    assert "var-lib-writable" not in lines, r.stdout
    assert "store-writable" in lines, r.stdout + r.stderr
    assert "max-size: 1G" in r.stdout  # the configuration stays readable...

    cfg.write_text("quota:\n  max-size: 2G\n")  # ...and a reload reads it
    os.kill(m.pid, signal.SIGHUP)
    harness.wait_until(lambda: "configuration reloaded: quota max-size 2G" in m.stderr_text(), 10,
                       what="the reload")

    # A SIGTERM stop unmounts the host's mount, through the unmounter.
    unmounter = unmounter_of(m)
    os.kill(m.pid, signal.SIGTERM)
    m.proc.wait(timeout=60)
    assert m.proc.returncode == 0, m.stderr_text()
    assert not harness.is_fuse_mounted(m.mnt), "the host's mount outlived a SIGTERM stop"
    assert exited(unmounter)
    assert (m.data / "k1" / "f").read_bytes() == b"payload"


def test_unmount_from_outside_and_kill9_with_confinement(mount_factory, outside_tmp):
    m = mount_factory("m", store=outside_tmp / "store")
    (m.mnt / "k1").mkdir()
    (m.mnt / "k1" / "f").write_bytes(b"one")
    # fusermount3 -u from the host ends the confined daemon (its namespace
    # holds no copy of the mount that would keep the connection alive).
    rc = m.unmount()
    assert rc == 0, m.stderr_text()

    m.start()
    assert (m.mnt / "k1" / "f").read_bytes() == b"one"
    unmounter = unmounter_of(m)
    m.kill9()
    # The unmounter leaves with the daemon, without unmounting: the mount is
    # dead, as after any crash, and the next mount clears it.
    harness.wait_until(lambda: exited(unmounter), 10, what="the unmounter to exit")
    assert harness.is_fuse_mounted(m.mnt)
    m.start()
    assert "is a dead mount" in m.stderr_text()
    assert (m.mnt / "k1" / "f").read_bytes() == b"one"


def test_confinement_can_be_turned_off(mount_factory, outside_tmp):
    m = mount_factory("m", store=outside_tmp / "store", sets=["mount.confine=false"])
    assert "confined" not in m.stderr_text()
    assert os.readlink(f"/proc/{m.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
    r = subprocess.run(["pgrep", "-P", str(m.pid), "-x", "afs-unmounter"], capture_output=True, text=True)
    assert r.stdout.strip() == ""
