"""The measurement method every benchmark shares (issue 12).

- **Warm-up** before anything is timed (each benchmark says what its warm-up is).
- **Repeat and interleave**: every point is measured ``repeats`` (≥ 3) times, in rounds over all the
  compared variants (A B C, A B C, ...), so a change in the machine's load hits every variant alike
  instead of one block of them.
- **Median and spread**: each point reports the median, min and max of its repeats.
- **Gate on load**: the 1-minute load average is recorded at the start and before every point, and so
  is the CPU time that other work (everything but this process and its descendants) used during a
  short idle window right before each point. A run is ``quiet`` only when the 1-minute load average was below
  ``QUIET_LOAD_PER_CORE x cores`` when it started and every idle window was below ``QUIET_BUSY_CORES``
  cores busy. 0.5 per core: on 2 cores a load of 1.0 means one core's worth of other work, which would
  take the CPU a server or the load generator is measured on. The per-point check cannot use the load
  average itself: it is a one-minute moving average, so it still carries the benchmark's own previous
  point (wrk and a busy server alone push it to 2-3 on 2 cores).
- **Pinning** (optional, recorded): the load generator on one CPU set and every server on the other,
  the same for every variant, via ``taskset``.

A results file carries ``machine``, ``git``, ``method``, ``pinning``, every point's per-repeat values
with the load before it, the summaries and the ``quiet`` flag (see :class:`Run`).
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 2
MIN_REPEATS = 3
QUIET_LOAD_PER_CORE = 0.5
QUIET_BUSY_CORES = 0.5  # CPU used by other work (in cores) during the idle window before a point
IDLE_WINDOW_S = 1.5


def cores() -> int:
    return os.cpu_count() or 1


def quiet_threshold(n_cores: int | None = None) -> float:
    """The 1-minute load average below which a point counts as measured on a quiet machine."""
    return QUIET_LOAD_PER_CORE * (n_cores or cores())


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from ``/proc/stat``."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def _tree_jiffies(root: int) -> dict[int, float]:
    """CPU time (utime + stime, in jiffies) of ``root`` and its descendants, by pid."""
    out = {}
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = float(fields[11]) + float(fields[12])
    return out


def cpu_busy(seconds: float = IDLE_WINDOW_S) -> float:
    """How many cores' worth of CPU *other* work used during the next ``seconds``.

    Everything on the machine (``/proc/stat``) minus this process and its descendants (the benchmark's
    own Ray heads, replicas, bare server and load generator), so idle daemons of the benchmark do not
    count against the machine being quiet.
    """
    me = os.getpid()
    busy0, total0 = _cpu_times()
    own0 = _tree_jiffies(me)
    time.sleep(seconds)
    busy1, total1 = _cpu_times()
    own1 = _tree_jiffies(me)
    if total1 <= total0:
        return 0.0
    own = sum(max(own1[pid] - own0.get(pid, 0.0), 0.0) for pid in own1)
    other = max(busy1 - busy0 - own, 0.0)
    return round(cores() * other / (total1 - total0), 3)


def machine_info() -> dict[str, Any]:
    """Cores, CPU model and memory of this machine (what a reader needs to compare runs)."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return {
        "cores": cores(),
        "model": model,
        "mem_gb": mem_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_info() -> dict[str, Any]:
    """The commit the benchmark ran from, and whether the tree had uncommitted changes."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------- pinning
@dataclass(frozen=True)
class Pinning:
    """Which CPUs the load generator and the servers run on (``None``: not pinned)."""

    load_cpus: tuple[int, ...] | None = None
    server_cpus: tuple[int, ...] | None = None

    @property
    def enabled(self) -> bool:
        return self.load_cpus is not None

    def prefix(self, role: str) -> list[str]:
        """``taskset -c CPUS`` for ``role`` ("load" or "server"), or nothing when not pinned."""
        cpus = self.load_cpus if role == "load" else self.server_cpus
        if cpus is None:
            return []
        return ["taskset", "-c", ",".join(str(c) for c in cpus)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "load_generator_cpus": list(self.load_cpus) if self.load_cpus is not None else None,
            "server_cpus": list(self.server_cpus) if self.server_cpus is not None else None,
            "tool": "taskset" if self.enabled else None,
        }


def plan_pinning(enabled: bool, n_cores: int | None = None) -> Pinning:
    """CPU 0 for the load generator, the other CPUs for the servers; refuses on one core."""
    if not enabled:
        return Pinning()
    n = n_cores or cores()
    if n < 2:
        raise ValueError("--pin needs at least 2 CPUs (one for the load generator, one for the servers)")
    if shutil.which("taskset") is None:
        raise RuntimeError("--pin needs taskset (util-linux); install it or run without --pin")
    return Pinning(load_cpus=(0,), server_cpus=tuple(range(1, n)))


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from ``/proc``)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def pin_process_tree(pid: int, cpus: Sequence[int]) -> list[int]:
    """Move a running process, its descendants and all their threads to ``cpus``; return the pids.

    Processes they start later inherit the affinity (a Ray head's raylet forks the workers).
    """
    pinned = []
    for member in process_tree(pid):
        done = subprocess.run(
            ["taskset", "-a", "-c", "-p", ",".join(str(c) for c in cpus), str(member)],
            capture_output=True,
            timeout=30,
        )
        if done.returncode == 0:
            pinned.append(member)
    return pinned


# ---------------------------------------------------------------------------------------------- stats
def spread(values: Iterable[float]) -> dict[str, Any]:
    """Median, min, max and count of a point's repeats."""
    data = [float(v) for v in values]
    if not data:
        raise ValueError("no values to summarise")
    return {
        "median": round(statistics.median(data), 4),
        "min": round(min(data), 4),
        "max": round(max(data), 4),
        "n": len(data),
    }


def fmt_spread(summary: dict[str, Any], digits: int = 1, unit: str = "") -> str:
    """``749 (701-760)``: the median and, in brackets, the min-max of the repeats."""
    med, lo, hi = (round(summary[k], digits) for k in ("median", "min", "max"))
    if digits == 0:
        med, lo, hi = int(med), int(lo), int(hi)
    return f"{med}{unit} ({lo}-{hi}{unit})"


# ---------------------------------------------------------------------------------------------- the run
def interleaved(variants: Sequence[str], repeats: int) -> list[tuple[int, str]]:
    """(repeat, variant) in rounds: A B C, A B C, ... (never AAA BBB)."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    return [(r, v) for r in range(repeats) for v in variants]


@dataclass
class Run:
    """One benchmark run: the context, and each measured point with the load before it."""

    benchmark: str
    repeats: int
    pinning: Pinning = field(default_factory=Pinning)
    notes: list[str] = field(default_factory=list)
    started_at: str = field(default_factory=now)
    machine: dict[str, Any] = field(default_factory=machine_info)
    git: dict[str, Any] = field(default_factory=git_info)
    points: list[dict[str, Any]] = field(default_factory=list)
    threshold: float = field(default_factory=quiet_threshold)
    busy_threshold: float = QUIET_BUSY_CORES
    load_at_start: list[float] = field(default_factory=load_average)

    def measure(
        self, variant: str, point: str, repeat: int, fn: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """Record the load and the idle-window CPU, run ``fn`` (one measurement of ``point`` on
        ``variant``), keep its values."""
        busy = cpu_busy()
        load = load_average()
        started = time.perf_counter()
        values = fn()
        row = {
            "variant": variant,
            "point": point,
            "repeat": repeat,
            "load_before": load,
            "cpu_busy_before": busy,
            "seconds": round(time.perf_counter() - started, 2),
            "values": values,
        }
        self.points.append(row)
        return values

    @property
    def max_load(self) -> float:
        return max((p["load_before"][0] for p in self.points), default=0.0)

    @property
    def max_busy(self) -> float:
        return max((p["cpu_busy_before"] for p in self.points), default=0.0)

    @property
    def quiet(self) -> bool:
        """Quiet at the start and before every point, with the full number of repeats."""
        if self.repeats < MIN_REPEATS or not self.points:
            return False
        if self.load_at_start[0] >= self.threshold:
            return False
        return all(p["cpu_busy_before"] < self.busy_threshold for p in self.points)

    def summary(self, metrics: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """``{variant: {point: {metric: spread}}}`` over the repeats of every point."""
        grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for p in self.points:
            grouped.setdefault((p["variant"], p["point"]), []).append(p["values"])
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (variant, point), rows in grouped.items():
            out.setdefault(variant, {})[point] = {
                m: spread(r[m] for r in rows if r.get(m) is not None)
                for m in metrics
                if any(r.get(m) is not None for r in rows)
            }
        return out

    def header(self) -> dict[str, Any]:
        """The context every results file starts with."""
        return {
            "benchmark": self.benchmark,
            "schema": SCHEMA,
            "started_at": self.started_at,
            "finished_at": now(),
            "git": self.git,
            "machine": self.machine,
            "method": {
                "repeats": self.repeats,
                "order": "interleaved rounds over the variants (A B C, A B C, ...)",
                "statistic": "median, with the min-max of the repeats",
                "quiet_rule": (
                    f"1-min load average < {QUIET_LOAD_PER_CORE} x cores at the start, and less than "
                    f"{self.busy_threshold} cores busy in the {IDLE_WINDOW_S} s idle window before "
                    "every point"
                ),
                "quiet_threshold": self.threshold,
                "busy_threshold_cores": self.busy_threshold,
            },
            "pinning": self.pinning.as_dict(),
            "quiet": self.quiet,
            "load_at_start": self.load_at_start,
            "max_load_before": self.max_load,
            "max_cpu_busy_before": self.max_busy,
            "notes": list(self.notes),
        }


def load_sentence(results: dict[str, Any]) -> str:
    """How loaded the machine was during a run, and the verdict, for the Markdown reports."""
    verdict = "quiet" if results["quiet"] else "LOADED: not for the README"
    return (
        f"1-min load average {results['load_at_start'][0]} at the start (quiet below "
        f"{results['method']['quiet_threshold']}), at most {results['max_cpu_busy_before']} cores busy in "
        f"the idle moment before a point (quiet below {results['method']['busy_threshold_cores']}): {verdict}"
    )


def check_repeats(repeats: int, allow_fewer: bool = False) -> int:
    """At least ``MIN_REPEATS`` repeats, unless a quick smoke run asks for fewer (never quiet)."""
    if repeats < 1:
        raise ValueError("--repeats must be at least 1")
    if repeats < MIN_REPEATS and not allow_fewer:
        raise ValueError(
            f"--repeats {repeats}: the method needs at least {MIN_REPEATS} per point "
            "(pass --quick for a smoke run whose results cannot go in the README)"
        )
    return repeats
