"""Accounting stays exact while writes race renames and removals of the same
files across artifacts, on the multi-threaded loop.

Writer threads keep appending to files; a mover thread renames files and
whole subdirectories between artifacts and back; a remover unlinks files
and makes hard links across artifacts. When everything has stopped, every
artifact's facts and the root totals must equal what du reports for the
data tree.
"""

from __future__ import annotations

import errno
import os
import random
import threading
import time

import harness

ARTIFACTS = ("a", "b", "c")


def test_writes_racing_renames_unlinks_and_links(mount_factory):
    m = mount_factory(depth=1, sets=["index.flush-interval=100ms", "fuse.threads=4"])
    for a in ARTIFACTS:
        (m.mnt / a / "sub").mkdir(parents=True)
    stop = threading.Event()
    errors: list[str] = []
    lock = threading.Lock()

    def note(what, e):
        # Races make names vanish under a thread; only these outcomes are
        # expected from the file system.
        if isinstance(e, OSError) and e.errno in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY):
            return
        with lock:
            errors.append(f"{what}: {e!r}")

    def writer(seed):
        rnd = random.Random(seed)
        while not stop.is_set():
            path = m.mnt / rnd.choice(ARTIFACTS) / rnd.choice(["", "sub"]) / f"w{seed}-{rnd.randrange(6)}"
            try:
                with open(path, "ab") as f:
                    for _ in range(rnd.randrange(1, 8)):
                        f.write(os.urandom(rnd.choice([100, 4096, 20000])))
                        f.flush()
            except OSError as e:
                note(f"write {path}", e)

    def mover():
        rnd = random.Random(7)
        while not stop.is_set():
            src, dst = rnd.sample(ARTIFACTS, 2)
            try:
                if rnd.random() < 0.3:
                    os.rename(m.mnt / src / "sub", m.mnt / dst / f"sub-from-{src}")
                    os.rename(m.mnt / dst / f"sub-from-{src}", m.mnt / src / "sub")
                else:
                    names = os.listdir(m.mnt / src)
                    files = [n for n in names if n.startswith("w")]
                    if files:
                        n = rnd.choice(files)
                        os.rename(m.mnt / src / n, m.mnt / dst / n)
            except OSError as e:
                note("rename", e)

    def remover():
        rnd = random.Random(11)
        while not stop.is_set():
            a, b = rnd.sample(ARTIFACTS, 2)
            try:
                files = [n for n in os.listdir(m.mnt / a) if n.startswith("w")]
                if not files:
                    continue
                n = rnd.choice(files)
                if rnd.random() < 0.5:
                    os.link(m.mnt / a / n, m.mnt / b / f"link-{n}-{rnd.randrange(1000)}")
                else:
                    os.unlink(m.mnt / a / n)
                links = [x for x in os.listdir(m.mnt / b) if x.startswith("link-")]
                if links and rnd.random() < 0.5:
                    os.unlink(m.mnt / b / rnd.choice(links))
            except OSError as e:
                note("link/unlink", e)
            time.sleep(0.001)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(3)]
    threads += [threading.Thread(target=mover), threading.Thread(target=remover)]
    harness.run_threads_for(threads, 8, stop)
    assert not errors, "unexpected errors:\n  " + "\n  ".join(errors[:20])
    harness.assert_accounting(m, depth=1)
    # The same numbers from the index after a clean remount.
    m.remount()
    harness.assert_accounting(m, depth=1)
