"""nfs-ganesha and rpcbind for the NFS tests: ganesha.nfsd -F with its own
configuration, log, pid file and recovery directory below a test's
directory, bound to 127.0.0.1 on free ports and stopped by pid; libnfs
clients (nfs-cat, nfs-ls) given the NFS and MOUNT ports, so they never ask
rpcbind. The `rpcbind` fixture gives ganesha a portmapper for NFSv3: the one
running, or one started for the test and stopped by pid."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from harness import wait_until

PSEUDO = "/cache"
GANESHA_READY_TIMEOUT = 20.0
NFS_TIMEOUT = 30
FSAL_VFS_PATHS = ("/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so",
                  "/usr/lib/aarch64-linux-gnu/ganesha/libfsalvfs.so",
                  "/usr/lib/ganesha/libfsalvfs.so", "/usr/lib64/ganesha/libfsalvfs.so")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ganesha_config(export_path: Path, port: int, recovery: Path, *, protocols: tuple[int, ...] = (4,),
                    mnt_port: int = 0, access: str = "RW", extra: str = "", revalidate: bool = True) -> str:
    versions = ", ".join(str(v) for v in protocols)
    # Revalidating attributes with the file system on every request makes
    # every NFS request after drop_caches go through the FUSE handles;
    # without it, attribute caching stays at ganesha's defaults.
    revalidate = "    Attr_Expiration_Time = 0;\n" if revalidate else ""
    mnt = f"\n    MNT_Port = {mnt_port};" if 3 in protocols else ""
    return f"""\
NFS_CORE_PARAM {{
    Protocols = {versions};
    NFS_Port = {port};{mnt}
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
    Access_Type = {access};
    Squash = No_Root_Squash;
    Protocols = {versions};
    Transports = TCP;
    SecType = sys;
{revalidate}    FSAL {{
        Name = VFS;
    }}
}}
{extra}"""


class Ganesha:
    """ganesha.nfsd -F with its own files below `d`, exporting `export_path`."""

    def __init__(self, d: Path, export_path: Path, *, protocols: tuple[int, ...] = (4,), access: str = "RW",
                 extra: str = "", revalidate: bool = True):
        self.dir = d
        self.dir.mkdir(parents=True, exist_ok=True)
        self.export_path = export_path
        self.port = _free_port()
        self.mnt_port = _free_port() if 3 in protocols else 0
        self.protocols = protocols
        self.conf = d / "ganesha.conf"
        self.log = d / "ganesha.log"
        self.pidfile = d / "ganesha.pid"
        self.recovery = d / "recovery"
        self.recovery.mkdir(exist_ok=True)
        self.conf.write_text(_ganesha_config(export_path, self.port, self.recovery, protocols=protocols,
                                             mnt_port=self.mnt_port, access=access, extra=extra,
                                             revalidate=revalidate))
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
    def url(self, rel: str, version: int = 4) -> str:
        """NFSv4 names the export by its pseudo path, NFSv3 by its real path
        (the MOUNT protocol)."""
        rel = rel.strip("/")
        if version == 3:
            root = str(self.export_path)
            return f"nfs://127.0.0.1{root}/{rel}?version=3&nfsport={self.port}&mountport={self.mnt_port}"
        path = f"{PSEUDO}/{rel}" if rel else f"{PSEUDO}/"
        return f"nfs://127.0.0.1{path}?version=4&nfsport={self.port}"

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, timeout=NFS_TIMEOUT)

    def cat(self, rel: str, version: int = 4) -> bytes:
        r = self._run(["nfs-cat", self.url(rel, version)])
        assert r.returncode == 0, (f"nfs-cat {self.url(rel, version)} exited {r.returncode}: "
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



def _rpcbind_answers() -> bool:
    try:
        return subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture
def rpcbind():
    """rpcbind for ganesha's NFSv3 registration: the one running, or one
    started here and stopped by its pid afterwards."""
    if not shutil.which("rpcbind") or not shutil.which("rpcinfo"):
        pytest.skip("not installed: rpcbind (package rpcbind, which nfs-ganesha depends on)")
    if _rpcbind_answers():
        yield None
        return
    proc = subprocess.Popen(["rpcbind", "-f"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_until(lambda: proc.poll() is not None or _rpcbind_answers(), 10.0, 0.05, what="rpcbind to answer")
        assert proc.poll() is None, f"rpcbind exited: {proc.stderr.read().decode(errors='replace')}"
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
