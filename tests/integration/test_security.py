"""Security of a shared artifactfs mount.

Threat model. The daemon runs as root and mounts with allow_other and
default_permissions, so every user of the machine (and an NFS server acting
for remote users) reaches the cache through the mount. The kernel checks
permissions against the attributes the daemon reports, but whatever the
daemon itself does in STORE it does as root. An unprivileged user (here
`nobody`, uid 65534, run with `setpriv`) must not be able to turn that into
root's power outside the store:

- by making the daemon open, create or truncate through a symlink: a
  symlink planted in the data tree behind a negative entry the kernel cached
  (the kernel then sends CREATE for the name and only the daemon sees the
  symlink), a symlink swapped in for a namespace directory just before its
  artifact is evicted, a symlink as an artifact root that is then evicted;
- by hard-linking files they cannot read (the same answer as a local disk
  with fs.protected_hardlinks);
- by entries that belong to root, even for an instant, or get modes and
  groups a local disk would not give them (the daemon acts with the caller's
  fsuid, fsgid, groups and umask; setgid directories work as on a local disk);
- by entering the store directly: STORE is private to the daemon's user
  (0700, index files 0600), and a store someone else can enter or owns is
  refused at every mount;
- by pinning artifacts (user.artifactfs.pinned) without being root, the
  store's owner or a member of `control.group`, whatever the file's mode;
- by exhausting the daemon: creating and deleting many files must not grow
  its memory, and a very deep tree (deeper than the descriptor limit) must
  not break reconcile after a crash, a cross-artifact rename, or eviction.

Every attack runs against a real mount, checks that its target outside the
store is untouched, and checks that the mount still works afterwards.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import harness
from harness import NOBODY, as_user, assert_accounting, check, wait_until

USERS_GID = 100  # the `users` group
KiB = 1024
MiB = 1024 * KiB
FLUSH = "index.flush-interval=100ms"
SETTLE = 30.0
PRECIOUS = b"root's precious data\n"
PIN = "user.artifactfs.pinned"

needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None,
                                   reason="setpriv (util-linux) is needed to act as an unprivileged user")


# --------------------------------------------------------------------------
# helpers


def python_for_others() -> str:
    """An interpreter an unprivileged user can execute (pytest may run from a
    python below root's private home)."""
    for p in ("/usr/bin/python3", sys.executable):
        if p and os.access(p, os.X_OK) and not p.startswith("/root/"):
            return p
    return sys.executable


_PRELUDE = """\
import errno, json, os, sys
os.umask({umask:#o})
A = sys.argv[1:]
out = {{}}
def attempt(key, fn, *a, **kw):
    try:
        v = fn(*a, **kw)
        out[key] = ["ok", v if isinstance(v, (int, str, bool, type(None))) else repr(v)]
    except OSError as e:
        out[key] = ["err", errno.errorcode.get(e.errno, str(e.errno))]
    return out[key]
"""


def run_py_as(code: str, *args, groups: list[int] | None = None, umask: int = 0o022,
              uid: int = NOBODY, gid: int = NOBODY, timeout: float = 120) -> dict:
    """Runs python code as another user (nobody by default). The code fills
    the dict `out` (usually through attempt(key, fn, ...), which records
    ["ok", value] or ["err", "ENOENT"]); `out` comes back parsed."""
    src = _PRELUDE.format(umask=umask) + textwrap.dedent(code) + "\nprint(json.dumps(out))\n"
    argv = as_user([python_for_others(), "-c", src, *map(str, args)], uid=uid, gid=gid, groups=groups)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"script as uid {uid} failed ({r.returncode}):\n{r.stderr}\n{src}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_as(argv, groups: list[int] | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(as_user(argv, groups=groups), capture_output=True, text=True,
                          timeout=kw.pop("timeout", 60), **kw)


def share(m: harness.Mount) -> None:
    """What an operator sharing the cache does: the mount root starts 0700
    (like STORE/data), so open it to everyone, sticky, through the mount."""
    os.chmod(m.mnt, 0o1777)
    assert stat.S_IMODE(os.stat(m.mnt).st_mode) == 0o1777


def file_state(p: Path) -> tuple:
    st = os.lstat(p)
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_nlink,
            p.read_bytes() if stat.S_ISREG(st.st_mode) else None)


def make_target(p: Path, data: bytes = PRECIOUS, mode: int = 0o600) -> tuple:
    """A root-owned file outside the store; returns its state to compare with later."""
    p.write_bytes(data)
    os.chown(p, 0, 0)
    os.chmod(p, mode)
    return file_state(p)


def assert_mount_works(m: harness.Mount, key: str, *, as_nobody: bool = False) -> None:
    """The daemon is alive and serving: a new artifact is created, written,
    read back and listed (by nobody too if asked, through a shared root)."""
    assert m.running, f"daemon died:\n{m.stderr_text()}"
    assert harness.is_fuse_mounted(m.mnt)
    os.statvfs(m.mnt)
    if as_nobody:
        res = run_py_as("""
            d = os.path.join(A[0], A[1])
            attempt("mkdir", os.mkdir, d)
            def write():
                with open(os.path.join(d, "f"), "wb") as f:
                    f.write(b"still works\\n")
            attempt("write", write)
            attempt("read", lambda: open(os.path.join(d, "f"), "rb").read().decode())
            """, m.mnt, key)
        assert res == {"mkdir": ["ok", None], "write": ["ok", None], "read": ["ok", "still works\n"]}, res
    else:
        (m.mnt / key).mkdir(parents=True)
        (m.mnt / key / "f").write_bytes(b"still works\n")
        assert (m.mnt / key / "f").read_bytes() == b"still works\n"
    assert key.split("/")[0] in os.listdir(m.mnt)


def write_config(path: Path, **quota) -> None:
    lines = ["quota:"] + [f"  {k}: {v}" for k, v in quota.items()]
    tmp = path.with_suffix(".new")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


QUOTA_OFF = {"max-size": "100G", "min-free": "0", "low-watermark": "0.5", "min-age": "0s",
             "check-interval": "200ms"}


def quota_mount(mount_factory, base: Path, depth: int = 1, start: bool = True) -> tuple[harness.Mount, Path]:
    """A mount whose quota is effectively off until shrink_quota()."""
    cfg = base / "artifactfs.yaml"
    write_config(cfg, **QUOTA_OFF)
    return mount_factory("m", depth=depth, config=cfg, sets=[FLUSH], start=start), cfg


def shrink_quota(m: harness.Mount, cfg: Path, size: str = "16K") -> None:
    """The quota thread evicts (least recently used first) down to half of `size`."""
    write_config(cfg, **{**QUOTA_OFF, "max-size": size})
    os.kill(m.pid, signal.SIGHUP)


def root_int(m: harness.Mount, name: str) -> int:
    return int(os.getxattr(str(m.mnt), harness.XATTR_PREFIX + name))


def trash_entries(m: harness.Mount) -> list[str]:
    try:
        return os.listdir(m.store / "trash")
    except FileNotFoundError:
        return []


def rm_rf(*paths) -> None:
    """Removes trees of any depth (shutil.rmtree recurses and fails far
    below PATH_MAX); GNU rm walks them with a bounded number of descriptors."""
    existing = [str(p) for p in paths if os.path.lexists(p)]
    if existing:
        subprocess.run(["rm", "-rf", "--one-file-system", *existing], timeout=600,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --------------------------------------------------------------------------
# symlinks the daemon must not follow


@needs_setpriv
@pytest.mark.parametrize("flag", ["O_TRUNC", "O_WRONLY", "O_APPEND"])
def test_negative_entry_symlink_is_not_followed_on_create(mnt, base, flag):
    """nobody makes the kernel cache a negative entry for d/x, a symlink
    d/x -> root's file appears in the data tree, and nobody then creates d/x
    through the mount: the kernel sends CREATE, and only the daemon sees the
    symlink. It must neither follow it nor act as root."""
    target = base / "target"
    before = make_target(target)
    share(mnt)

    res = run_py_as("""
        attempt("mkdir", os.mkdir, os.path.join(A[0], "d"))
        attempt("stat", os.stat, os.path.join(A[0], "d", "x"))
        # straight into the store, bypassing the mount: must be impossible
        attempt("plant", os.symlink, A[2], os.path.join(A[1], "d", "x"))
        """, mnt.mnt, mnt.data, target)
    assert res["mkdir"] == ["ok", None]
    assert res["stat"] == ["err", "ENOENT"]
    problems = []
    if res["plant"] != ["err", "EACCES"]:
        problems.append(f"nobody could write into STORE/data directly ({res['plant']}): "
                        "the store must be private (0700)")
    # As if the store had been writable: root plants the symlink.
    if os.path.lexists(mnt.data / "d" / "x"):
        os.unlink(mnt.data / "d" / "x")
    os.symlink(target, mnt.data / "d" / "x")

    res = run_py_as(f"""
        def go():
            fd = os.open(os.path.join(A[0], "d", "x"), os.O_CREAT | os.O_WRONLY | os.{flag}, 0o644)
            try:
                return os.write(fd, b"pwned by nobody\\n")
            finally:
                os.close(fd)
        attempt("open", go)
        """, mnt.mnt)
    if file_state(target) != before:
        problems.append(f"the daemon wrote through the symlink (open: {res['open']}): "
                        f"{before} -> {file_state(target)}")
    elif res["open"][0] == "err" and res["open"][1] not in ("ELOOP", "EEXIST", "EACCES"):
        problems.append(f"unexpected error {res['open']}")
    if not os.path.islink(mnt.data / "d" / "x"):
        problems.append("the planted symlink was replaced")
    try:
        assert_mount_works(mnt, "after", as_nobody=True)
    except AssertionError as e:
        problems.append(f"the mount does not work afterwards: {e}")
    assert not problems, "\n".join(problems)
    assert file_state(target) == before


def test_symlink_swapped_for_namespace_before_eviction(mount_factory, base):
    """At depth 2 an artifact is ns/key. Its namespace directory ns is
    replaced in the data tree by a symlink to an outside directory that also
    holds a `key`; evicting ns/key must not move or delete the outside one:
    the daemon refuses and says so."""
    m, cfg = quota_mount(mount_factory, base, depth=2)
    (m.mnt / "ns" / "key").mkdir(parents=True)
    (m.mnt / "ns" / "key" / "f").write_bytes(os.urandom(64 * KiB))
    assert m.facts("ns/key")["files"] == 1

    victim = base / "outside"
    (victim / "key").mkdir(parents=True)
    before = make_target(victim / "key" / "file", mode=0o644)
    os.rename(m.data / "ns", base / "ns-aside")  # same file system
    os.symlink(victim, m.data / "ns")
    time.sleep(2.5)  # past the 2 s during which a just-written artifact is left alone

    ev0 = root_int(m, "stats.evictions")
    shrink_quota(m, cfg)

    def attempted():
        logged = [ln for ln in m.stderr_text().splitlines() if "ns/key" in ln and "evict" in ln.lower()]
        return logged or root_int(m, "stats.evictions") > ev0 or trash_entries(m)

    wait_until(attempted, SETTLE, 0.05, what="an eviction attempt of ns/key")
    time.sleep(1.0)  # let a started eviction finish emptying the trash
    wait_until(lambda: not trash_entries(m), SETTLE, 0.05, what="the trash to be emptied")

    assert (victim / "key").is_dir(), "the outside directory was evicted through the symlink"
    assert file_state(victim / "key" / "file") == before
    assert os.path.islink(m.data / "ns") and os.readlink(m.data / "ns") == str(victim)
    assert root_int(m, "stats.evictions") == ev0, "an eviction was counted through the symlink"
    log = [ln for ln in m.stderr_text().splitlines() if "ns/key" in ln and "evict" in ln.lower()]
    assert log, f"the refused eviction is not logged:\n{m.stderr_text()}"
    assert_mount_works(m, "ok/k")
    assert file_state(victim / "key" / "file") == before


@needs_setpriv
def test_symlink_as_artifact_root(mount_factory, base):
    """STORE/data/evil -> an outside directory, at depth 1. The mount shows a
    symlink (the kernel resolves it on the client side, with the client's
    rights), never a directory the daemon serves as root; evicting it removes
    the symlink only."""
    m, cfg = quota_mount(mount_factory, base, depth=1)
    share(m)
    outside = base / "outside"
    outside.mkdir()
    os.chmod(outside, 0o755)
    secret = make_target(outside / "secret", b"secret\n", 0o600)
    public = make_target(outside / "public", b"public\n", 0o644)
    os.symlink(outside, m.data / "evil")

    st = os.lstat(m.mnt / "evil")  # the daemon meets (and indexes) the unknown artifact
    assert stat.S_ISLNK(st.st_mode), f"MOUNT/evil is not a symlink: {stat.filemode(st.st_mode)}"
    assert os.readlink(m.mnt / "evil") == str(outside)
    time.sleep(0.3)
    # a newer artifact that puts the store over the quota: evil, the least
    # recently used, goes first
    (m.mnt / "big").mkdir()
    (m.mnt / "big" / "f").write_bytes(os.urandom(256 * KiB))
    res = run_py_as("""
        attempt("secret", lambda: open(os.path.join(A[0], "evil", "secret"), "rb").read().decode())
        attempt("public", lambda: open(os.path.join(A[0], "evil", "public"), "rb").read().decode())
        attempt("create", lambda: open(os.path.join(A[0], "evil", "new"), "xb").close())
        attempt("unlink", os.unlink, os.path.join(A[0], "evil", "public"))
        """, m.mnt)
    assert res == {"secret": ["err", "EACCES"], "public": ["ok", "public\n"],
                   "create": ["err", "EACCES"], "unlink": ["err", "EACCES"]}, res
    assert not (outside / "new").exists()

    time.sleep(2.5)  # past the write grace of "big"
    shrink_quota(m, cfg, "64K")
    wait_until(lambda: not os.path.lexists(m.data / "evil"), SETTLE, 0.05, what="evil to be evicted")
    wait_until(lambda: not trash_entries(m), SETTLE, 0.05, what="the trash to be emptied")
    assert file_state(outside / "secret") == secret
    assert file_state(outside / "public") == public
    assert sorted(os.listdir(outside)) == ["public", "secret"]
    assert harness.outcome(os.lstat, m.mnt / "evil") == ("err", "ENOENT")
    assert_mount_works(m, "after", as_nobody=True)


# --------------------------------------------------------------------------
# hard links


_LINK = """
    attempt("mkdir", os.mkdir, os.path.join(A[0], "b"))
    attempt("link", os.link, os.path.join(A[0], "a", "secret"), os.path.join(A[0], "b", "mine"))
    attempt("read", lambda: open(os.path.join(A[0], "b", "mine"), "rb").read().decode())
"""


@needs_setpriv
def test_hard_link_to_unreadable_file(mnt, plain):
    """nobody hard-links root's 0600 file into a directory of their own:
    the same outcome as on the local disk (EPERM with protected_hardlinks=1)."""
    protected = Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "1"
    share(mnt)
    os.chmod(plain, 0o1777)
    states = {}
    for root in (mnt.mnt, plain):
        (root / "a").mkdir()
        os.chmod(root / "a", 0o755)
        states[root] = make_target(root / "a" / "secret", b"secret\n", 0o600)
    on_mount = run_py_as(_LINK, mnt.mnt)
    on_disk = run_py_as(_LINK, plain)
    assert on_mount == on_disk, f"mount {on_mount} != local disk {on_disk}"
    if protected:
        assert on_mount["link"] == ["err", "EPERM"], on_mount
    for root in (mnt.mnt, plain):
        assert file_state(root / "a" / "secret") == states[root]
    assert file_state(mnt.data / "a" / "secret") == states[mnt.mnt]
    assert not os.path.lexists(mnt.data / "b" / "mine") or not protected
    assert_accounting(mnt)
    assert_mount_works(mnt, "after", as_nobody=True)


# --------------------------------------------------------------------------
# owners and modes of new entries


_CREATE_ALL = """
    j = lambda *p: os.path.join(A[0], *p)
    def create(name, mode):
        os.close(os.open(j(name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode))
    attempt("file", create, "file", 0o666)
    attempt("exe", create, "exe", 0o777)
    attempt("private", create, "private", 0o600)
    attempt("trunc", lambda: os.close(os.open(j("trunc"), os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o644)))
    attempt("dir", os.mkdir, j("dir"), 0o777)
    attempt("dir700", os.mkdir, j("dir700"), 0o700)
    attempt("inner", create, os.path.join("dir", "inner"), 0o666)
    attempt("fifo", os.mkfifo, j("fifo"), 0o666)
    attempt("sym", os.symlink, "file", j("sym"))
    attempt("hardlink", os.link, j("file"), j("hardlink"))
    attempt("tmp", create, "tmp", 0o640)
    attempt("rename", os.rename, j("tmp"), j("renamed"))
    attempt("chmod", os.chmod, j("private"), 0o640)
"""
_ENTRIES = ["file", "exe", "private", "trunc", "dir", "dir700", "dir/inner", "fifo", "sym",
            "hardlink", "renamed"]


def _owners(root: Path) -> dict:
    out = {}
    for rel in _ENTRIES:
        try:
            st = os.lstat(root / rel)
        except FileNotFoundError:
            out[rel] = None
            continue
        out[rel] = {"uid": st.st_uid, "gid": st.st_gid, "mode": stat.filemode(st.st_mode),
                    "nlink": st.st_nlink if not stat.S_ISDIR(st.st_mode) else None}
    return out


@needs_setpriv
@pytest.mark.parametrize("kind", ["normal", "setgid"])
def test_new_entries_owned_by_caller(mnt, plain, kind):
    """Every kind of new entry made by nobody with umask 002 has the same
    owner, group and mode as on the local disk, in a 0777 directory and in
    a setgid 2777 directory of root:users."""
    share(mnt)
    os.chmod(plain, 0o1777)
    dirs = []
    for root in (mnt.mnt, plain):
        d = root / kind
        d.mkdir()
        if kind == "setgid":
            os.chown(d, 0, USERS_GID)
            os.chmod(d, 0o2777)
        else:
            os.chmod(d, 0o777)
        dirs.append(d)
    on_mount = run_py_as(_CREATE_ALL, dirs[0], umask=0o002)
    on_disk = run_py_as(_CREATE_ALL, dirs[1], umask=0o002)
    assert on_mount == on_disk, f"outcomes differ: mount {on_mount} != local disk {on_disk}"
    assert all(v[0] == "ok" for v in on_disk.values()), on_disk
    got, want = _owners(dirs[0]), _owners(dirs[1])
    diff = {k: (got[k], want[k]) for k in _ENTRIES if got[k] != want[k]}
    assert not diff, "owners/modes differ (mount, local disk):\n  " + \
        "\n  ".join(f"{k}: {v}" for k, v in diff.items())
    # the backing entries too: the store holds what the mount shows
    assert _owners(mnt.data / kind) == want
    assert want["file"]["uid"] == NOBODY  # the comparison itself is meaningful
    assert want["dir"]["gid"] == (USERS_GID if kind == "setgid" else NOBODY)
    assert_accounting(mnt)
    assert_mount_works(mnt, "after", as_nobody=True)


# --------------------------------------------------------------------------
# pins


def _pin(m: harness.Mount, key: str, groups=None, remove: bool = False) -> subprocess.CompletedProcess:
    args = ["setfattr", "-x", PIN, m.mnt / key] if remove else ["setfattr", "-n", PIN, "-v", "1", m.mnt / key]
    return run_as(args, groups=groups)


def _pinned(m: harness.Mount, key: str) -> bytes:
    return os.getxattr(m.mnt / key, PIN)


def _two_open_artifacts(m: harness.Mount) -> list[str]:
    """`open`: root's, mode 0777; `mine`: nobody's own, mode 0777."""
    share(m)
    (m.mnt / "open").mkdir()
    os.chmod(m.mnt / "open", 0o777)
    res = run_py_as("""
        attempt("mkdir", os.mkdir, os.path.join(A[0], "mine"))
        attempt("chmod", os.chmod, os.path.join(A[0], "mine"), 0o777)
        """, m.mnt)
    assert res == {"mkdir": ["ok", None], "chmod": ["ok", None]}, res
    assert os.stat(m.mnt / "mine").st_uid == NOBODY
    return ["open", "mine"]


@needs_setpriv
def test_pin_refused_to_others(mount_factory):
    """Without control.group only root and the store's owner pin: nobody gets
    EPERM on an artifact of mode 0777, even one nobody owns, with or without
    the users group."""
    m = mount_factory("m", sets=[FLUSH])
    for key in _two_open_artifacts(m):
        for groups in (None, [USERS_GID]):
            r = _pin(m, key, groups)
            assert r.returncode != 0 and "Operation not permitted" in r.stderr, (key, groups, r)
            assert _pinned(m, key) == b"0"
        check(["setfattr", "-n", PIN, "-v", "1", m.mnt / key])  # root may
        assert _pinned(m, key) == b"1"
        r = _pin(m, key, remove=True)
        assert r.returncode != 0 and "Operation not permitted" in r.stderr, (key, r)
        assert _pinned(m, key) == b"1"
        assert m.facts(key)["pinned"] == 1
    assert_mount_works(m, "after", as_nobody=True)


@needs_setpriv
@pytest.mark.parametrize("group", ["users", str(USERS_GID)])
def test_pin_allowed_to_control_group(mount_factory, group):
    """With control.group set (a name or a gid), its members pin and unpin;
    nobody without the group still gets EPERM."""
    m = mount_factory("m", sets=[FLUSH, f"control.group={group}"])
    for key in _two_open_artifacts(m):
        r = _pin(m, key)
        assert r.returncode != 0 and "Operation not permitted" in r.stderr, (key, r)
        assert _pinned(m, key) == b"0"
        r = _pin(m, key, [USERS_GID])
        assert r.returncode == 0, (key, r)
        assert _pinned(m, key) == b"1"
        r = run_as(["getfattr", "--absolute-names", "-n", PIN, m.mnt / key])
        assert r.returncode == 0 and f'{PIN}="1"' in r.stdout, r
        r = _pin(m, key, remove=True)
        assert r.returncode != 0 and "Operation not permitted" in r.stderr, (key, r)
        assert _pinned(m, key) == b"1"
        r = _pin(m, key, [USERS_GID], remove=True)
        assert r.returncode == 0, (key, r)
        assert _pinned(m, key) == b"0"
    assert_mount_works(m, "after", as_nobody=True)


# --------------------------------------------------------------------------
# a private store


def _refused(m: harness.Mount) -> str:
    with pytest.raises(harness.DaemonFailed):
        m.start()
    assert m.last_exit == 1, f"exit status {m.last_exit}, expected 1:\n{m.stderr_text()}"
    assert not harness.is_fuse_mounted(m.mnt)
    text = m.stderr_text()
    assert str(m.store) in text, f"the message does not name the store {m.store}:\n{text}"
    assert "chmod 700" in text, f"the message does not say `chmod 700`:\n{text}"
    return text


@pytest.mark.parametrize("mode", [0o755, 0o770, 0o701], ids=lambda m: f"{m:04o}")
def test_store_open_to_others_is_refused(mount_factory, mode):
    """A store made by hand with group or world access is refused before
    anything is mounted, and again after it was used and opened up later."""
    m = mount_factory("m", start=False)
    m.store.mkdir()
    os.chmod(m.store, mode)
    _refused(m)
    assert stat.S_IMODE(os.stat(m.store).st_mode) == mode, "the daemon changed the mode itself"

    os.chmod(m.store, 0o700)
    m.start()
    (m.mnt / "k").mkdir()
    (m.mnt / "k" / "f").write_bytes(b"kept\n")
    assert m.unmount() == 0
    os.chmod(m.store, mode)
    _refused(m)
    os.chmod(m.store, 0o700)
    m.start()
    assert (m.mnt / "k" / "f").read_bytes() == b"kept\n"
    assert_accounting(m)


def test_store_owned_by_another_user_is_refused(mount_factory):
    m = mount_factory("m")
    (m.mnt / "k").mkdir()
    (m.mnt / "k" / "f").write_bytes(b"kept\n")
    assert m.unmount() == 0
    os.chmod(m.store, 0o700)  # only the owner is wrong
    os.chown(m.store, NOBODY, NOBODY)
    _refused(m)
    os.chown(m.store, 0, 0)
    m.start()
    assert (m.mnt / "k" / "f").read_bytes() == b"kept\n"
    assert_accounting(m)


@needs_setpriv
def test_store_is_private_after_first_mount(mount_factory):
    """Even started with umask 0, the daemon creates STORE, data, index and
    trash 0700 and every file of its own 0600 at most, all owned by it; the
    mount root (STORE/data) therefore starts 0700."""
    m = mount_factory("m", start=False, sets=[FLUSH])
    old = os.umask(0)
    try:
        m.start()
    finally:
        os.umask(old)
    (m.mnt / "k").mkdir()
    (m.mnt / "k" / "f").write_bytes(b"x")
    time.sleep(0.3)  # a flush has written the index

    def check_private():
        problems = []
        for p in (m.store, m.store / "data", m.store / "index", m.store / "trash"):
            st = os.lstat(p)
            if not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) != 0o700 or st.st_uid != os.geteuid():
                problems.append(f"{p}: {stat.filemode(st.st_mode)} uid {st.st_uid}")
        mdb = sorted((m.store / "index").glob("*.mdb"))
        if not mdb:
            problems.append("no LMDB files in STORE/index")
        for p in mdb:
            st = os.lstat(p)
            if stat.S_IMODE(st.st_mode) != 0o600 or st.st_uid != os.geteuid():
                problems.append(f"{p}: {stat.filemode(st.st_mode)} uid {st.st_uid}")
        for d in (m.store, m.store / "index"):
            for p in d.iterdir():
                st = os.lstat(p)
                if st.st_mode & 0o077 or st.st_uid != os.geteuid():
                    problems.append(f"{p}: {stat.filemode(st.st_mode)} uid {st.st_uid}")
        return problems

    p = check_private()
    assert not p, "the store is not private:\n  " + "\n  ".join(p)
    assert stat.S_IMODE(os.stat(m.mnt).st_mode) == 0o700
    r = run_as(["ls", m.mnt])
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    m.remount()
    p = check_private()
    assert not p, "the store is not private after a remount:\n  " + "\n  ".join(p)
    share(m)  # the data root changes through the mount, the rest stays private
    assert stat.S_IMODE(os.stat(m.store / "data").st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(m.store).st_mode) == 0o700
    assert_mount_works(m, "after", as_nobody=True)


# --------------------------------------------------------------------------
# bounded cost


DEPTH = 30_000


def _build_chain(top: Path, depth: int) -> None:
    """top/d/d/.../d (depth levels) with a file at the bottom, one level at a
    time relative to the previous level (the path is far over PATH_MAX)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for _ in range(depth):
            os.mkdir("d", 0o755, dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        leaf = os.open("leaf", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644, dir_fd=fd)
        try:
            os.write(leaf, b"bottom\n" * 1000)
        finally:
            os.close(leaf)
    finally:
        os.close(fd)


def _chain_depth(top: Path) -> int:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    n = 0
    try:
        while True:
            try:
                nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                return n
            os.close(fd)
            fd = nfd
            n += 1
    finally:
        os.close(fd)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_deep_tree_reconcile_rename_evict(mount_factory, base):
    """A 30,000-level tree (more levels than the descriptor hard limit) in an
    artifact: reconcile after kill -9, a rename of it into another artifact
    and its eviction all work, and the accounting equals du."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    m, cfg = quota_mount(mount_factory, base, depth=1)
    try:
        for key in ("deep", "other", "small"):
            (m.mnt / key).mkdir()
            (m.mnt / key / "top").write_bytes(key.encode() * 100)
        _build_chain(m.data / "deep", DEPTH)  # behind the daemon's back, as root
        m.kill9()
        t0 = time.monotonic()
        # A kill -9 alone re-walks only what changed through the mount; a tree
        # changed behind the daemon's back needs --rebuild-index, which walks
        # the whole tree (this chain included).
        m.start(["--rebuild-index"], timeout=300)
        reconcile_s = time.monotonic() - t0
        assert (m.mnt / "deep" / "top").read_bytes() == b"deep" * 100
        assert _chain_depth(m.data / "deep") == DEPTH
        facts = assert_accounting(m)
        assert facts["deep"]["files"] == 2
        assert _open_fds(m.pid) < min(hard, 20_000) // 2, \
            f"the daemon holds {_open_fds(m.pid)} descriptors after reconcile"

        # A cross-artifact rename moves the whole chain's usage.
        os.rename(m.mnt / "deep" / "d", m.mnt / "other" / "d")
        facts = assert_accounting(m)
        assert facts["deep"]["files"] == 1 and facts["other"]["files"] == 2
        assert _chain_depth(m.data / "other") == DEPTH

        # Evict everything but the pinned artifacts.
        check(["setfattr", "-n", PIN, "-v", "1", m.mnt / "deep"])
        check(["setfattr", "-n", PIN, "-v", "1", m.mnt / "small"])
        time.sleep(2.5)  # past the write grace after the rename
        shrink_quota(m, cfg, "64K")
        wait_until(lambda: "other" not in os.listdir(m.mnt), SETTLE, 0.1, what="the deep artifact evicted")
        wait_until(lambda: not trash_entries(m), 300, 0.2, what="the trash to be emptied of the deep tree")
        assert not os.path.lexists(m.data / "other")
        assert sorted(os.listdir(m.mnt)) == ["deep", "small"]
        assert root_int(m, "stats.evictions") == 1
        assert m.running, f"daemon died:\n{m.stderr_text()}"
        assert_accounting(m, expect_keys=["deep", "small"])
        assert (m.mnt / "small" / "top").read_bytes() == b"small" * 100
        assert_mount_works(m, "after")
        print(f"reconcile of {DEPTH} levels took {reconcile_s:.1f}s")
    finally:
        m.close()
        rm_rf(m.store)  # deeper than shutil.rmtree (in remove_base) can go


def _vmrss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _churn(d: Path, prefix: str, n: int) -> None:
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    for i in range(n):
        p = f"{d}/{prefix}{i}"
        os.close(os.open(p, flags, 0o644))
        os.unlink(p)


def test_create_delete_churn_keeps_memory_bounded(mnt):
    """100,000 files created and deleted in one artifact (after 10,000 to
    grow the allocator's arenas) leave the daemon's RSS within 8 MiB."""
    d = mnt.mnt / "churn"
    d.mkdir()
    (d / "keep").write_bytes(b"k" * 5000)
    _churn(d, "warm-", 10_000)
    time.sleep(0.5)  # a flush of the access times
    rss0, fds0 = _vmrss(mnt.pid), _open_fds(mnt.pid)
    t0 = time.monotonic()
    _churn(d, "f-", 100_000)
    secs = time.monotonic() - t0
    time.sleep(0.5)
    rss1, fds1 = _vmrss(mnt.pid), _open_fds(mnt.pid)
    grown = rss1 - rss0
    assert grown < 8 * MiB, (f"RSS grew by {grown / MiB:.1f} MiB ({rss0 / MiB:.1f} -> {rss1 / MiB:.1f} MiB) "
                             f"over 100,000 creates and deletes ({secs:.0f}s); descriptors {fds0} -> {fds1}")
    assert os.listdir(d) == ["keep"]
    facts = assert_accounting(mnt)
    assert facts["churn"]["files"] == 1
    assert_mount_works(mnt, "after")
