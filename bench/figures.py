"""The figures of one bench/run.sh results file (RESULTS.tsv), and what they mean.

Shared by report.py (the Markdown table and the chart) and readme.py (the README's
Performance section). A results file has tab-separated rows:

    meta  KEY VALUE                      the machine and the run (bench/lib/machine.sh)
    note  KEY VALUE                      facts of the workloads (data set, tarball, project)
    cmd   TARGET COMMAND                 how a target was mounted
    load  ROUND LOADAVG                  1-minute load average when a round started
    m     ROUND TARGET MEASURE VALUE     one measurement
    fail  ROUND TARGET MEASURE WHY       a measurement that failed (the run went on)
    p     TARGET OPERATION KEY VALUE     profile: per-operation counts of one target

Every comparison is a ratio computed within a round (A and B measured minutes
apart, in the same conditions), then the median over rounds with the lowest and
highest round: on a shared machine that is far steadier than a ratio of medians.
Ratios are "speed": higher is better, also for times (B's seconds / A's seconds).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Measure:
    label: str
    unit: str
    higher_is_better: bool = True


MEASURES: dict[str, Measure] = {
    "open_cold": Measure("open+read+close of 4 KiB files, cold", "files/s"),
    "open_warm": Measure("open+read+close of 4 KiB files, warm, 1 client", "files/s"),
    "open_warm_j4": Measure("open+read+close of 4 KiB files, warm, 4 clients", "files/s"),
    "mixed2": Measure("same, 1 client while 2 others read big files from the disk", "files/s"),
    "mixed2_p99_us": Measure("p99 latency of those opens", "µs", False),
    "stat_cold": Measure("stat, cold", "stats/s"),
    "stat_warm": Measure("stat, warm", "stats/s"),
    "seq_cold": Measure("sequential read (1 MiB reads), cold", "MiB/s"),
    "seq_warm": Measure("sequential read (1 MiB reads), warm", "MiB/s"),
    "readdir_cold": Measure("readdir of the wide directory, cold", "entries/s"),
    "readdir_warm": Measure("readdir of the wide directory, warm", "entries/s"),
    "readdir_l_warm": Measure("readdir + stat of every entry (ls -l), warm", "entries/s"),
    "tar_extract_s": Measure("tar -xf of a source tarball onto the target", "s", False),
    "tar_sync_s": Measure("sync after it", "s", False),
    "cp_out_s": Measure("cp -a of the extracted tree out of the target, cold", "s", False),
    "ccache_rebuild_s": Measure("ccache rebuild, all hits, CCACHE_DIR on the target, cold", "s", False),
    "ccache_hits": Measure("ccache hits in the rebuild", "hits"),
    "delete_trees_s": Measure("deleting the trees: artifactfs eviction / rm -rf", "s", False),
    "evict_create_files_per_s": Measure("creating them (2 writer threads)", "files/s"),
}

TARGET_LABELS = {
    "native": "native directory",
    "floor-t1": "FUSE floor, 1 thread",
    "floor-t4": "FUSE floor, 4 threads",
    "artifactfs-t1": "artifactfs, 1 thread",
    "artifactfs-t2": "artifactfs, 2 threads",
    "artifactfs-t4": "artifactfs (default: 4 threads)",
    "artifactfs-t4-norecord": "artifactfs, recording off",
    "artifactfs-t4-devfuse": "artifactfs through /dev/fuse (fuse.io-uring: off)",
    "passthrough_hp-single": "passthrough_hp, 1 thread",
    "passthrough_hp": "passthrough_hp",
    "bindfs": "bindfs",
    "mergerfs": "mergerfs",
    "baseline-t4": "baseline build of artifactfs (4 threads)",
}

TARGET_ORDER = list(TARGET_LABELS)
OPTIONAL_TARGETS = {"baseline-t4"}  # measured only when asked for (run.sh --baseline)


@dataclass(frozen=True)
class Goal:
    measure: str
    target: str
    against: str
    bound: float  # the speed ratio target/against must be at least this
    text: str


GOALS = [
    Goal("open_warm", "artifactfs-t4", "floor-t1", 1.0, "warm open+read+close: at least 1.0x the single-threaded FUSE floor"),
    Goal("open_warm", "artifactfs-t4", "passthrough_hp", 1.5, "warm open+read+close: at least 1.5x passthrough_hp"),
    Goal("stat_warm", "artifactfs-t4", "native", 0.9, "stat, warm: at least 0.9x native"),
    Goal("stat_cold", "artifactfs-t4", "native", 0.9, "stat, cold: at least 0.9x native"),
    Goal("seq_warm", "artifactfs-t4", "native", 0.9, "sequential read, warm: at least 0.9x native"),
    Goal("seq_cold", "artifactfs-t4", "native", 0.9, "sequential read, cold: at least 0.9x native"),
    Goal("open_warm", "artifactfs-t4", "artifactfs-t4-norecord", 0.95, "access recording on against off, warm opens: at most 5% slower"),
    Goal("open_cold", "artifactfs-t4", "artifactfs-t4-norecord", 0.95, "access recording on against off, cold opens: at most 5% slower"),
    Goal("open_warm_j4", "artifactfs-t4", "artifactfs-t4-norecord", 0.95, "access recording on against off, 4 clients: at most 5% slower"),
    Goal("open_warm", "artifactfs-t4", "baseline-t4", 0.95, "warm open+read+close: at most 5% slower than the --baseline build"),
    Goal("tar_extract_s", "artifactfs-t4", "passthrough_hp", 0.8, "tarball extraction: at least 0.8x passthrough_hp"),
    Goal("ccache_rebuild_s", "artifactfs-t4", "native", 1 / 1.15, "ccache rebuild: within 15% of native (time at most 1.15x)"),
]


@dataclass
class Spread:
    median: float
    low: float
    high: float
    n: int

    @staticmethod
    def of(values: list[float]) -> "Spread | None":
        if not values:
            return None
        return Spread(statistics.median(values), min(values), max(values), len(values))


@dataclass
class Results:
    path: Path
    meta: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    loads: dict[int, float] = field(default_factory=dict)
    values: dict[tuple[str, str], dict[int, float]] = field(default_factory=dict)
    profile: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    failures: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def targets(self) -> list[str]:
        seen = {t for t, _ in self.values}
        return [t for t in TARGET_ORDER if t in seen] + sorted(seen - set(TARGET_ORDER))

    def has(self, target: str, measure: str) -> bool:
        return bool(self.values.get((target, measure)))

    def spread(self, target: str, measure: str) -> Spread | None:
        return Spread.of(list(self.values.get((target, measure), {}).values()))

    def ratio(self, measure: str, target: str, against: str) -> Spread | None:
        """Speed of `target` relative to `against`, per round, then median and range."""
        a = self.values.get((target, measure), {})
        b = self.values.get((against, measure), {})
        better_high = MEASURES[measure].higher_is_better if measure in MEASURES else True
        per_round = []
        for r in sorted(a.keys() & b.keys()):
            if a[r] <= 0 or b[r] <= 0:
                continue
            per_round.append(a[r] / b[r] if better_high else b[r] / a[r])
        return Spread.of(per_round)


def load(path: Path) -> Results:
    res = Results(path)
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        kind = parts[0]
        if kind == "meta" and len(parts) >= 3:
            res.meta[parts[1]] = parts[2]
        elif kind == "note" and len(parts) >= 3:
            res.notes[parts[1]] = parts[2]
        elif kind == "cmd" and len(parts) >= 3:
            res.commands[parts[1]] = parts[2]
        elif kind == "load" and len(parts) >= 3:
            res.loads[int(parts[1])] = float(parts[2])
        elif kind == "m" and len(parts) >= 5 and parts[4] not in ("", "-"):
            res.values.setdefault((parts[2], parts[3]), {})[int(parts[1])] = float(parts[4])
        elif kind == "fail" and len(parts) >= 5:
            res.failures.append((parts[1], parts[2], parts[3], parts[4]))
        elif kind == "p" and len(parts) >= 5:
            res.profile.setdefault((parts[1], parts[2]), {})[parts[3]] = float(parts[4])
    return res


def measure_label(res: "Results", measure: str) -> str:
    """The measure's label, with the size of the wide directory of this run."""
    text = MEASURES[measure].label
    entries = res.notes.get("wide_entries")
    if entries:
        text = text.replace("the wide directory", f"a directory of {int(entries):,} entries")
    return text


def fmt(value: float | None) -> str:
    """Three significant figures at most, no exponent: 13900, 1.07, 0.0123."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if value == int(value) and magnitude < 1e6 and magnitude >= 1:
        return f"{value:.0f}"
    if magnitude >= 1000:
        return f"{value:.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt_spread(s: Spread | None, suffix: str = "") -> str:
    if s is None:
        return "-"
    if s.n == 1:
        return f"{fmt(s.median)}{suffix}"
    return f"{fmt(s.median)}{suffix} ({fmt(s.low)}-{fmt(s.high)})"


def goal_verdict(res: Results, goal: Goal) -> tuple[Spread | None, str]:
    """The measured ratio and a verdict saying by how much a miss misses."""
    r = res.ratio(goal.measure, goal.target, goal.against)
    if r is None:
        return None, "not measured"
    if r.median >= goal.bound:
        return r, "met"
    short = (goal.bound - r.median) / goal.bound * 100
    return r, f"missed by {short:.0f}%"


def ratio_text(goal_or_measure: str, s: Spread | None) -> str:
    """A speed ratio, or for a time goal the time ratio it stands for."""
    if s is None:
        return "-"
    higher = MEASURES[goal_or_measure].higher_is_better
    if higher:
        return fmt_spread(s, "x")
    inv = Spread(1 / s.median, 1 / s.high, 1 / s.low, s.n)
    return fmt_spread(s, "x") + f"; time {fmt(inv.median)}x"


# The profiled operation that shows what a measurement costs per request.
PROFILED = {"open_warm": "open_warm", "open_warm_j4": "open_warm", "open_cold": "open_cold",
            "stat_cold": "stat_cold", "stat_warm": "stat_warm", "seq_warm": "seq_warm", "seq_cold": "seq_cold",
            "tar_extract_s": "tar_extract"}


def evidence(res: Results, goal: Goal) -> str:
    """From the profile: requests per operation by opcode and the daemon's CPU
    time per operation, for the goal's target and what it is compared with."""
    op = PROFILED.get(goal.measure)
    if op is None:
        return "-"
    parts = []
    for target in (goal.target, goal.against):
        values = res.profile.get((target, op))
        if not values:
            continue
        ops = sorted(((k.split(":", 1)[1], v) for k, v in values.items()
                      if k.startswith("requests_per_op:") and not k.endswith(":all") and v >= 0.05),
                     key=lambda kv: -kv[1])
        by_op = f" ({' '.join(f'{name} {fmt(v)}' for name, v in ops)})" if ops else ""
        parts.append(f"{TARGET_LABELS.get(target, target)}: {fmt(values.get('requests_per_op:all'))} requests"
                     f"{by_op}, {fmt(values.get('daemon_cpu_us_per_op'))} µs daemon CPU")
    return "; ".join(parts) if parts else "-"
