"""Running artifactfs as a service: sd_notify over a NOTIFY_SOCKET the test
listens on (READY=1 once the mount is live, RELOADING=1 and READY=1 around a
SIGHUP, STOPPING=1 and a clean unmount on SIGTERM), `cmake --install` into a
staging root, `systemd-analyze verify` and `security` of the installed unit,
and a mount from an fstab-format line through the installed mount helper.

systemd itself does not run as PID 1 where these tests run, so the unit is
checked with systemd-analyze and the daemon's side of Type=notify is checked
against a socket the test holds, as systemd would."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import harness
from harness import artifactfs_bin, run

COMMANDS = ["mount", "unmount", "config", "status", "ls", "du", "log", "pin", "unpin", "evict", "cleanup", "fsck"]


def build_dir() -> Path:
    return Path(artifactfs_bin()).resolve().parent.parent


class NotifyListener:
    """A datagram socket where the daemon sends its sd_notify messages."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, field: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages:
                if field in m.split("\n"):
                    self.messages.remove(m)
                    return m
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                break
        raise AssertionError(f"no {field} from the daemon within {timeout}s; got {self.messages}")

    def close(self):
        self.sock.close()


def test_sd_notify_ready_reload_and_stop(base):
    store, mnt = base / "store", base / "mnt"
    mnt.mkdir()
    config = base / "cache.yaml"
    config.write_text(f"mount:\n  store: {store}\n  point: {mnt}\nquota:\n  max-size: 10G\n")
    listener = NotifyListener(base / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(listener.path))
    proc = subprocess.Popen([artifactfs_bin(), "mount", "-f", "-c", config], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        ready = listener.wait_for("READY=1")
        # READY=1 only once the mount answers.
        assert harness.is_fuse_mounted(mnt), "READY=1 before the mount was live"
        assert re.search(r"STATUS=serving 0 artifacts, .*B used of 10GB", ready), ready
        (mnt / "a").mkdir()
        config.write_text(f"mount:\n  store: {store}\n  point: {mnt}\nquota:\n  max-size: 20G\n")
        proc.send_signal(signal.SIGHUP)
        reloading = listener.wait_for("RELOADING=1")
        assert re.search(r"MONOTONIC_USEC=\d+", reloading), reloading
        again = listener.wait_for("READY=1")
        assert "of 20GB" in again and "serving 1 artifacts" in again, again
        proc.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1")
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()
        assert not harness.is_fuse_mounted(mnt), "SIGTERM left the mount behind"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if harness.is_fuse_mounted(mnt):
            harness.lazy_unmount(mnt)
        listener.close()


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """`cmake --install` of the build into a staging root (DESTDIR)."""
    stage = tmp_path_factory.mktemp("stage")
    r = run(["cmake", "--install", build_dir()], env=dict(os.environ, DESTDIR=str(stage)), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    prefix = re.search(r"CMAKE_INSTALL_PREFIX:PATH=(.*)", (build_dir() / "CMakeCache.txt").read_text()).group(1)
    return stage, Path(prefix)


def test_install_tree(staged):
    stage, prefix = staged
    root = stage / prefix.relative_to("/")
    binary = root / "bin" / "artifactfs"
    assert os.access(binary, os.X_OK)
    assert run([binary, "--version"]).stdout.startswith("artifactfs ")
    unit = (root / "lib/systemd/system/artifactfs@.service").read_text()
    assert f"ExecStart={prefix}/bin/artifactfs mount -f -c /etc/artifactfs/%i.yaml" in unit
    helper = stage / "usr/sbin/mount.fuse.artifactfs"
    assert os.access(helper, os.X_OK) and f"{prefix}/bin/artifactfs" in helper.read_text()
    example = root / "share/doc/artifactfs/examples/cache.yaml.example"
    assert run([binary, "config", "-c", example]).returncode == 0
    for page in ["artifactfs.1"] + [f"artifactfs-{c}.1" for c in COMMANDS]:
        text = (root / "share/man/man1" / page).read_text()
        assert text.startswith(".TH ARTIFACTFS"), page
    # The man page says what --help says.
    assert "least recently used first" in (root / "share/man/man1/artifactfs-ls.1").read_text()


def installed_unit_for_checks(staged, tmp: Path) -> Path:
    """The installed unit as instance artifactfs@cache, with its binary's
    path inside the staging root (what DESTDIR moved it to)."""
    stage, prefix = staged
    root = stage / prefix.relative_to("/")
    text = (root / "lib/systemd/system/artifactfs@.service").read_text()
    unit = tmp / "artifactfs@cache.service"
    unit.write_text(text.replace(f"{prefix}/bin/artifactfs", str(root / "bin" / "artifactfs")))
    return unit


def test_systemd_analyze_verify_and_security(staged, base):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    stage, prefix = staged
    unit = installed_unit_for_checks(staged, base)
    man = stage / prefix.relative_to("/") / "share/man"
    r = run(["systemd-analyze", "verify", unit], env=dict(os.environ, MANPATH=str(man)))
    assert r.returncode == 0 and r.stderr.strip() == "", r.stdout + r.stderr
    r = run(["systemd-analyze", "security", "--offline=yes", "--no-pager", unit])
    score = re.search(r"Overall exposure level for artifactfs@cache.service: ([0-9.]+)", r.stdout)
    assert score, r.stdout + r.stderr
    # README, "Running as a service", records this score.
    assert float(score.group(1)) <= 4.5, r.stdout


def test_mount_from_an_fstab_line(staged, base):
    if shutil.which("mount") is None:
        pytest.skip("mount(8) not installed")
    stage, _ = staged
    helper_path = Path("/usr/sbin/mount.fuse.artifactfs")
    installed_here = False
    if not helper_path.exists():
        shutil.copy(stage / "usr/sbin/mount.fuse.artifactfs", helper_path)
        installed_here = True
    store, mnt = base / "store", base / "mnt"
    mnt.mkdir()
    config = base / "cache.yaml"
    config.write_text("quota:\n  max-size: 1G\n")
    fstab = base / "fstab"
    fstab.write_text(f"# a test fstab\n{store}  {mnt}  fuse.artifactfs  "
                     f"config={config},set.layout.depth=2,noauto,nofail  0  0\n")
    try:
        r = run(["mount", "-T", fstab, mnt], env=dict(os.environ, ARTIFACTFS_BIN=artifactfs_bin()))
        assert r.returncode == 0, r.stdout + r.stderr
        assert harness.is_fuse_mounted(mnt)
        (mnt / "ns").mkdir()
        (mnt / "ns" / "key").mkdir()
        assert harness.xattr_int(mnt / "ns" / "key", "files") == 0  # depth 2: an artifact
        assert harness.xattr_int(mnt, "quota.limit_bytes") <= 1 << 30
        assert (store / "data" / "ns" / "key").is_dir()
        r = run([artifactfs_bin(), "unmount", mnt])
        assert r.returncode == 0, r.stderr
        harness.wait_until(lambda: not harness.is_fuse_mounted(mnt), 10, what="unmount")
    finally:
        if harness.is_fuse_mounted(mnt):
            harness.lazy_unmount(mnt)
        if installed_here:
            helper_path.unlink()
