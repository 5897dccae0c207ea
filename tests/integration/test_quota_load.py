"""The quota under load: sustained publishing by several writers with readers
and open files beside them, a base runtime read after every publication, and
the exact least-recently-used order over a minute of publishing and reading.

Bounds come from the quota's promise, never from speeds: the store's disk
usage (STORE/data plus evicted data not yet deleted from STORE/trash),
sampled every 0.25 s, stays within the limit plus the data of the writes in
flight plus 10%; nothing here asserts how fast anything is."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
import time
from pathlib import Path

import pytest

import harness
from harness import wait_until

KiB = 1024
MiB = 1024 * KiB
SETTLE = 60.0
MANIFEST = "MANIFEST"


def root_int(m: harness.Mount, name: str) -> int:
    return int(os.getxattr(str(m.mnt), harness.XATTR_PREFIX + name))


def store_usage(m: harness.Mount) -> int:
    """du of STORE/data plus what waits in STORE/trash, walked now (entries
    deleted during the walk are skipped)."""
    total = 0
    stack = [m.store / "data", m.store / "trash"]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += st.st_blocks * 512
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
    return total


def wait_quiet(m: harness.Mount, quiet: float = 3.0) -> None:
    """Until no eviction for `quiet` seconds (longer than the write grace,
    after which a cleanup stopped by it runs again) and the trash is empty:
    only then may the tree be compared with the index."""
    last = [root_int(m, "stats.evictions"), time.monotonic()]

    def settled():
        now = root_int(m, "stats.evictions")
        if now != last[0]:
            last[0], last[1] = now, time.monotonic()
        return time.monotonic() - last[1] >= quiet and not os.listdir(m.store / "trash")

    wait_until(settled, SETTLE + quiet, 0.1, what="evictions to settle and the trash to be emptied")


def publish(root: Path, key: str, data: bytes) -> None:
    """Write under a temporary name at the artifact depth, then rename: the
    README's convention. The data is one os.write (one FUSE write of at most
    1 MiB); the manifest holds its size and sha256."""
    tmp = root / f".tmp-{key}"
    tmp.mkdir()
    for name, content in (("data.bin", data), (MANIFEST, f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode())):
        fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    os.rename(tmp, root / key)


def whole(path: Path) -> str | None:
    """None if the artifact matches its manifest, else what is wrong."""
    try:
        size, digest = (path / MANIFEST).read_text().split()
        data = (path / "data.bin").read_bytes()
    except (OSError, ValueError) as e:
        return f"{path.name}: {e!r}"
    if len(data) != int(size) or hashlib.sha256(data).hexdigest() != digest:
        return f"{path.name}: {len(data)} bytes, not the {size} of its manifest (or another sha256)"
    return None


class Problems:
    def __init__(self):
        self.lock = threading.Lock()
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        with self.lock:
            if len(self.items) < 40:
                self.items.append(msg)


# --------------------------------------------------------------------------
# a write storm


@pytest.mark.parametrize("writers", [2, 4])
def test_usage_stays_near_the_limit_under_a_write_storm(mount_factory, writers):
    """A new user's setup (max-size and min-age 0, everything else default)
    and writers publishing 1 MiB artifacts as fast as they can, with readers
    and two artifacts held open: the sampled usage never goes past the limit
    plus one write in flight per writer plus 10%."""
    limit = 40 * MiB
    m = mount_factory("m", sets=["quota.max-size=40M", "quota.min-age=0s"])
    problems = Problems()
    stop = threading.Event()
    published: list[str] = []
    digests: dict[str, str] = {}
    counts = {"published": 0, "publish_enoent": 0, "reads": 0, "read_enoent": 0}
    lock = threading.Lock()

    held = {}
    for k in ("hold0", "hold1"):
        data = os.urandom(MiB)
        publish(m.mnt, k, data)
        held[k] = data

    def writer(wid: int):
        i = 0
        while not stop.is_set():
            key = f"w{wid}-{i:05}"
            i += 1
            data = os.urandom(MiB)
            try:
                publish(m.mnt, key, data)
            except OSError as e:
                # A temporary directory taken between two of its files (the
                # newest artifacts go last, so this is rare) fails the
                # publication; nothing else may.
                if e.errno == errno.ENOENT:
                    with lock:
                        counts["publish_enoent"] += 1
                    continue
                problems.add(f"publishing {key}: {e!r}")
                continue
            with lock:
                published.append(key)
                digests[key] = hashlib.sha256(data).hexdigest()
                counts["published"] += 1

    def reader(seed: int):
        rnd = random.Random(seed)
        while not stop.is_set():
            with lock:
                key = published[-1 - rnd.randrange(min(len(published), 30))] if published else None
                want = digests.get(key)
            if key is None:
                time.sleep(0.01)
                continue
            try:
                data = (m.mnt / key / "data.bin").read_bytes()
            except OSError as e:
                if e.errno == errno.ENOENT:
                    with lock:
                        counts["read_enoent"] += 1
                else:
                    problems.add(f"reading {key}: {e!r} (only ENOENT is allowed)")
                continue
            with lock:
                counts["reads"] += 1
            if hashlib.sha256(data).hexdigest() != want:
                problems.add(f"{key}: {len(data)} bytes that are not what was published")

    def holder(key: str):
        fd = os.open(m.mnt / key / "data.bin", os.O_RDONLY)
        try:
            while not stop.is_set():
                if os.pread(fd, MiB + 1, 0) != held[key]:
                    problems.add(f"{key}: the held file reads differently")
                try:
                    names = sorted(os.listdir(m.mnt / key))
                except OSError as e:
                    problems.add(f"{key}: gone while a file of it is open: {e!r}")
                    continue
                if names != sorted(["data.bin", MANIFEST]):
                    problems.add(f"{key}: listing {names} while open")
                time.sleep(0.05)
        finally:
            os.close(fd)

    samples: list[int] = []

    def sampler():
        while not stop.is_set():
            samples.append(store_usage(m))
            stop.wait(0.25)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    threads += [threading.Thread(target=reader, args=(s,)) for s in range(2)]
    threads += [threading.Thread(target=holder, args=(k,)) for k in held]
    threads += [threading.Thread(target=sampler)]
    harness.run_threads_for(threads, 15, stop)

    status = {n: root_int(m, n) for n in ("stats.evictions", "quota.writes_waited", "quota.writes_over_limit",
                                            "quota.writes_refused", "quota.peak_overshoot_bytes",
                                            "quota.overshoot_episodes")}
    in_flight = writers * (MiB + 64 * KiB)  # one data write and a manifest's blocks per writer
    bound = limit + in_flight + limit // 10
    peak = max(samples)
    print(f"{writers} writers: {counts}, {len(samples)} samples, peak usage {peak} bytes "
          f"({peak / limit:.3f} x the limit), bound {bound}; {status}")
    assert not problems.items, f"{counts}\n  " + "\n  ".join(problems.items)
    assert counts["published"] > 3 * (limit // MiB), f"too little was published to test the quota: {counts}"
    assert status["stats.evictions"] > 0
    assert status["quota.writes_refused"] == 0, status
    assert peak <= bound, (f"usage peaked at {peak} bytes ({peak / limit:.2f} x the limit), over the bound {bound}: "
                           f"{samples}")

    # Quiet again: everything left is whole, the held artifacts are there,
    # and the index agrees with the data tree.
    wait_quiet(m)
    assert root_int(m, "total.disk_bytes") <= limit
    assert {"hold0", "hold1"} <= set(os.listdir(m.mnt))
    bad = [p for p in (whole(m.mnt / k) for k in os.listdir(m.mnt) if not k.startswith(".tmp-")) if p]
    assert not bad, "artifacts that are not whole:\n  " + "\n  ".join(bad)
    harness.assert_accounting(m)


# --------------------------------------------------------------------------
# the base runtime


def test_base_read_after_every_publication_is_never_evicted(mount_factory):
    """A 40M quota, min-age 0: 1 MiB artifacts published one after another,
    the base runtime read after each. The base is always the most recently
    used but one, so it is never a victim, however many of the others go
    while they are still in the write grace."""
    m = mount_factory("m", sets=["quota.max-size=40M", "quota.min-age=0s"])
    base = os.urandom(MiB)
    publish(m.mnt, "base", base)
    for i in range(100):
        publish(m.mnt, f"n{i:03}", os.urandom(MiB))
        try:
            data = (m.mnt / "base" / "data.bin").read_bytes()
        except OSError as e:
            pytest.fail(f"the base runtime went after {i + 1} publications: {e!r}")
        assert data == base
    assert root_int(m, "stats.evictions") >= 100 - 40
    wait_quiet(m)
    assert root_int(m, "total.disk_bytes") <= 40 * MiB
    assert (m.mnt / "base" / "data.bin").read_bytes() == base
    harness.assert_accounting(m)


# --------------------------------------------------------------------------
# the exact order, as a property


def test_no_survivor_was_used_before_an_evicted_artifact(mount_factory):
    """A minute of publishing and reading under a small quota (min-age 0):
    no artifact left at the end was last used more than one flush interval
    before the last use of one that was evicted. A pinned artifact and one
    held open stay whatever their age (they are the exceptions)."""
    flush = 0.25
    m = mount_factory("m", sets=["quota.max-size=3M", "quota.min-age=0s", f"index.flush-interval={int(flush * 1000)}ms",
                                 "quota.check-interval=1s"])
    lock = threading.Lock()
    # key -> (start, end) of its last successful use, wall clock: the daemon
    # recorded that use between the two.
    last_use: dict[str, tuple[float, float]] = {}
    keys: list[str] = []
    problems = Problems()
    stop = threading.Event()

    def use(key: str, fn) -> None:
        start = time.time()
        fn()
        end = time.time()
        with lock:
            last_use[key] = (start, end)

    for k in ("pinned", "held"):
        use(k, lambda k=k: publish(m.mnt, k, os.urandom(64 * KiB)))
    harness.check(["setfattr", "-n", "user.artifactfs.pinned", "-v", "1", m.mnt / "pinned"])
    held_fd = os.open(m.mnt / "held" / "data.bin", os.O_RDONLY)

    def publisher():
        rnd = random.Random(1)
        i = 0
        while not stop.is_set():
            key = f"a{i:05}"
            i += 1
            try:
                use(key, lambda: publish(m.mnt, key, os.urandom(rnd.randrange(16, 200) * KiB)))
            except OSError as e:
                if e.errno != errno.ENOENT:
                    problems.add(f"publishing {key}: {e!r}")
                continue
            with lock:
                keys.append(key)
            time.sleep(rnd.random() * 0.05)

    def reader(seed: int):
        rnd = random.Random(seed)
        while not stop.is_set():
            with lock:
                if not keys:
                    key = None
                elif rnd.random() < 0.3:  # a few favourites, read again and again
                    key = keys[rnd.randrange(min(len(keys), 5))]
                else:
                    key = keys[-1 - rnd.randrange(min(len(keys), 60))]
            if key is None:
                time.sleep(0.01)
                continue
            try:
                use(key, lambda: (m.mnt / key / MANIFEST).read_bytes())
            except OSError as e:
                if e.errno != errno.ENOENT:
                    problems.add(f"reading {key}: {e!r}")
            time.sleep(rnd.random() * 0.02)

    threads = [threading.Thread(target=publisher)] + [threading.Thread(target=reader, args=(s,)) for s in range(2)]
    try:
        harness.run_threads_for(threads, 60, stop)
    finally:
        try:
            present = set(os.listdir(m.mnt))
        finally:
            os.close(held_fd)
    assert not problems.items, "\n  ".join(problems.items)

    assert {"pinned", "held"} <= present
    survivors = [k for k in keys if k in present]
    evicted = [k for k in keys if k not in present]
    assert len(evicted) > 50 and len(survivors) > 3, (len(evicted), len(survivors))
    # The oldest survivor against the most recently used victim.
    oldest = min(survivors, key=lambda k: last_use[k][1])
    newest_victim = max(evicted, key=lambda k: last_use[k][0])
    gap = last_use[newest_victim][0] - last_use[oldest][1]
    print(f"{len(keys)} published, {len(evicted)} evicted, {len(survivors)} left; oldest survivor {oldest} "
          f"used {gap:.3f} s before the most recently used victim {newest_victim}")
    assert gap <= flush, (f"{oldest} (last used {last_use[oldest]}) survived although {newest_victim}, last used "
                          f"{gap:.3f} s later ({last_use[newest_victim]}), was evicted")
