#!/usr/bin/env python3
"""Writes the Markdown report and the PNG chart of one bench/run.sh results file.

    bench/report.py RESULTS.tsv      -> RESULTS.md and RESULTS.png beside it

The chart is drawn by gnuplot: every target's speed relative to the native
directory, per workload, median over rounds with the lowest and highest round.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from figures import (measure_label, GOALS, OPTIONAL_TARGETS, MEASURES, TARGET_LABELS, Results, fmt, fmt_spread, evidence, goal_verdict, load,
                     ratio_text)

FILE_TABLES = [
    ("Small files and metadata", ["open_cold", "open_warm", "open_warm_j4", "stat_cold", "stat_warm"]),
    ("Large files and directories", ["seq_cold", "seq_warm", "readdir_cold", "readdir_warm", "readdir_l_warm"]),
    ("Small-file opens while other clients read from the disk", ["mixed2", "mixed2_p99_us"]),
]
# Pairs worth a ratio: artifactfs against the limit, the floor, its peers and itself.
COMPARISONS = [
    ("artifactfs-t4", "native"), ("artifactfs-t4", "floor-t1"), ("artifactfs-t4", "floor-t4"),
    ("artifactfs-t4", "passthrough_hp"), ("artifactfs-t4", "artifactfs-t4-norecord"),
    ("artifactfs-t4", "artifactfs-t4-devfuse"),
    ("artifactfs-t1", "floor-t1"), ("artifactfs-t1", "passthrough_hp-single"),
    ("artifactfs-t4", "baseline-t4"), ("artifactfs-t4", "bindfs"), ("artifactfs-t4", "mergerfs"), ("floor-t1", "native"),
]
CHART_MEASURES = ["open_cold", "open_warm", "open_warm_j4", "stat_cold", "stat_warm", "seq_cold", "seq_warm",
                  "readdir_cold", "readdir_warm", "tar_extract_s", "cp_out_s", "ccache_rebuild_s"]
CHART_LABELS = {"open_cold": "open cold", "open_warm": "open warm", "open_warm_j4": "open warm x4",
                "stat_cold": "stat cold", "stat_warm": "stat warm", "seq_cold": "read cold",
                "seq_warm": "read warm", "readdir_cold": "readdir cold", "readdir_warm": "readdir warm",
                "tar_extract_s": "tar -x", "cp_out_s": "cp -a out", "ccache_rebuild_s": "ccache"}


def label(target: str) -> str:
    return TARGET_LABELS.get(target, target)


def machine_table(res: Results) -> list[str]:
    out = ["| | |", "|---|---|"]
    for key, value in res.meta.items():
        if key not in ("complete", "smoke", "rounds", "command", "load average"):
            out.append(f"| {key} | {value} |")
    loads = ", ".join(f"{res.loads[r]:.2f}" for r in sorted(res.loads))
    out.append(f"| load average (1 min) at the start of each round | {loads} |")
    if "load average" in res.meta:
        out.append(f"| load average at the start | {res.meta['load average']} |")
    return out


def measure_table(res: Results, measures: list[str]) -> list[str]:
    measures = [m for m in measures if any(res.has(t, m) for t in res.targets)]
    if not measures:
        return []
    head = "| target | " + " | ".join(f"{measure_label(res, m)} ({MEASURES[m].unit})" for m in measures) + " |"
    out = [head, "|---" * (len(measures) + 1) + "|"]
    for t in res.targets:
        if not any(res.has(t, m) for m in measures):
            continue
        out.append(f"| {label(t)} | " + " | ".join(fmt_spread(res.spread(t, m)) for m in measures) + " |")
    return out


def goals_table(res: Results) -> list[str]:
    out = ["| goal | measured (median of per-round ratios, range) | verdict | per operation, from the profile |",
           "|---|---|---|---|"]
    for g in GOALS:
        if g.against in OPTIONAL_TARGETS and g.against not in res.targets:
            continue  # a goal against an optional target (--baseline) that this run left out
        r, verdict = goal_verdict(res, g)
        out.append(f"| {g.text} ({label(g.target)} / {label(g.against)}) | {ratio_text(g.measure, r)} | {verdict} "
                   f"| {evidence(res, g)} |")
    return out


def ratio_table(res: Results) -> list[str]:
    measures = [m for m in MEASURES if m not in ("ccache_hits", "evict_create_files_per_s", "tar_sync_s")]
    pairs = [(a, b) for a, b in COMPARISONS if res.targets.count(a) and res.targets.count(b)]
    cols = [m for m in measures if any(res.ratio(m, a, b) for a, b in pairs)]
    if not cols:
        return []
    out = ["| ratio | " + " | ".join(measure_label(res, m) for m in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for a, b in pairs:
        out.append(f"| {label(a)} / {label(b)} | " + " | ".join(fmt_spread(res.ratio(m, a, b), "x") for m in cols) + " |")
    return out


def profile_table(res: Results, prefix: str, first: list[str]) -> list[str]:
    """Per target and operation, the profile keys starting with `prefix`
    (after the keys in `first`), most frequent first."""
    if not res.profile:
        return []
    totals: dict[str, float] = {}
    for values in res.profile.values():
        for k, v in values.items():
            if k.startswith(prefix) and k not in first:
                totals[k] = totals.get(k, 0) + v
    keys = first + sorted(totals, key=lambda k: -totals[k])
    names = [k.split(":", 1)[-1] for k in keys]
    out = ["| target | operation | " + " | ".join(names) + " |", "|---" * (len(keys) + 2) + "|"]
    for (target, op), values in res.profile.items():
        out.append(f"| {label(target)} | {op} | " + " | ".join(fmt(values.get(k)) for k in keys) + " |")
    return out


def chart(res: Results, png: Path) -> bool:
    targets = [t for t in res.targets if t != "native"]
    measures = [m for m in CHART_MEASURES if any(res.ratio(m, t, "native") for t in targets)]
    if not measures or not targets:
        return False
    data = png.with_suffix(".chart.dat")
    rows = []
    for m in measures:
        cells = [CHART_LABELS[m].replace(" ", "\\n", 1)]
        for t in targets:
            r = res.ratio(m, t, "native")
            cells += ["NaN", "NaN", "NaN"] if r is None else [f"{r.median:.5g}", f"{r.low:.5g}", f"{r.high:.5g}"]
        rows.append("\t".join(f'"{c}"' if i == 0 else c for i, c in enumerate(cells)))
    data.write_text("\n".join(rows) + "\n")
    ratios = [x for m in measures for t in targets if (r := res.ratio(m, t, "native")) for x in (r.low, r.high)]
    ymin = min(0.5, min(ratios) / 1.5)
    ymax = max(2.0, max(ratios) * 1.5)
    colors = ["#1b9e77", "#66c2a5", "#7570b3", "#d95f02", "#fdae61", "#e7298a", "#f4a6c8", "#66a61e", "#e6ab02",
              "#a6761d", "#666666"]
    plots = ", ".join(
        f"'{data}' using {2 + 3 * i}:{3 + 3 * i}:{4 + 3 * i}{':xtic(1)' if i == 0 else ''} "
        f"title '{label(t)}' lc rgb '{colors[i % len(colors)]}'"
        for i, t in enumerate(targets))
    title = (f"Speed relative to the native directory (log scale; median of {res.meta.get('rounds', '?')} "
             f"interleaved rounds, bars: lowest and highest round)\\n{res.meta.get('CPU', '')}, "
             f"{res.meta.get('nproc', '?')} cores, kernel {res.meta.get('kernel', '')}, {res.meta.get('date', '')}")
    script = f"""
set terminal pngcairo size 1600,720 font ",10" noenhanced
set output '{png}'
set title "{title}"
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.8 border -1
set logscale y
set yrange [{ymin:.4g}:{ymax:.4g}]
set ytics (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 2, 3, 10, 30)
set bmargin 5
set grid ytics
set ylabel "speed / native (higher is better)"
set key outside right top vertical
set xtics nomirror
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5
plot {plots}
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    data.unlink()
    return True


def report(tsv: Path) -> None:
    res = load(tsv)
    md, png = tsv.with_suffix(".md"), tsv.with_suffix(".png")
    n = res.meta.get("rounds", "?")
    lines = [f"# artifactfs benchmark results, {res.meta.get('date', '')}, {res.meta.get('host', '')}", "",
             f"Produced by `{res.meta.get('command', 'bench/run.sh')}` in {n} interleaved round(s): each round "
             "measures every target once, in turn, so slow phases of a shared machine hit all of them alike. "
             "Cells: median over rounds (lowest-highest round). Ratios are computed within each round, then the "
             "median (range) is given; a ratio is a speed, higher is better, also for times. The raw figures: "
             f"[{tsv.name}]({tsv.name}). What each measurement does: bench/README.md.", ""]
    if res.meta.get("smoke") == "1":
        lines += ["**Smoke run: tiny sizes, one round. The figures mean nothing.**", ""]
    if res.notes.get("run_history"):
        lines += [f"**{res.notes['run_history']}**", ""]
    if res.failures:
        lines += ["## Failed measurements", "", "| round | target | measurement | error |", "|---|---|---|---|"]
        lines += [f"| {r} | {label(t)} | {m} | {why} |" for r, t, m, why in res.failures]
        lines += [""]
    lines += ["## Machine", "", *machine_table(res), ""]
    if chart(res, png):
        lines += [f"![speed relative to native]({png.name})", ""]
    lines += ["## Goals", "", *goals_table(res), ""]
    lines += ["## Data set", "", f"{res.notes.get('data_set', '-')}; warm measurements make "
              f"{res.notes.get('warm_passes', '?')} pass(es) after an unmeasured one.", ""]
    for title, measures in FILE_TABLES:
        table = measure_table(res, measures)
        if table:
            lines += [f"## {title}", "", *table, ""]
    tree = measure_table(res, ["tar_extract_s", "tar_sync_s", "cp_out_s"])
    if tree:
        lines += ["## A source tree: extraction onto the target, copy out of it", "",
                  f"{res.notes.get('tree_source', '')}: {res.notes.get('tree_files', '?')} files, "
                  f"{res.notes.get('tree_mib', '?')} MiB as an uncompressed tar held in the page cache.", "", *tree, ""]
    cc = measure_table(res, ["ccache_rebuild_s", "ccache_hits"])
    if cc:
        lines += ["## ccache rebuild", "",
                  f"{res.notes.get('ccache_project', '')}; the cache filled by one build "
                  f"({fmt(float(res.notes.get('ccache_fill_build_s', 'nan')))} s), copied onto the mount; "
                  "each round cleans the build directory, drops the kernel's caches and rebuilds with every "
                  "compilation a cache hit.", "", *cc, ""]
    ev = measure_table(res, ["delete_trees_s", "evict_create_files_per_s"])
    if ev:
        lines += ["## Eviction against rm -rf", "",
                  f"{res.notes.get('evict', '')}: artifactfs (4 threads) evicts all of them after SIGHUP with a "
                  "4K quota, from the signal until stats.evictions counts them all and STORE/trash is empty; "
                  "native: rm -rf of the same trees. Both cold.", "", *ev, ""]
    ratios = ratio_table(res)
    if ratios:
        lines += ["## Ratios within rounds", "", *ratios, ""]
    requests = profile_table(res, "requests_per_op:", ["daemon_cpu_us_per_op", "daemon_context_switches_per_op",
                                                         "requests_per_op:all"])
    if requests:
        lines += ["## Profile: what one operation costs", "",
                  "Per operation (one file opened, stated or extracted from the tarball): the daemon's CPU time "
                  "in µs and its context switches (`perf stat -p`), and the FUSE requests the kernel sent, all "
                  "and by opcode (tracepoint `fuse:fuse_request_send` on this mount's connection).", "",
                  *requests, "",
                  "The daemon's system calls per operation (`strace -c -f -p`; a request is one read of "
                  "/dev/fuse, its reply one writev):", "",
                  *profile_table(res, "syscalls_per_op:", []), ""]
    lines += ["## Commands", "", "```"]
    lines += [f"{t}: {c}" for t, c in res.commands.items()]
    lines += ["```", ""]
    md.write_text("\n".join(lines))
    print(f"report.py: wrote {md}" + (f" and {png}" if png.exists() else ""), file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RESULTS.tsv")
    report(Path(sys.argv[1]))
