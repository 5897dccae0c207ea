"""kill -9 of the daemon in the middle of a write-heavy workload.

Writer processes publish artifacts the way build tools should: write under a
temporary name at the artifact depth, then rename to the key. Each writer
appends a key to its journal only after rename(2) returned. The daemon is
killed with SIGKILL while they run; after mounting again (over the dead
mount), every journalled artifact must be complete with the right content,
and the index must agree with the data tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import harness

WRITER = r"""
import hashlib, json, os, random, sys
mnt, journal, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
with open(journal, "a", buffering=1) as log:
    for i in range(100000):
        key = f"k{seed}-{i}"
        tmp = os.path.join(mnt, f".tmp-{key}")
        try:
            os.mkdir(tmp)
            manifest = {}
            for j in range(rnd.randint(1, 6)):
                data = rnd.randbytes(rnd.choice([0, 100, 4096, 70000, 300000]))
                name = f"f{j}"
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(data)
                manifest[name] = hashlib.sha256(data).hexdigest()
            with open(os.path.join(tmp, "MANIFEST"), "w") as f:
                json.dump(manifest, f)
            os.rename(tmp, os.path.join(mnt, key))
        except OSError:
            sys.exit(0)  # the daemon is gone
        log.write(key + "\n")
"""


def _verify_artifact(root) -> list[str]:
    problems = []
    try:
        manifest = json.loads((root / "MANIFEST").read_text())
    except (OSError, ValueError) as e:
        return [f"{root.name}: MANIFEST unreadable: {e}"]
    for name, digest in manifest.items():
        try:
            got = hashlib.sha256((root / name).read_bytes()).hexdigest()
        except OSError as e:
            problems.append(f"{root.name}/{name}: {e}")
            continue
        if got != digest:
            problems.append(f"{root.name}/{name}: content differs")
    return problems


def test_kill9_during_write_heavy_workload(mount_factory, base):
    m = mount_factory(depth=1, sets=["index.flush-interval=200ms", "fuse.threads=2"])
    writers = []
    journals = [base / f"journal-{n}" for n in range(3)]
    try:
        for n, journal in enumerate(journals):
            writers.append(subprocess.Popen([sys.executable, "-c", WRITER, str(m.mnt), str(journal), str(n)],
                                            stderr=subprocess.DEVNULL))
        harness.wait_until(lambda: sum(len(j.read_text().split()) for j in journals if j.exists()) >= 30,
                           timeout=60, what="writers publishing artifacts")
        time.sleep(0.3)  # be in the middle of writes, not between them
        m.kill9()
    finally:
        for w in writers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()

    published = [k for j in journals for k in j.read_text().split()]
    assert len(published) >= 30

    m.start()  # over the dead mount: the daemon clears it and recovers the index
    # Only what changed since the last flush is re-walked (fs/recover_changed.hpp).
    assert "recovered the index from what changed" in m.stderr_text(), m.stderr_text()
    problems = []
    for key in published:
        root = m.mnt / key
        if not root.is_dir():
            problems.append(f"{key}: published before the kill but missing")
            continue
        problems += _verify_artifact(root)
    assert not problems, "artifacts published before kill -9 are damaged:\n  " + "\n  ".join(problems[:20])
    # Temporaries the kill interrupted are artifacts of their own (never
    # half of a published one); the accounting covers them too.
    harness.assert_accounting(m, depth=1)
    # And the daemon keeps working: publish one more and account for it.
    (m.mnt / "after").mkdir()
    (m.mnt / "after" / "f").write_bytes(os.urandom(12345))
    harness.assert_accounting(m, depth=1)
