"""Artifacts that span several entries: `layout.group-suffixes`.

A Yocto-style shared state cache keeps one artifact as `X.tar.zst` with
`X.tar.zst.siginfo` and `X.tar.zst.sig` beside it, in
`sstate-cache/ab/cd/` (here: depth 4 below the mount root). With the
suffixes configured, the three are one artifact: one record named by the
key (`.../sstate:X.tar.zst`), one last access, one pin, one size; evicted all
together or not at all, also when the daemon is killed in the middle of an
eviction.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

import harness
from harness import wait_until

KiB = 1024
SUFFIXES = [".siginfo", ".sig"]
DEPTH = 4
DIR = "sstate-cache/ab/cd"
SETTLE = 30.0


def write_config(path: Path, max_size: str) -> None:
    path.write_text(
        "layout:\n"
        f"  depth: {DEPTH}\n"
        "  group-suffixes: [\".siginfo\", \".sig\"]\n"
        # atime-precision 0: the ls -lut checks want every flushed access shown.
        "index:\n  flush-interval: 100ms\n  atime-precision: 0\n"
        "quota:\n"
        f"  max-size: {max_size}\n  min-free: 0\n  low-watermark: 0.5\n  min-age: 0s\n"
        "  check-interval: 200ms\n")


@pytest.fixture
def cfg(base) -> Path:
    p = base / "artifactfs.yaml"
    write_config(p, "unlimited")
    return p


@pytest.fixture
def sstate(mount_factory, cfg):
    m = mount_factory("m", config=cfg)
    (m.mnt / DIR).mkdir(parents=True)
    return m


def key_name(i: int) -> str:
    return f"sstate:pkg{i:04}:core2-64-poky-linux:1.0:r0:core2-64:11:{i:064x}_package.tar.zst"


def members(key: str) -> list[str]:
    return [key, key + ".siginfo", key + ".sig"]


def write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def publish_group(d: Path, key: str, rnd: random.Random, siginfo_first: bool = False) -> None:
    """As BitBake's sstate does it: the archive through a temporary name,
    renamed into place; siginfo and signature beside it."""
    if siginfo_first:
        write(d / (key + ".siginfo"), rnd.randbytes(rnd.randint(1, 6) * KiB))
    tmp = d / (key + f".{rnd.randrange(16**8):08x}")
    write(tmp, rnd.randbytes(rnd.randint(8, 40) * KiB))
    os.rename(tmp, d / key)
    if not siginfo_first:
        write(d / (key + ".siginfo"), rnd.randbytes(rnd.randint(1, 6) * KiB))
    write(d / (key + ".sig"), rnd.randbytes(600))


def publish_groups(m: harness.Mount, count: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    keys = [key_name(i) for i in range(count)]
    for k in keys:
        publish_group(m.mnt / DIR, k, rnd)
    return keys


def group_keys_on_disk(m: harness.Mount) -> dict[str, list[str]]:
    """Key -> members present in STORE/data, by the suffix rule."""
    out: dict[str, list[str]] = {}
    for name in sorted(os.listdir(m.data / DIR)):
        key = name
        for s in sorted(SUFFIXES, key=len, reverse=True):
            if name.endswith(s) and len(name) > len(s):
                key = name[:-len(s)]
                break
        out.setdefault(key, []).append(name)
    return out


def assert_groups_accounted(m: harness.Mount) -> dict[str, dict]:
    """Every member's facts describe its whole group (du of all members);
    the root counts one artifact per group and totals equal du of the data."""
    groups = group_keys_on_disk(m)
    problems = []
    facts_by_key = {}
    for key, names in groups.items():
        paths = [m.data / DIR / n for n in names]
        want = {"disk_bytes": sum(harness.du_disk(p) for p in paths),
                "apparent_bytes": sum(harness.du_apparent(p) for p in paths),
                "files": len(paths)}
        seen = []
        for n in names:
            f = m.facts(f"{DIR}/{n}")
            seen.append(f)
            got = {k: f[k] for k in want}
            if got != want:
                problems.append(f"{n}: {got} != du of its group {want}")
            k = os.getxattr(m.mnt / DIR / n, "user.artifactfs.key").decode()
            if k != f"{DIR}/{key}":
                problems.append(f"{n}: key {k!r}, want {DIR}/{key!r}")
        if any(s != seen[0] for s in seen):
            problems.append(f"{key}: members report different facts: {seen}")
        facts_by_key[key] = seen[0]
    tot = m.totals()
    want_tot = {"total.artifacts": len(groups), "total.disk_bytes": harness.du_disk(m.data),
                "total.files": harness.count_files(m.data)}
    got_tot = {k: tot[k] for k in want_tot}
    if got_tot != want_tot:
        problems.append(f"totals {got_tot} != {want_tot}")
    assert not problems, "group accounting differs from the data tree:\n  " + "\n  ".join(problems)
    return facts_by_key


def assert_whole(m: harness.Mount, expected: dict[str, int]) -> None:
    """Every group of `expected` (key -> member count) has all its members
    or none, on the mount and in the data tree alike."""
    partial = []
    for key, count in expected.items():
        on_mount = [n for n in members(key) if os.path.lexists(m.mnt / DIR / n)]
        on_disk = [n for n in members(key) if os.path.lexists(m.data / DIR / n)]
        if on_mount != on_disk:
            partial.append(f"{key}: mount shows {on_mount}, data tree has {on_disk}")
        elif len(on_disk) not in (0, count):
            partial.append(f"{key}: {len(on_disk)} of {count} members left: {on_disk}")
    assert not partial, "groups not evicted whole:\n  " + "\n  ".join(partial[:20])


def wait_cleanup_over(m: harness.Mount) -> None:
    """Until no eviction is under way: the count of evictions holds still
    for a while and nothing is staged or waiting in the trash."""
    last = [-1, time.monotonic()]

    def quiet():
        n = m.totals()["stats.evictions"]
        if n != last[0]:
            last[:] = [n, time.monotonic()]
            return False
        return (time.monotonic() - last[1] > 1.0 and not os.listdir(m.store / "evicting")
                and not os.listdir(m.store / "trash"))
    wait_until(quiet, SETTLE, 0.1, what="the cleanup to end")


def atimes(m: harness.Mount, key: str) -> list[int]:
    return [os.stat(m.mnt / DIR / n).st_atime_ns for n in members(key)]


# --------------------------------------------------------------------------


def test_members_are_one_artifact(sstate):
    m = sstate
    d = m.mnt / DIR
    rnd = random.Random(1)
    keys = [key_name(i) for i in range(4)]
    publish_group(d, keys[0], rnd)
    publish_group(d, keys[1], rnd, siginfo_first=True)  # a member created before its base
    publish_group(d, keys[2], rnd)
    write(d / keys[3], rnd.randbytes(4 * KiB))  # a group of one, for now
    # a name that is not a member: another suffix
    write(d / (keys[3] + ".done"), b"x")
    facts = assert_groups_accounted(m)
    assert m.totals()["total.artifacts"] == 5
    assert facts[keys[1]]["files"] == 3

    # One last access: a read of one member is a use of the group, and every
    # member shows it as st_atime (ls -lut).
    time.sleep(0.01)
    before = m.facts(f"{DIR}/{keys[0]}")
    t0 = time.time_ns()
    (d / (keys[0] + ".siginfo")).read_bytes()
    after = m.facts(f"{DIR}/{keys[0]}.sig")
    assert after["last_access"] >= t0 and after["access_count"] > before["access_count"]
    wait_until(lambda: set(atimes(m, keys[0])) == {m.facts(f"{DIR}/{keys[0]}")["last_access"]}, 5.0,
               what="every member's st_atime to equal the group's last access")
    out = harness.check(["ls", "-lut", "--time-style=+%s.%N", d]).splitlines()
    stamps = {ln.split()[-1]: ln.split()[-2] for ln in out[1:]}
    assert len({stamps[n] for n in members(keys[0])}) == 1, stamps
    # most recently used first: the group just read leads the listing
    assert harness.check(["ls", "-1ut", d]).split()[0] in members(keys[0])

    # One pin, set and read through any member.
    os.setxattr(d / (keys[2] + ".sig"), "user.artifactfs.pinned", b"1")
    assert all(m.facts(f"{DIR}/{n}")["pinned"] == 1 for n in members(keys[2]))
    os.removexattr(d / keys[2], "user.artifactfs.pinned")
    assert m.facts(f"{DIR}/{keys[2]}.siginfo")["pinned"] == 0

    # Removing a member leaves the rest; the last one takes the record along.
    created = m.facts(f"{DIR}/{keys[2]}")["created"]
    os.unlink(d / (keys[2] + ".sig"))
    assert m.facts(f"{DIR}/{keys[2]}")["files"] == 2
    assert m.facts(f"{DIR}/{keys[2]}")["created"] == created, "the group lost its identity"
    os.unlink(d / keys[2])
    os.unlink(d / (keys[2] + ".siginfo"))
    assert m.totals()["total.artifacts"] == 4

    # A member renamed to another key moves to that group; renamed between
    # suffixes of one key it stays.
    os.rename(d / (keys[1] + ".sig"), d / (keys[3] + ".sig"))
    assert m.facts(f"{DIR}/{keys[3]}")["files"] == 2
    assert m.facts(f"{DIR}/{keys[1]}")["files"] == 2
    os.rename(d / (keys[3] + ".sig"), d / (keys[3] + ".siginfo"))
    assert m.facts(f"{DIR}/{keys[3]}")["files"] == 2
    # exchange members of two groups
    harness.renameat2(d / (keys[0] + ".sig"), d / (keys[1] + ".siginfo"), harness.RENAME_EXCHANGE)
    assert_groups_accounted(m)

    # The same grouping after a clean remount (from the index) and after a
    # walk of the whole tree (a changed layout walks it, keeping history).
    snapshot = assert_groups_accounted(m)
    m.remount()
    assert assert_groups_accounted(m) == snapshot
    m.unmount()
    m.start(["--set", "layout.keep=[CACHEDIR.TAG]"])
    assert "reconciling index with data tree (the layout changed)" in m.stderr_text()
    rebuilt = assert_groups_accounted(m)
    for key, f in snapshot.items():
        assert rebuilt[key]["last_access"] == f["last_access"], f"{key}: access history lost by the walk"


def test_groups_are_evicted_whole_lru_first(sstate, cfg):
    m = sstate
    d = m.mnt / DIR
    keys = publish_groups(m, 40, seed=2)
    assert m.totals()["total.artifacts"] == len(keys)
    # Past the 2 s during which a just-written artifact counts as being
    # written (never evicted by a routine cleanup), the oldest ten are used
    # again, through their signature file only.
    time.sleep(2.5)
    recent = keys[:10]
    for k in recent:
        (d / (k + ".sig")).read_bytes()
    time.sleep(0.3)  # flushed: the quota orders by committed access times
    # Limit 70% of the usage, evicting down to half of that: about half the
    # groups go, and the ten used last (a quarter) fit in what is left.
    usage = m.totals()["total.disk_bytes"]
    limit = usage * 7 // 10
    write_config(cfg, str(limit))
    os.kill(m.pid, signal.SIGHUP)
    wait_until(lambda: m.totals()["total.disk_bytes"] <= limit and m.totals()["stats.evictions"] > 0,
               SETTLE, what="the cleanup to finish")
    wait_cleanup_over(m)
    assert_whole(m, {k: 3 for k in keys})
    left = [k for k in keys if (m.data / DIR / k).exists()]
    assert 0 < len(left) < len(keys)
    gone_recent = [k for k in recent if k not in left]
    assert not gone_recent, f"groups used last were evicted: {gone_recent}"
    assert m.totals()["stats.evictions"] == len(keys) - len(left), "evictions count groups, not entries"
    assert_groups_accounted(m)


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.05])
def test_kill9_mid_eviction_leaves_whole_groups(sstate, cfg, delay):
    m = sstate
    keys = publish_groups(m, 150, seed=3)
    time.sleep(0.3)
    write_config(cfg, "64K")
    os.kill(m.pid, signal.SIGHUP)
    wait_until(lambda: os.listdir(m.store / "evicting") or os.listdir(m.store / "trash")
               or m.totals()["stats.evictions"] > 0, SETTLE, 0.0005, what="the eviction to start")
    if delay:
        time.sleep(delay)
    m.kill9()
    staged = os.listdir(m.store / "evicting")
    # a staging with entries moved in, or one killed before its list was complete
    moving = [s for s in staged if set(os.listdir(m.store / "evicting" / s)) - {".members"}]
    left_before = len(group_keys_on_disk(m))
    write_config(cfg, "unlimited")
    m.start()
    assert not os.listdir(m.store / "evicting"), "a staged eviction was left after the mount"
    wait_until(lambda: not os.listdir(m.store / "trash"), SETTLE, what="the trash to be emptied")
    assert_whole(m, {k: 3 for k in keys})
    groups = assert_groups_accounted(m)
    # Killed before a first member moved, the staged eviction is undone.
    assert len(groups) < len(keys) or staged, "nothing was evicted before the kill"
    print(f"killed with {len(staged)} eviction(s) staged and {left_before} groups in the data tree; "
          f"{len(groups)} groups after the mount")
    if moving:
        assert "finished the eviction of" in m.stderr_text()
    elif staged:
        assert "undid an eviction" in m.stderr_text() or "finished the eviction of" in m.stderr_text()
