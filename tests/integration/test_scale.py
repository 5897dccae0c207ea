"""Eviction at scale (batched index writes): thousands of artifacts evicted
in one cleanup run, whose record removals, totals and statistics the eviction
walk commits one write transaction per batch (quota/eviction_walk.hpp), and
a kill -9 in the middle of such a run.

The stores are made directly in STORE/data before the first mount (fast), as
bench/scale.sh does: layout.depth 2, namespace directories of single-file
artifacts (ccache's shape), some of them hard links of each other across
artifacts, so that the trash deleters give usage back for inodes that
survive elsewhere. The first mount builds the index from the tree.

What is checked: the index equals du of STORE/data (harness.assert_accounting
for every artifact, or an in-process equivalent where thousands of artifacts
remain), the statistics count every eviction and every evicted byte, the mount
lists exactly the data tree, and the trash is emptied."""

from __future__ import annotations

import os
import random
import signal
import stat
import time
from pathlib import Path

import harness
from harness import wait_until

FLUSH = "index.flush-interval=200ms"
SETTLE = 60.0


def make_store(data: Path, namespaces: int, per_namespace: int, seed: int, hard_links: int = 0) -> list[str]:
    """namespaces x per_namespace single-file artifacts "nNN/fNNNN" of varied
    sizes, written directly into the data tree; `hard_links` of them are
    extra names (in other namespaces) of earlier artifacts' files. Returns
    the keys."""
    rnd = random.Random(seed)
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data.parent, 0o700)  # the daemon refuses a store others can enter
    keys = []
    blob = os.urandom(64 * 1024)
    for n in range(namespaces):
        d = data / f"n{n:02}"
        d.mkdir()
        for i in range(per_namespace):
            key = f"n{n:02}/f{i:04}"
            size = rnd.choice([0, 100, 3000, 4096, 5000, 9000, 20000, 64 * 1024])
            fd = os.open(data / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, blob[:size])
            os.close(fd)
            keys.append(key)
    for j in range(hard_links):
        src = keys[rnd.randrange(len(keys))]
        key = f"n{rnd.randrange(namespaces):02}/h{j:04}"
        os.link(data / src, data / key)
        keys.append(key)
    return keys


def write_config(path: Path, **quota) -> None:
    lines = ["layout:", "  depth: 2", "quota:"] + [f"  {k}: {v}" for k, v in quota.items()]
    tmp = path.with_suffix(".new")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def root_int(m: harness.Mount, name: str) -> int:
    return harness.xattr_int(m.mnt, name)


def trash_entries(m: harness.Mount) -> list[str]:
    try:
        return os.listdir(m.store / "trash")
    except FileNotFoundError:
        return []


def tree_usage(path: Path) -> dict:
    """What harness.expected_usage measures with du and find, in-process:
    st_blocks*512 and st_size of every inode below and including `path` once,
    and the non-directory inodes."""
    seen = set()
    usage = {"disk_bytes": 0, "apparent_bytes": 0, "files": 0}

    def add(st):
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            if st.st_ino in seen:
                return
            seen.add(st.st_ino)
        usage["disk_bytes"] += st.st_blocks * 512
        usage["apparent_bytes"] += st.st_size
        if not stat.S_ISDIR(st.st_mode):
            usage["files"] += 1

    st = os.lstat(path)
    add(st)
    if stat.S_ISDIR(st.st_mode):
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                add(os.lstat(Path(dirpath) / name))
    return usage


def assert_accounting_every_artifact(m: harness.Mount, depth: int = 2) -> int:
    """harness.assert_accounting for stores too large for a du per artifact:
    every artifact's facts against an in-process du (tree_usage, checked
    against du itself on a sample), the totals against du of STORE/data.
    Returns the number of artifacts."""
    keys = harness.artifact_keys(m.data, depth)
    problems = []
    for k in keys:
        want = tree_usage(m.data / k)
        got = {n: harness.xattr_int(m.mnt / k, n) for n in want}
        if got != want:
            problems.append(f"{k}: xattrs {got} != du {want}")
    for k in random.Random(1).sample(keys, min(20, len(keys))):
        assert tree_usage(m.data / k) == harness.expected_usage(m.data / k), k
    want_tot = {"total.disk_bytes": harness.du_disk(m.data), "total.apparent_bytes": harness.du_apparent(m.data),
                "total.files": harness.count_files(m.data), "total.artifacts": len(keys)}
    got_tot = {n: root_int(m, n) for n in want_tot}
    if got_tot != want_tot:
        problems.append(f"root totals {got_tot} != du/find of STORE/data {want_tot}")
    assert not problems, "accounting differs from the data tree:\n  " + "\n  ".join(problems[:30])
    return len(keys)


def test_thousands_evicted_in_one_run_are_counted_and_accounted(mount_factory, base):
    """3,300 artifacts (300 of them hard links across artifacts), a quota
    that leaves about a tenth: one cleanup run evicts thousands; afterwards
    the index equals du, and stats.evictions and stats.bytes_evicted count
    exactly the artifacts that went and what the index counted for them."""
    cfg = base / "artifactfs.yaml"
    settings = {"max-size": "unlimited", "min-free": "0", "low-watermark": "1.0", "min-age": "0s",
                "check-interval": "200ms"}
    write_config(cfg, **settings)
    m = mount_factory("m", start=False, config=cfg, sets=[FLUSH])
    keys = make_store(m.data, 30, 100, seed=7, hard_links=300)
    m.start()
    assert root_int(m, "total.artifacts") == len(keys)
    before = {k: harness.xattr_int(m.mnt / k, "disk_bytes") for k in keys}
    usage = root_int(m, "total.disk_bytes")
    s0 = {n: root_int(m, n) for n in ("stats.evictions", "stats.bytes_evicted", "stats.cleanup_runs")}
    assert s0["stats.evictions"] == 0

    write_config(cfg, **{**settings, "max-size": str(usage // 10)})
    os.kill(m.pid, signal.SIGHUP)
    wait_until(lambda: root_int(m, "total.disk_bytes") <= usage // 10 and not trash_entries(m), SETTLE, 0.05,
               what="the cleanup run and the trash deletion")
    time.sleep(0.5)  # a flush interval or two: nothing else happens
    left = set(harness.artifact_keys(m.data, 2))
    evicted = set(keys) - left
    assert len(evicted) > 2000, f"only {len(evicted)} evicted"
    assert sorted(os.listdir(m.mnt / "n00")) == sorted(k.split("/")[1] for k in left if k.startswith("n00/"))
    s1 = {n: root_int(m, n) for n in s0}
    assert s1["stats.evictions"] - s0["stats.evictions"] == len(evicted)
    assert s1["stats.bytes_evicted"] - s0["stats.bytes_evicted"] == sum(before[k] for k in evicted)
    assert s1["stats.cleanup_runs"] > s0["stats.cleanup_runs"]
    harness.assert_accounting(m, depth=2)

    # What the batches committed is what a clean remount reads back.
    m.remount()
    s2 = {n: root_int(m, n) for n in s0}
    assert s2 == s1
    assert set(harness.artifact_keys(m.data, 2)) == left
    assert root_int(m, "total.artifacts") == len(left)
    harness.assert_accounting(m, depth=2)


def test_kill9_in_the_middle_of_a_batched_eviction_run(mount_factory, base):
    """8,000 artifacts and a quota that takes nearly all of them; kill -9
    while the run is under way (some removals committed, some queued, some
    artifacts renamed into the trash whose removal was not yet committed).
    After the remount (crash recovery, then the trash), the index equals du,
    the mount lists exactly the data tree, and the trash is emptied."""
    cfg = base / "artifactfs.yaml"
    settings = {"max-size": "unlimited", "min-free": "0", "low-watermark": "1.0", "min-age": "0s",
                "check-interval": "200ms"}
    write_config(cfg, **settings)
    m = mount_factory("m", start=False, config=cfg, sets=[FLUSH])
    keys = make_store(m.data, 40, 200, seed=11, hard_links=200)
    m.start()
    assert root_int(m, "total.artifacts") == len(keys)

    write_config(cfg, **{**settings, "max-size": "64K"})
    os.kill(m.pid, signal.SIGHUP)
    # Well into the run: past the first batch commits.
    wait_until(lambda: root_int(m, "stats.evictions") >= 1500, SETTLE, 0.001, what="the run to be under way")
    m.kill9()
    in_trash = len(trash_entries(m))
    in_data = len(harness.artifact_keys(m.data, 2))
    assert 0 < in_data < len(keys), "the kill did not land in the middle of the run"

    write_config(cfg, **settings)  # no eviction after the restart
    m.start()
    wait_until(lambda: not trash_entries(m), SETTLE, 0.05, what="the trash to be emptied")
    visible = sorted(f"{ns}/{k}" for ns in os.listdir(m.mnt) for k in os.listdir(m.mnt / ns))
    on_disk = sorted(harness.artifact_keys(m.data, 2))
    assert visible == on_disk, "the mount and the data tree disagree"
    assert set(on_disk) <= set(keys)
    n = assert_accounting_every_artifact(m)
    assert n == in_data
    recovery = [line for line in m.stderr_text().splitlines()
                if "reconcil" in line or "recover" in line or "trash" in line]
    print(f"killed with {in_data} artifacts in data and {in_trash} in the trash; restart: {recovery}")
    # And the state the recovery committed is what a clean remount reads.
    m.remount()
    assert root_int(m, "total.artifacts") == in_data
    assert root_int(m, "total.disk_bytes") == harness.du_disk(m.data)
