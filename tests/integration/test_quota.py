"""Quota and least-recently-used expiry (issue 3): which artifacts the quota
thread evicts and which it must keep (a base runtime opened often, pinned,
open and recently opened artifacts), the watermarks, pins across remounts,
SIGHUP reloads (good and bad files), the ENOSPC path on a small tmpfs,
readers racing a continuous eviction, kill -9 in the middle of an eviction,
and the statistics on the mount root.

Sizes on disk are never guessed: where a test needs the limit to be crossed
at a known point, it first writes the same artifacts into a plain twin
directory on the same file system and measures them with du (the daemon's
accounting equals du of STORE/data, which test_accounting.py checks).
Asynchronous effects (evictions, trash deletion) are polled for with
generous timeouts; nothing here measures speed."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
import traceback
from pathlib import Path

import pytest

import harness
from harness import check, wait_until

KiB = 1024
MiB = 1024 * KiB
FLUSH = "index.flush-interval=100ms"
SETTLE = 30.0  # timeout for asynchronous effects: evictions, trash deletion
MANIFEST = "MANIFEST.json"


# --------------------------------------------------------------------------
# helpers


def quota_sets(max_size: str = "unlimited", *, min_free: str = "0", low: str = "0.5",
               min_age: str = "0s", interval: str = "200ms", extra: tuple = ()) -> list[str]:
    return [FLUSH, f"quota.max-size={max_size}", f"quota.min-free={min_free}",
            f"quota.low-watermark={low}", f"quota.min-age={min_age}",
            f"quota.check-interval={interval}", *extra]


def root_attr(m: harness.Mount, name: str) -> str:
    return os.getxattr(str(m.mnt), harness.XATTR_PREFIX + name).decode()


def root_int(m: harness.Mount, name: str) -> int:
    return int(root_attr(m, name))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_all(path: Path, data: bytes, chunk: int = 1 * MiB) -> None:
    """Writes with os.write so that an error (ENOSPC) surfaces as OSError at
    the write that failed, not at some later flush."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view[:chunk])
            view = view[n:]
    finally:
        os.close(fd)


def payload(sizes: dict[str, int], seed) -> dict[str, bytes]:
    rnd = random.Random(str(seed))
    return {name: rnd.randbytes(n) for name, n in sizes.items()}


def publish(root: Path, key: str, files: dict[str, bytes]) -> None:
    """The README's convention: write under a temporary name at the artifact
    depth, add a manifest (size and sha256 of every file), rename to KEY."""
    tmp = Path(root) / f".tmp-{key}"
    tmp.mkdir()
    manifest = {}
    for rel, data in files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        write_all(p, data)
        manifest[rel] = [len(data), sha(data)]
    write_all(tmp / MANIFEST, json.dumps(manifest, sort_keys=True).encode())
    os.rename(tmp, Path(root) / key)


def artifact_problems(root: Path) -> list[str]:
    """Everything wrong with an artifact against its manifest: missing
    manifest, missing or extra files, wrong sizes or contents."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_bytes())
    except (OSError, ValueError) as e:
        return [f"{root.name}: no readable manifest ({e!r})"]
    problems = []
    present = set()
    for dirpath, _, filenames in os.walk(root):
        for n in filenames:
            present.add(str((Path(dirpath) / n).relative_to(root)))
    present.discard(MANIFEST)
    if present != set(manifest):
        problems.append(f"{root.name}: files {sorted(present)} != manifest {sorted(manifest)}")
    for rel, (size, digest) in manifest.items():
        try:
            data = (root / rel).read_bytes()
        except OSError as e:
            problems.append(f"{root.name}/{rel}: {e!r}")
            continue
        if len(data) != size or sha(data) != digest:
            problems.append(f"{root.name}/{rel}: {len(data)} bytes sha {sha(data)[:12]}, "
                            f"expected {size} bytes sha {digest[:12]}")
    return problems


def assert_complete(root: Path) -> None:
    p = artifact_problems(root)
    assert not p, "artifact is not complete:\n  " + "\n  ".join(p)


def open_artifact(m: harness.Mount, key: str) -> None:
    """One use of an artifact: open and read a file of it."""
    (m.mnt / key / MANIFEST).read_bytes()
    time.sleep(0.005)  # distinct access times even on a coarse clock


def listing(m: harness.Mount) -> set[str]:
    return set(os.listdir(m.mnt))


def trash_entries(m: harness.Mount) -> list[str]:
    try:
        return os.listdir(m.store / "trash")
    except FileNotFoundError:
        return []


def wait_trash_empty(m: harness.Mount) -> None:
    wait_until(lambda: not trash_entries(m), SETTLE, 0.05, what=f"{m.store}/trash to be emptied")


def wait_evictions_settled(m: harness.Mount, quiet: float = 3.0) -> None:
    """Until no eviction happened for `quiet` seconds: longer than the 2 s
    during which a just-written artifact is left alone by cleanups, so a
    cleanup blocked on those has run too."""
    last = [root_int(m, "stats.evictions"), time.monotonic()]

    def settled():
        now = root_int(m, "stats.evictions")
        if now != last[0]:
            last[0], last[1] = now, time.monotonic()
        return time.monotonic() - last[1] >= quiet

    wait_until(settled, SETTLE + quiet, 0.1, what="evictions to settle")


def twin_sizes(twin: Path, arts: dict[str, dict[str, bytes]]) -> tuple[dict[str, int], int]:
    """Publishes the artifacts into a fresh plain directory on the same file
    system: (du of each artifact, du of the whole directory including its own
    block, like STORE/data)."""
    twin.mkdir()
    for key, files in arts.items():
        publish(twin, key, files)
    return {k: harness.du_disk(twin / k) for k in arts}, harness.du_disk(twin)


def lru_victims(order: list[str], sizes: dict[str, int], usage: int, target: int) -> list[str]:
    """The quota thread's walk: oldest first until usage <= target."""
    victims = []
    for k in order:
        if usage <= target:
            break
        victims.append(k)
        usage -= sizes[k]
    return victims


def gone(m: harness.Mount, key: str) -> bool:
    return harness.outcome(os.stat, m.mnt / key) == ("err", "ENOENT")


def write_config(path: Path, **quota) -> None:
    lines = ["quota:"] + [f"  {k}: {v}" for k, v in quota.items()]
    tmp = path.with_suffix(".new")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# LRU order and watermarks


def test_lru_base_runtime_survives_and_watermark_holds(mount_factory, base):
    """A base runtime published first but opened between every publication
    outlives newer artifacts nobody opened; the least recently opened go
    first, exactly down to the low watermark and no further."""
    newer = [f"n{i}" for i in range(1, 8)]
    arts = {"base": payload({"lib/runtime.so": 256 * KiB}, "base")}
    for k in newer:
        arts[k] = payload({"out.bin": 256 * KiB}, k)
    trigger = {"trigger": payload({"small": 8 * KiB}, "trigger")}
    sizes, u0 = twin_sizes(base / "twin", arts)
    tsizes, _ = twin_sizes(base / "twin-trigger", trigger)
    # The limit is crossed by the small trigger artifact only, at a point
    # where the victims are known exactly.
    limit = u0 + 4096
    target = limit // 2
    m = mount_factory("m", sets=quota_sets(str(limit), low="0.5"))
    assert root_int(m, "quota.limit_bytes") == limit
    assert root_int(m, "quota.target_bytes") == target

    publish(m.mnt, "base", arts["base"])
    for k in newer:
        publish(m.mnt, k, arts[k])
        open_artifact(m, "base")
    open_artifact(m, "n1")      # n1 is used again: no longer among the oldest
    open_artifact(m, "base")
    order = ["n2", "n3", "n4", "n5", "n6", "n7", "n1", "base"]  # oldest first

    t = root_int(m, "total.disk_bytes")
    assert t == u0, f"usage before the trigger {t} != du of the twin {u0}"
    for k in arts:
        assert m.facts(k)["disk_bytes"] == sizes[k]
    # The index's LRU order is the order of the opens.
    last = {k: m.facts(k)["last_access"] for k in arts}
    assert sorted(arts, key=lambda k: last[k]) == order, last
    s0 = root_attr_snapshot(m)
    assert s0["stats.evictions"] == 0

    # The same victims whether the walk starts as soon as the limit is
    # crossed or after the whole trigger is written (a design check).
    want = lru_victims(order, sizes, limit + 1, target)
    assert want == lru_victims(order, sizes, u0 + tsizes["trigger"], target), "test sizes are ambiguous"
    assert want == ["n2", "n3", "n4", "n5", "n6"]

    publish(m.mnt, "trigger", trigger["trigger"])
    wait_until(lambda: root_int(m, "stats.evictions") >= len(want), SETTLE,
               what=f"{len(want)} evictions")
    time.sleep(1.0)  # several check intervals: no further evictions come
    s1 = root_attr_snapshot(m)
    assert listing(m) == {"base", "n7", "n1", "trigger"}, listing(m)
    for k in want:
        assert gone(m, k), f"{k} still visible"
        assert not (m.data / k).exists()
    assert s1["stats.evictions"] == len(want), (s0, s1)
    assert s1["stats.bytes_evicted"] == sum(sizes[k] for k in want), (s0, s1)
    assert s1["stats.cleanup_runs"] >= 1
    assert s1["quota.last_cleanup_evicted"] == len(want)
    assert s1["quota.blocked"] == 0
    usage = s1["total.disk_bytes"]
    assert usage <= target <= limit, (usage, target, limit)
    assert s1["quota.usage_bytes"] == usage
    # The watermark holds: usage went down to it, not far below it.
    assert usage + sizes["n6"] > target

    wait_trash_empty(m)
    assert harness.du_disk(m.data) == root_int(m, "total.disk_bytes") <= target
    for k in ("base", "n7", "n1"):
        assert_complete(m.mnt / k)
    harness.assert_accounting(m, expect_keys=["base", "n7", "n1", "trigger"])
    # The log names the eviction.
    assert "quota: evicted 5 artifact" in m.stderr_text()


def root_attr_snapshot(m: harness.Mount) -> dict:
    names = ("total.disk_bytes", "stats.evictions", "stats.bytes_evicted", "stats.cleanup_runs",
             "stats.protected_skips", "stats.hits", "stats.misses", "quota.usage_bytes",
             "quota.blocked", "quota.last_cleanup_evicted")
    return {n: root_int(m, n) for n in names}


def test_artifacts_published_after_evictions_are_whole_and_accounted(mount_factory):
    """One publication at a time under a 1M quota, each waited for until the
    quota thread and the trash are quiet: the backing file system reuses the
    inode numbers of evicted (deleted) files for the new ones. Every visible
    artifact must stay readable and whole, its usage must equal du, and the
    real usage of STORE/data must stay under the limit."""
    m = mount_factory("m", sets=quota_sets("1M", low="0.5"))
    problems = []
    for i in range(12):
        k = f"k{i:02}"
        publish(m.mnt, k, payload({"f": 256 * KiB}, k))
        # Quiet means not blocked either: while the newest artifacts are in
        # their write grace the target (the low watermark) may be out of
        # reach, and the periodic retry then evicts once they age, which
        # would race the checks below.
        wait_until(lambda: root_int(m, "total.disk_bytes") <= MiB and root_int(m, "quota.blocked") == 0, SETTLE,
                   what="usage under 1M and the quota not blocked")
        time.sleep(0.3)  # let a running cleanup finish
        wait_trash_empty(m)
        for key in sorted(listing(m)):
            problems += [f"after publishing {k}: {p}" for p in artifact_problems(m.mnt / key)]
        du = harness.du_disk(m.data)
        total = root_int(m, "total.disk_bytes")
        if du != total or du > MiB:
            problems.append(f"after publishing {k}: du of STORE/data {du}, index total {total}, limit {MiB}")
    assert root_int(m, "stats.evictions") >= 6
    assert not problems, "\n  ".join(problems[:20])
    harness.assert_accounting(m)


# --------------------------------------------------------------------------
# protected artifacts


def test_pinned_open_and_recent_artifacts_survive(mount_factory, base):
    """Old artifacts go; a pinned one, one with a file held open and one
    opened within min-age stay. With only protected artifacts left the quota
    reports itself blocked, counts the skips, warns once, keeps serving, and
    evicts again as soon as a protection ends."""
    min_age = 8.0
    names = ["o1", "o2", "p", "h", "r"]
    arts = {k: payload({"data.bin": 256 * KiB}, k) for k in names}
    trigger = {"trigger": payload({"small": 8 * KiB}, "trigger")}
    sizes, u0 = twin_sizes(base / "twin", arts)
    limit = u0 + 4096
    target = limit // 2
    m = mount_factory("m", sets=quota_sets(str(limit), low="0.5", min_age=f"{int(min_age)}s"))

    for k in names:
        publish(m.mnt, k, arts[k])
    check(["setfattr", "-n", "user.artifactfs.pinned", "-v", "1", m.mnt / "p"])
    held = open(m.mnt / "h" / "data.bin", "rb")
    try:
        assert m.facts("p")["pinned"] == 1
        # Let min-age pass for everything published so far, then use r.
        time.sleep(min_age + 0.5)
        r_opened = time.monotonic()
        open_artifact(m, "r")
        skips0 = root_int(m, "stats.protected_skips")
        publish(m.mnt, "trigger", trigger["trigger"])

        wait_until(lambda: gone(m, "o1") and gone(m, "o2"), SETTLE, what="o1 and o2 evicted")
        wait_until(lambda: root_int(m, "quota.blocked") == 1, SETTLE, what="quota.blocked == 1")
        assert time.monotonic() - r_opened < min_age, "too slow: min-age of r passed before the checks"
        assert listing(m) == {"p", "h", "r", "trigger"}, listing(m)
        assert root_int(m, "stats.evictions") == 2
        assert root_int(m, "stats.protected_skips") > skips0
        usage = root_int(m, "total.disk_bytes")
        assert usage > target, "blocked although the target is met"

        # Still serving: the held file, fresh opens, writes, a new artifact.
        # (No fresh open of h: that would make it recent and protect it by
        # min-age after its file is closed below.)
        assert held.read() == arts["h"]["data.bin"]
        held.seek(0)
        for k in ("p", "r"):
            assert_complete(m.mnt / k)
        (m.mnt / "p" / "note").write_bytes(b"written while blocked")
        assert (m.mnt / "p" / "note").read_bytes() == b"written while blocked"
        publish(m.mnt, "w", payload({"small": 8 * KiB}, "w"))
        assert_complete(m.mnt / "w")
        assert m.running
        assert time.monotonic() - r_opened < min_age, "too slow: min-age of r passed before the checks"
        assert {"p", "h", "r"} <= listing(m)
    finally:
        held.close()
    # The open handle was h's only protection: the next check takes it, and
    # that alone meets the target (p is pinned, r still young).
    wait_until(lambda: gone(m, "h"), SETTLE, what="h evicted after its file was closed")
    wait_until(lambda: root_int(m, "quota.blocked") == 0, SETTLE, what="quota.blocked back to 0")
    assert time.monotonic() - r_opened < min_age, "too slow: min-age of r passed before the checks"
    assert listing(m) == {"p", "r", "trigger", "w"}, listing(m)
    assert root_int(m, "total.disk_bytes") <= target
    assert m.facts("p")["pinned"] == 1
    log = m.stderr_text()
    assert log.count("quota: cannot get usage down") == 1, f"not warned exactly once per episode:\n{log}"
    assert "within the target again" in log


def test_pins_survive_remount(mount_factory):
    m = mount_factory("m", sets=quota_sets("unlimited"))
    for k in ("a", "b", "c"):
        publish(m.mnt, k, payload({"f": 64 * KiB}, k))
    check(["setfattr", "-n", "user.artifactfs.pinned", "-v", "1", m.mnt / "a"])
    check(["setfattr", "-n", "user.artifactfs.pinned", "-v", "1", m.mnt / "b"])
    check(["setfattr", "-x", "user.artifactfs.pinned", m.mnt / "b"])
    assert (m.facts("a")["pinned"], m.facts("b")["pinned"], m.facts("c")["pinned"]) == (1, 0, 0)

    m.remount()
    out = check(["getfattr", "--absolute-names", "-n", "user.artifactfs.pinned", m.mnt / "a"])
    assert 'user.artifactfs.pinned="1"' in out, out
    assert os.getxattr(m.mnt / "b", "user.artifactfs.pinned") == b"0"
    assert os.getxattr(m.mnt / "c", "user.artifactfs.pinned") == b"0"

    # The pin kept in the index protects: a quota far below the usage, set
    # at the next mount, evicts everything else ("a" is also the oldest).
    m.sets = quota_sets("64K")
    m.remount()
    wait_until(lambda: listing(m) == {"a"}, SETTLE, what="b and c evicted at mount")
    assert m.facts("a")["pinned"] == 1
    assert_complete(m.mnt / "a")
    wait_until(lambda: root_int(m, "quota.blocked") == 1, SETTLE, what="quota.blocked == 1")
    assert root_int(m, "stats.protected_skips") > 0


# --------------------------------------------------------------------------
# SIGHUP


def test_sighup_applies_new_quota_and_keeps_old_on_bad_file(mount_factory, base):
    cfg = base / "artifactfs.yaml"
    settings = {"max-size": "100M", "min-free": "0", "low-watermark": "0.5", "min-age": "0s",
                "check-interval": "200ms"}
    write_config(cfg, **settings)
    m = mount_factory("m", config=cfg, sets=[FLUSH])
    keys = [f"k{i:02}" for i in range(10)]
    for k in keys:
        publish(m.mnt, k, payload({"f": 256 * KiB}, k))
    sizes = {k: m.facts(k)["disk_bytes"] for k in keys}
    usage0 = root_int(m, "total.disk_bytes")
    assert root_attr(m, "quota.max_size") == "100M"
    assert root_int(m, "stats.evictions") == 0
    pid = m.pid

    write_config(cfg, **{**settings, "max-size": "1M"})
    os.kill(pid, signal.SIGHUP)
    want = lru_victims(keys, sizes, usage0, MiB // 2)
    assert 0 < len(want) < len(keys)
    wait_until(lambda: root_int(m, "stats.evictions") == len(want), SETTLE,
               what=f"{len(want)} evictions after SIGHUP")
    assert m.running and m.pid == pid and harness.is_fuse_mounted(m.mnt)
    assert root_attr(m, "quota.max_size") == "1M"
    assert root_int(m, "quota.limit_bytes") == MiB
    assert listing(m) == set(keys) - set(want)
    assert root_int(m, "total.disk_bytes") <= MiB // 2
    assert root_int(m, "stats.bytes_evicted") == sum(sizes[k] for k in want)
    wait_until(lambda: "configuration reloaded" in m.stderr_text(), SETTLE, what="reload logged")

    # A broken file: reported, the daemon keeps running with the 1M quota.
    cfg.write_text("quota:\n  max-size: banana\n  low-watermark: 7\n")
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: "configuration not reloaded" in m.stderr_text(), SETTLE,
               what="the bad configuration to be reported")
    bad = [ln for ln in m.stderr_text().splitlines() if "configuration not reloaded" in ln]
    assert len(bad) == 1 and "error" in bad[0], bad
    assert m.running and m.pid == pid and harness.is_fuse_mounted(m.mnt)
    assert root_attr(m, "quota.max_size") == "1M"
    assert root_int(m, "quota.limit_bytes") == MiB
    assert root_attr(m, "quota.low_watermark") == "0.5"
    ev = root_int(m, "stats.evictions")
    for i in range(4):
        publish(m.mnt, f"late{i}", payload({"f": 256 * KiB}, f"late{i}"))
        wait_until(lambda: root_int(m, "total.disk_bytes") <= MiB, SETTLE,
                   what="usage under the old 1M limit")
        time.sleep(0.5)  # let a running cleanup finish before the next one
        wait_trash_empty(m)
    assert root_int(m, "stats.evictions") > ev
    assert root_attr(m, "quota.max_size") == "1M"
    for k in listing(m):
        assert_complete(m.mnt / k)
    assert harness.du_disk(m.data) <= MiB


# --------------------------------------------------------------------------
# ENOSPC on a small backing file system


def _umount_tmpfs(d: Path) -> None:
    for args in (["umount", str(d)], ["umount", "-l", str(d)]):
        if not _is_mounted(d):
            return
        subprocess.run(args, capture_output=True, timeout=30)


def _is_mounted(d: Path) -> bool:
    p = os.path.realpath(d)
    return any(e["mountpoint"] == p for e in harness.mountinfo())


@pytest.fixture
def small_fs(base):
    """A 64 MiB tmpfs made for the test and always unmounted again."""
    d = base / "small"
    d.mkdir()
    check(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", d])
    try:
        yield d
    finally:
        _umount_tmpfs(d)
        assert not _is_mounted(d), f"tmpfs {d} still mounted"


@pytest.fixture
def small_mount(small_fs, mount_factory):
    """A mount whose STORE is on the tmpfs (set up after the tmpfs, so torn
    down before it): no max-size, no reserve, so that only the ENOSPC path
    evicts."""
    m = mount_factory("m", store=small_fs / "store", sets=quota_sets("unlimited", min_free="0"))
    return m


def test_enospc_evicts_lru_then_fails_when_all_pinned(small_mount):
    m = small_mount
    old = [f"old{i}" for i in range(6)]
    arts = {k: payload({"blob": 8 * MiB}, k) for k in old}
    for k in old:
        publish(m.mnt, k, arts[k])
    open_artifact(m, "old0")  # used again: the newest of the old ones
    order = old[1:] + ["old0"]
    free0 = os.statvfs(m.store).f_bavail * os.statvfs(m.store).f_frsize
    assert free0 < 24 * MiB, f"the tmpfs has {free0} bytes free: the test would not run out of space"
    ev0 = root_int(m, "stats.evictions")

    big = payload({"big.bin": 24 * MiB}, "big")
    publish(m.mnt, "big", big)  # needs room: evicts the least recently used
    assert_complete(m.mnt / "big")
    left = [k for k in order if k in listing(m)]
    victims = [k for k in order if k not in left]
    assert victims, "nothing was evicted"
    assert victims == order[:len(victims)], f"evicted {victims}, not the oldest of {order}"
    assert "old0" in left
    assert root_int(m, "stats.evictions") - ev0 == len(victims)
    assert "quota: out of space, evicted" in m.stderr_text()
    for k in left:
        assert_complete(m.mnt / k)

    # Everything pinned: a writer that needs more room gets ENOSPC.
    for k in left + ["big"]:
        check(["setfattr", "-n", "user.artifactfs.pinned", "-v", "1", m.mnt / k])
    ev1 = root_int(m, "stats.evictions")
    sums = {k: artifact_problems(m.mnt / k) for k in left + ["big"]}
    assert not any(sums.values()), sums
    with pytest.raises(OSError) as info:
        publish(m.mnt, "toobig", payload({"huge.bin": 40 * MiB}, "toobig"))
    assert info.value.errno == errno.ENOSPC, f"expected ENOSPC, got {info.value!r}"
    assert m.running
    assert root_int(m, "stats.evictions") == ev1, "a pinned artifact was evicted"
    assert listing(m) >= set(left) | {"big"}
    for k in left + ["big"]:
        assert_complete(m.mnt / k)
    # The partial temporary artifact is an ordinary artifact; removing it
    # gives the space back and the accounting still matches du.
    shutil.rmtree(m.mnt / ".tmp-toobig")
    wait_trash_empty(m)
    harness.assert_accounting(m, expect_keys=sorted(set(left) | {"big"}))


# --------------------------------------------------------------------------
# readers racing a continuous eviction


@pytest.mark.parametrize("threads", [1, 4])
def test_readers_during_continuous_eviction(mount_factory, threads):
    m = mount_factory("m", sets=quota_sets("2M", low="0.5", interval="100ms",
                                           extra=(f"fuse.threads={threads}",)))
    held = {k: payload({f"f{i}": 48 * KiB + i * 1000 for i in range(3)}, k) for k in ("h0", "h1")}
    for k, files in held.items():
        publish(m.mnt, k, files)

    problems: list[str] = []
    published: list[tuple[str, dict[str, bytes]]] = []
    lock = threading.Lock()
    stop = threading.Event()
    counts = {"reads": 0, "opens_ok": 0, "enoent": 0, "published": 0, "publish_failed": 0}

    def note(msg):
        with lock:
            if len(problems) < 50:
                problems.append(msg)

    def holder(key):
        files = held[key]
        fds = {n: os.open(m.mnt / key / n, os.O_RDONLY) for n in files}
        try:
            while not stop.is_set():
                for n, fd in fds.items():
                    data = os.pread(fd, len(files[n]) + 1, 0)
                    if data != files[n]:
                        note(f"{key}/{n}: read {len(data)} bytes, sha {sha(data)[:12]} (held open)")
                    with lock:
                        counts["reads"] += 1
                try:
                    names = set(os.listdir(m.mnt / key))
                    os.stat(m.mnt / key)
                except OSError as e:
                    note(f"{key}: artifact gone while a file of it is open: {e!r}")
                    continue
                if names != set(files) | {MANIFEST}:
                    note(f"{key}: listing {sorted(names)} while open")
        except OSError as e:
            note(f"{key}: held file failed: {e!r}")
        finally:
            for fd in fds.values():
                os.close(fd)

    def writer():
        # Keeps going after a failed publication (reported) so that the
        # readers are still checked against a continuous eviction.
        i = 0
        while not stop.is_set():
            key = f"w{i:04}"
            i += 1
            files = payload({"a": 100 * KiB, "b": 60 * KiB + i}, key)
            try:
                publish(m.mnt, key, files)
            except OSError as e:
                note(f"writer publishing {key}: {e!r} in {traceback.extract_tb(e.__traceback__)[-1].line!r}")
                with lock:
                    counts["publish_failed"] += 1
                continue
            with lock:
                published.append((key, files))
                counts["published"] += 1

    def opener(seed):
        rnd = random.Random(seed)
        while not stop.is_set():
            with lock:
                if not published:
                    choice = None
                else:
                    choice = published[max(0, len(published) - 1 - rnd.randrange(12))]
            if choice is None:
                time.sleep(0.01)
                continue
            key, files = choice
            name = rnd.choice(sorted(files))
            try:
                with open(m.mnt / key / name, "rb") as f:
                    first = f.read(4096)
                    time.sleep(rnd.random() * 0.01)  # eviction may run now
                    data = first + f.read()
            except OSError as e:
                if e.errno == errno.ENOENT:
                    with lock:
                        counts["enoent"] += 1
                else:
                    note(f"open/read {key}/{name}: {e!r} (only ENOENT is allowed)")
                continue
            with lock:
                counts["opens_ok"] += 1
            if data != files[name]:
                note(f"{key}/{name}: {len(data)} bytes, sha {sha(data)[:12]}: partial or wrong content")
            try:
                names = set(os.listdir(m.mnt / key))
            except OSError as e:
                if e.errno != errno.ENOENT:
                    note(f"listdir {key}: {e!r} (only ENOENT is allowed)")
                continue
            if names != set(files) | {MANIFEST}:
                note(f"{key}: partial listing {sorted(names)}")

    workers = [threading.Thread(target=holder, args=(k,)) for k in held for _ in range(2)]
    workers += [threading.Thread(target=writer)]
    workers += [threading.Thread(target=opener, args=(s,)) for s in range(3)]
    ev0 = root_int(m, "stats.evictions")
    for t in workers:
        t.start()
    try:
        deadline = time.monotonic() + 30
        # Run until eviction has really been continuous: many artifacts
        # evicted while the readers kept going.
        while time.monotonic() < deadline:
            if root_int(m, "stats.evictions") - ev0 >= 60 and time.monotonic() > deadline - 25:
                break
            time.sleep(0.1)
        # Checked while the holders still have them open: once closed, they
        # are ordinary least-recently-used artifacts the quota may take.
        for k in held:
            assert_complete(m.mnt / k)
    finally:
        stop.set()
        for t in workers:
            t.join(60)
    assert not any(t.is_alive() for t in workers), "worker threads hung"
    assert not problems, f"{counts}\n  " + "\n  ".join(problems)
    evicted = root_int(m, "stats.evictions") - ev0
    assert evicted >= 20, f"eviction did not run continuously: {evicted} evictions, {counts}"
    assert counts["reads"] > 0 and counts["opens_ok"] > 0, counts
    assert m.running
    # Quiet again: the quota holds and the index agrees with the data tree.
    wait_evictions_settled(m)
    wait_until(lambda: root_int(m, "total.disk_bytes") <= 2 * MiB, SETTLE, what="usage under the limit")
    wait_trash_empty(m)
    harness.assert_accounting(m)
    for k in listing(m):
        assert_complete(m.mnt / k)


# --------------------------------------------------------------------------
# kill -9 in the middle of an eviction


@pytest.mark.parametrize("delay", [0.0, 0.02])
def test_kill9_during_eviction(mount_factory, base, delay):
    cfg = base / "artifactfs.yaml"
    settings = {"max-size": "1G", "min-free": "0", "low-watermark": "0.5", "min-age": "0s",
                "check-interval": "200ms"}
    write_config(cfg, **settings)
    m = mount_factory("m", config=cfg, sets=[FLUSH])
    keys = [f"a{i:03}" for i in range(200)]
    for i, k in enumerate(keys):
        publish(m.mnt, k, payload({f"d/f{j}": 1000 + (i * 131 + j * 977) % 6000 for j in range(4)}, k))
    assert root_int(m, "total.artifacts") == len(keys)

    write_config(cfg, **{**settings, "max-size": "64K"})
    os.kill(m.pid, signal.SIGHUP)
    wait_until(lambda: trash_entries(m) or root_int(m, "stats.evictions") > 0, SETTLE, 0.0005,
               what="the eviction to start")
    if delay:
        time.sleep(delay)
    m.kill9()
    in_trash = len(trash_entries(m))
    in_data = len(harness.artifact_keys(m.data))
    # No more eviction after the restart: what the crash left is what we check.
    write_config(cfg, **settings)
    m.start()
    wait_trash_empty(m)
    visible = sorted(os.listdir(m.mnt))
    on_disk = harness.artifact_keys(m.data)
    assert visible == on_disk, "the mount and the data tree disagree"
    assert set(visible) <= set(keys), f"unexpected entries: {set(visible) - set(keys)}"
    assert len(visible) < len(keys), "nothing was evicted before the kill"
    problems = [p for k in visible for p in artifact_problems(m.mnt / k)]
    assert not problems, "partial artifacts after the crash:\n  " + "\n  ".join(problems[:20])
    harness.assert_accounting(m, expect_keys=visible)
    print(f"killed with {in_data} artifacts in data and {in_trash} in the trash; "
          f"{len(visible)} survived")


# --------------------------------------------------------------------------
# statistics


def test_statistics_hits_misses_evictions(mount_factory):
    m = mount_factory("m", sets=quota_sets("unlimited"))
    publish(m.mnt, "a", payload({"x": 4 * KiB, "sub/y": 4 * KiB}, "a"))
    publish(m.mnt, "b", payload({"x": 64 * KiB}, "b"))
    s0 = root_attr_snapshot(m)
    for i in range(3):
        assert gone(m, f"absent-{i}")
    # Absent names inside an artifact are not misses of the cache.
    assert harness.outcome(os.stat, m.mnt / "a" / "absent") == ("err", "ENOENT")
    s1 = root_attr_snapshot(m)
    assert s1["stats.misses"] - s0["stats.misses"] == 3, (s0, s1)
    assert s1["stats.hits"] == s0["stats.hits"]

    (m.mnt / "b" / "x").read_bytes()       # 1 file open
    for _ in range(3):
        (m.mnt / "a" / "x").read_bytes()   # 3 file opens
    os.listdir(m.mnt / "a")                # 1 directory open
    os.listdir(m.mnt)                      # the root is no artifact: no hit
    s2 = root_attr_snapshot(m)
    assert s2["stats.hits"] - s1["stats.hits"] == 5, (s1, s2)
    assert s2["stats.misses"] == s1["stats.misses"]
    assert s2["stats.evictions"] == 0 and s2["stats.cleanup_runs"] == 0
    assert s2["stats.bytes_evicted"] == 0

    # A quota one byte under the usage, set at the next mount: one cleanup,
    # b (opened before the last uses of a) goes, and that meets the target.
    sizes = {k: m.facts(k)["disk_bytes"] for k in ("a", "b")}
    usage = s2["total.disk_bytes"]
    limit = usage - 1
    want = lru_victims(["b", "a"], sizes, usage, limit // 2)
    assert want == ["b"]
    m.sets = quota_sets(str(limit), low="0.5")
    m.remount()
    wait_until(lambda: root_int(m, "stats.evictions") == 1, SETTLE, what="one eviction")
    time.sleep(0.6)  # a few check intervals: nothing more happens
    s3 = root_attr_snapshot(m)
    assert listing(m) == {"a"}
    assert s3["stats.evictions"] == 1
    assert s3["stats.bytes_evicted"] == sizes["b"]
    assert s3["stats.cleanup_runs"] == 1, s3
    assert s3["stats.protected_skips"] == 0
    cleanup_seconds = root_attr(m, "stats.cleanup_seconds")
    assert harness.parse_time_ns(cleanup_seconds.encode(), "stats.cleanup_seconds") > 0
    # Statistics are kept in the index across a clean remount.
    m.remount()
    s4 = root_attr_snapshot(m)
    for n in ("stats.evictions", "stats.bytes_evicted", "stats.hits", "stats.misses",
              "stats.cleanup_runs"):
        assert s4[n] == s3[n], (n, s3, s4)


def test_file_linked_into_an_evicted_artifact_lives_on_in_the_other(mount_factory, base):
    """A file hard-linked into two artifacts, known to the kernel under both
    names: evicting the artifact it was first found in leaves it usable
    through the other name, which it then belongs to (facts, accesses)."""
    cfg = base / "artifactfs.yaml"
    settings = {"max-size": "unlimited", "min-free": "0", "low-watermark": "1.0", "min-age": "0s",
                "check-interval": "200ms"}
    write_config(cfg, **settings)
    m = mount_factory(depth=1, config=cfg, sets=[FLUSH])
    (m.mnt / "a").mkdir()
    write_all(m.mnt / "a" / "big", os.urandom(2 * MiB))
    shared = os.urandom(8 * KiB)
    (m.mnt / "a" / "shared").write_bytes(shared)
    time.sleep(0.3)  # b is used after a
    (m.mnt / "b").mkdir()
    os.link(m.mnt / "a" / "shared", m.mnt / "b" / "shared")
    os.stat(m.mnt / "b" / "shared")  # the kernel holds the name; no open yet
    b_access = m.facts("b")["last_access"]

    write_config(cfg, **{**settings, "max-size": "1M"})
    os.kill(m.pid, signal.SIGHUP)
    wait_until(lambda: gone(m, "a"), SETTLE, what="a evicted")
    wait_trash_empty(m)
    assert listing(m) == {"b"}
    assert (m.mnt / "b" / "shared").read_bytes() == shared
    wait_until(lambda: m.facts("b")["last_access"] > b_access, SETTLE, what="b's access recorded on b")
    harness.assert_accounting(m, 1, expect_keys=["b"])
