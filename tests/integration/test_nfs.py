"""An artifactfs mount exported over NFSv4 by nfs-ganesha (FSAL VFS) and read
with libnfs (`nfs-cat`, `nfs-ls`), everything on loopback.

Ganesha serves clients from the file handles of the FUSE mount
(name_to_handle_at / open_by_handle_at). Once the kernel has forgotten the
FUSE inodes (`echo 3 > /proc/sys/vm/drop_caches`), opening such a handle makes
the kernel ask the daemon to LOOKUP "." in the node id of the handle; a FUSE
file system that cannot resolve forgotten node ids answers ESTALE and the NFS
client gets NFS4ERR_STALE. The reads ganesha makes on behalf of its clients
are opens like any other and must be recorded on the artifact.

Ganesha runs in the foreground with its own configuration, log, pid file and
recovery directory below the test's directory, NFSv4 only (no rpcbind),
bound to 127.0.0.1 on a free port, and is always stopped by the fixture
before the FUSE mount is unmounted.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import harness
from harness import wait_until

PSEUDO = "/cache"
GANESHA_READY_TIMEOUT = 20.0
NFS_TIMEOUT = 30
FSAL_VFS_PATHS = ("/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so",
                  "/usr/lib/aarch64-linux-gnu/ganesha/libfsalvfs.so",
                  "/usr/lib/ganesha/libfsalvfs.so", "/usr/lib64/ganesha/libfsalvfs.so")


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ganesha_config(export_path: Path, port: int, recovery: Path) -> str:
    return f"""\
NFS_CORE_PARAM {{
    Protocols = 4;
    NFS_Port = {port};
    Bind_addr = 127.0.0.1;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}}
NFSv4 {{
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = "{recovery}";
}}
NFS_KRB5 {{
    Active_krb5 = false;
}}
EXPORT {{
    Export_Id = 1;
    Path = "{export_path}";
    Pseudo = "{PSEUDO}";
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 4;
    Transports = TCP;
    SecType = sys;
    # Revalidate attributes with the file system on every request, so that
    # every NFS request after drop_caches goes through the FUSE handles.
    Attr_Expiration_Time = 0;
    FSAL {{
        Name = VFS;
    }}
}}
"""


class Ganesha:
    """ganesha.nfsd -F with its own files below `d`, exporting `export_path`."""

    def __init__(self, d: Path, export_path: Path):
        self.dir = d
        self.dir.mkdir(parents=True, exist_ok=True)
        self.export_path = export_path
        self.port = _free_port()
        self.conf = d / "ganesha.conf"
        self.log = d / "ganesha.log"
        self.pidfile = d / "ganesha.pid"
        self.recovery = d / "recovery"
        self.recovery.mkdir(exist_ok=True)
        self.conf.write_text(_ganesha_config(export_path, self.port, self.recovery))
        self.proc: subprocess.Popen | None = None

    def log_text(self, tail: int = 60) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        out = (self.dir / "ganesha.out").read_text(errors="replace") if (self.dir / "ganesha.out").exists() else ""
        return "\n".join(lines[-tail:]) + ("\nstdout/stderr:\n" + out if out.strip() else "")

    def start(self) -> "Ganesha":
        argv = ["ganesha.nfsd", "-F", "-f", str(self.conf), "-L", str(self.log),
                "-p", str(self.pidfile), "-N", "NIV_EVENT"]
        with open(self.dir / "ganesha.out", "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + GANESHA_READY_TIMEOUT
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"ganesha.nfsd exited with {rc} before serving:\n"
                                     f"{self.log_text()}\nconfig:\n{self.conf.read_text()}")
            if self._serving():
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"ganesha.nfsd not serving on 127.0.0.1:{self.port} within "
                                     f"{GANESHA_READY_TIMEOUT}s:\n{self.log_text()}")
            time.sleep(0.1)
        problems = [ln for ln in self.log.read_text(errors="replace").splitlines()
                    if ":CONFIG :" in ln and (":CRIT :" in ln or ":MAJ :" in ln or "rror" in ln)]
        assert not problems, "ganesha reported configuration problems:\n" + "\n".join(problems)
        return self

    def _serving(self) -> bool:
        if "NFS SERVER INITIALIZED" not in (self.log.read_text(errors="replace")
                                            if self.log.exists() else ""):
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None

    # ---- libnfs clients -------------------------------------------------------
    def url(self, rel: str) -> str:
        rel = rel.strip("/")
        path = f"{PSEUDO}/{rel}" if rel else f"{PSEUDO}/"
        return f"nfs://127.0.0.1{path}?version=4&nfsport={self.port}"

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, timeout=NFS_TIMEOUT)

    def cat(self, rel: str) -> bytes:
        r = self._run(["nfs-cat", self.url(rel)])
        assert r.returncode == 0, (f"nfs-cat {self.url(rel)} exited {r.returncode}: "
                                   f"{r.stderr.decode(errors='replace').strip()}\n"
                                   f"ganesha log:\n{self.log_text(20)}")
        return r.stdout

    def ls(self, rel: str) -> list[str]:
        """Names listed by nfs-ls (the last field of each line)."""
        r = self._run(["nfs-ls", self.url(rel)])
        assert r.returncode == 0, (f"nfs-ls {self.url(rel)} exited {r.returncode}: "
                                   f"stderr {r.stderr.decode(errors='replace').strip()!r}, "
                                   f"stdout {r.stdout.decode(errors='replace').strip()!r}\n"
                                   f"ganesha log:\n{self.log_text(20)}")
        names = [ln.split()[-1] for ln in r.stdout.decode().splitlines() if ln.strip()]
        return sorted(n for n in names if n not in (".", ".."))


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
