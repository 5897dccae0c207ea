"""Small generated projects that real build tools compile with their cache
on an artifactfs mount, and the quota switch the build-tool tests share.

Every project prints a number computed from all of its units, so a build
that links a stale or corrupt object from the cache prints the wrong one.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import harness
from harness import wait_until


def c_project(d: Path, units: int) -> int:
    """`units` translation units and a main, with a Makefile (CC may be
    overridden: `make CC="ccache gcc"`). Returns what the program prints."""
    d.mkdir(parents=True, exist_ok=True)
    expected = 0
    decls = []
    calls = []
    for i in range(units):
        # Some real work for the compiler: a loop and a table per unit.
        (d / f"u{i:03}.c").write_text(
            f"static const int table_{i}[8] = {{{', '.join(str((i * 7 + j) % 13) for j in range(8))}}};\n"
            f"int f_{i:03}(int x) {{\n"
            f"    int s = 0;\n"
            f"    for (int j = 0; j < 8; ++j) s += table_{i}[j] * (x + j);\n"
            f"    return s % 1000 + {i};\n"
            f"}}\n")
        decls.append(f"int f_{i:03}(int x);")
        calls.append(f"    total += f_{i:03}({i % 5});")
        expected += sum(((i * 7 + j) % 13) * (i % 5 + j) for j in range(8)) % 1000 + i
    (d / "main.c").write_text("#include <stdio.h>\n" + "\n".join(decls) +
                              "\nint main(void) {\n    long total = 0;\n" + "\n".join(calls) +
                              '\n    printf("%ld\\n", total);\n    return 0;\n}\n')
    (d / "Makefile").write_text(
        "CC ?= gcc\nCFLAGS = -O1\n"
        "SRCS = $(wildcard u*.c) main.c\nOBJS = $(SRCS:.c=.o)\n"
        "prog: $(OBJS)\n\tgcc -o $@ $(OBJS)\n"
        "%.o: %.c\n\t$(CC) $(CFLAGS) -c $< -o $@\n"
        "clean:\n\trm -f $(OBJS) prog\n")
    return expected


def go_module(d: Path, packages: int) -> int:
    """A Go module of `packages` packages and a main that uses them all.
    Returns what the program prints."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "go.mod").write_text("module example.com/farm\n\ngo 1.19\n")
    expected = 0
    imports = []
    calls = []
    for i in range(packages):
        p = d / f"p{i:02}"
        p.mkdir(exist_ok=True)
        (p / f"p{i:02}.go").write_text(
            f"package p{i:02}\n\n"
            f"var table = [...]int{{{', '.join(str((i * 5 + j) % 11) for j in range(6))}}}\n\n"
            f"func F(x int) int {{\n\ts := 0\n\tfor j, v := range table {{\n\t\ts += v * (x + j)\n\t}}\n"
            f"\treturn s%1000 + {i}\n}}\n")
        imports.append(f'\t"example.com/farm/p{i:02}"')
        calls.append(f"\ttotal += p{i:02}.F({i % 3})")
        expected += sum(((i * 5 + j) % 11) * (i % 3 + j) for j in range(6)) % 1000 + i
    (d / "main.go").write_text("package main\n\nimport (\n\t\"fmt\"\n" + "\n".join(imports) +
                               "\n)\n\nfunc main() {\n\ttotal := 0\n" + "\n".join(calls) +
                               "\n\tfmt.Println(total)\n}\n")
    return expected


LOW_WATERMARK = 0.9


def quota_config(path: Path, layout: str, max_size: str) -> None:
    """A configuration file for a build-tool cache: `layout` is the YAML of
    the layout section's body; once over max_size the quota evicts down to
    LOW_WATERMARK of it, with no minimum age."""
    path.write_text("layout:\n" + layout +
                    "index:\n  flush-interval: 100ms\n"
                    f"quota:\n  max-size: {max_size}\n  min-free: 0\n  low-watermark: {LOW_WATERMARK}\n"
                    "  min-age: 0s\n  check-interval: 200ms\n")


def artifact_disk_bytes(m: harness.Mount, keys: list[str]) -> int:
    total = 0
    for k in keys:
        st = os.lstat(m.data / k)
        total += st.st_blocks * 512 if not os.path.isdir(m.data / k) else harness.du_disk(m.data / k)
    return total


def shrink_quota_and_wait(m: harness.Mount, cfg: Path, layout: str, keys: list[str], keep: float = 0.5,
                          timeout: float = 60.0) -> int:
    """Sets max-size (SIGHUP) so that the cleanup keeps about `keep` of the
    bytes of the artifacts `keys` (what lies outside artifacts, directories
    and bookkeeping files, stays), and waits until it has evicted and the
    usage is under the limit. Returns how many artifacts were evicted."""
    # Past the 2 s in which artifacts just written are not evicted by a
    # routine cleanup.
    time.sleep(2.5)
    before = m.totals()
    in_artifacts = artifact_disk_bytes(m, keys)
    outside = before["total.disk_bytes"] - in_artifacts
    limit = int((outside + keep * in_artifacts) / LOW_WATERMARK)
    quota_config(cfg, layout, str(limit))
    os.kill(m.pid, signal.SIGHUP)
    wait_until(lambda: m.totals()["stats.evictions"] > before["stats.evictions"]
               and m.totals()["total.disk_bytes"] <= limit, timeout, 0.1,
               what=f"the cache to be cleaned up under {limit} bytes")
    # and back to no limit, so that the rebuild is not evicted under itself
    quota_config(cfg, layout, "unlimited")
    os.kill(m.pid, signal.SIGHUP)
    time.sleep(0.5)
    return m.totals()["stats.evictions"] - before["stats.evictions"]
