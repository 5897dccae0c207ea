"""Real build tools with their caches on an artifactfs mount, through
evictions: sccache (SCCACHE_DIR, results at depth 3), Go's build cache
(GOCACHE, entries at depth 2), and a BuildStream-style cache (one directory
per cache key at depth 1, published atomically by several processes at once
and read by others while the quota evicts).

Each build tool builds a small generated project twice from clean (the
second time all from the cache), the quota then evicts about half of the
cache, and a third build must succeed, from what is left plus new compiles,
and compute the right value. ccache has its own file (test_ccache.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import build_projects
import harness

SCCACHE_LAYOUT = "  depth: 3\n"
GO_LAYOUT = "  depth: 2\n"


def _require(*tools: str, packages: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (packages {packages})")


def _pids_with_env(name: str, value: str) -> list[int]:
    """Processes whose environment has name=value (the sccache server)."""
    want = f"{name}={value}".encode()
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if want in (p / "environ").read_bytes().split(b"\0"):
                pids.append(int(p.name))
        except OSError:
            continue
    return pids


# --------------------------------------------------------------------------
# sccache


class Sccache:
    """sccache's server with SCCACHE_DIR on the mount, on a free port, with
    its own size limit far above the cache (artifactfs manages the size)."""

    def __init__(self, mnt: Path, base: Path):
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(base / "home"),
                    "LC_ALL": "C", "SCCACHE_DIR": str(mnt), "SCCACHE_CACHE_SIZE": "1T",
                    "SCCACHE_SERVER_PORT": str(_free_port()), "SCCACHE_IDLE_TIMEOUT": "0",
                    "SCCACHE_ERROR_LOG": str(base / "sccache-error.log")}
        (base / "home").mkdir(exist_ok=True)

    def run(self, *args: str) -> str:
        return harness.check(["sccache", *args], env=self.env)

    def start(self) -> None:
        self.run("--start-server")

    def stop(self) -> None:
        subprocess.run(["sccache", "--stop-server"], env=self.env, capture_output=True, timeout=30)
        for pid in _pids_with_env("SCCACHE_SERVER_PORT", self.env["SCCACHE_SERVER_PORT"]):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stats(self) -> dict:
        return json.loads(self.run("--show-stats", "--stats-format", "json"))["stats"]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _count(stats: dict, name: str) -> int:
    value = stats.get(name, 0)
    return sum(value.get("counts", {}).values()) if isinstance(value, dict) else int(value)


def test_sccache_make_j_rebuilds_through_eviction(mount_factory, base):
    _require("sccache", "gcc", "make", packages="sccache, gcc, make")
    cfg = base / "artifactfs.yaml"
    build_projects.quota_config(cfg, SCCACHE_LAYOUT, "unlimited")
    m = mount_factory("m", config=cfg)
    units = 120
    proj = base / "proj"
    expected = build_projects.c_project(proj, units)
    sc = Sccache(m.mnt, base)
    sc.start()
    try:
        def build(errors_allowed: int = 0) -> dict:
            harness.check(["make", "-s", "clean"], cwd=proj, env=sc.env)
            sc.run("--zero-stats")
            r = subprocess.run(["make", "-s", "-j4", "CC=sccache gcc", "prog"], cwd=proj, env=sc.env,
                               capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, f"make failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
            assert harness.check([proj / "prog"]).strip() == str(expected), "the program computed a wrong value"
            s = sc.stats()
            errors = {k: _count(s, k) for k in ("cache_write_errors", "compile_fails") if _count(s, k)}
            assert not errors, f"sccache reported errors: {errors}"
            assert _count(s, "cache_errors") <= errors_allowed, s
            return s

        first = build()
        assert _count(first, "cache_misses") == units + 1 and _count(first, "cache_hits") == 0, first
        second = build()
        assert _count(second, "cache_hits") == units + 1, second
        keys = harness.artifact_keys(m.data, 3)
        assert len(keys) == units + 1 and all(re.fullmatch(r"[0-9a-f]/[0-9a-f]/[0-9a-f]{64}", k) for k in keys), keys
        harness.assert_accounting(m, 3, expect_keys=keys)

        evicted = build_projects.shrink_quota_and_wait(m, cfg, SCCACHE_LAYOUT, keys)
        # The running server still lists what was evicted (it reads its
        # directory once, at start): such an entry is a "cache error" to it,
        # and it compiles instead; never a failed build or a wrong object.
        third = build(errors_allowed=evicted)
        hits, misses, lost = (_count(third, k) for k in ("cache_hits", "cache_misses", "cache_errors"))
        assert hits > 0 and misses + lost > 0, third
        harness.assert_accounting(m, 3)
        # A server started after the eviction knows the cache as it is.
        sc.stop()
        sc.start()
        fourth = build()
        assert _count(fourth, "cache_hits") == units + 1, fourth
        print(f"sccache: {evicted} evicted; rebuild: {hits} hits, {misses} misses, {lost} entries the server "
              f"still listed; after a restart of the server: all hits")
    finally:
        sc.stop()
    assert not _pids_with_env("SCCACHE_SERVER_PORT", sc.env["SCCACHE_SERVER_PORT"]), "sccache server left running"


# --------------------------------------------------------------------------
# Go


def test_go_build_cache_rebuilds_through_eviction(mount_factory, base):
    _require("go", packages="golang-go")
    cfg = base / "artifactfs.yaml"
    build_projects.quota_config(cfg, GO_LAYOUT, "unlimited")
    m = mount_factory("m", config=cfg)
    packages = 24
    mod = base / "mod"
    expected = build_projects.go_module(mod, packages)
    (base / "gopath").mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(base), "GOCACHE": str(m.mnt),
           "GOPATH": str(base / "gopath"), "GOPROXY": "off", "GOFLAGS": "-mod=mod", "GO111MODULE": "on",
           "CGO_ENABLED": "0", "LC_ALL": "C"}

    def build() -> int:
        """Builds; returns how many packages were compiled (not from the cache)."""
        (mod / "prog").unlink(missing_ok=True)
        r = subprocess.run(["go", "build", "-x", "-o", "prog", "."], cwd=mod, env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, f"go build failed:\n{r.stderr[-3000:]}"
        assert harness.check([mod / "prog"]).strip() == str(expected), "the program computed a wrong value"
        return len(re.findall(r"/compile -o ", r.stderr))

    first = build()
    assert first >= packages + 1, f"only {first} compiles in a clean build"
    assert build() == 0, "a rebuild compiled again instead of using the cache"
    keys = harness.artifact_keys(m.data, 2)
    assert keys and all(re.fullmatch(r"[0-9a-f]{2}/[0-9a-f]{64}-[ad]", k) for k in keys), keys[:10]
    harness.assert_accounting(m, 2, expect_keys=keys)

    # Go reads its small entries (source hashes, action records) before the
    # package archives the linker opens last, so LRU takes those first;
    # keeping a fifth of the bytes takes the action records of the packages
    # (Go compiles them again) while many archives stay.
    evicted = build_projects.shrink_quota_and_wait(m, cfg, GO_LAYOUT, keys, keep=0.2)
    third = build()
    assert 0 < third <= first, f"{third} compiles after {evicted} evictions (a clean build had {first})"
    harness.assert_accounting(m, 2)
    print(f"go: {evicted} evicted; rebuild compiled {third} of {first} packages")


# --------------------------------------------------------------------------
# a BuildStream-style cache: directories published atomically


WRITER = textwrap.dedent(r'''
    import errno, hashlib, json, os, random, shutil, sys
    root, writer, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    keys = list(range(count))
    random.Random(f"{seed}-{writer}").shuffle(keys)   # writers race for the same keys
    published = raced = 0
    for i in keys:
        rnd = random.Random(f"{seed}-artifact-{i}")     # a key names one content
        files = {f"lib/f{j}.bin": rnd.randbytes(rnd.randint(2000, 30000)) for j in range(rnd.randint(2, 6))}
        key = hashlib.sha256(b"".join(files.values())).hexdigest()[:32]
        tmp = os.path.join(root, f".tmp-{key}-{os.getpid()}")
        os.makedirs(os.path.join(tmp, "lib"))
        for rel, data in files.items():
            with open(os.path.join(tmp, rel), "wb") as f:
                f.write(data)
        manifest = {rel: hashlib.sha256(d).hexdigest() for rel, d in files.items()}
        with open(os.path.join(tmp, "MANIFEST"), "w") as f:
            json.dump(manifest, f)
        try:
            os.rename(tmp, os.path.join(root, key))
            published += 1
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(tmp)                         # another writer was first
            raced += 1
    print(json.dumps({"published": published, "raced": raced}))
''')

READER = textwrap.dedent(r'''
    import hashlib, json, os, random, sys, time
    root, seconds, seed = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    rnd = random.Random(seed)
    seen = absent = 0
    partial = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        names = [n for n in os.listdir(root) if not n.startswith(".")]
        if not names:
            continue
        key = rnd.choice(names)
        try:
            d = os.open(os.path.join(root, key), os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            absent += 1                                  # evicted before we began: clean absence
            continue
        try:                                           # holding it open: it cannot go now
            with open(f"/proc/self/fd/{d}/MANIFEST") as f:
                manifest = json.load(f)
            for rel, digest in manifest.items():
                with open(f"/proc/self/fd/{d}/{rel}", "rb") as f:
                    if hashlib.sha256(f.read()).hexdigest() != digest:
                        partial.append(f"{key}/{rel}: content differs")
            seen += 1
        except (OSError, ValueError) as e:
            partial.append(f"{key}: {e!r}")
        finally:
            os.close(d)
    print(json.dumps({"seen": seen, "absent": absent, "partial": partial[:20]}))
''')


def test_buildstream_style_atomic_publish_readers_and_eviction(mount_factory, base):
    """Several processes publish directories (mkdir temp, write, rename to
    the key; ENOTEMPTY if another was first) while others read them, and the
    quota evicts all along: every reader either finds an artifact complete,
    with every file's content as its manifest says, or does not find it."""
    cfg = base / "artifactfs.yaml"
    cfg.write_text("layout:\n  depth: 1\nindex:\n  flush-interval: 100ms\n"
                   "quota:\n  max-size: 3M\n  min-free: 0\n  low-watermark: 0.5\n  min-age: 0s\n"
                   "  check-interval: 100ms\n")
    m = mount_factory("m", config=cfg)
    scripts = base / "scripts"
    scripts.mkdir()
    (scripts / "writer.py").write_text(WRITER)
    (scripts / "reader.py").write_text(READER)
    count = 80
    procs: list[subprocess.Popen] = []
    try:
        for w in range(3):
            procs.append(subprocess.Popen([sys.executable, scripts / "writer.py", m.mnt, str(w), str(count), "bst"],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for r in range(3):
            procs.append(subprocess.Popen([sys.executable, scripts / "reader.py", m.mnt, "12", f"r{r}"],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, f"{p.args} exited {p.returncode}:\n{err[-3000:]}"
            results.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    writers, readers = results[:3], results[3:]
    # Each key published at least once (again if it was evicted before the
    # next writer came to it); every other attempt lost the race cleanly.
    assert sum(w["published"] for w in writers) >= count, writers
    assert sum(w["published"] + w["raced"] for w in writers) == 3 * count, writers
    partial = [x for r in readers for x in r["partial"]]
    assert not partial, "readers saw partial artifacts:\n  " + "\n  ".join(partial)
    assert sum(r["seen"] for r in readers) > 0, readers
    assert m.totals()["stats.evictions"] > 0, "the quota evicted nothing"
    # quiet now: the quota holds and the index agrees with the data tree
    harness.wait_until(lambda: m.totals()["total.disk_bytes"] <= 3 * 1024 * 1024, 30.0,
                       what="usage under the limit")
    harness.wait_until(lambda: not os.listdir(m.store / "trash"), 30.0, what="the trash to be emptied")
    harness.assert_accounting(m)
    print(f"buildstream-style: {m.totals()['stats.evictions']} evictions; readers: "
          f"{sum(r['seen'] for r in readers)} complete, {sum(r['absent'] for r in readers)} absent")
