"""The shell tools users run on a cache: cp -a, tar, rsync, git, find, du.
Each is run into the mount and into a plain directory, and the resulting
trees are compared (names, types, modes, owners, sizes, contents, symlink
targets, hard-link structure, user xattrs)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import harness
from harness import assert_same_tree, check, run


def need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"tool(s) not installed: {', '.join(missing)} (CI installs git rsync tar attr)")


@pytest.fixture
def src(base):
    return harness.make_realistic_tree(base / "src")


def test_cp_a(mnt, plain, src):
    need("cp")
    check(["cp", "-a", src, mnt.mnt / "art"])
    check(["cp", "-a", src, plain / "art"])
    assert_same_tree(plain / "art", mnt.mnt / "art", mtimes=True)
    assert_same_tree(src, mnt.mnt / "art", mtimes=True)
    # What the mount shows is what the store holds.
    assert_same_tree(mnt.data / "art", mnt.mnt / "art", mtimes=True)
    # Hard links in the source are still hard links through the mount.
    a = os.stat(mnt.mnt / "art" / "share" / "doc" / "README")
    b = os.stat(mnt.mnt / "art" / "bin" / "README.again")
    assert a.st_ino == b.st_ino and a.st_nlink == 3


def test_cp_a_out_of_the_mount(mnt, plain, src):
    need("cp")
    check(["cp", "-a", src, mnt.mnt / "art"])
    check(["cp", "-a", mnt.mnt / "art", plain / "back"])
    assert_same_tree(src, plain / "back", mtimes=True)


def test_tar_round_trip(mnt, plain, src):
    need("tar")
    flags = ["--xattrs", "--xattrs-include=user.*", "--numeric-owner"]
    # Archive written into the mount, extracted into the mount and the twin.
    check(["tar", *flags, "-C", src, "-cf", mnt.mnt / "bundle.tar", "."])
    check(["tar", *flags, "-C", src, "-cf", plain / "bundle.tar", "."])
    listing_m = check(["tar", "--numeric-owner", "-tvf", mnt.mnt / "bundle.tar"])
    listing_p = check(["tar", "--numeric-owner", "-tvf", plain / "bundle.tar"])
    assert listing_m == listing_p
    for root in (mnt.mnt, plain):
        (root / "x").mkdir()
        check(["tar", *flags, "-C", root / "x", "-xpf", mnt.mnt / "bundle.tar"])
    assert_same_tree(plain / "x", mnt.mnt / "x", mtimes=True)
    assert_same_tree(src, mnt.mnt / "x", mtimes=True)
    # Archive of the mounted tree, extracted elsewhere, equals the source.
    check(["tar", *flags, "-C", mnt.mnt / "x", "-cf", plain / "from-mount.tar", "."])
    (plain / "y").mkdir()
    check(["tar", *flags, "-C", plain / "y", "-xpf", plain / "from-mount.tar"])
    assert_same_tree(src, plain / "y", mtimes=True)


def test_rsync_aHX_into_artifact_root(mnt, plain, src):
    """Publishing an artifact with `rsync -aHX SRC/ MNT/KEY/`: rsync makes
    the xattrs of KEY itself equal to SRC's, so it meets the artifact facts."""
    need("rsync")
    r = run(["rsync", "-aHX", f"{src}/", f"{mnt.mnt / 'key'}/"])
    assert r.returncode == 0, f"rsync -aHX into the artifact root exited {r.returncode}:\n{r.stderr}"
    assert_same_tree(src, mnt.mnt / "key", mtimes=True)
    r = run(["rsync", "-aHX", "--itemize-changes", f"{src}/", f"{mnt.mnt / 'key'}/"])
    assert r.returncode == 0 and r.stdout.strip() == "", f"second rsync: {r.stdout}{r.stderr}"


def test_rsync_aHX(mnt, plain, src):
    need("rsync")
    # into a directory inside an artifact (see the test above for the root)
    (mnt.mnt / "art").mkdir()
    (plain / "art").mkdir()
    mnt_r, plain_r = mnt.mnt / "art" / "r", plain / "art" / "r"
    check(["rsync", "-aHX", f"{src}/", f"{mnt_r}/"])
    check(["rsync", "-aHX", f"{src}/", f"{plain_r}/"])
    assert_same_tree(plain_r, mnt_r, mtimes=True)
    assert_same_tree(src, mnt_r, mtimes=True)
    # A second run finds nothing to do, even comparing checksums.
    again = check(["rsync", "-aHX", "--checksum", "--itemize-changes", f"{src}/", f"{mnt_r}/"])
    assert again.strip() == "", f"second rsync still transferred:\n{again}"
    # Changes propagate: modify the source, sync, compare.
    (src / "lib" / "pkg" / "mod03.py").write_bytes(b"changed")
    os.unlink(src / "secret")
    check(["rsync", "-aHX", "--delete", f"{src}/", f"{mnt_r}/"])
    assert_same_tree(src, mnt_r, mtimes=True)
    # And out of the mount again.
    check(["rsync", "-aHX", f"{mnt_r}/", f"{plain / 'back'}/"])
    assert_same_tree(src, plain / "back", mtimes=True)


def _git(args, cwd, home):
    env = dict(os.environ, HOME=str(home), GIT_CONFIG_NOSYSTEM="1", LC_ALL="C",
               GIT_AUTHOR_DATE="2020-01-01T00:00:00Z", GIT_COMMITTER_DATE="2020-01-01T00:00:00Z")
    return check(["git", *args], cwd=cwd, env=env)


def test_git(mnt, plain, base):
    need("git")
    home = base / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Test\n\temail = t@example.com\n"
                                     "[init]\n\tdefaultBranch = main\n")
    heads = {}
    for root in (plain, mnt.mnt):
        repo = root / "repo"
        repo.mkdir()
        _git(["init", "-q"], repo, home)
        (repo / "src").mkdir()
        for i in range(30):
            (repo / "src" / f"f{i}.c").write_text(f"int f{i}(void) {{ return {i}; }}\n" * (i + 1))
        os.symlink("src/f1.c", repo / "link")
        (repo / "run.sh").write_text("#!/bin/sh\necho hi\n")
        os.chmod(repo / "run.sh", 0o755)
        _git(["add", "-A"], repo, home)
        _git(["commit", "-q", "-m", "first"], repo, home)
        (repo / "src" / "f0.c").write_text("changed\n")
        os.unlink(repo / "src" / "f29.c")
        _git(["commit", "-q", "-a", "-m", "second"], repo, home)
        _git(["gc", "-q"], repo, home)  # packs, prunes, renames and deletes
        heads[root] = (_git(["log", "--format=%H %s"], repo, home),
                       _git(["status", "--porcelain"], repo, home))
        _git(["fsck", "--strict", "--no-progress"], repo, home)
        # Local clone (hard-links objects when on the same file system).
        _git(["clone", "-q", str(repo), str(root / "clone")], root, home)
        _git(["fsck", "--strict", "--no-progress"], root / "clone", home)
        assert _git(["log", "--format=%H"], root / "clone", home) == \
            _git(["log", "--format=%H"], repo, home)
    assert heads[plain] == heads[mnt.mnt]
    log, status = heads[mnt.mnt]
    assert [ln.split(" ", 1)[1] for ln in log.splitlines()] == ["second", "first"]
    assert status == ""
    # Clone out of the mount into a plain directory.
    _git(["clone", "-q", "--no-hardlinks", str(mnt.mnt / "repo"), str(plain / "out")], plain, home)
    for rel in ("src/f0.c", "src/f5.c", "run.sh"):
        assert (plain / "out" / rel).read_bytes() == (mnt.mnt / "clone" / rel).read_bytes()
    assert os.readlink(plain / "out" / "link") == "src/f1.c"
    assert os.stat(mnt.mnt / "clone" / "run.sh").st_mode & 0o111
    assert not (mnt.mnt / "clone" / "src" / "f29.c").exists()


FIND_FMT = "%P|%y|%m|%s|%n|%U|%G|%l|%T@\n"


def test_find_and_du(mnt, plain, src):
    need("find", "du")
    check(["cp", "-a", src, mnt.mnt / "art"])
    check(["cp", "-a", src, plain / "art"])
    fm = sorted(check(["find", mnt.mnt / "art", "-printf", FIND_FMT]).splitlines())
    fp = sorted(check(["find", plain / "art", "-printf", FIND_FMT]).splitlines())
    assert fm == fp
    assert len(fm) > 40
    for expr in (["-type", "l"], ["-links", "+1", "-type", "f"], ["-perm", "-4000"],
                 ["-perm", "-2000"], ["-size", "+100k"], ["-empty"], ["-newer", "bin/tool"]):
        a = sorted(check(["find", ".", *expr], cwd=mnt.mnt / "art").splitlines())
        b = sorted(check(["find", ".", *expr], cwd=plain / "art").splitlines())
        assert a == b, f"find {' '.join(expr)}: {a} != {b}"
    # du through the mount equals du of the backing store (same inodes), and
    # the apparent sizes equal the twin's.
    dm = check(["du", "-a", "--block-size=1", "."], cwd=mnt.mnt / "art")
    ds = check(["du", "-a", "--block-size=1", "."], cwd=mnt.data / "art")
    assert dm == ds
    am = check(["du", "-ab", "."], cwd=mnt.mnt / "art")
    ap = check(["du", "-ab", "."], cwd=plain / "art")
    assert am == ap
    assert harness.du_disk(mnt.mnt / "art") == harness.du_disk(plain / "art")
