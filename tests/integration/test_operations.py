"""The operator's command line against a real mount: status (text, JSON,
Prometheus checked by promtool), ls in LRU order, du, pin, unpin, evict,
cleanup with --dry-run, the eviction log and its reasons, df telling the
quota, the same answers read from the index when no daemon runs, who may
steer the cache, and fsck finding and repairing a changed data tree."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

import harness
from harness import NOBODY, artifactfs_bin, as_user, run

MIB = 1 << 20


def cli(*args, **kw):
    return run([artifactfs_bin(), *args], **kw)


def cli_json(*args):
    r = cli(*args, "--json")
    assert r.returncode == 0, f"artifactfs {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}{r.stderr}"
    return json.loads(r.stdout)


def publish(m, key: str, size: int) -> None:
    (m.mnt / key).mkdir()
    (m.mnt / key / "blob").write_bytes(os.urandom(size))


def read(m, key: str) -> None:
    (m.mnt / key / "blob").read_bytes()


@pytest.fixture
def cache(mount_factory):
    """Five 1 MiB artifacts used in the order a, b, c, d, e (a least recently),
    a quota far above them, min-age 0 so that every one may go."""
    m = mount_factory("m", sets=["index.flush-interval=100ms", "quota.min-age=0s", "quota.max-size=64M"])
    for key in "abcde":
        publish(m, key, MIB)
    time.sleep(2.2)  # past the write grace of the newest
    for key in "abcde":
        read(m, key)
        time.sleep(0.05)
    time.sleep(0.3)  # flushed
    return m


def test_every_command_has_help_exit_codes_and_a_man_page():
    commands = ["mount", "unmount", "config", "status", "ls", "du", "log", "pin", "unpin", "evict", "cleanup", "fsck"]
    overview = cli("--help")
    assert overview.returncode == 0
    for c in commands:
        assert c in overview.stdout
        h = cli(c, "--help")
        assert h.returncode == 0, h.stderr
        assert f"usage: artifactfs {c}" in h.stdout and "exit status:" in h.stdout, h.stdout
        page = cli("man", c)
        assert page.returncode == 0 and page.stdout.startswith(f".TH ARTIFACTFS-{c.upper()} 1"), page.stdout[:200]
        # The man page carries the same option text as --help.
        assert "show this help" in page.stdout
    bad = cli("ls", "--no-such-option")
    assert bad.returncode == 2 and "unknown option '--no-such-option'" in bad.stderr


def test_status_matches_the_mount_and_prometheus_is_valid(cache, base):
    s = cli_json("status", cache.mnt)
    facts = harness.root_facts(cache.mnt)
    assert s["daemon_running"] is True
    assert s["mountpoint"] == str(cache.mnt) and s["store"] == str(cache.store)
    assert s["artifacts"] == 5 == facts["total.artifacts"]
    assert s["usage_bytes"] == facts["total.disk_bytes"] == harness.du_disk(cache.data)
    assert s["limit_bytes"] == harness.xattr_int(cache.mnt, "quota.limit_bytes") == 64 * MIB
    assert s["hits"] >= 5 and s["oldest_access_ns"] > 0
    assert s["quota_blocked"] is False and s["cleanup_running"] is False
    text = cli("status", cache.mnt)
    assert text.returncode == 0 and "of 64 MiB limit" in text.stdout and "\033[" not in text.stdout
    prom = cli("status", cache.mnt, "--prometheus")
    assert prom.returncode == 0
    assert f'artifactfs_usage_bytes{{store="{cache.store}",mountpoint="{cache.mnt}"}} {s["usage_bytes"]}' in prom.stdout
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (CI installs prometheus)")
    r = run([promtool, "check", "metrics"], input=prom.stdout)
    assert r.returncode == 0, f"promtool check metrics:\n{r.stdout}{r.stderr}\n{prom.stdout}"


def test_df_reports_the_limit_and_the_usage(cache):
    sv = os.statvfs(cache.mnt)
    size = sv.f_blocks * sv.f_frsize
    used = (sv.f_blocks - sv.f_bfree) * sv.f_frsize
    usage = harness.root_facts(cache.mnt)["total.disk_bytes"]
    assert size == 64 * MIB
    assert usage <= used < usage + sv.f_frsize
    df = harness.check(["df", "-B1", "--output=size,used", cache.mnt]).split("\n")[1].split()
    assert int(df[0]) == 64 * MIB and int(df[1]) == used


def test_ls_in_lru_order_du_and_pins(cache):
    rows = cli_json("ls", cache.mnt, "--sort", "lru")
    assert [r["key"] for r in rows] == list("abcde")
    assert all(r["disk_bytes"] >= MIB and r["files"] == 1 for r in rows)
    assert [r["key"] for r in cli_json("ls", cache.mnt, "--sort", "lru", "--limit", "2")] == ["a", "b"]
    assert cli_json("ls", cache.mnt, "c")[0]["key"] == "c"  # a prefix
    with open(cache.mnt / "d" / "blob", "rb"):
        assert [r["key"] for r in cli_json("ls", cache.mnt) if r["open"]] == ["d"]
    ns = cli_json("du", cache.mnt, "--depth", "1")
    assert {r["namespace"] for r in ns} == set("abcde") and sum(r["artifacts"] for r in ns) == 5

    out = cli_json("pin", "-m", cache.mnt, "a", str(cache.mnt / "b"))
    assert [(r["key"], r["outcome"]) for r in out] == [("a", "pinned"), ("b", "pinned")]
    assert harness.artifact_facts(cache.mnt / "a")["pinned"] == 1
    s = cli_json("status", cache.mnt)
    assert s["unevictable"]["pinned_bytes"] == sum(r["disk_bytes"] for r in rows if r["key"] in "ab")
    r = cli("unpin", "-m", cache.mnt, "b", "nosuchkey")
    assert r.returncode == 1 and "not found" in r.stdout
    assert harness.artifact_facts(cache.mnt / "b")["pinned"] == 0


def test_evict_is_all_or_nothing_and_logged(cache):
    cli_json("pin", "-m", cache.mnt, "a")
    with open(cache.mnt / "c" / "blob", "rb"):
        r = cli("evict", "-m", cache.mnt, "a", "b", "c", "--json")
    assert r.returncode == 1, r.stderr
    outcome = {x["key"]: x["outcome"] for x in json.loads(r.stdout)}
    assert outcome == {"a": "is pinned", "b": "evicted", "c": "in use"}
    assert not (cache.mnt / "b").exists() and not (cache.data / "b").exists()
    assert (cache.mnt / "a" / "blob").stat().st_size == MIB and (cache.mnt / "c" / "blob").stat().st_size == MIB
    log = cli_json("log", cache.mnt)
    assert [(e["key"], e["reason"]) for e in log] == [("b", "evict")]
    assert log[0]["disk_bytes"] >= MIB and log[0]["age_ns"] >= 0
    assert cli_json("status", cache.mnt)["evictions_24h"] == 1


def test_cleanup_dry_run_lists_what_cleanup_takes(cache):
    plan = cli_json("cleanup", cache.mnt, "--to", "2500K", "--dry-run")
    keys = [a["key"] for a in plan["artifacts"]]
    assert keys == ["a", "b", "c"] and plan["dry_run"] is True
    assert all((cache.mnt / k).exists() for k in "abcde"), "a dry run evicted something"
    text = cli("cleanup", cache.mnt, "--to", "2500K", "--dry-run")
    assert text.returncode == 0 and "would evict 3 artifacts" in text.stdout
    done = cli_json("cleanup", cache.mnt, "--to", "2500K")
    assert [a["key"] for a in done["artifacts"]] == keys and done["target_met"] is True
    assert sorted(os.listdir(cache.mnt)) == ["d", "e"]
    assert [e["reason"] for e in cli_json("log", cache.mnt, "--since", "1h")] == ["cleanup"] * 3


def test_quota_evictions_are_logged_with_their_reason(mount_factory):
    m = mount_factory("m", sets=["index.flush-interval=100ms", "quota.min-age=0s", "quota.max-size=6M",
                                 "quota.check-interval=200ms"])
    for i in range(8):
        publish(m, f"k{i}", MIB)
        time.sleep(0.1)
    harness.wait_until(lambda: cli_json("log", m.mnt), 20, 0.2, "quota evictions in the log")
    assert {e["reason"] for e in cli_json("log", m.mnt)} == {"quota"}


def test_the_index_answers_when_no_daemon_runs(cache):
    cli_json("evict", "-m", cache.mnt, "e")
    live = {c: cli_json(c, cache.mnt) for c in ("ls", "log")}
    status = cli_json("status", cache.mnt)
    assert cache.unmount() == 0
    store = ["--store", cache.store]
    off = cli_json("status", *store)
    assert off["daemon_running"] is False and off["limit_known"] is False
    for k in ("usage_bytes", "artifacts", "evictions", "hits"):
        assert off[k] == status[k], k
    assert [r["key"] for r in cli_json("ls", *store)] == [r["key"] for r in live["ls"]]
    assert cli_json("log", *store) == live["log"]
    with_config = cli_json("status", *store, "--set", "quota.max-size=32M")
    assert with_config["limit_bytes"] == 32 * MIB
    # Steering needs the daemon.
    r = cli("pin", *store, "a")
    assert r.returncode == 4 and "no daemon serves" in r.stderr


def test_only_operators_steer_the_cache(mount_factory):
    m = mount_factory("m", sets=["index.flush-interval=100ms", f"control.group={NOBODY + 1}"])
    publish(m, "a", 4096)
    os.chmod(m.base, 0o755)
    r = run(as_user([artifactfs_bin(), "pin", "-m", m.mnt, "a"]))
    assert r.returncode == 3 and "for the cache's operators" in r.stderr, r.stderr
    r = run(as_user([artifactfs_bin(), "status", m.mnt, "--json"]))
    assert r.returncode == 0 and json.loads(r.stdout)["artifacts"] == 1
    r = run(as_user([artifactfs_bin(), "pin", "-m", m.mnt, "a"], groups=[NOBODY + 1]))
    assert r.returncode == 0, r.stderr
    assert harness.artifact_facts(m.mnt / "a")["pinned"] == 1


def test_fsck_finds_and_repairs_a_changed_tree(cache):
    r = cli("fsck", cache.store)
    assert r.returncode == 1 and "unmount it first" in r.stderr
    assert cache.unmount() == 0
    r = cli("fsck", cache.store)
    assert r.returncode == 0 and "agrees" in r.stdout, r.stdout + r.stderr
    (cache.data / "a" / "extra").write_bytes(os.urandom(70000))  # behind the daemon's back
    shutil.rmtree(cache.data / "b")
    r = cli("fsck", cache.store, "--json")
    assert r.returncode == 5, r.stderr
    diffs = json.loads(r.stdout)["differences"]
    assert any(d.startswith("usage differs: a:") for d in diffs), diffs
    assert any(d.startswith("not in the data tree: b") for d in diffs), diffs
    r = cli("fsck", cache.store, "--repair")
    assert r.returncode == 6 and "repaired" in r.stdout, r.stdout + r.stderr
    assert cli("fsck", cache.store).returncode == 0
    cache.start()
    assert harness.artifact_facts(cache.mnt / "a")["disk_bytes"] == harness.du_disk(cache.data / "a")
    assert [r["key"] for r in cli_json("ls", cache.mnt)] == ["a", "c", "d", "e"]  # access order kept
