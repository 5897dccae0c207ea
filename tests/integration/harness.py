"""Helpers for the artifactfs integration tests.

A `Mount` owns one STORE and one MOUNTPOINT below a per-test base directory,
starts `artifactfs mount ... -f` as a child process, waits until the kernel
lists the FUSE mount, and always tears it down again. Everything else here is
plain observation of the real file system: mountinfo, xattrs, `du`, `find`,
and a tree comparison used to check the mount against a plain directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DEFAULT_BIN = "/work/main/build/cli/artifactfs"
READY_TIMEOUT = 10.0
UNMOUNT_TIMEOUT = 10.0
XATTR_PREFIX = "user.artifactfs."


def artifactfs_bin() -> str:
    return os.environ.get("ARTIFACTFS_BIN") or DEFAULT_BIN


# Every daemon pid this test process started and has not reaped yet; the
# session finalizer stops whatever is still here.
_LIVE_PIDS: dict[int, subprocess.Popen] = {}
_LIVE_LOCK = threading.Lock()


# --------------------------------------------------------------------------
# mountinfo


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mountinfo() -> list[dict]:
    """Entries of /proc/self/mountinfo: id, mountpoint, fstype, source."""
    entries = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            lf = left.split(" ")
            rf = right.split(" ")
            major, _, minor = lf[2].partition(":")
            entries.append({
                "id": int(lf[0]),
                "dev": os.makedev(int(major), int(minor)),
                "mountpoint": _unescape_mountinfo(lf[4]),
                "fstype": rf[0] if rf else "",
                "source": _unescape_mountinfo(rf[1]) if len(rf) > 1 else "",
            })
    return entries


def fuse_mounts_at(path) -> list[dict]:
    p = os.path.realpath(str(path))
    return [e for e in mountinfo() if e["mountpoint"] == p and e["fstype"].startswith("fuse")]


def _stat_dev(path, timeout: float):
    """st_dev of path, or None on error or if stat does not answer in time."""
    box = []

    def go():
        try:
            os.statvfs(path)  # always answered by the daemon, never by a cache
            box.append(os.stat(path).st_dev)
        except OSError:
            box.append(None)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout)
    return box[0] if box else None


def is_fuse_mounted(path) -> bool:
    return bool(fuse_mounts_at(path))


def fuse_mounts_under(root) -> list[str]:
    r = os.path.realpath(str(root))
    return sorted({e["mountpoint"] for e in mountinfo()
                   if e["fstype"].startswith("fuse")
                   and (e["mountpoint"] == r or e["mountpoint"].startswith(r + "/"))},
                  key=len, reverse=True)


def lazy_unmount(path) -> None:
    subprocess.run(["fusermount3", "-u", "-z", str(path)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=UNMOUNT_TIMEOUT)


def cleanup_everything_under(root) -> list[str]:
    """Session finalizer: stop every daemon we started, lazily unmount every
    FUSE mount left below `root`. Returns what had to be cleaned up."""
    leftovers = []
    with _LIVE_LOCK:
        procs = list(_LIVE_PIDS.values())
    for p in procs:
        if p.poll() is None:
            leftovers.append(f"daemon pid {p.pid} still running")
            p.kill()
            try:
                p.wait(timeout=UNMOUNT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        with _LIVE_LOCK:
            _LIVE_PIDS.pop(p.pid, None)
    for mp in fuse_mounts_under(root):
        leftovers.append(f"mount {mp} still present")
        lazy_unmount(mp)
    return leftovers


# --------------------------------------------------------------------------
# the daemon


ENABLE_URING = Path("/sys/module/fuse/parameters/enable_uring")


@contextlib.contextmanager
def kernel_fuse_uring(value: str):
    """The fuse module's enable_uring set to `value` ("Y" or "N") for a block
    and restored after; yields False (and changes nothing) unless writable."""
    if not os.access(ENABLE_URING, os.W_OK):
        yield False
        return
    before = ENABLE_URING.read_text().strip()
    ENABLE_URING.write_text(value)
    try:
        yield True
    finally:
        ENABLE_URING.write_text(before)


class DaemonFailed(AssertionError):
    pass


class Mount:
    """One artifactfs store and mountpoint below `base`.

    `depth`, `keep`, `sets`, `config` and `fuse_opts` become command-line
    arguments of every (re)start; change them between restarts freely.
    """

    def __init__(self, base: Path, *, depth: int | None = None, keep: list[str] | None = None,
                 sets: list[str] | None = None, config: Path | None = None,
                 fuse_opts: str | None = None, store: Path | None = None, mnt: Path | None = None):
        self.base = Path(base)
        self.store = Path(store) if store else self.base / "store"
        self.mnt = Path(mnt) if mnt else self.base / "mnt"
        self.data = self.store / "data"
        self.depth = depth
        self.keep = keep
        self.sets = list(sets or [])
        self.config = config
        self.fuse_opts = fuse_opts
        self.wrap: list[str] = []  # a command the daemon runs under, e.g. ["prlimit", "--nofile=4096:4096", "--"]
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.stderr_path: Path | None = None
        self.last_exit: int | None = None
        self.mnt.mkdir(parents=True, exist_ok=True)

    # ---- command line ----------------------------------------------------
    def argv(self, extra: list[str] | None = None) -> list[str]:
        # A prefix for every daemon of a run, e.g. without the capability to
        # open by file handle: ARTIFACTFS_TEST_WRAP="setpriv --bounding-set=-dac_read_search --".
        argv = os.environ.get("ARTIFACTFS_TEST_WRAP", "").split() + self.wrap
        argv += [artifactfs_bin(), "mount", str(self.store), str(self.mnt), "-f"]
        if self.config:
            argv += ["-c", str(self.config)]
        if self.fuse_opts:
            argv += ["-o", self.fuse_opts]
        sets = []
        if self.depth is not None:
            sets.append(f"layout.depth={self.depth}")
        if self.keep is not None:
            sets.append("layout.keep=[" + ", ".join(f"'{k}'" for k in self.keep) + "]")
        # Settings for every mount of a run (e.g. the whole suite with a tiny
        # descriptor cache: ARTIFACTFS_TEST_SETS="fuse.max-open-nodes=64").
        sets += os.environ.get("ARTIFACTFS_TEST_SETS", "").split()
        sets += self.sets
        for s in sets:
            argv += ["--set", s]
        return argv + list(extra or [])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self) -> str:
        if self.stderr_path and self.stderr_path.exists():
            return self.stderr_path.read_text(errors="replace")
        return ""

    # ---- lifecycle ---------------------------------------------------------
    def start(self, extra: list[str] | None = None, timeout: float = READY_TIMEOUT) -> "Mount":
        """Starts the daemon and waits for a new FUSE mount at the mountpoint."""
        assert not self.running, "daemon already running"
        binary = artifactfs_bin()
        if not os.access(binary, os.X_OK):
            raise DaemonFailed(f"artifactfs binary not found or not executable: {binary} "
                               "(set ARTIFACTFS_BIN or build /work/main/build)")
        self.starts += 1
        self.stderr_path = self.base / f"daemon-{self.starts}.stderr"
        out = open(self.base / f"daemon-{self.starts}.stdout", "wb")
        err = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(self.argv(extra), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, start_new_session=True)
        finally:
            out.close()
            err.close()
        with _LIVE_LOCK:
            _LIVE_PIDS[self.proc.pid] = self.proc
        deadline = time.monotonic() + timeout
        mp = os.path.realpath(self.mnt)
        while True:
            # Ready when the mountpoint answers statfs and stat from a FUSE
            # mount (a dead mount left by a killed daemon answers ENOTCONN).
            devs = {e["dev"] for e in fuse_mounts_at(mp)}
            if devs and _stat_dev(mp, 2.0) in devs:
                return self
            rc = self.proc.poll()
            if rc is not None:
                self._reaped(rc)
                raise DaemonFailed(f"artifactfs exited with {rc} before mounting {self.mnt}\n"
                                   f"argv: {self.argv(extra)}\nstderr:\n{self.stderr_text()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                self._reaped(self.proc.returncode)
                lazy_unmount(self.mnt)
                raise DaemonFailed(f"{self.mnt} not mounted within {timeout}s\n"
                                   f"argv: {self.argv(extra)}\nstderr:\n{self.stderr_text()}")
            time.sleep(0.02)

    def _reaped(self, rc: int) -> None:
        self.last_exit = rc
        if self.proc is not None:
            with _LIVE_LOCK:
                _LIVE_PIDS.pop(self.proc.pid, None)

    def unmount(self) -> int | None:
        """fusermount3 -u, then wait for the daemon. Falls back to kill +
        lazy unmount. Returns the daemon's exit status (None if it had to be
        killed)."""
        if self.proc is None:
            if is_fuse_mounted(self.mnt):
                lazy_unmount(self.mnt)
            return None
        graceful = False
        if self.proc.poll() is None:
            try:
                r = subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True,
                                   timeout=UNMOUNT_TIMEOUT)
                if r.returncode == 0:
                    self.proc.wait(timeout=UNMOUNT_TIMEOUT)
                    graceful = True
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        rc = self.proc.returncode
        self._reaped(rc)
        self.proc = None
        for _ in range(len(fuse_mounts_at(self.mnt))):
            lazy_unmount(self.mnt)
        return rc if graceful else None

    def stop(self) -> int | None:
        return self.unmount()

    def remount(self, extra: list[str] | None = None) -> "Mount":
        rc = self.unmount()
        assert rc == 0, f"daemon did not exit cleanly on unmount (status {rc}):\n{self.stderr_text()}"
        assert not is_fuse_mounted(self.mnt), f"{self.mnt} still mounted after unmount"
        return self.start(extra)

    def kill9(self) -> None:
        assert self.running
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reaped(self.proc.returncode)
        self.proc = None
        # With requests on io_uring rings the kernel learns of the death a
        # moment after the process is gone (a kernel worker tears the rings
        # down); a request made in that moment fails with ECONNABORTED. Wait
        # for the settled state: the dead mount answers ENOTCONN.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and fuse_mounts_at(os.path.realpath(self.mnt)):
            try:
                os.statvfs(self.mnt)
            except OSError as e:
                if e.errno == errno.ENOTCONN:
                    return
            time.sleep(0.01)
        if fuse_mounts_at(os.path.realpath(self.mnt)):
            raise AssertionError(f"{self.mnt} does not answer ENOTCONN 10 s after its daemon was killed")

    def close(self) -> None:
        try:
            self.unmount()
        finally:
            for _ in range(4):
                if not is_fuse_mounted(self.mnt):
                    break
                lazy_unmount(self.mnt)

    # ---- paths and facts -------------------------------------------------
    def path(self, rel: str = "") -> Path:
        return self.mnt / rel if rel else self.mnt

    def facts(self, key: str) -> dict:
        return artifact_facts(self.mnt / key)

    def totals(self) -> dict:
        return root_facts(self.mnt)


# --------------------------------------------------------------------------
# xattrs


INT_FACTS = ("disk_bytes", "apparent_bytes", "files", "access_count", "pinned")
TIME_FACTS = ("created", "last_access")
TOTAL_FACTS = ("total.disk_bytes", "total.apparent_bytes", "total.files", "total.artifacts")
STAT_FACTS = ("stats.hits", "stats.misses", "stats.evictions", "stats.bytes_evicted",
              "stats.cleanup_runs")

_TIME_RE = re.compile(r"^(\d+)\.(\d{9})$")
_INT_RE = re.compile(r"^\d+$")


def parse_int_fact(raw: bytes, name: str = "") -> int:
    text = raw.decode()
    assert _INT_RE.match(text), f"{name}: not a decimal integer: {text!r}"
    return int(text)


def parse_time_ns(raw: bytes, name: str = "") -> int:
    """'1700000000.123456789' -> nanoseconds, exactly."""
    text = raw.decode()
    m = _TIME_RE.match(text)
    assert m, f"{name}: not seconds with 9 decimals: {text!r}"
    return int(m.group(1)) * 1_000_000_000 + int(m.group(2))


def xattr_int(path, name: str) -> int:
    full = XATTR_PREFIX + name
    return parse_int_fact(os.getxattr(str(path), full, follow_symlinks=False), full)


def xattr_time_ns(path, name: str) -> int:
    full = XATTR_PREFIX + name
    return parse_time_ns(os.getxattr(str(path), full, follow_symlinks=False), full)


def artifact_facts(path) -> dict:
    f = {n: xattr_int(path, n) for n in INT_FACTS}
    f.update({n: xattr_time_ns(path, n) for n in TIME_FACTS})
    return f


def root_facts(mnt) -> dict:
    return {n: xattr_int(mnt, n) for n in TOTAL_FACTS + STAT_FACTS}


def getfattr_dump(path) -> dict[str, str]:
    """`getfattr -d -m - PATH` parsed into name -> value (text values)."""
    r = subprocess.run(["getfattr", "--absolute-names", "-d", "-m", "-", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"getfattr failed: {r.stderr}"
    out = {}
    for line in r.stdout.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        if value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        out[name] = value
    return out


def user_xattrs(path, *, skip_artifactfs: bool = True) -> dict[str, bytes]:
    try:
        names = os.listxattr(str(path), follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    out = {}
    for n in names:
        if not n.startswith("user."):
            continue
        if skip_artifactfs and n.startswith(XATTR_PREFIX):
            continue
        out[n] = os.getxattr(str(path), n, follow_symlinks=False)
    return out


# --------------------------------------------------------------------------
# du, find, artifacts of a data tree


def run(argv, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    r = subprocess.run([str(a) for a in argv], **kw)
    return r


def check(argv, **kw) -> str:
    r = run(argv, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, argv))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def du_disk(path) -> int:
    """`du --block-size=1 -s PATH`: st_blocks*512, each inode once."""
    return int(check(["du", "--block-size=1", "-s", path]).split()[0])


def du_apparent(path) -> int:
    """`du -sb PATH`: apparent sizes, each inode once."""
    return int(check(["du", "-sb", path]).split()[0])


def count_files(path) -> int:
    """Non-directory inodes below (and including) PATH, hard links once."""
    out = check(["find", path, "-not", "-type", "d", "-printf", "%i\n"])
    return len(set(out.split()))


def expected_usage(path) -> dict:
    return {"disk_bytes": du_disk(path), "apparent_bytes": du_apparent(path),
            "files": count_files(path)}


def artifact_keys(data: Path, depth: int = 1, keep: list[str] | tuple = ()) -> list[str]:
    """Entries exactly `depth` below `data` whose names match no keep glob,
    reached only through directories that are not kept either."""
    keys = []

    def kept(name):
        return any(fnmatch.fnmatch(name, g) for g in keep)

    def walk(d: Path, level: int, prefix: str):
        for name in sorted(os.listdir(d)):
            if kept(name):
                continue
            rel = f"{prefix}{name}"
            p = d / name
            if level == depth:
                keys.append(rel)
            elif stat.S_ISDIR(os.lstat(p).st_mode):
                walk(p, level + 1, rel + "/")

    walk(Path(data), 1, "")
    return keys


def assert_accounting(m: Mount, depth: int = 1, keep: list[str] | tuple = (),
                      expect_keys: list[str] | None = None, check_keys: list[str] | None = None) -> dict:
    """For every artifact: the xattrs on the mount equal du/find of the data
    tree (each artifact measured by its own du run); the root totals equal du
    of STORE/data. Returns {key: facts}. With `check_keys`, only those
    artifacts are measured one by one (a store of 100,000 would take too
    long); the totals are always checked against the whole tree."""
    keys = artifact_keys(m.data, depth, keep)
    if expect_keys is not None:
        assert sorted(keys) == sorted(expect_keys), f"data tree holds artifacts {sorted(keys)}, expected {sorted(expect_keys)}"
    problems = []
    result = {}
    wanted = None if check_keys is None else set(check_keys)
    measured = keys if wanted is None else [k for k in keys if k in wanted]
    for key in measured:
        if stat.S_ISLNK(os.lstat(m.data / key).st_mode):
            # The kernel answers user.* xattr reads on symlinks itself
            # (ENODATA); a symlink artifact is checked through the totals.
            continue
        want = expected_usage(m.data / key)
        try:
            facts = artifact_facts(m.mnt / key)
        except OSError as e:
            problems.append(f"{key}: reading xattrs failed: {e!r}")
            continue
        result[key] = facts
        got = {k: facts[k] for k in want}
        if got != want:
            problems.append(f"{key}: xattrs {got} != du/find {want}")
    totals = root_facts(m.mnt)
    want_tot = {"total.disk_bytes": du_disk(m.data), "total.apparent_bytes": du_apparent(m.data),
                "total.files": count_files(m.data), "total.artifacts": len(keys)}
    got_tot = {k: totals[k] for k in want_tot}
    if got_tot != want_tot:
        problems.append(f"root totals {got_tot} != du/find of STORE/data {want_tot}")
    assert not problems, "accounting differs from the data tree:\n  " + "\n  ".join(problems)
    return result


# --------------------------------------------------------------------------
# trees


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def snapshot(root, *, xattrs: bool = True, owners: bool = True, mtimes: bool = False,
             contents: bool = True) -> tuple[dict, list]:
    """Describes the tree below `root` (not root itself): rel path -> facts,
    and the hard-link structure as a sorted list of sorted name groups."""
    root = Path(root)
    entries = {}
    by_ino: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            e = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode)}
            if owners:
                e["uid"], e["gid"] = st.st_uid, st.st_gid
            if stat.S_ISLNK(st.st_mode):
                e["target"] = os.readlink(p)
                e.pop("mode")  # symlink modes are not meaningful
            elif stat.S_ISREG(st.st_mode):
                e["size"] = st.st_size
                e["nlink"] = st.st_nlink
                if contents:
                    e["sha256"] = sha256(p)
                by_ino.setdefault(st.st_ino, []).append(rel)
            if mtimes and not stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode):
                e["mtime_ns"] = st.st_mtime_ns
            if xattrs and not stat.S_ISLNK(st.st_mode):
                e["xattrs"] = user_xattrs(p)
            entries[rel] = e
    links = sorted(sorted(g) for g in by_ino.values() if len(g) > 1)
    return entries, links


def diff_trees(a, b, **kw) -> list[str]:
    ea, la = snapshot(a, **kw)
    eb, lb = snapshot(b, **kw)
    out = []
    for rel in sorted(set(ea) | set(eb)):
        if rel not in ea:
            out.append(f"only in {b}: {rel}")
        elif rel not in eb:
            out.append(f"only in {a}: {rel}")
        elif ea[rel] != eb[rel]:
            keys = sorted(set(ea[rel]) | set(eb[rel]))
            d = {k: (ea[rel].get(k), eb[rel].get(k)) for k in keys if ea[rel].get(k) != eb[rel].get(k)}
            out.append(f"{rel}: {d}")
    if la != lb:
        out.append(f"hard-link groups differ: {la} vs {lb}")
    return out


def assert_same_tree(a, b, **kw) -> None:
    d = diff_trees(a, b, **kw)
    assert not d, f"trees {a} and {b} differ:\n  " + "\n  ".join(d[:40])


def make_realistic_tree(root: Path) -> Path:
    """Nested dirs, sizes from 0 to ~1 MiB, a sparse file, symlinks
    (relative, absolute, dangling, to a directory), hard links, unusual
    modes, user xattrs."""
    root.mkdir(parents=True, exist_ok=True)
    rnd = _Rand(1234)
    (root / "bin").mkdir()
    (root / "lib" / "pkg" / "sub").mkdir(parents=True)
    (root / "share" / "doc").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "bin" / "tool", 0o755)
    (root / "lib" / "libx.so.1.2").write_bytes(rnd.bytes(300_000))
    os.symlink("libx.so.1.2", root / "lib" / "libx.so.1")
    os.symlink("libx.so.1", root / "lib" / "libx.so")
    for i in range(25):
        (root / "lib" / "pkg" / f"mod{i:02}.py").write_bytes(rnd.bytes(rnd.n(0, 9000)))
    (root / "lib" / "pkg" / "sub" / "big.bin").write_bytes(rnd.bytes(1_100_000))
    (root / "lib" / "pkg" / "sub" / "zero").write_bytes(b"")
    with open(root / "share" / "sparse.img", "wb") as f:
        f.write(b"head")
        f.seek(4 << 20)
        f.write(b"tail")
    (root / "share" / "doc" / "README").write_text("read me\n" * 50)
    os.link(root / "share" / "doc" / "README", root / "share" / "README.hardlink")
    os.link(root / "share" / "doc" / "README", root / "bin" / "README.again")
    os.link(root / "bin" / "tool", root / "bin" / "tool-alias")
    os.symlink("../share/doc", root / "bin" / "docs")
    os.symlink("/nonexistent/target", root / "bin" / "dangling")
    os.symlink("/etc/hostname", root / "bin" / "absolute")
    (root / "secret").write_bytes(b"s3cr3t")
    os.chmod(root / "secret", 0o600)
    (root / "readonly").write_bytes(b"ro")
    os.chmod(root / "readonly", 0o444)
    (root / "setgid-dir").mkdir()
    os.chmod(root / "setgid-dir", 0o2775)
    (root / "setgid-dir" / "f").write_bytes(b"f")
    os.chown(root / "secret", 1234, 5678)
    os.setxattr(root / "lib" / "libx.so.1.2", "user.origin", b"built-by-test")
    os.setxattr(root / "share" / "doc", "user.dirattr", b"\x00\x01binary")
    return root


class _Rand:
    """Deterministic bytes without the cost of random.randbytes per call."""

    def __init__(self, seed: int):
        import random
        self.r = random.Random(seed)

    def bytes(self, n: int) -> bytes:
        return self.r.randbytes(n)

    def n(self, lo: int, hi: int) -> int:
        return self.r.randint(lo, hi)


# --------------------------------------------------------------------------
# syscalls not in the os module


_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(old, new, flags: int) -> None:
    fn = _libc.renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(AT_FDCWD, os.fsencode(str(old)), AT_FDCWD, os.fsencode(str(new)), flags)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(old))


def outcome(fn, *a, **kw):
    """('ok', value) or ('err', 'ENOENT')."""
    try:
        return ("ok", fn(*a, **kw))
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, str(e.errno)))


def run_threads_for(threads: list[threading.Thread], seconds: float, stop: threading.Event) -> None:
    """Starts `threads`, lets them work for `seconds`, then sets `stop` and
    joins them (also when interrupted); fails if one of them hangs."""
    for t in threads:
        t.start()
    try:
        time.sleep(seconds)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads), "worker threads hung"


def wait_until(pred, timeout: float, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def new_base(root: Path, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60]
    d = Path(tempfile.mkdtemp(prefix=safe + "-", dir=root))
    os.chmod(d, 0o755)  # an unprivileged reader must be able to reach the mount
    return d


def remove_base(d: Path) -> None:
    """Removes a test's base directory unless something is still mounted
    below it (never walk through a live or dead mount)."""
    if fuse_mounts_under(d):
        print(f"not removing {d}: still mounted: {fuse_mounts_under(d)}", file=sys.stderr)
        return
    shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# other users


NOBODY = 65534


def as_user(argv, uid: int = NOBODY, gid: int = NOBODY, groups: list[int] | None = None) -> list[str]:
    """argv run by `setpriv` as uid/gid with exactly `groups` as supplementary
    groups (none when empty or None)."""
    grp = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", *grp, *[str(a) for a in argv]]
