"""The same syscall sequences on a plain directory and on the mount must give
identical outcomes (values and errno names). Every sequence also checks its
expected values directly, so a sequence that fails the same way on both sides
still fails the test."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import harness
from harness import outcome


@pytest.fixture
def twin(mnt, plain):
    """(plain artifact dir, mounted artifact dir), both empty."""
    a = plain / "art"
    b = mnt.mnt / "art"
    a.mkdir()
    b.mkdir()
    return a, b


def same(twin, fn):
    """Runs fn(root) on the plain twin and on the mount; outcomes must match."""
    want = fn(twin[0])
    got = fn(twin[1])
    assert got == want, f"mount differs from plain directory:\n  plain: {want}\n  mount: {got}"
    return want


def st_tuple(p, follow=True):
    st = os.stat(p, follow_symlinks=follow)
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_nlink, st.st_uid, st.st_gid,
            st.st_size)


def test_create_write_read_pread(twin):
    def seq(root):
        p = root / "f"
        out = []
        fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o640)
        out.append(os.write(fd, b"hello world"))
        out.append(os.pwrite(fd, b"XYZ", 100))  # leaves a hole
        os.close(fd)
        out.append(st_tuple(p))
        fd = os.open(p, os.O_RDONLY)
        out.append(os.read(fd, 5))
        out.append(os.pread(fd, 6, 6))
        out.append(os.pread(fd, 10, 95))
        out.append(os.pread(fd, 10, 200))  # past EOF
        out.append(os.lseek(fd, 0, os.SEEK_END))
        os.close(fd)
        fd = os.open(p, os.O_RDWR)
        os.lseek(fd, 2, os.SEEK_SET)
        os.write(fd, b"LL")
        os.close(fd)
        out.append(p.read_bytes()[:12])
        out.append(outcome(os.open, root / "missing", os.O_RDONLY))
        return out

    r = same(twin, seq)
    assert r[0] == 11 and r[1] == 3
    assert r[2] == (stat.S_IFREG, 0o640 & ~_umask(), 1, 0, 0, 103)
    assert r[3] == b"hello" and r[4] == b"world\x00"
    assert r[5] == b"\x00" * 5 + b"XYZ" and r[6] == b"" and r[7] == 103
    assert r[8] == b"heLLo world\x00"
    assert r[9] == ("err", "ENOENT")


def _umask():
    u = os.umask(0)
    os.umask(u)
    return u


def test_stat_chmod_chown_utime(twin):
    def seq(root):
        p = root / "f"
        p.write_bytes(b"abc")
        out = [st_tuple(p)]
        os.chmod(p, 0o4751)
        out.append(st_tuple(p))
        os.chown(p, 4321, 8765)
        out.append(st_tuple(p))
        os.chown(p, -1, 42)
        out.append(st_tuple(p))
        os.utime(p, ns=(1_234_567_890_123_456_789, 1_111_111_111_987_654_321))
        st = os.stat(p)
        out.append((st.st_atime_ns, st.st_mtime_ns))
        d = root / "d"
        os.mkdir(d, 0o700)
        os.utime(d, ns=(5_000_000_001, 6_000_000_002))
        st = os.stat(d)
        out.append((st_tuple(d)[:3], st.st_mtime_ns))
        return out

    r = same(twin, seq)
    assert r[1][1] == 0o4751
    assert r[2][3:5] == (4321, 8765) and r[3][3:5] == (4321, 42)
    assert r[4] == (1_234_567_890_123_456_789, 1_111_111_111_987_654_321)
    assert r[5] == ((stat.S_IFDIR, 0o700, 2), 6_000_000_002)


def test_utime_of_artifact_root_file_ns(mnt):
    """mtime set with ns precision on a file sitting directly at the artifact
    depth (the artifact root itself) reads back exactly. (atime of an
    artifact root reports last access, so only mtime is checked here.)"""
    p = mnt.mnt / "single-file-artifact"
    p.write_bytes(b"x")
    os.utime(p, ns=(1_000_000_000_000_000_001, 1_200_000_000_000_000_007))
    assert os.stat(p).st_mtime_ns == 1_200_000_000_000_000_007
    assert os.stat(mnt.data / "single-file-artifact").st_mtime_ns == 1_200_000_000_000_000_007


def test_truncate(twin):
    def seq(root):
        p = root / "t"
        p.write_bytes(b"0123456789")
        out = []
        os.truncate(p, 4)
        out.append((os.stat(p).st_size, p.read_bytes()))
        os.truncate(p, 8192)
        out.append((os.stat(p).st_size, p.read_bytes()[:6]))
        with open(p, "r+b") as f:
            f.truncate(1)
        out.append((os.stat(p).st_size, p.read_bytes()))
        fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
        os.close(fd)
        out.append(os.stat(p).st_size)
        out.append(outcome(os.truncate, root / "nope", 1))
        return out

    r = same(twin, seq)
    assert r == [(4, b"0123"), (8192, b"0123\x00\x00"), (1, b"0"), 0, ("err", "ENOENT")]


def test_mkdir_rmdir_readdir(twin):
    def seq(root):
        out = []
        os.mkdir(root / "d")
        for n in ("b", "a", "c"):
            (root / "d" / n).write_bytes(n.encode())
        os.mkdir(root / "d" / "sub")
        out.append(sorted(os.listdir(root / "d")))
        out.append(sorted((e.name, e.is_dir(), e.is_file()) for e in os.scandir(root / "d")))
        out.append(os.stat(root / "d").st_nlink)
        out.append(outcome(os.rmdir, root / "d"))
        out.append(outcome(os.mkdir, root / "d"))
        out.append(outcome(os.mkdir, root / "d" / "a"))
        out.append(outcome(os.rmdir, root / "d" / "a"))
        out.append(outcome(os.rmdir, root / "d" / "sub"))
        out.append(outcome(os.rmdir, root / "d" / "sub"))
        out.append(outcome(os.mkdir, root / "missing" / "x"))
        out.append(sorted(os.listdir(root / "d")))
        out.append(outcome(os.listdir, root / "d" / "a"))
        return out

    r = same(twin, seq)
    assert r[0] == ["a", "b", "c", "sub"]
    assert r[2] == 3
    assert r[3] == ("err", "ENOTEMPTY")
    assert r[4] == ("err", "EEXIST") and r[5] == ("err", "EEXIST")
    assert r[6] == ("err", "ENOTDIR")
    assert r[7] == ("ok", None) and r[8] == ("err", "ENOENT") and r[9] == ("err", "ENOENT")
    assert r[10] == ["a", "b", "c"]
    assert r[11] == ("err", "ENOTDIR")


def test_large_directory_listing(twin):
    """More entries than one readdir buffer holds; names of many lengths."""
    def seq(root):
        d = root / "many"
        d.mkdir()
        names = [f"entry-{i:04}-" + "x" * (i % 200) for i in range(700)]
        for n in names:
            (d / n).write_bytes(b"")
        listed = os.listdir(d)
        return (len(listed), sorted(listed) == sorted(names))

    assert same(twin, seq) == (700, True)


def test_rename(twin):
    def seq(root):
        out = []
        (root / "a").write_bytes(b"A")
        (root / "b").write_bytes(b"BB")
        os.rename(root / "a", root / "a2")
        out.append(sorted(os.listdir(root)))
        os.rename(root / "a2", root / "b")  # over an existing file
        out.append((sorted(os.listdir(root)), (root / "b").read_bytes()))
        os.mkdir(root / "d1")
        os.mkdir(root / "d2")
        (root / "d1" / "x").write_bytes(b"x")
        out.append(outcome(os.rename, root / "d2", root / "d1"))  # non-empty target
        os.rename(root / "d1", root / "d2")  # over an empty dir
        out.append((sorted(os.listdir(root)), os.listdir(root / "d2")))
        out.append(outcome(os.rename, root / "b", root / "d2"))
        out.append(outcome(os.rename, root / "d2", root / "b"))
        out.append(outcome(os.rename, root / "nope", root / "x"))
        out.append(outcome(os.rename, root / "d2", root / "d2" / "inside"))
        return out

    r = same(twin, seq)
    assert r[0] == ["a2", "b"]
    assert r[1] == (["b"], b"A")
    assert r[2] == ("err", "ENOTEMPTY")
    assert r[3] == (["b", "d2"], ["x"])
    assert r[4] == ("err", "EISDIR") and r[5] == ("err", "ENOTDIR")
    assert r[6] == ("err", "ENOENT") and r[7] == ("err", "EINVAL")


def test_renameat2_noreplace_and_exchange(twin):
    def seq(root):
        out = []
        (root / "a").write_bytes(b"A")
        (root / "b").write_bytes(b"B")
        out.append(outcome(harness.renameat2, root / "a", root / "b", harness.RENAME_NOREPLACE))
        out.append(((root / "a").read_bytes(), (root / "b").read_bytes()))
        out.append(outcome(harness.renameat2, root / "a", root / "c", harness.RENAME_NOREPLACE))
        out.append(sorted(os.listdir(root)))
        os.mkdir(root / "dir")
        (root / "dir" / "inner").write_bytes(b"I")
        out.append(outcome(harness.renameat2, root / "c", root / "b", harness.RENAME_EXCHANGE))
        out.append(((root / "b").read_bytes(), (root / "c").read_bytes()))
        out.append(outcome(harness.renameat2, root / "dir", root / "b", harness.RENAME_EXCHANGE))
        out.append((stat.S_ISDIR(os.lstat(root / "b").st_mode), os.listdir(root / "b"),
                    (root / "dir").read_bytes()))
        out.append(outcome(harness.renameat2, root / "c", root / "zz", harness.RENAME_EXCHANGE))
        return out

    r = same(twin, seq)
    assert r[0] == ("err", "EEXIST")
    assert r[1] == (b"A", b"B")
    assert r[2] == ("ok", None) and r[3] == ["b", "c"]
    assert r[4] == ("ok", None) and r[5] == (b"A", b"B")
    assert r[6] == ("ok", None) and r[7] == (True, ["inner"], b"A")
    assert r[8] == ("err", "ENOENT")


def test_symlink_link_unlink(twin):
    def seq(root):
        out = []
        (root / "f").write_bytes(b"data")
        os.symlink("f", root / "rel")
        os.symlink("/definitely/not/here", root / "dangling")
        os.symlink("x" * 1000, root / "long")
        out.append((os.readlink(root / "rel"), os.readlink(root / "dangling"),
                    len(os.readlink(root / "long"))))
        out.append((root / "rel").read_bytes())
        out.append(stat.S_ISLNK(os.lstat(root / "rel").st_mode))
        out.append(outcome(os.stat, root / "dangling"))
        out.append(outcome(os.readlink, root / "f"))
        os.link(root / "f", root / "hard")
        out.append((os.stat(root / "f").st_nlink, os.stat(root / "hard").st_nlink))
        out.append(os.stat(root / "f").st_ino == os.stat(root / "hard").st_ino)
        os.mkdir(root / "sub")
        os.link(root / "f", root / "sub" / "hard2")
        out.append(os.stat(root / "f").st_nlink)
        with open(root / "hard", "ab") as fh:
            fh.write(b"+more")
        out.append(((root / "f").read_bytes(), (root / "sub" / "hard2").read_bytes()))
        os.unlink(root / "f")
        out.append((os.stat(root / "hard").st_nlink, outcome(os.stat, root / "f")))
        out.append(outcome(os.link, root / "sub", root / "dirlink"))
        out.append(outcome(os.link, root / "hard", root / "sub" / "hard2"))
        out.append(outcome(os.unlink, root / "sub"))
        out.append(outcome(os.unlink, root / "nope"))
        os.unlink(root / "rel")
        out.append(sorted(os.listdir(root)))
        return out

    r = same(twin, seq)
    assert r[0] == ("f", "/definitely/not/here", 1000)
    assert r[1] == b"data" and r[2] is True
    assert r[3] == ("err", "ENOENT") and r[4] == ("err", "EINVAL")
    assert r[5] == (2, 2) and r[6] is True and r[7] == 3
    assert r[8] == (b"data+more", b"data+more")
    assert r[9] == (2, ("err", "ENOENT"))
    assert r[10] == ("err", "EPERM") and r[11] == ("err", "EEXIST")
    assert r[12][0] == "err" and r[12][1] in ("EISDIR", "EPERM")
    assert r[13] == ("err", "ENOENT")
    assert r[14] == ["dangling", "hard", "long", "sub"]


def test_hard_link_inode_shared_through_mount(mnt):
    """Both names of a hard link report the same st_ino on the mount, and the
    backing data tree holds one inode with two names."""
    d = mnt.mnt / "art"
    d.mkdir()
    (d / "a").write_bytes(b"1")
    os.link(d / "a", d / "b")
    assert os.stat(d / "a").st_ino == os.stat(d / "b").st_ino
    assert os.stat(mnt.data / "art" / "a").st_ino == os.stat(mnt.data / "art" / "b").st_ino
    assert os.stat(mnt.data / "art" / "a").st_nlink == 2


def test_statvfs(mnt):
    sv = os.statvfs(mnt.mnt)
    assert sv.f_bsize > 0 and sv.f_frsize > 0
    assert sv.f_blocks > 0
    assert 0 <= sv.f_bavail <= sv.f_bfree <= sv.f_blocks
    assert sv.f_namemax == 255
    assert sv.f_files >= sv.f_ffree >= sv.f_favail >= 0
    # The mount never claims more space than the disk holding the store.
    under = os.statvfs(mnt.data)
    assert sv.f_blocks * sv.f_frsize <= under.f_blocks * under.f_frsize
    assert sv.f_bavail * sv.f_frsize <= under.f_blocks * under.f_frsize


def test_xattrs(twin):
    def seq(root):
        out = []
        p = root / "f"
        p.write_bytes(b"x")
        os.setxattr(p, "user.one", b"1")
        os.setxattr(p, "user.bin", b"\x00\xff\x00")
        os.setxattr(p, "user.big", b"v" * 3000)
        out.append(sorted(n for n in os.listxattr(p) if n.startswith("user.") and
                          not n.startswith(harness.XATTR_PREFIX)))
        out.append((os.getxattr(p, "user.one"), os.getxattr(p, "user.bin"),
                    len(os.getxattr(p, "user.big"))))
        out.append(outcome(os.setxattr, p, "user.one", b"2", os.XATTR_CREATE))
        out.append(outcome(os.setxattr, p, "user.new", b"2", os.XATTR_REPLACE))
        os.setxattr(p, "user.one", b"11", os.XATTR_REPLACE)
        out.append(os.getxattr(p, "user.one"))
        os.removexattr(p, "user.bin")
        out.append(outcome(os.getxattr, p, "user.bin"))
        out.append(outcome(os.removexattr, p, "user.bin"))
        out.append(outcome(os.getxattr, p, "user.absent"))
        os.mkdir(root / "d")
        os.setxattr(root / "d", "user.dir", b"D")
        out.append(os.getxattr(root / "d", "user.dir"))
        return out

    r = same(twin, seq)
    assert r[0] == ["user.big", "user.bin", "user.one"]
    assert r[1] == (b"1", b"\x00\xff\x00", 3000)
    assert r[2] == ("err", "EEXIST") and r[3] == ("err", "ENODATA")
    assert r[4] == b"11" and r[5] == ("err", "ENODATA") and r[6] == ("err", "ENODATA")
    assert r[7] == ("err", "ENODATA") and r[8] == b"D"


def test_xattr_visible_in_data_tree(mnt):
    d = mnt.mnt / "art"
    d.mkdir()
    (d / "f").write_bytes(b"")
    os.setxattr(d / "f", "user.k", b"v")
    assert os.getxattr(mnt.data / "art" / "f", "user.k") == b"v"
    out = subprocess.run(["getfattr", "-n", "user.k", "--only-values", str(d / "f")],
                         capture_output=True, timeout=30)
    assert out.returncode == 0 and out.stdout == b"v"


def test_fallocate(twin):
    def seq(root):
        p = root / "fa"
        p.write_bytes(b"")
        fd = os.open(p, os.O_RDWR)
        try:
            before = os.fstat(fd).st_blocks
            os.posix_fallocate(fd, 0, 1 << 20)
            st = os.fstat(fd)
            os.posix_fallocate(fd, (1 << 20), 4096)
            st2 = os.fstat(fd)
        finally:
            os.close(fd)
        return (before, st.st_size, st.st_blocks >= (1 << 20) // 512, st2.st_size,
                p.read_bytes() == b"\x00" * ((1 << 20) + 4096))

    assert same(twin, seq) == (0, 1 << 20, True, (1 << 20) + 4096, True)


def test_fallocate_blocks_seen_through_mount(mnt):
    p = mnt.mnt / "art"
    p.mkdir()
    fd = os.open(p / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, 3 << 20)
    finally:
        os.close(fd)
    assert os.stat(p / "f").st_blocks == os.stat(mnt.data / "art" / "f").st_blocks
    assert os.stat(p / "f").st_blocks * 512 >= 3 << 20


LOCK_CHILD = textwrap.dedent("""
    import fcntl, os, sys, time
    path, kind, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    fd = os.open(path, os.O_RDWR)
    try:
        if kind == "flock":
            fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if mode == "nb" else 0))
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if mode == "nb" else 0), 10, 0)
    except OSError as e:
        print("denied", e.errno, flush=True)
        sys.exit(0)
    print("granted", time.monotonic(), flush=True)  # one clock for all processes
""")


def _lock_child(path, kind, mode):
    return subprocess.Popen([sys.executable, "-c", LOCK_CHILD, str(path), kind, mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("kind", ["flock", "fcntl"])
def test_locks_between_processes(twin, kind):
    def seq(root):
        p = root / f"lock-{kind}"
        p.write_bytes(b"0" * 64)
        fd = os.open(p, os.O_RDWR)
        try:
            if kind == "flock":
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
            # A second process is denied without blocking...
            c = _lock_child(p, kind, "nb")
            out, err = c.communicate(timeout=20)
            first = out.split()
            # ...and blocks with blocking until the holder lets go.
            c = _lock_child(p, kind, "block")
            time.sleep(0.5)
            still_waiting = c.poll() is None
            released = time.monotonic()
            if kind == "flock":
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:
                fcntl.lockf(fd, fcntl.LOCK_UN, 10, 0)
            out2, err2 = c.communicate(timeout=20)
        finally:
            os.close(fd)
        second = out2.split()
        assert first and second, f"lock child failed: {err} {err2}"
        return (first[0], first[0] == "denied" and int(first[1]) in (errno.EAGAIN, errno.EACCES),
                still_waiting, second[0], second[0] == "granted" and float(second[1]) >= released)

    assert same(twin, seq) == ("denied", True, True, "granted", True)


def test_fsync_and_append(twin):
    def seq(root):
        p = root / "log"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, b"one\n")
        os.fsync(fd)
        os.fdatasync(fd)
        fd2 = os.open(p, os.O_WRONLY | os.O_APPEND)
        os.write(fd2, b"two\n")
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"three\n")  # O_APPEND ignores the seek
        os.close(fd2)
        os.close(fd)
        dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
        return p.read_bytes()

    assert same(twin, seq) == b"one\ntwo\nthree\n"


def test_o_excl_and_name_too_long(twin):
    def seq(root):
        out = []
        fd = os.open(root / "x", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        out.append(outcome(os.open, root / "x", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.symlink("x", root / "lnk")
        out.append(outcome(os.open, root / "lnk", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        out.append(outcome(os.open, root / ("n" * 256), os.O_CREAT | os.O_WRONLY, 0o600))
        out.append(outcome(os.mkdir, root / ("n" * 256)))
        fd = os.open(root / ("n" * 255), os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
        out.append(len(os.listdir(root)))
        out.append(outcome(os.rename, root / "x", root / ("m" * 256)))
        return out

    r = same(twin, seq)
    assert r[0] == ("err", "EEXIST") and r[1] == ("err", "EEXIST")
    assert r[2] == ("err", "ENAMETOOLONG") and r[3] == ("err", "ENAMETOOLONG")
    assert r[4] == 3 and r[5] == ("err", "ENAMETOOLONG")


def test_name_too_long_at_mount_root(mnt):
    """At the artifact depth itself (where the daemon tracks artifacts)."""
    assert outcome(os.mkdir, mnt.mnt / ("k" * 256)) == ("err", "ENAMETOOLONG")
    assert outcome(os.open, mnt.mnt / ("k" * 256), os.O_CREAT | os.O_WRONLY, 0o600) == \
        ("err", "ENAMETOOLONG")
    assert outcome(os.stat, mnt.mnt / ("k" * 256)) == ("err", "ENAMETOOLONG")
    os.mkdir(mnt.mnt / ("k" * 255))
    assert os.listdir(mnt.mnt) == ["k" * 255]


def test_operations_at_mount_root(mnt, plain):
    """Files and directories created directly at depth 1 (each one an
    artifact) behave like in a plain directory."""
    def seq(root):
        out = []
        (root / "file-artifact").write_bytes(b"F" * 5000)
        os.mkdir(root / "dir-artifact")
        (root / "dir-artifact" / "in").write_bytes(b"in")
        os.symlink("dir-artifact", root / "link-artifact")
        out.append(sorted(os.listdir(root)))
        out.append(((root / "link-artifact" / "in").read_bytes(), os.stat(root / "file-artifact").st_size))
        os.rename(root / "file-artifact", root / "renamed")
        out.append(outcome(os.rmdir, root / "dir-artifact"))
        out.append(outcome(os.unlink, root / "renamed"))
        out.append(sorted(os.listdir(root)))
        return out

    want = seq(plain)
    got = seq(mnt.mnt)
    assert got == want
    assert want[0] == ["dir-artifact", "file-artifact", "link-artifact"]
    assert want[2] == ("err", "ENOTEMPTY") and want[4] == ["dir-artifact", "link-artifact"]


def test_mount_root_stat(mnt):
    st = os.stat(mnt.mnt)
    assert stat.S_ISDIR(st.st_mode)
    assert st.st_uid == os.stat(mnt.data).st_uid
    assert stat.S_IMODE(st.st_mode) == stat.S_IMODE(os.stat(mnt.data).st_mode)


def daemon_descriptors_of(m: harness.Mount, backing: Path) -> list[str]:
    """What the daemon's descriptors naming `backing` point at."""
    found = []
    for fd in os.listdir(f"/proc/{m.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{m.pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith(str(backing)):
            found.append(target)
    return found


def test_read_only_handles_share_a_description_and_free_deleted_files(mnt):
    # Read-only opens of a file share one cached read-only description in
    # the daemon (each handle a dup of it). Reads carry their own offsets, so
    # handles reading at once never see each other's positions; a write
    # through another handle is seen; and once the file is deleted the daemon
    # holds no descriptor of it, so its space is freed.
    art = mnt.mnt / "art"
    art.mkdir()
    content = os.urandom(1 << 20)
    (art / "f").write_bytes(content)
    handles = [os.open(art / "f", os.O_RDONLY) for _ in range(3)]
    try:
        os.posix_fadvise(handles[0], 0, 0, os.POSIX_FADV_DONTNEED)  # reads must reach the daemon
        chunk = 64 << 10
        got = [bytearray() for _ in handles]
        for step in range(len(content) // chunk):  # interleaved sequential reads
            for i, fd in enumerate(handles):
                got[i] += os.read(fd, chunk)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert all(bytes(g) == content for g in got)
        assert os.pread(handles[1], 10, 1000) == content[1000:1010]

        w = os.open(art / "f", os.O_WRONLY)
        os.pwrite(w, b"fresh", 4096)
        os.close(w)
        os.posix_fadvise(handles[2], 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(handles[2], 5, 4096) == b"fresh"
        # An O_DIRECT reader (its own description) reads the same bytes.
        d = os.open(art / "f", os.O_RDONLY | os.O_DIRECT)
        try:
            buf = mmap.mmap(-1, 8192)
            assert os.preadv(d, [buf], 0) == 8192
            assert bytes(buf[4096:4101]) == b"fresh"
        finally:
            os.close(d)
    finally:
        for fd in handles:
            os.close(fd)
    assert daemon_descriptors_of(mnt, mnt.data / "art" / "f"), "the daemon keeps a description of a file read lately"
    os.unlink(art / "f")
    harness.wait_until(lambda: not daemon_descriptors_of(mnt, mnt.data / "art" / "f"), 10, 0.1,
                       what="the daemon to close every descriptor of the deleted file")
