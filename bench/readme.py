#!/usr/bin/env python3
"""Regenerates the figures of the README's Performance section from the latest results.

    bench/readme.py [--results DIR] [README]

Writes between the two marker lines of README (default: the repository's
README.md) a summary of the newest complete bench/run.sh result in DIR
(default: bench/results) and of the newest scale result, with links to them.
Nothing between the markers is typed by hand; the text around them is.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from figures import measure_label, GOALS, MEASURES, Results, fmt, fmt_spread, evidence, goal_verdict, load, ratio_text

BEGIN = "<!-- BEGIN bench/readme.py: generated from bench/results; edit the script, not this -->"
END = "<!-- END bench/readme.py -->"

HEADLINE = ["open_cold", "open_warm", "open_warm_j4", "mixed2", "mixed2_p99_us", "stat_cold", "stat_warm",
            "seq_cold", "seq_warm", "readdir_cold", "readdir_warm", "tar_extract_s", "cp_out_s",
            "ccache_rebuild_s", "delete_trees_s"]
COLUMNS = ["native", "floor-t1", "artifactfs-t4", "artifactfs-t4-devfuse", "artifactfs-t1", "passthrough_hp"]
COLUMN_TITLES = {"native": "native directory", "floor-t1": "FUSE floor (1 thread)",
                 "artifactfs-t4": "artifactfs (default, 4 threads)", "artifactfs-t1": "artifactfs (1 thread)",
                 "artifactfs-t4-devfuse": "artifactfs through /dev/fuse", "passthrough_hp": "passthrough_hp"}


def newest(results: Path, pattern: str, accept) -> Path | None:
    for path in sorted(results.glob(pattern), reverse=True):  # names start with the date and time
        if accept(path):
            return path
    return None


def is_complete(path: Path, accept_smoke: bool) -> bool:
    if path.name.endswith("-scale.tsv"):
        return False
    text = path.read_text()
    return "meta\tcomplete\t1" in text or (accept_smoke and "meta\tsmoke\t1" in text)


def link(readme: Path, target: Path) -> str:
    try:
        return str(target.resolve().relative_to(readme.resolve().parent))
    except ValueError:
        return str(target.resolve())


def artifactfs_build(text: str) -> str:
    """The build and commit of the measured binary, without its path."""
    return re.sub(r"\s*\(?\S*/cli/artifactfs[^;)]*\)?", "", text)


def headline_table(res: Results) -> list[str]:
    cols = [c for c in COLUMNS if c in res.targets]
    out = ["| | " + " | ".join(COLUMN_TITLES[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for m in HEADLINE:
        if not any(res.has(c, m) for c in cols):
            continue
        unit = MEASURES[m].unit
        cells = []
        for c in cols:
            s = res.spread(c, m)
            cell = "" if s is None else f"{fmt(s.median)} {unit}"
            if s is not None and c == "artifactfs-t4" and m != "mixed2_p99_us":
                ratios = [f"{fmt(r.median)}x {name}" for against, name in (("native", "native"), ("floor-t1", "floor"))
                          if (r := res.ratio(m, c, against)) is not None]
                if ratios:
                    cell += f" ({', '.join(ratios)})"
            cells.append(cell)
        title = measure_label(res, m)
        if m == "delete_trees_s":
            title = "evicting " + res.notes.get("evict", "the artifacts") + " (native: `rm -rf` of them)"
        out.append(f"| {title} | " + " | ".join(cells) + " |")
    return out


def goals(res: Results) -> list[str]:
    out = ["| goal | measured | | per operation, from the profile |", "|---|---|---|---|"]
    for g in GOALS:
        r, verdict = goal_verdict(res, g)
        out.append(f"| {g.text} | {ratio_text(g.measure, r)} | {verdict} | {evidence(res, g)} |")
    return out


def scale_section(readme: Path, tsv: Path) -> list[str]:
    v = dict(line.split("\t", 1) for line in tsv.read_text().splitlines() if "\t" in line)
    md = tsv.with_suffix(".md")
    n = int(v["artifacts"])
    return [
        f"A store of {n:,} artifacts (one 4 KiB file each, depth 2; [{md.name}]({link(readme, md)})):", "",
        "| | |", "|---|---|",
        f"| first mount, index built by walking the tree | {v['first_mount_s']} s |",
        f"| clean mount | {v['clean_mount_s']} s |",
        f"| mount after `kill -9` of the daemon (re-walks only what changed since the last flush) | {v['mount_after_kill_s']} s |",
        f"| daemon RSS after `ls` of the root and of a namespace | {v['rss_after_ls_mib']} MiB ({v['rss_anon_after_ls_mib']} MiB anonymous; the rest is LMDB's map) |",
        f"| daemon RSS after evicting half | {v['rss_after_evict_mib']} MiB ({v['rss_anon_after_evict_mib']} MiB anonymous) |",
        f"| evicting half ({int(v['evicted']):,} artifacts) | {v['evict_s']} s |",
        f"| `rm -rf` of the same trees (mean of one run before and one after) | {v['rm_rf_s']} s |",
        f"| eviction / `rm -rf` | {v['evict_over_rm_rf']}x |",
    ]


def section(readme: Path, results: Path, accept_smoke: bool) -> list[str]:
    tsv = newest(results, "*.tsv", lambda p: is_complete(p, accept_smoke))
    scale = newest(results, "*-scale.tsv", lambda p: accept_smoke or "-smoke-" not in p.name)
    if tsv is None:
        sys.exit(f"readme.py: no complete run (bench/run.sh with all targets and workloads) in {results}")
    res = load(tsv)
    md, png = tsv.with_suffix(".md"), tsv.with_suffix(".png")
    m = res.meta
    lines = [
        f"Measured by `bench/run.sh` on {m.get('date', '?')}: {m.get('nproc', '?')}-core {m.get('CPU', '')}, "
        f"{m.get('memory', '')}, {m.get('OS', '')}, kernel {m.get('kernel', '')}, "
        f"{m.get('backing filesystem', '').split(' ')[0]} on {m.get('backing filesystem', '? ?').split(' ')[1]}, "
        f"libfuse {m.get('libfuse', '').split(' ')[0]}; artifactfs {artifactfs_build(m.get('artifactfs', ''))}. "
        f"Medians of {m.get('rounds', '?')} interleaved rounds; load average at the start of each round: "
        f"{', '.join(f'{x:.1f}' for x in res.loads.values())} (the machine was shared). "
        f"Everything, with ranges, the peers bindfs and mergerfs, and a profile: [{md.name}]({link(readme, md)}).",
        "",
        f"![speed relative to the native directory]({link(readme, png)})",
        "",
        *headline_table(res),
        "",
        "Against the goals (ratios within each round, median and range; higher is faster):",
        "",
        *goals(res),
        "",
    ]
    if scale is not None:
        lines += scale_section(readme, scale) + [""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("--results", type=Path, default=here / "results")
    parser.add_argument("--accept-smoke", action="store_true",
                        help="use smoke runs too (the test suite's check of this script)")
    parser.add_argument("readme", type=Path, nargs="?", default=here.parent / "README.md")
    args = parser.parse_args()
    text = args.readme.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"readme.py: {args.readme} has no generated section; put these two lines where it goes:\n{BEGIN}\n{END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    body = "\n".join(section(args.readme, args.results, args.accept_smoke))
    args.readme.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")
    print(f"readme.py: regenerated the Performance figures in {args.readme}", file=sys.stderr)


if __name__ == "__main__":
    main()
