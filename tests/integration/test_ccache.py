"""ccache with its cache directory on an artifactfs mount.

ccache keeps results (`<h>/<h>/<hash>R`) and manifests (`<h>/<h>/<hash>M`) at
depth 3, its `stats` files at depth 2 and 3, `CACHEDIR.TAG` at depth 2 and a
`tmp/` directory at depth 1. With layout.depth=3 and those bookkeeping names
kept, every result and manifest is one artifact. ccache's own size limit is
off (max_size = 0) so that artifactfs manages the size.

Checked: a miss then hits (ccache's own counters), identical object files,
result files as artifacts with readable facts, a hit counted as an access of
the artifact, hits after a remount, accounting equal to du of the store, and
a hit by an unprivileged user reading the cache with CCACHE_READONLY=1 being
recorded although that user cannot write to the cache.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import build_projects
import harness

DEPTH = 3
KEEP = ["stats", "*.lock", "*.alive", "CACHEDIR.TAG", "tmp", "*.tmp*"]
NOBODY = 65534
ARTIFACT_RE = re.compile(r"^[0-9a-z]/[0-9a-z]/[0-9a-z]+[RM]$")

SOURCE = r"""#include <stdio.h>
#include <string.h>

static int add(int a, int b) { return a + b; }

int main(int argc, char **argv) {
    (void)argv;
    printf("%d %zu\n", add(argc, 2), strlen("artifactfs"));
    return 0;
}
"""


def _require_tools():
    missing = [t for t in ("ccache", "gcc", "setpriv") if not shutil.which(t)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (packages ccache, gcc, util-linux)")


class Ccache:
    """Runs ccache gcc with the cache on `mnt`, the source in `src`, and a
    clean environment (no CCACHE_* inherited from the caller)."""

    def __init__(self, mnt: Path, base: Path):
        self.mnt = mnt
        self.src = base / "src"
        self.src.mkdir(mode=0o755, exist_ok=True)
        os.chmod(self.src, 0o755)
        (self.src / "t.c").write_text(SOURCE)
        os.chmod(self.src / "t.c", 0o644)
        self.home = base / "home"
        self.home.mkdir(exist_ok=True)
        self.logs = base / "logs"
        self.logs.mkdir(exist_ok=True)
        self.runs = 0

    def env(self, **extra: str) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
               "LC_ALL": "C", "CCACHE_DIR": str(self.mnt), "CCACHE_NOHASHDIR": "1",
               "CCACHE_UMASK": "022"}  # the cache readable by other users
        env.update(extra)
        return env

    def tool(self, *args: str) -> str:
        return harness.check(["ccache", *args], env=self.env())

    def stats(self) -> dict[str, int]:
        out = self.tool("--print-stats")
        stats = {}
        for line in out.splitlines():
            name, _, value = line.partition("\t")
            if value.strip().lstrip("-").isdigit():
                stats[name] = int(value)
        return stats

    def compile(self, obj: Path, *, as_user: int | None = None, **extra_env: str) -> str:
        """ccache gcc -c t.c -o OBJ in the source directory; returns the
        ccache log of this run."""
        self.runs += 1
        log = self.logs / f"run{self.runs}.log"
        if as_user is not None:
            log = obj.parent / f"run{self.runs}.log"
        env = self.env(CCACHE_LOGFILE=str(log), **extra_env)
        argv = ["ccache", "gcc", "-O2", "-c", "t.c", "-o", str(obj)]
        if as_user is not None:
            argv = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups",
                    *argv]
        r = subprocess.run(argv, cwd=self.src, env=env, capture_output=True, text=True,
                           timeout=60)
        text = log.read_text(errors="replace") if log.exists() else "(no ccache log)"
        assert r.returncode == 0, (f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}\n"
                                   f"{r.stderr}\nccache log:\n{text[-3000:]}")
        assert obj.exists(), f"{obj} not produced"
        return text


def _hits(s: dict) -> int:
    return s.get("direct_cache_hit", 0) + s.get("preprocessed_cache_hit", 0)


def _misses(s: dict) -> int:
    return s.get("cache_miss", 0)


def _artifacts(m: harness.Mount) -> list[str]:
    keys = harness.artifact_keys(m.data, DEPTH, KEEP)
    odd = [k for k in keys if not ARTIFACT_RE.match(k)]
    assert not odd, f"entries at depth {DEPTH} that are not ccache results or manifests: {odd}"
    return keys


def _results(keys: list[str]) -> list[str]:
    return [k for k in keys if k.endswith("R")]


@pytest.fixture
def cc_mount(mount_factory):
    _require_tools()
    m = mount_factory("m", depth=DEPTH, keep=KEEP, sets=["index.flush-interval=100ms"])
    # A new store's mount root is private (0700); an operator sharing the
    # cache opens it to readers.
    os.chmod(m.mnt, 0o755)
    return m


@pytest.fixture
def cc(cc_mount, base) -> Ccache:
    c = Ccache(cc_mount.mnt, base)
    c.tool("--set-config", "max_size=0")
    assert c.tool("--get-config", "max_size").strip() in ("0", "0.0"), "max_size not 0"
    return c


def test_ccache_miss_hits_and_accounting(cc_mount, cc, base):
    m = cc_mount
    out = base / "out"
    out.mkdir()

    # 1. a miss: the result and manifest become artifacts at depth 3
    cc.compile(out / "1.o")
    s1 = cc.stats()
    assert _misses(s1) == 1 and _hits(s1) == 0, s1
    keys = _artifacts(m)
    results = _results(keys)
    assert results, f"no ccache result file (…R) at depth {DEPTH}: {keys}"
    totals = m.totals()
    assert totals["total.artifacts"] == len(keys) > 0, (totals, keys)
    facts1 = {k: m.facts(k) for k in keys}  # every fact readable by name
    for k, f in facts1.items():
        assert f["files"] == 1 and f["disk_bytes"] > 0 and f["pinned"] == 0, (k, f)
        assert f["created"] > 0, (k, f)
    harness.assert_accounting(m, DEPTH, KEEP, expect_keys=keys)

    # 2. a hit: the same object file, and the result artifact was used
    hits_before = m.totals()["stats.hits"]
    t0 = time.time_ns()
    log = cc.compile(out / "2.o")
    t1 = time.time_ns()
    s2 = cc.stats()
    assert _hits(s2) == 1 and _misses(s2) == 1, (s2, log[-2000:])
    assert "Result: direct_cache_hit" in log or "Result: preprocessed_cache_hit" in log, log
    assert (out / "1.o").read_bytes() == (out / "2.o").read_bytes(), "object files differ"
    assert _artifacts(m) == keys, "a hit changed the set of artifacts"
    facts2 = {k: m.facts(k) for k in keys}
    for k in results:
        assert facts2[k]["access_count"] >= facts1[k]["access_count"] + 1, (k, facts1[k], facts2[k])
        assert t0 <= facts2[k]["last_access"] <= t1, (k, t0, facts2[k]["last_access"], t1)
        assert facts2[k]["created"] == facts1[k]["created"], k
    assert m.totals()["stats.hits"] > hits_before
    harness.assert_accounting(m, DEPTH, KEEP, expect_keys=keys)

    # 3. after a remount: still a hit, facts kept and counted on
    m.remount()
    facts3 = {k: m.facts(k) for k in keys}
    assert facts3 == facts2, "access facts changed across the remount"
    t0 = time.time_ns()
    log = cc.compile(out / "3.o")
    t1 = time.time_ns()
    s3 = cc.stats()
    assert _hits(s3) == 2 and _misses(s3) == 1, (s3, log[-2000:])
    assert (out / "3.o").read_bytes() == (out / "1.o").read_bytes(), "object file differs after remount"
    for k in results:
        f = m.facts(k)
        assert f["access_count"] >= facts3[k]["access_count"] + 1, (k, facts3[k], f)
        assert t0 <= f["last_access"] <= t1, (k, t0, f["last_access"], t1)
    harness.assert_accounting(m, DEPTH, KEEP, expect_keys=keys)
    # the root totals against du of the data tree, spelled out
    assert m.totals()["total.disk_bytes"] == harness.du_disk(m.data)

    # a different source is a new miss, a new artifact, and the totals follow
    (cc.src / "t.c").write_text(SOURCE.replace("artifactfs", "artifactfs, again"))
    cc.compile(out / "4.o")
    s4 = cc.stats()
    assert _misses(s4) == 2, s4
    keys4 = _artifacts(m)
    assert set(keys) < set(keys4), (keys, keys4)
    assert m.totals()["total.artifacts"] == len(keys4)
    harness.assert_accounting(m, DEPTH, KEEP, expect_keys=keys4)


def test_ccache_readonly_unprivileged_hit_recorded(cc_mount, cc, base):
    """A user who cannot write to the cache (CCACHE_READONLY=1, run as
    nobody) gets a hit; the read is recorded on the artifact although the
    reader could not have touched anything itself."""
    m = cc_mount
    out = base / "out"
    out.mkdir()
    cc.compile(out / "root.o")
    keys = _artifacts(m)
    results = _results(keys)
    assert results, keys
    before = {k: m.facts(k) for k in keys}
    stats_before = cc.stats()

    ro = base / "nobody"
    ro.mkdir()
    (ro / "tmp").mkdir()
    for d in (ro, ro / "tmp"):
        os.chown(d, NOBODY, NOBODY)
    t0 = time.time_ns()
    log = cc.compile(ro / "nobody.o", as_user=NOBODY, CCACHE_READONLY="1",
                     CCACHE_TEMPDIR=str(ro / "tmp"), TMPDIR=str(ro / "tmp"), HOME=str(ro))
    t1 = time.time_ns()
    assert "Succeeded getting cached result" in log and (
        "Result: direct_cache_hit" in log or "Result: preprocessed_cache_hit" in log), log[-3000:]
    assert (ro / "nobody.o").read_bytes() == (out / "root.o").read_bytes()
    assert os.stat(ro / "nobody.o").st_uid == NOBODY

    # recorded by the file system
    after = {k: m.facts(k) for k in keys}
    for k in results:
        assert after[k]["access_count"] >= before[k]["access_count"] + 1, (k, before[k], after[k])
        assert t0 <= after[k]["last_access"] <= t1, (k, t0, after[k]["last_access"], t1)
    # ... while the reader changed nothing in the cache
    assert _artifacts(m) == keys
    owned = harness.check(["find", m.data, "-uid", str(NOBODY)]).split()
    assert not owned, f"the read-only user created files in the store: {owned}"
    assert _hits(cc.stats()) == _hits(stats_before), "ccache's own counters saw the read-only hit"
    harness.assert_accounting(m, DEPTH, KEEP, expect_keys=keys)


# --------------------------------------------------------------------------
# a real project built with make -j, through an eviction


UNITS = 200
CC_LAYOUT = (f"  depth: {DEPTH}\n  keep: [" + ", ".join(f"'{k}'" for k in KEEP) + "]\n")


def test_ccache_make_j_rebuilds_through_eviction(mount_factory, base):
    """A project of a few hundred translation units built with make -j and
    CCACHE_DIR on the mount (max_size = 0): from clean all misses; rebuilt
    from clean all hits; after the quota evicted part of the cache, rebuilt
    again: it succeeds with some misses and the rest hits, no errors, and
    the program computes what it must."""
    _require_tools()
    cfg = base / "artifactfs.yaml"
    build_projects.quota_config(cfg, CC_LAYOUT, "unlimited")
    m = mount_factory("m", config=cfg)
    cc = Ccache(m.mnt, base)
    cc.tool("--set-config", "max_size=0")
    proj = base / "proj"
    expected = build_projects.c_project(proj, UNITS)
    env = cc.env()
    jobs = str(max(2, 2 * (os.cpu_count() or 1)))

    def build() -> dict[str, int]:
        harness.check(["make", "-s", "clean"], cwd=proj, env=env)
        cc.tool("--zero-stats")
        r = subprocess.run(["make", "-s", "-j", jobs, "CC=ccache gcc", "prog"], cwd=proj, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"make failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        assert harness.check([proj / "prog"]).strip() == str(expected), "the program computed a wrong value"
        s = cc.stats()
        errors = {k: v for k, v in s.items() if v and any(w in k for w in ("error", "failed", "bad_"))}
        assert not errors, f"ccache reported errors: {errors}"
        return s

    first = build()
    assert _misses(first) == UNITS + 1 and _hits(first) == 0, first
    second = build()
    assert _hits(second) == UNITS + 1 and _misses(second) == 0, second
    harness.assert_accounting(m, DEPTH, KEEP)

    evicted = build_projects.shrink_quota_and_wait(m, cfg, CC_LAYOUT, _artifacts(m))
    assert evicted > 0
    third = build()
    assert _misses(third) > 0, f"nothing was missing after {evicted} evictions: {third}"
    assert _hits(third) > 0, f"the eviction took everything: {third}"
    assert _hits(third) + _misses(third) == UNITS + 1, third
    harness.assert_accounting(m, DEPTH, KEEP)
    print(f"ccache: {evicted} artifacts evicted; rebuild: {_hits(third)} hits, {_misses(third)} misses")
